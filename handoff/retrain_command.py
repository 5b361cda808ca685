"""`handoff retrain NAME --event EVENT`: the closed loop's retraining job (the monitor submits it).

Takes the most recent labelled live rows (the monitor's reader), holds a seeded share out for the
gate, trains the champion's recorded config (its hyperparameters, or a short search) on the
champion's own training split plus the rest of those rows (weighted), registers the new version
with its cause in its lineage (the event, the champion it was retrained from) and its reference
profile, then runs the offline gate against the champion and records the verdict and both scores
as tags of the new version. Exit 0 when a version is registered (whatever the verdict); the
mixed data is kept under HANDOFF_HOME/retrain/ so `handoff reproduce` can train it again.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from handoff.common import command_settings, command_tracking_uri, err, fail, out, print_result, user_errors
from handoff.monitor_commands import monitoring_config, profile_hook
from handoff.options import HomeOpt, JsonOpt, MonitoringConfigOpt, MonitorSetOpt, TrackingOpt

MIN_RECENT_ROWS = 20


def _score(model, rows, y) -> float:
    """What the gate compares, on raw rows prepared by the version's own preparation (a candidate's
    vocabulary may differ from its champion's): accuracy, or a regression model's RMSE."""
    from training import predicted_class, predicted_values

    if not len(y):
        return float("nan")
    outputs = model.outputs_of_rows(rows)
    if model.regression:
        return float(np.sqrt(((predicted_values(outputs) - y) ** 2).mean()))
    return float((predicted_class(outputs) == y).mean())


def retrain(name: Annotated[str, typer.Argument(help="registered model name")],
            event: Annotated[str, typer.Option(help="the event that calls for it (its id goes into the lineage)")],
            attempt: Annotated[int, typer.Option(help="which try of this event (the data directory's name)")] = 0,
            live_root: Annotated[str | None, typer.Option(help="the live log (default HANDOFF_HOME/live)")] = None,
            home: HomeOpt = None, tracking_uri: TrackingOpt = None,
            monitoring_config_path: MonitoringConfigOpt = None, overrides: MonitorSetOpt = None,
            as_json: JsonOpt = False) -> None:
    """Retrain NAME's champion on recent labelled live rows and gate the new version (a loop step).

    The monitor submits this as a Ray job when drift is declared; run by hand it does the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.connect import ClusterUnavailable, connect_ray, ray_address
    from cluster.storage import absolute, filesystem, join
    from cluster.services import read_services
    from monitoring import labelled_rows
    from training import (CHAMPION, Registry, RegistryError, SearchFailed, gate_verdict, load_data, load_version,
                          recorded_config, retrain_config, retrain_frame, split_holdout, tune_and_register, view_of)

    loop = monitoring_config(monitoring_config_path, overrides).loop
    settings = command_settings(home, tracking_uri=tracking_uri)
    services = read_services(settings)
    uri = command_tracking_uri(None, settings, services)
    registry = Registry(uri)
    try:
        champion = registry.aliases(name).get(CHAMPION)
    except RegistryError as exc:
        fail(str(exc))
    if champion is None:
        fail(f"{name} has no champion to retrain")
    root = live_root or str(settings.live_log_dir)
    regression = registry.version(name, champion).lineage.get("task") == "regression"
    recent = labelled_rows(root, name, last=loop.data.recent_rows, regression=regression)
    if len(recent) < MIN_RECENT_ROWS:
        fail(f"{name} has {len(recent)} labelled live row(s) under {root}; retraining needs at least "
             f"{MIN_RECENT_ROWS} (send labels: POST /v2/models/{name}/feedback or `handoff feedback`)")
    info = registry.version(name, champion)
    champion_cfg = recorded_config(registry, info.run_id)
    # connected before the first read: the champion's data is read through Ray Data, on the cluster
    # this command is meant for (Ray's auto-init would start a default local one instead, and the
    # search would then run there too)
    try:
        connect_ray(ray_address(settings, services))
    except ClusterUnavailable as exc:
        fail(str(exc), 1)
    try:
        original = load_data(champion_cfg, settings)
    except user_errors() as exc:  # the champion's data moved or changed: named, not a traceback
        fail(f"cannot read {name} v{champion}'s training data: {exc}")
    if recent.features != list(original.features):
        fail(f"the live log's features {recent.features} are not {name}'s {list(original.features)}")
    train, held = split_holdout(len(recent), loop.data.holdout_fraction, seed=champion_cfg.seed + attempt)
    frame = retrain_frame(original, recent.frame.iloc[train], recent.y[train], loop.data.recent_weight)
    data_path = join(join(join(absolute(loop.data.root or str(Path(settings.home) / "retrain")), name),
                          f"{event}-{attempt}"), "data.parquet")
    fs, inside = filesystem(data_path)
    fs.create_dir(inside.rsplit("/", 1)[0], recursive=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), inside, filesystem=fs)
    err.log(f"retraining {name} v{champion} for {event}: {len(original.x_train)} original training row(s) + "
            f"{len(train)} recent labelled row(s) ×{loop.data.recent_weight}; {len(held)} held out for the gate")
    cfg = retrain_config(champion_cfg, str(data_path), json.loads(info.lineage.get("trial_params", "{}")),
                         loop.data.search_samples)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = tune_and_register(cfg, settings, uri, registry_uri=cfg.mlflow.registry_uri, console=err,
                                       extra_tags={"parent_event": event, "retrained_from": champion,
                                                   "retrain_attempt": attempt,
                                                   "profile_source": f"{len(train)} recent labelled live rows"})
    except (SearchFailed, *user_errors()) as exc:  # the model's own code is checked before the search too
        fail(str(exc), 1)
    candidate_model, champion_model = load_version(name, result.version, uri), load_version(name, champion, uri)
    # The new version's reference is the data it was adapted to (the recent rows it trained on), not
    # the mix, which the original rows dominate: production now looks like the recent rows, and a
    # reference of the old data would declare drift again at once.
    recent_train, recent_held = recent.frame.iloc[train], recent.frame.iloc[held]
    profile_hook(uri, cfg.mlflow.registry_uri)(view_of(
        name, result.version, recent_train, candidate_model.preparation, candidate_model.outputs_of_rows(recent_train),
        original.classes, original.fingerprint, champion_cfg.seed, recent.y[held],
        candidate_model.outputs_of_rows(recent_held), original.task))
    scores = {"recent": {"candidate": _score(candidate_model, recent_held, recent.y[held]),
                         "champion": _score(champion_model, recent_held, recent.y[held]), "rows": int(len(held))},
              "original": {"candidate": _score(candidate_model, original.raw_test, original.y_test),
                           "champion": _score(champion_model, original.raw_test, original.y_test),
                           "rows": int(len(original.y_test))},
              "figure": "rmse" if regression else "accuracy"}
    passed, reason = gate_verdict(scores, loop.gate.min_gain_recent, loop.gate.max_loss_original, original.task)
    registry.set_version_tags(name, result.version, {"gate": "passed" if passed else "failed", "gate_reason": reason,
                                                     "gate_scores": json.dumps(scores, sort_keys=True)})
    summary = {"name": name, "version": result.version, "champion": champion, "event": event, "attempt": attempt,
               "gate": {"passed": passed, "reason": reason, "scores": scores}, "data": str(data_path),
               "recent_rows": int(len(recent)), "held_out": int(len(held)), "train_rows": int(len(frame))}
    if as_json:
        print_result(summary)
    else:
        out.print(f"{name} v{result.version} registered (from v{champion}, for {event}); gate "
                  f"{'[green]passed[/green]' if passed else '[red]failed[/red]'}: {reason}")
