"""The options and arguments several `handoff` commands take, written once: the same flag reads the
same everywhere (its name, its help text, its environment variable and its default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_CONFIG = Path("configs/shuttle.yaml")
DEFAULT_SERVING_CONFIG = Path("configs/serving.yaml")

HomeOpt = Annotated[Path | None, typer.Option("--home", help="state directory [env: HANDOFF_HOME; default ./.handoff]")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster: a jobs API URL (http://HEAD:8265, "
                                                "e.g. through `ray dashboard cluster.yaml`) runs this command there as a "
                                                "Ray job; HOST:6379 joins it from here [env: HANDOFF_ADDRESS; default: "
                                                "the head `handoff up` started, else a local Ray in-process]")]
TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI [env: "
                                                 "HANDOFF_MLFLOW__TRACKING_URI; default: `handoff up`'s server, "
                                                 "else HANDOFF_HOME/mlflow.db]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]

# the monitoring config, which `monitor`, `events`, `report`, `serve` and `retrain` read
MonitorSetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a monitoring field: "
                                                         "--set window_rows=2000 (env HANDOFF_MONITORING__WINDOW_ROWS)")]
MonitoringConfigOpt = Annotated[Path | None, typer.Option("--monitoring-config", help="monitoring YAML "
                                                          "(default configs/monitoring.yaml if present)")]
