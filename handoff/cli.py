"""`handoff`: the command line, assembled. Each command lives with its group (one module each) and
parses, calls one function of a package, and prints; this module only lists them, in the order
`handoff --help` shows them, and runs the app (or sends the command line to a cluster as a Ray job).

    cluster_commands    up, down, credentials
    training_commands   tune, models, reproduce
    demo_command        demo
    feedback_command    feedback
    monitor_commands    monitor, events, report
    predict_command     predict
    retrain_command     retrain
    serve_commands      serve, traffic, canary, shadow, promote, rollback, unserve, status
"""

from __future__ import annotations

import os
import sys

import typer

from handoff import (cluster_commands, demo_command, feedback_command, monitor_commands, predict_command,
                     retrain_command, serve_commands, training_commands)

app = typer.Typer(
    help="Handoff: Ray Tune search → MLflow registry → versioned serving, with drift-triggered retraining.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # help texts name defaults and variables in brackets ("[env: HANDOFF_HOME]"): plain text, not markup
    rich_markup_mode=None,
)

#: (command name, the function that runs it), in the order of `handoff --help`
COMMANDS = (
    ("up", cluster_commands.up), ("down", cluster_commands.down), ("credentials", cluster_commands.credentials),
    ("tune", training_commands.tune), ("demo", demo_command.demo), ("models", training_commands.models),
    ("reproduce", training_commands.reproduce), ("feedback", feedback_command.feedback),
    ("monitor", monitor_commands.monitor_command), ("events", monitor_commands.events),
    ("report", monitor_commands.report), ("predict", predict_command.predict), ("retrain", retrain_command.retrain),
    ("serve", serve_commands.serve), ("traffic", serve_commands.traffic), ("canary", serve_commands.canary),
    ("shadow", serve_commands.shadow), ("promote", serve_commands.promote), ("rollback", serve_commands.rollback),
    ("unserve", serve_commands.unserve), ("status", serve_commands.status),
)
for _name, _command in COMMANDS:
    app.command(name=_name)(_command)


def main() -> None:
    # Ray reads its authentication mode when it is first imported, so this must come before any
    # command imports Ray: token authentication unless the user explicitly disabled it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from handoff.remote import job_address, refusal, run_as_job

    address = job_address(sys.argv[1:], os.environ)
    if address is not None:  # a dashboard URL: the command runs on the cluster as a Ray job
        from handoff.model_environment import forwarded, requirements_of

        refused = refusal(sys.argv[1:], typer.main.get_command(app))
        if refused is not None:  # a usage error is answered here, as without --address: nothing is submitted
            print(f"error: {refused}", file=sys.stderr)
            sys.exit(2)
        sys.exit(run_as_job(sys.argv[1:], address, pip=requirements_of(sys.argv[1:]), env=forwarded(os.environ)))
    app(prog_name="handoff")


if __name__ == "__main__":
    sys.exit(main())
