"""`handoff`: the command line. Each command parses, calls one function of a package, and prints."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Handoff: Ray Tune search → MLflow registry → versioned serving, with drift-triggered retraining.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # help texts name defaults and variables in brackets ("[env: HANDOFF_HOME]"): plain text, not markup
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

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


def print_result(payload, **dumps) -> None:
    """Print a command's `--json` result, then send anything printed after it (Ray's log
    deduplicator writes to stdout at exit) to stderr, so stdout stays one JSON document."""
    out.print_json(json.dumps(payload, **dumps))
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def _fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit; HANDOFF_DEBUG=1 adds the traceback of the error being handled."""
    if os.environ.get("HANDOFF_DEBUG") and sys.exc_info()[0] is not None:
        err.print_exception()
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    raise typer.Exit(code)


def layered_config(load, path: Path | None, default: Path, sets: list[str] | None):
    """A typed config from `path`, else `default` when that file exists, then the environment and
    `--set` flags (`load(path, sets)`, one of the packages' loaders), or a clear error naming the field."""
    from cluster.config_layers import ConfigError

    try:
        return load(path or (default if default.is_file() else None), list(sets or []))
    except ConfigError as exc:
        _fail(str(exc))


def _settings(home: Path | None, address: str | None = None, tracking_uri: str | None = None):
    from cluster.settings import Settings

    try:
        return Settings.resolve(home=home, address=address, tracking_uri=tracking_uri)
    except ValueError as exc:
        _fail(f"bad setting: {exc}")


def _tracking_uri(configured: str | None, settings, services) -> str:
    """The MLflow tracking URI this command uses, or a clear error (inside a Ray job: no fallback)."""
    from cluster.services import resolve_tracking_uri
    from cluster.settings import SettingsError

    try:
        return resolve_tracking_uri(configured, settings, services)
    except SettingsError as exc:
        _fail(str(exc))


def _user_errors() -> tuple[type[BaseException], ...]:
    from handoff.model_environment import RequirementsUnmet
    from training.config_loader import ConfigError
    from training.prepare import DataError
    from training.registry import RegistryError
    from training.reproduce import DataChanged

    return (ConfigError, DataError, RegistryError, DataChanged, RequirementsUnmet, FileNotFoundError, ValueError)


