import pytest
from typer.testing import CliRunner

from handoff.cli import app

COMMANDS = ["up", "down", "tune", "demo", "models", "reproduce", "predict"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 5


def test_help_shows_the_defaults_and_variables_written_in_brackets():
    """Help texts name defaults as "[default: …]" and variables as "[env: …]": shown, not read as markup."""
    result = CliRunner().invoke(app, ["predict", "--help"], terminal_width=200)
    assert "[default: champion]" in result.output and "[env: HANDOFF_HOME; default ./.handoff]" in result.output


def test_bad_config_fails_before_any_work(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\ndataset: {uri: a, label: y, features: [a], colour: red}\n")
    result = CliRunner().invoke(app, ["tune", str(bad), "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "dataset.colour: unknown key" in result.output
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started or written


@pytest.mark.parametrize("config, message", [
    ("nofile.yaml", "config file not found: nofile.yaml"),
    ("adir", "config file adir is a directory, not a file"),
    ("empty.yaml", "config file empty.yaml is empty"),
])
def test_demo_refuses_a_bad_config_before_it_starts_the_cluster(tmp_path, monkeypatch, config, message):
    import cluster.services

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    monkeypatch.setattr(cluster.services, "up", lambda *a, **k: pytest.fail("the demo started the cluster"))
    result = CliRunner().invoke(app, ["demo", "--home", "h", "--config", config])
    assert result.exit_code == 2 and " ".join(result.output.split()).startswith(f"error: {message}"), result.output
    assert not (tmp_path / "h").exists()  # not even its log


def test_status_splits_its_table_to_fit_the_terminal_and_never_cuts_a_cell():
    """At 80 columns `handoff status` prints whole groups of columns per table, every table within the
    width and every cell whole; where everything fits, one table."""
    from rich.console import Console

    from handoff.serve_commands import STATUS_GROUPS, STATUS_KEYS, _fitting_tables

    columns = [*STATUS_KEYS, *(c for g in STATUS_GROUPS for c in g), "new column"]
    row = dict(zip(columns, ["creditcard", "12", "90%", "10%", "2", "cuda:0", "RUNNING", "1234567", "12", "2.5", "25",
                             "99.8%", "drifted (w12: f1, f2, f3)", "97.3% (w12)", "x"]))
    cells = [row, {**row, "ver": "13", "drift": "-"}]
    for width in (80, 100, 400):
        tables = _fitting_tables(cells, width)
        shown = [str(col.header) for t in tables for col in t.columns]
        assert set(shown) == set(columns)  # every column somewhere, the keys in every table
        assert all([str(c.header) for c in t.columns][:2] == list(STATUS_KEYS) for t in tables)
        for table in tables:
            console = Console(width=width, record=True)
            console.print(table)
            text = console.export_text()
            assert max(len(line.rstrip()) for line in text.splitlines()) <= width
            assert "…" not in text
            if "drift" in [str(c.header) for c in table.columns]:
                assert "drifted (w12: f1, f2, f3)" in text
    assert len(_fitting_tables(cells, 400)) == 1 and len(_fitting_tables(cells, 80)) >= 3
