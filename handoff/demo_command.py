"""`handoff demo`: the closed loop on the embedded default, by itself (the steps: handoff/demo_loop.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from handoff.common import command_settings, fail, layered_config
from handoff.options import DEFAULT_CONFIG, HomeOpt


def demo(home: HomeOpt = None,
         config: Annotated[Path, typer.Option(help="experiment YAML")] = DEFAULT_CONFIG,
         port: Annotated[int, typer.Option(help="HTTP port of the demo's inference endpoint")] = 8000) -> None:
    """The main job, by itself: the closed loop on the embedded default.

    Starts the embedded cluster (`handoff up`: a Ray head with its jobs API and an MLflow server in
    HANDOFF_HOME), tunes and registers the Shuttle model, serves it with its monitor, replays its
    held-out rows as live traffic with labels, recalibrates a sensor at a known request, and lets
    the loop act: drift declared → a retraining job → the gate → a canary → promotion. Prints its
    progress and a summary; Ray's and Tune's output go to HANDOFF_HOME/logs/demo.log. The cluster
    keeps running afterwards (`handoff down` stops it). Exit code 0 when the loop promoted a new
    champion with no failed request.
    """
    from cluster.services import make_state_directory
    from cluster.settings import SettingsError
    from handoff.demo_loop import print_summary, quiet_into, run_loop_demo
    from training import load_config

    settings = command_settings(home)
    if not 1 <= port <= 65535:
        fail(f"--port {port}: a port is a number from 1 to 65535")
    cfg = layered_config(load_config, config, DEFAULT_CONFIG, [])  # refused before anything is started
    try:
        make_state_directory(settings)
    except SettingsError as exc:
        fail(str(exc))
    log_path = settings.home / "logs" / "demo.log"
    with quiet_into(log_path) as say:
        try:
            summary = run_loop_demo(settings, config, cfg, port, say)
        except Exception as exc:  # noqa: BLE001 - the terminal gets the reason, the log the traceback
            import traceback

            traceback.print_exc()
            say.print(f"[red]the demo stopped: {type(exc).__name__}: {exc}[/red] (details in {log_path})")
            raise typer.Exit(1) from None
        print_summary(say, summary, log_path, port)
    if summary["outcome"] != "promoted" or summary["failed_requests"]:
        raise typer.Exit(1)