@app.command()
def up(home: HomeOpt = None,
       mlflow_port: Annotated[int, typer.Option(help="MLflow server port (127.0.0.1)")] = 5000,
       ray_port: Annotated[int, typer.Option(help="Ray GCS port (127.0.0.1)")] = 6379,
       dashboard_port: Annotated[int, typer.Option(help="Ray dashboard and jobs API port (127.0.0.1)")] = 8265,
       num_cpus: Annotated[int | None, typer.Option(help="CPUs the Ray head offers (default: all)")] = None,
       artifacts: Annotated[str | None, typer.Option(
           help="where MLflow keeps artifacts: a path or an object-store URI (s3://bucket/prefix, credentials "
                "and endpoint from the usual AWS variables); chosen at the first `up` of a home and kept "
                "(default HANDOFF_HOME/mlartifacts)")] = None) -> None:
    """Start the embedded default as services: a Ray head with token auth and an MLflow server.

    Both listen on 127.0.0.1 only. Later commands (`tune`, `models`, …) find them through
    HANDOFF_HOME/services.json; `handoff down` stops them.
    """
    from cluster.services import artifacts_destination
    from cluster.services import up as start
    from cluster.settings import SettingsError

    settings = _settings(home)
    with err.status("starting Ray head and MLflow server …"):
        try:
            state = start(settings, ray_port=ray_port, dashboard_port=dashboard_port,
                          mlflow_port=mlflow_port, num_cpus=num_cpus, artifacts=artifacts)
        except SettingsError as exc:
            _fail(str(exc))
        except (RuntimeError, TimeoutError) as exc:
            _fail(str(exc), 1)
    out.print(f"Ray head      {state.ray_address}  (dashboard {state.dashboard_url}, token auth on)")
    out.print(f"MLflow server {state.mlflow_uri}  (artifacts {artifacts_destination(settings, None)})")
    out.print(f"state         {settings.services_file}")


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop the Ray head and MLflow server that `handoff up` started (the stored data stays).

    What is served is stopped first, gracefully: each gateway finishes its requests in flight and
    writes its buffered live log."""
    from cluster.services import down as stop
    from cluster.services import read_services

    settings = _settings(home)
    services = read_services(settings)
    if services is not None:
        _stop_serving_first(services.ray_address)
    out.print("stopped" if stop(settings, warn=err.print) else f"nothing to stop: no {settings.services_file}")


@app.command()
def credentials(path: Annotated[Path, typer.Option(help="the file to write (what a `ray up` config's file_mounts "
                                                      "copy to every node)")] = Path("~/.handoff/mlflow-credentials.env"),
                username: Annotated[str, typer.Option(help="the MLflow user every process of the cluster acts as")] = "handoff",
                ) -> None:
    """Write a `ray up` cluster's MLflow credentials: a user and a random password, readable by you only.

    `ray up` copies the file to every node (file_mounts, as the Ray token) and each node's
    environment reads it, so every process's MLflow client sends them, and the head's MLflow server
    (`cluster.head_services mlflow --auth`) makes that user its admin. An existing file is kept:
    the server keeps the password it first started with (change it through MLflow's API first)."""
    import secrets

    import re

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", username):
        _fail(f"--username {username!r}: letters, digits and _ . @ - only (the file is sourced by a shell)")
    target = path.expanduser()
    if target.exists():
        _fail(f"{target} exists: kept (the cluster's MLflow server knows that password; change it through "
              "MLflow's update-password API, then edit the file)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"export MLFLOW_TRACKING_USERNAME={username}\nexport MLFLOW_TRACKING_PASSWORD={secrets.token_urlsafe(24)}\n")
    out.print(f"wrote {target} (mode 600): user {username}, a random password")


def _stop_serving_first(address: str) -> None:
    """Stop what is served on the head at `address` gracefully before its processes are stopped, so that
    each gateway writes its buffered live log (killed, it would lose the last seconds of rows). A head
    that does not answer is stopped all the same, with a warning."""
    from cluster.connect import connect_ray
    from cluster.head_services import port_open

    if not port_open(int(address.rsplit(":", 1)[-1])):
        err.print(f"the Ray head at {address} does not answer: stopping its processes (a gateway's buffered "
                  "live-log rows, if any, are lost)")
        return
    try:
        import ray

        from serving import stop_serving

        connect_ray(address)
        stopped = stop_serving()
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - the cluster is stopped either way
        err.print(f"could not stop serving gracefully ({type(exc).__name__}: {exc}); stopping the cluster anyway")
        return
    if stopped:
        out.print(f"stopped serving {', '.join(stopped)} (live logs written)")


def _run_tune(config: Path, overrides: list[str], home: Path | None, address: str | None,
              tracking_uri: str | None, resume: bool, experiment_path: str | None, as_json: bool,
              in_process: bool = False, argv: list[str] | None = None) -> None:
    """`handoff tune`; `argv`: its command line, for a job that runs it where the model's packages are
    (None: made from the arguments, as for the demo's search)."""
    from cluster.connect import ClusterUnavailable, connect_ray, ray_address
    from cluster.services import read_services, resolve_tracking_uri
    from handoff.model_environment import run_where_met
    from training.config_loader import load_config
    from training.pipeline import SearchFailed, SearchInterrupted, latest_experiment, tune_and_register

    settings = _settings(home, address, tracking_uri)
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
        resume_path = (experiment_path or latest_experiment(cfg, settings)) if (resume or experiment_path) else None
        err.log(f"config {config} (hash {cfg.config_hash()[:12]}), MLflow at {uri}")
        connect_ray(None if in_process else ray_address(settings, services))
        # Ray Tune and MLflow print banners to stdout; keep stdout for the result (--json parses it)
        with contextlib.redirect_stdout(sys.stderr):
            result = tune_and_register(cfg, settings, uri, registry_uri=cfg.mlflow.registry_uri,
                                       console=err, resume_path=resume_path,
                                       on_registered=_profiler(uri, cfg.mlflow.registry_uri))
    except _user_errors() as exc:
        _fail(str(exc))
    except SearchInterrupted as exc:
        _fail(str(exc), 130)
    except (SearchFailed, ClusterUnavailable) as exc:
        _fail(str(exc), 1)
    if as_json:
        print_result(result.to_dict())
        return
    _print_search_summary(result)


def _profiler(tracking_uri: str, registry_uri: str | None):
    """The registration hook: store the new version's reference profile (monitoring scores against it).
    A failure leaves the version registered, says so, and names the command that makes the profile."""
    def record(view) -> None:
        from handoff.monitor_commands import record_profile
        from training import Registry

        try:
            record_profile(Registry(tracking_uri, registry_uri), view)
            err.log(f"reference profile of {view.name} v{view.version} stored ({view.x_train.shape[0]} training rows)")
        except Exception as exc:  # noqa: BLE001 - the version is registered; its profile can be made later
            err.print(f"[yellow]warning:[/yellow] {view.name} v{view.version} has no reference profile ({exc}); "
                      f"make it with `handoff monitor profile {view.name} {view.version}`")
    return record


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


@app.command()
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
    _run_tune(config, sets, home, address, tracking_uri, resume, experiment_path, as_json, argv=sys.argv[1:])


@app.command()
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
    from handoff.demo_loop import print_summary, quiet_into, run_loop_demo

    settings = _settings(home)
    log_path = settings.home / "logs" / "demo.log"
    with quiet_into(log_path) as say:
        try:
            summary = run_loop_demo(settings, config, port, say)
        except Exception as exc:  # noqa: BLE001 - the terminal gets the reason, the log the traceback
            import traceback

            traceback.print_exc()
            say.print(f"[red]the demo stopped: {type(exc).__name__}: {exc}[/red] (details in {log_path})")
            raise typer.Exit(1) from None
        print_summary(say, summary, log_path, port)
    if summary["outcome"] != "promoted" or summary["failed_requests"]:
        raise typer.Exit(1)


def _registry(home: Path | None, tracking_uri: str | None):
    from cluster.services import read_services
    from training.registry import Registry

    settings = _settings(home, tracking_uri=tracking_uri)
    return settings, Registry(_tracking_uri(None, settings, read_services(settings)))


@app.command()
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
    except _user_errors() as exc:
        _fail(str(exc))
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


@app.command()
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
    from training import recorded_requirements
    from training.registry import Registry
    from training.reproduce import reproduce as run

    settings = _settings(home, address, tracking_uri)
    services = read_services(settings)
    registry = Registry(_tracking_uri(None, settings, services))
    try:
        code = run_where_met(recorded_requirements(registry.version(name, version).lineage), services,
                             f"{name} v{version}")
        if code is not None:
            raise typer.Exit(code)
        connect_ray(ray_address(settings, services))
        with err.status(f"retraining {name}/{version} …"), contextlib.redirect_stdout(sys.stderr):
            result = run(name, version, settings, registry)
    except _user_errors() as exc:
        _fail(str(exc))
    if as_json:
        print_result(result.to_dict())
    else:
        out.print(f"{name}/{version}: retrained {result.epochs} epoch(s) on the CPU")
        out.print(f"  registered weights sha256 {result.registered_weights_sha256}")
        out.print(f"  reproduced weights sha256 {result.reproduced_weights_sha256}")
        out.print("[bold green]bit-identical[/bold green]" if result.identical else "[bold red]DIFFERENT[/bold red]")
    if not result.identical:
        raise typer.Exit(1)


from handoff import feedback_command, monitor_commands, predict_command, retrain_command, serve_commands  # noqa: E402,F401 - register their commands on `app`


def main() -> None:
    # Ray reads its authentication mode when it is first imported, so this must come before any
    # command imports Ray: token authentication unless the user explicitly disabled it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from handoff.remote import job_address, run_as_job

    address = job_address(sys.argv[1:], os.environ)
    if address is not None:  # a dashboard URL: the command runs on the cluster as a Ray job
        from handoff.model_environment import requirements_of

        sys.exit(run_as_job(sys.argv[1:], address, pip=requirements_of(sys.argv[1:])))
    app(prog_name="handoff")


if __name__ == "__main__":
    sys.exit(main())
