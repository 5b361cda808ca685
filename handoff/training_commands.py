"""`handoff tune/models/reproduce`: search and register a model, list its versions, retrain one bit for bit.

`tune` runs a Ray Tune search and registers the best trial (`training.tune_and_register`), with the
new version's reference profile; `models` prints what the registry holds of each version (metrics,
lineage, environment); `reproduce` retrains a version from its recorded config and data. A model
whose code needs packages this process lacks runs where they are (handoff/model_environment.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from handoff.common import command_settings, command_tracking_uri, err, fail, out, print_result, user_errors
from handoff.monitor_commands import profile_hook
from handoff.options import DEFAULT_CONFIG, AddressOpt, HomeOpt, JsonOpt, TrackingOpt


def run_tune(config: Path, overrides: list[str], home: Path | None, address: str | None,
             tracking_uri: str | None, resume: bool, experiment_path: str | None, as_json: bool,
             in_process: bool = False, argv: list[str] | None = None) -> None:
    """`handoff tune`; `argv`: its command line, for a job that runs it where the model's packages are
    (None: made from the arguments, as for the demo's search)."""
    from cluster.connect import ClusterUnavailable, connect_ray, ray_address
    from cluster.services import read_services, resolve_tracking_uri
    from handoff.model_environment import run_where_met
    from training import (SearchFailed, SearchInterrupted, check_model, latest_experiment, load_config,
                          tune_and_register)

    settings = command_settings(home, address, tracking_uri)
    try:
        cfg = load_config(config, overrides)
        services = None if in_process else read_services(settings)
        uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, settings, services)
        if not in_process:  # the model's code needs packages this process lacks: the search runs where they are
            argv = argv or ["tune", str(config), *[a for o in overrides for a in ("--set", o)],
                            *(["--home", str(home)] if home else []), *(["--json"] if as_json else [])]
            code = run_where_met(cfg.model.requirements, services, f"the model {cfg.name!r}", argv)
            if code is not None:
                raise typer.Exit(code)
        check_model(cfg)  # the factory, its code and parameters, before Ray starts (the data checks the rest)
        resume_path = (experiment_path or latest_experiment(cfg, settings)) if (resume or experiment_path) else None
        err.log(f"config {config} (hash {cfg.config_hash()[:12]}), MLflow at {uri}")
        connect_ray(None if in_process else ray_address(settings, services))
        # Ray Tune and MLflow print banners to stdout; keep stdout for the result (--json parses it)
        with contextlib.redirect_stdout(sys.stderr):
            result = tune_and_register(cfg, settings, uri, registry_uri=cfg.mlflow.registry_uri,
                                       console=err, resume_path=resume_path,
                                       on_registered=profile_hook(uri, cfg.mlflow.registry_uri))
    except user_errors() as exc:
        fail(str(exc))
    except SearchInterrupted as exc:
        fail(str(exc), 130)
    except (SearchFailed, ClusterUnavailable) as exc:
        fail(str(exc), 1)
    if as_json:
        print_result(result.to_dict())
        return
    _print_search_summary(result)


def _split_figures(m: dict, split: str) -> str:
    """One split's figures as `handoff tune` prints them: a classifier's log loss and accuracy, a
    regression's RMSE, MAE and R² (in the target's units)."""
    if f"{split}_rmse" in m:
        return (f"RMSE {m[f'{split}_rmse']:.5g}, MAE {m[f'{split}_mae']:.5g}, R² {m[f'{split}_r2']:.4f} "
                f"(loss {m[f'{split}_loss']:.5f})")
    return f"log loss {m[f'{split}_loss']:.5f}, accuracy {m[f'{split}_accuracy']:.4%}"


