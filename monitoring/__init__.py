"""Monitoring: drift of a served model's live data, its live accuracy, and the closed loop's decisions.

One detached Ray actor per served model reads the live log the gateway writes, cuts it into
windows, scores each against the version's reference profile, declares drift (a pure decision),
joins the labels sent back and runs the closed loop, which acts on the world only through its port
(`LoopPort`, composed in handoff/loop_port.py): monitoring never imports serving.

The public API (what the CLI and the loop's port use) is exported here, imported on first use so
that importing the package starts nothing and pulls in neither Ray nor matplotlib:

- `start`, `stop`, `find`: a model's monitor actor on the connected cluster; `status_of`: its
  status as its state says.
- `MonitoringConfig`, `load_monitoring_config`: the typed monitoring config (file, environment, flags).
- `StateStore`: the monitor's persisted state and event log (`handoff events`); `StateCorrupt`: a
  saved state that does not parse, naming its file; `EVENT_KINDS` (the monitor's and the loop's):
  every kind of event the log holds.
- `profile_from_training`, `save_profile`: a version's reference profile, stored with the version;
  `calibration`: a classifier's calibration (temperature, ECE) on its validation split.
- `LoopPort`: what the loop needs done; `Candidate`, `VersionFigures`: what the port answers with;
  `stage_in_words`: the loop's stage as the CLI prints it.
- `LabelledReader`, `labelled_rows`: answered live rows joined to their labels (the retraining's data,
  the canary's evidence).
- `write_report`: the report of a drift event (a PNG and a self-contained HTML page).
"""

from __future__ import annotations

from cluster.lazy import lazy_exports

#: public name → the module that defines it
_EXPORTS = {
    **dict.fromkeys(["start", "stop", "find", "status_of"], "monitoring.monitor"),
    **dict.fromkeys(["MonitoringConfig", "load_monitoring_config"], "monitoring.config"),
    **dict.fromkeys(["StateStore", "StateCorrupt"], "monitoring.state_store"),
    **dict.fromkeys(["EVENT_KINDS", "MONITOR_EVENT_KINDS", "LOOP_EVENT_KINDS"], "monitoring.event_kinds"),
    **dict.fromkeys(["profile_from_training", "save_profile"], "monitoring.profiles"),
    "calibration": "monitoring.estimation",
    "LoopPort": "monitoring.loop_runner",
    **dict.fromkeys(["Candidate", "VersionFigures", "stage_in_words"], "monitoring.loop"),
    **dict.fromkeys(["LabelledReader", "labelled_rows"], "monitoring.labelled"),
    "write_report": "monitoring.report",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
