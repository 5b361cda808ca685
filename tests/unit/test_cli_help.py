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