def _print_search_summary(result) -> None:
    table = Table(title=f"search {Path(result.experiment_path).name}: {len(result.trials)} trial(s) "
                        f"in {result.search_wall_seconds:.1f}s")
    metric = next(k for k in result.trials[0] if k not in {"trial_id", "status", "epochs", "train_seconds", "config"})
    for col in ("trial", "status", "epochs", metric, "config"):
        table.add_column(col)
    for t in sorted(result.trials, key=lambda t: (t[metric] is None, t[metric] or 0)):
        mark = " ★" if t["trial_id"] == result.trial_id else ""
        value = f"{t[metric]:.5f}" if isinstance(t[metric], float) else "-"
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["config"].items())
        table.add_row(t["trial_id"] + mark, t["status"], str(t["epochs"]), value, cfg)
    out.print(table)
    m = result.metrics
    out.print(f"[bold green]registered[/bold green] {result.name} version {result.version} "
              f"(alias [bold]{result.alias}[/bold]) from trial {result.trial_id}, epoch {result.epochs_trained}")
    for split, name in (("val", "validation:"), ("test", "test:      ")):
        out.print(f"  {name} {_split_figures(m, split)}")
    out.print(f"  weights sha256 {result.weights_sha256[:16]}…  MLflow run {result.search_run_id}")


def tune(
    config: Annotated[Path, typer.Argument(help="experiment YAML (see configs/shuttle.yaml)")] = DEFAULT_CONFIG,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a field: --set search.num_samples=4 "
                                                        "(repeatable; env HANDOFF_SEARCH__NUM_SAMPLES=4 works too)")] = None,
    num_samples: Annotated[int | None, typer.Option(help="shortcut for --set search.num_samples=N")] = None,
    epochs: Annotated[int | None, typer.Option(help="shortcut for --set search.epochs=N")] = None,
    scheduler: Annotated[str | None, typer.Option(help="shortcut for --set search.scheduler.type=asha|fifo")] = None,
    seed: Annotated[int | None, typer.Option(help="shortcut for --set seed=N")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="resume this model's latest interrupted search")] = False,
    experiment_path: Annotated[str | None, typer.Option(help="resume the search stored at this path")] = None,
    home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False,
) -> None:
    """Search hyperparameters with Ray Tune, then register the best model in MLflow.

    Every trial is an MLflow run (params, per-epoch metrics) under one parent run. The best
    trial's best checkpoint becomes a new version of the registered model named in the config:
    alias `champion` for the first version, `challenger` after that. Lineage (git commit, data
    fingerprint, config hash, seed, package versions, Tune trial) is tagged on the version.
    """
    sets = list(overrides or [])
    for key, value in (("search.num_samples", num_samples), ("search.epochs", epochs),
                       ("search.scheduler.type", scheduler), ("seed", seed)):
        if value is not None:
            sets.append(f"{key}={value}")
    run_tune(config, sets, home, address, tracking_uri, resume, experiment_path, as_json, argv=sys.argv[1:])


def _registry(home: Path | None, tracking_uri: str | None):
    from cluster.services import read_services
    from training import Registry

    settings = command_settings(home, tracking_uri=tracking_uri)
    return settings, Registry(command_tracking_uri(None, settings, read_services(settings)))


