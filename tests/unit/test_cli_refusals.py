"""A user's mistake on the command line is refused with exit code 2 and one line naming it, before any
cluster, gateway or file is touched; never a traceback, never a quiet guess (pure: no Ray, no server)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from handoff.cli import app
from monitoring import EVENT_KINDS

ROOT = Path(__file__).resolve().parents[2]
#: the modules that write events into a model's event log
RECORDERS = [*sorted((ROOT / "monitoring").glob("*.py")), ROOT / "handoff" / "serve_commands.py"]


def invoke(*args: str, width: int = 200):
    return CliRunner().invoke(app, list(args), terminal_width=width)


def refused(result, *words: str) -> None:
    """Exit 2, no traceback, and the words named in what it printed."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())  # the console wraps the line at its width
    for word in words:
        assert word in said, said


def recorded_kinds(path: Path) -> set[str]:
    """The event kinds a module writes: `{"kind": "…", …}` literals and `_record("…", …)` calls (either
    side of a conditional)."""
    def constants(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return constants(node.body) | constants(node.orelse)
        return set()

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Dict):
            found |= {k for key, value in zip(node.keys, node.values)
                      if isinstance(key, ast.Constant) and key.value == "kind" for k in constants(value)}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_record" and node.args:
            found |= constants(node.args[0])
    return found


def test_the_cli_knows_exactly_the_event_kinds_the_recorders_write():
    written = set().union(*map(recorded_kinds, RECORDERS))
    assert {"drift_declared", "env_drift_accepted", "event_log_repaired", "compaction_failed",
            "concept_drift_suspected", "rolled_back", "retrain_finished"} <= written  # the scan finds them
    assert written == set(EVENT_KINDS), (f"written, not listed: {sorted(written - set(EVENT_KINDS))}; "
                                         f"listed, never written: {sorted(set(EVENT_KINDS) - written)}")
    assert len(EVENT_KINDS) == len(set(EVENT_KINDS))


def test_events_refuses_an_unknown_kind_naming_the_nearest_and_every_known_one(tmp_path):
    result = invoke("events", "m", "--kind", "drift-declared", "--home", str(tmp_path), width=2000)
    refused(result, "'drift-declared' is not a kind of event", "did you mean drift_declared?",
            *EVENT_KINDS)
    assert not (tmp_path / "monitor").exists()
    assert invoke("events", "m", "--kind", "drift_declared", "--home", str(tmp_path)).exit_code == 0


@pytest.mark.parametrize("last", ["0", "-1"])
def test_events_last_takes_one_or_more(tmp_path, last):
    refused(invoke("events", "m", "--last", last, "--home", str(tmp_path)), "--last")


def test_events_help_lists_every_kind():
    shown = " ".join(invoke("events", "--help", width=2000).output.split())
    assert all(kind in shown for kind in EVENT_KINDS), shown


@pytest.fixture
def one_drift_event(tmp_path):
    from cluster.settings import Settings
    from monitoring import StateStore

    root = Settings.resolve(home=tmp_path).monitor_dir
    StateStore(str(root), "m").commit({}, [{"kind": "drift_declared", "event_id": "e1", "version": 1,
                                            "first_window": 1, "last_window": 3, "features": ["f1"]}])
    return tmp_path


def test_report_refuses_an_out_that_is_a_file_or_lies_under_one(one_drift_event):
    home = one_drift_event
    (home / "afile").write_text("x")
    refused(invoke("report", "m", "--out", str(home / "afile"), "--home", str(home)),
            "is a file, not a directory", "afile")
    refused(invoke("report", "m", "--out", str(home / "afile" / "sub"), "--home", str(home)),
            "is a file, not a directory", str(home / "afile" / "sub"))
    assert (home / "afile").read_text() == "x"


@pytest.mark.parametrize("url, words", [
    ("notaurl", ["'notaurl' is not an http:// or https:// URL"]),
    ("http://[bad", ["'http://[bad' is not a URL", "Invalid IPv6 URL"]),
    ("ftp://host:8000", ["'ftp://host:8000' is not an http://"]),
    ("http://", ["'http://' is not an http://"]),
    ("http://host:port", ["'http://host:port' is not a URL"]),
    ("http://host:8000/?x=1", ["has a query or fragment"]),
    ("http://host name:8000", ["space or a control character"]),
])
def test_feedback_refuses_a_url_that_cannot_be_the_gateway(tmp_path, url, words):
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\na,1\n")
    refused(invoke("feedback", "m", str(labels), "--url", url), *words)


@pytest.mark.parametrize("weight", ["inf", "-inf", "nan", "-1"])
def test_traffic_refuses_a_weight_that_is_not_a_finite_number_at_least_0(tmp_path, weight):
    refused(invoke("traffic", "m", f"1={weight}", "2=10", "--home", str(tmp_path)), f"'1={weight}'", "finite")


@pytest.mark.parametrize("percent", ["-5", "nan", "inf", "101"])
def test_shadow_refuses_a_percent_outside_0_to_100_rather_than_stopping(tmp_path, percent):
    refused(invoke("shadow", "m", "2", "--percent", percent, "--home", str(tmp_path)), "shadow percent must be")


def test_status_offers_no_serving_config_it_would_not_apply():
    assert "--serving-config" not in invoke("status", "--help").output
    assert "--serving-config" in invoke("shadow", "--help").output


def test_an_error_is_one_line_as_written_whatever_the_width(capsys):
    """A long message (a path, pip's words) is never broken inside a name, and brackets in it (a list,
    a Ray command line) are its text, not rich's markup (a `[/x]` there once failed the error itself)."""
    import typer

    from handoff.common import fail

    message = ("installing ['pkg @ file:///tmp/pytest-of-root/pytest-100/a-long-directory/no/handoff_missing-1.0-"
               "py3-none-any.whl'] failed: [/tmp/ray] ERROR: No such file or directory")
    with pytest.raises(typer.Exit) as exited:
        fail(message)
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
