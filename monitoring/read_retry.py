"""What the monitor does when a file will not read, pure: retry a transient failure, quarantine a
file that does not parse.

A live-log or label file that fails with an I/O error (an S3 throttle, a network blip, a disk that
came back) is tried `ATTEMPTS` times in the pass with a doubling pause, and the pass stops there
(files are read in order, so nothing after it is read first); the next pass tries again, and only
after `MAX_FAILED_PASSES` passes that all failed is the file given up (pyarrow reports damage inside
a data page, such as corrupt compressed bytes, as an I/O error too: a file that fails every time is
damaged, not unlucky). A file that does not parse (not Parquet, a torn footer, columns missing) is
quarantined at once: recorded with its reason, counted, never read again.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

ATTEMPTS = 3            # tries within one pass
FIRST_PAUSE_S = 0.05    # then 0.1, 0.2: a blip passes, a pass is not held long
MAX_FAILED_PASSES = 5   # passes in a row a file may fail before it is given up


class TransientRead(OSError):
    """A read that failed with an I/O error: worth trying again."""


class RetryLater(Exception):
    """The file failed every try of this pass: stop reading here, try again next pass."""


def read_with_retries(read: Callable[[], T], sleep: Callable[[float], None] = time.sleep,
                      attempts: int = ATTEMPTS, first_pause_s: float = FIRST_PAUSE_S) -> T:
    """`read()`, tried again after a `TransientRead` (pauses doubling from `first_pause_s`); the last
    `TransientRead` when every try failed. Any other exception passes through at once."""
    for attempt in range(attempts):
        try:
            return read()
        except TransientRead:
            if attempt == attempts - 1:
                raise
            sleep(first_pause_s * 2 ** attempt)
    raise AssertionError("unreachable")


def after_failed_pass(retries: dict, key: str, error: BaseException) -> str | None:
    """Note that `key` failed a whole pass in `retries` (key → {"passes", "error"}, kept in the
    monitor's state); the reason to give it up once it has failed `MAX_FAILED_PASSES` passes, else None."""
    entry = retries.setdefault(key, {"passes": 0, "error": ""})
    entry["passes"] += 1
    entry["error"] = f"{type(error).__name__}: {error}"[:300]
    if entry["passes"] < MAX_FAILED_PASSES:
        return None
    del retries[key]
    return f"{key}: unreadable in {MAX_FAILED_PASSES} passes in a row ({entry['error']})"
