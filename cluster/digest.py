"""Stable short digests of plain values (deployment code versions, job submission ids)."""

from __future__ import annotations

import hashlib
import json


def stable_digest(*parts: object) -> str:
    """16 hex digits that depend only on `parts` (JSON with sorted keys; anything else by `str`)."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]
