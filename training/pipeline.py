"""The training half's main job: data → Tune search → best model → MLflow registry with lineage.

Order matters for "nothing is lost or corrupted": the data is read and validated before any MLflow
run exists, and a version is registered only after the search produced a usable best trial.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
from mlflow.tracking import MlflowClient
from rich.console import Console

from cluster.settings import Settings
from cluster.source import source_state
from training import lineage
from training.config import ExperimentConfig
from training.contract import pyfunc_answer
from training.views import TrainingView, view_of
from training.datasets import BUILTIN_SCHEME, read_frame, resolve_uri
from training.environment import answer_code
from training.prepare import DataError, PreparedData, prepare
from training.progress import SearchProgress
from training.registry import Registry
from training.search import SearchOutcome, resume_search, run_search
from cluster.storage import filesystem, join
from training.tracking import ensure_experiment, log_model, model_spec, start_search_run
from training.train_loop import evaluate, new_model, predict_outputs, split_metrics, to_tensors, weights_hash
from training.trial import check_model, load_state, trial_spec

MANIFEST = "handoff-search.json"
REPO_DIR = Path(__file__).resolve().parent.parent


class SearchFailed(RuntimeError):
    """No trial produced a usable result; nothing was registered."""


class SearchInterrupted(RuntimeError):
    """The search stopped before every trial ended (Ctrl-C); nothing was registered, it can resume."""


@dataclass
class RegisteredVersion:
    name: str
    version: int
    alias: str
    tracking_uri: str
    search_run_id: str
    experiment_path: str
    trial_id: str
    trial_params: dict
    epochs_trained: int
    weights_sha256: str
    metrics: dict[str, float]
    search_wall_seconds: float
    trials: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def describe_columns(data: PreparedData) -> str:
    """Each feature's kind as `handoff tune` prints it: `tenure numeric (12 missing), contract
    categorical (3 values), …`."""
    parts = []
    for column in data.preparation.columns:
        text = f"{column.name} {column.kind}"
        notes = [f"{len(column.vocabulary)} values"] if column.kind == "categorical" else []
        if (data.imputed or {}).get(column.name):
            notes.append(f"{data.imputed[column.name]} missing")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def load_data(cfg: ExperimentConfig, settings: Settings) -> PreparedData:
    """Read the configured dataset through Ray Data and prepare the seeded split."""
    uri = resolve_uri(cfg.dataset.uri, settings.datasets_dir)
    # a built-in dataset is materialised on this node's disk: read it here, not on other nodes
    local_only = cfg.dataset.uri.startswith(BUILTIN_SCHEME)
    data = prepare(read_frame(uri, on_this_node=local_only), cfg.dataset, cfg.seed, cfg.task)
    try:  # a task inferred from the data: the metric and loss must fit it too
        cfg.search.objective(data.task)
        cfg.check_loss(data.task)
    except ValueError as exc:
        raise DataError(f"label {cfg.dataset.label!r} is a {data.task} target: {exc}") from None
    return data


def storage_path(cfg: ExperimentConfig, settings: Settings) -> str:
    """Where Tune keeps this search's results and checkpoints (refused inside a job's working directory)."""
    path = cfg.storage_path or str(settings.tune_dir)
    settings.refuse_in_working_dir("Tune's storage path (storage_path, HANDOFF_STORAGE_PATH)", path)
    return path


def latest_experiment(cfg: ExperimentConfig, settings: Settings) -> str:
    """The newest search of this config's model under the storage path (for `--resume` without a path)."""
    root = storage_path(cfg, settings)
    fs, base = filesystem(root)
    selector = pafs.FileSelector(base, allow_not_found=True)
    names = sorted(i.base_name for i in fs.get_file_info(selector)
                   if i.type == pafs.FileType.Directory and i.base_name.startswith(f"{cfg.name}-"))
    if not names:
        raise FileNotFoundError(f"no earlier search of {cfg.name!r} under {root} to resume")
    return join(root, names[-1])


def _write_manifest(experiment_path: str, manifest: dict) -> None:
    fs, path = filesystem(experiment_path)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, indent=2).encode())


def _read_manifest(experiment_path: str) -> dict:
    fs, path = filesystem(experiment_path)
    try:
        with fs.open_input_stream(f"{path}/{MANIFEST}") as src:
            return json.loads(src.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{experiment_path} is not a Handoff search (no {MANIFEST})") from None


def tune_and_register(cfg: ExperimentConfig, settings: Settings, tracking_uri: str, *,
                      registry_uri: str | None = None, console: Console | None = None,
                      resume_path: str | None = None, data: PreparedData | None = None,
                      on_registered: Callable[[TrainingView], None] | None = None,
                      extra_tags: dict[str, str] | None = None) -> RegisteredVersion:
    """Run (or resume) the search, then log and register its best model; return what was registered.
    `on_registered` hears what the new version was trained on (monitoring profiles it from that);
    `extra_tags` join the version's lineage tags at registration (a retraining's cause)."""
    console = console or Console(stderr=True)
    data = data if data is not None else load_data(cfg, settings)
    check_model(cfg, data)  # before any run or trial; it also makes the code importable for registration
    console.log(f"data: {data.sizes} rows, fingerprint {data.fingerprint[:12]}, task {data.task}")
    console.log(f"columns: {describe_columns(data)}")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    artifact_root = settings.artifacts_dir.as_uri() if tracking_uri.startswith("sqlite:") else None
    progress = SearchProgress(console, cfg.search.num_samples, cfg.search.epochs, *cfg.search.objective(data.task))
    if resume_path is None:
        run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment_id = ensure_experiment(client, cfg.experiment_name, artifact_root)
        parent = start_search_run(client, experiment_id, cfg, run_name, data.fingerprint, data.sizes,
                                  data.preparation.kinds, data.imputed)
        experiment_path = join(storage_path(cfg, settings), run_name)
        _write_manifest(experiment_path, {"search_run_id": parent, "config_hash": cfg.config_hash(),
                                          "data_fingerprint": data.fingerprint, "model": cfg.name})
        console.log(f"search {run_name}: {cfg.search.num_samples} trial(s), {cfg.search.scheduler.type}, "
                    f"up to {cfg.search.epochs} epoch(s) each; MLflow run {parent}")
        run = lambda: run_search(cfg, data, storage_path=storage_path(cfg, settings),  # noqa: E731
                                 run_name=run_name, tracking_uri=tracking_uri, parent_run_id=parent,
                                 callbacks=[progress])
    else:
        manifest = _read_manifest(resume_path)
        if manifest["config_hash"] != cfg.config_hash():
            raise ValueError(f"the config differs from the one the search at {resume_path} started with; "
                             "resume with the same config and overrides")
        if manifest["data_fingerprint"] != data.fingerprint:
            raise ValueError(f"the data changed since the search at {resume_path} started "
                             f"(fingerprint {data.fingerprint[:12]} vs {manifest['data_fingerprint'][:12]})")
        parent = manifest["search_run_id"]
        console.log(f"resuming search at {resume_path} (MLflow run {parent})")
        run = lambda: resume_search(cfg, data, resume_path, callbacks=[progress])  # noqa: E731
    try:
        outcome = run()
        registered = _register_best(cfg, data, outcome, client, tracking_uri, registry_uri, parent, on_registered,
                                    extra_tags)
    except BaseException:
        client.set_terminated(parent, status="FAILED")
        raise
    client.set_terminated(parent, status="FINISHED")
    return registered


def trial_error(error: BaseException) -> str:
    """Why a trial failed, in one line: `Type: message` of the exception its code raised (Ray wraps it
    in a `RayTaskError` whose own first line names only the worker process that ran it)."""
    cause = getattr(error, "cause", None) or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _trials_summary(outcome: SearchOutcome, metric: str) -> list[dict]:
    rows = []
    for r in outcome.results:
        m = r.metrics or {}
        rows.append({"trial_id": m.get("trial_id", "?"), "status": "error" if r.error else "ok",
                     "epochs": int(m.get("epoch", 0)), metric: m.get(metric),
                     "train_seconds": m.get("train_seconds"), "node_ip": m.get("node_ip"),
                     "node_id": m.get("node_id"), "config": {k: v for k, v in (r.config or {}).items()}})
    return rows


def _register_best(cfg: ExperimentConfig, data: PreparedData, outcome: SearchOutcome, client: MlflowClient,
                   tracking_uri: str, registry_uri: str | None, parent: str,
                   on_registered: Callable[[TrainingView], None] | None = None,
                   extra_tags: dict[str, str] | None = None) -> RegisteredVersion:
    metric, mode = cfg.search.objective(data.task)
    unfinished = outcome.unfinished_trials()
    if unfinished:
        raise SearchInterrupted(
            f"search interrupted with {unfinished} unfinished trial(s); nothing registered. Continue it with `handoff tune CONFIG --resume` "
            f"(or --experiment-path {outcome.experiment_path})")
    ok = [r for r in outcome.results if r.error is None and r.metrics]
    if not ok:
        errors = "; ".join(trial_error(r.error) for r in outcome.results if r.error)[:2000]
        raise SearchFailed(f"no trial finished successfully; nothing registered. Errors: {errors}")
    try:
        best = outcome.results.get_best_result(metric=metric, mode=mode, scope="all")
    except RuntimeError:  # Tune's answer when every trial's figure is NaN or infinite
        raise SearchFailed(f"no trial reported a finite {metric} (every value NaN or infinite: the networks "
                           "diverged; a lower learning rate usually helps); nothing registered") from None
    checkpoint = best.get_best_checkpoint(metric=metric, mode=mode)
    if checkpoint is None:
        raise SearchFailed(f"the best trial {best.metrics.get('trial_id')} left no checkpoint; nothing registered")
    state = load_state(checkpoint)
    spec = trial_spec(cfg, best.config)
    model = new_model(spec, data)
    model.load_state_dict(state["model"])
    tensors = to_tensors(data, "cpu")
    metrics = {**split_metrics(evaluate(model, tensors["x_val"], tensors["y_val"], data.task, spec.loss), "val"),
               **split_metrics(evaluate(model, tensors["x_test"], tensors["y_test"], data.task, spec.loss), "test"),
               "search_wall_seconds": outcome.wall_seconds}
    not_numbers = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if not_numbers:  # a network that diverged (or answers NaN) would answer nothing usable
        raise SearchFailed(f"the best trial {best.metrics.get('trial_id')}'s model gives {', '.join(not_numbers)} "
                           "of NaN or infinity (its answers are not numbers); nothing registered")
    for key, value in metrics.items():
        client.log_metric(parent, key, value)
    # the raw rows a user sends: the signature holds the columns' real types (string, boolean, long, double)
    example = data.raw_test.head(5)
    outputs = predict_outputs(model, data.preparation.transform(example).x, data.task)
    example_output = pyfunc_answer(outputs, data.classes, data.task)
    model_uri = log_model(parent, tracking_uri, model.state_dict(),
                          model_spec(spec.family, spec.model_params, data.features, data.classes, data.preparation,
                                     data.task, spec.loss),
                          example, example_output, cfg.model.code_paths, cfg.model.requirements)
    digest = weights_hash(model.state_dict())
    trial_id = str(best.metrics.get("trial_id"))
    commit, dirty = source_state(REPO_DIR)
    tags = lineage.lineage_tags(
        commit=commit, dirty=dirty, data_fingerprint=data.fingerprint, data_uri=cfg.dataset.uri,
        config_hash=cfg.config_hash(), seed=cfg.seed, versions=lineage.package_versions(),
        experiment_path=outcome.experiment_path, trial_id=trial_id,
        trial_params=json.dumps(best.config, sort_keys=True), epochs_trained=int(state["epoch"]),
        weights_sha256=digest, threads=spec.threads, device=str(best.metrics.get("device", "cpu")),
        search_run_id=parent, classes=data.classes, columns=data.preparation.kinds, task=data.task,
        requirements=cfg.model.requirements, answer_code=answer_code(),
    )
    tags.update({f"{lineage.TAG_PREFIX}{k}": str(v) for k, v in (extra_tags or {}).items()})
    registry = Registry(tracking_uri, registry_uri)
    model_id = model_uri.split("/", 1)[1].lstrip("/") if model_uri.startswith("models:/") else None
    version = registry.register(cfg.name, model_uri, parent, tags, model_id=model_id,
                                description=f"best of search {Path(outcome.experiment_path).name}")
    alias = registry.assign_new_version_alias(cfg.name, version)
    if on_registered is not None:
        on_registered(view_of(cfg.name, version, data.raw_train, data.preparation,
                              predict_outputs(model, data.x_train, data.task), data.classes, data.fingerprint,
                              cfg.seed, data.y_val, predict_outputs(model, data.x_val, data.task), data.task))
    return RegisteredVersion(
        name=cfg.name, version=version, alias=alias, tracking_uri=tracking_uri, search_run_id=parent,
        experiment_path=outcome.experiment_path, trial_id=trial_id, trial_params=dict(best.config),
        epochs_trained=int(state["epoch"]), weights_sha256=digest, metrics=metrics,
        search_wall_seconds=outcome.wall_seconds, trials=_trials_summary(outcome, metric),
    )