def models(name: Annotated[str, typer.Argument(help="registered model name")],
           home: HomeOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False,
           lineage: Annotated[bool, typer.Option(help="show every lineage tag")] = True) -> None:
    """Show a registered model's versions: aliases, metrics, lineage and environment.

    Each version's environment: the packages its model needs beyond Handoff (those its replicas
    install here), and whether the core versions it was trained with (Python, torch, numpy, MLflow's
    major version, Handoff's answer code) match this cluster's, naming each difference."""
    from training import describe, in_words, installed_versions, this_environment

    _, registry = _registry(home, tracking_uri)
    try:
        versions = registry.versions(name)
    except user_errors() as exc:
        fail(str(exc))
    here, installed = this_environment(), installed_versions()  # this process runs in the cluster's environment
    environments = {v.version: describe(v.lineage, here, installed) for v in versions}
    if as_json:
        print_result({"name": name, "aliases": registry.aliases(name), "environment": here,
                      "versions": [{**v.to_dict(), "environment": environments[v.version]} for v in versions]})
        return
    table = Table(title=f"{name}  ({registry.tracking_uri})", box=box.SIMPLE_HEAD, pad_edge=False)
    regression = any(v.lineage.get("task") == "regression" for v in versions)
    figures = (("val_rmse", ".5g"), ("val_mae", ".5g"), ("val_r2", ".4f"), ("test_rmse", ".5g"), ("test_mae", ".5g"),
               ("test_r2", ".4f")) if regression else (("val_loss", ".5f"), ("val_accuracy", ".3%"),
                                                      ("test_loss", ".5f"), ("test_accuracy", ".3%"))
    heads = {"loss": "loss", "accuracy": "acc", "rmse": "RMSE", "mae": "MAE", "r2": "R²"}
    for col in ("ver", "aliases", "created", *(f"{k.split('_')[0]} {heads[k.split('_')[1]]}" for k, _ in figures),
                "data"):
        table.add_column(col, no_wrap=True)
    for v in versions:
        m, lin = v.metrics, v.lineage
        table.add_row(str(v.version), ", ".join(v.aliases) or "-", v.created[5:10],
                      *(format(m[k], p) if k in m else "-" for k, p in figures), lin.get("data_fingerprint", "?")[:8])
    out.print(table)
    for v in versions:
        out.print(f"  v{v.version} caused by {_cause(v.lineage)}; columns: {_columns(v.lineage)}", highlight=False)
        out.print(f"      environment: {in_words(environments[v.version])}", highlight=False)
    if lineage:
        for v in versions:
            out.print(f"\n[bold]{name} v{v.version}[/bold] lineage  (created {v.created}, run {v.run_id})")
            for key in sorted(v.lineage):
                out.print(f"  {key:22} {v.lineage[key]}", highlight=False)


def _columns(lineage: dict) -> str:
    """Each feature's kind as recorded with the version (`handoff.columns`); older versions took numbers only."""
    kinds = json.loads(lineage["columns"]) if lineage.get("columns") else None
    if kinds is None:
        return "numeric only (registered before column kinds were recorded)"
    by_kind = {kind: [n for n, k in kinds.items() if k == kind] for kind in ("numeric", "categorical")}
    return "; ".join(f"{kind} {', '.join(names)}" for kind, names in by_kind.items() if names)


def _cause(lineage: dict) -> str:
    """What made a version: `handoff tune` by hand, or a loop event (with the gate's verdict)."""
    if "parent_event" not in lineage:
        return "handoff tune"
    gate = lineage.get("gate", "gate pending")
    return f"{lineage['parent_event']} (from v{lineage.get('retrained_from', '?')}, gate {gate})"


def reproduce(name: Annotated[str, typer.Argument(help="registered model name")],
              version: Annotated[int, typer.Argument(help="version to retrain")],
              home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
              as_json: JsonOpt = False) -> None:
    """Retrain a version from its recorded config, seed and data, and compare weight hashes.

    Refuses when the data's fingerprint no longer matches the recorded one. On the CPU the
    retrained weights are bit-identical to the registered ones; exit code 1 when they are not.
    """
    from cluster.connect import connect_ray, ray_address
    from cluster.services import read_services
    from handoff.model_environment import run_where_met
    from training import Registry, recorded_requirements
    from training import reproduce as run

    settings = command_settings(home, address, tracking_uri)
    services = read_services(settings)
    registry = Registry(command_tracking_uri(None, settings, services))
    try:
        code = run_where_met(recorded_requirements(registry.version(name, version).lineage), services,
                             f"{name} v{version}")
        if code is not None:
            raise typer.Exit(code)
        connect_ray(ray_address(settings, services))
        with err.status(f"retraining {name}/{version} …"), contextlib.redirect_stdout(sys.stderr):
            result = run(name, version, settings, registry)
    except user_errors() as exc:
        fail(str(exc))
    if as_json:
        print_result(result.to_dict())
    else:
        out.print(f"{name}/{version}: retrained {result.epochs} epoch(s) on the CPU")
        out.print(f"  registered weights sha256 {result.registered_weights_sha256}")
        out.print(f"  reproduced weights sha256 {result.reproduced_weights_sha256}")
        out.print("[bold green]bit-identical[/bold green]" if result.identical else "[bold red]DIFFERENT[/bold red]")
    if not result.identical:
        raise typer.Exit(1)

