"""Batch inference: score a whole Parquet table with a registered version, on Ray Data.

    from serving import predict_table, BatchConfig
    result = predict_table(registry, "shuttle", "s3://bucket/tonight/", "s3://bucket/scored/",
                           alias="champion", config=BatchConfig(batch_size=4096))
    result.output, result.rows_out, result.run_id

Order matters for "nothing half-written": the version, the input's columns and the output path
are checked before any work; the rows are scored by an actor pool (`VersionPredictor`: the version
the driver loaded, shipped once to each actor, on its CPU or GPU) and written to a staging
directory beside the output, which is moved into place only once complete. Rows that cannot be scored
(`schema.INVALID`: NaN/inf/null features, numbers beyond float32's range, fractional integer codes)
refuse the run (with their count) or, skipped, go to `OUTPUT.rejected/` the same way.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from cluster.storage import absolute
from serving.batch.config import BatchConfig
from serving.batch.files import (InputTable, discard, fingerprint, open_input, publish, refuse_existing,
                                 refuse_overlap, staging_uri, written_files)
from serving.batch.read import READ_CPUS, read_dataset
from serving.batch.schema import (INVALID, META_DEVICE, META_NODE, BatchInputError, check_files, check_input,
                                  run_metadata)

#: blocks per actor: enough that every actor of the pool gets work and a slow one does not hold the end
BLOCKS_PER_ACTOR = 4
#: the most rows in one block (bounds each actor task's memory)
MAX_BLOCK_ROWS = 262_144


def block_rows(rows: int, batch_size: int, actors: int) -> int:
    """Rows per block the scoring streams in: about `BLOCKS_PER_ACTOR` blocks per actor, a whole number of
    batches, at most `MAX_BLOCK_ROWS` (Ray Data reads a small table as one block, which one actor would
    score alone)."""
    per_block = -(-rows // max(1, actors * BLOCKS_PER_ACTOR))
    batches = max(1, -(-per_block // batch_size))
    return max(batch_size, min(batches * batch_size, max(batch_size, MAX_BLOCK_ROWS // batch_size * batch_size)))


@dataclass(frozen=True)
class BatchResult:
    """What a finished run wrote, with which version, where its rows were predicted, and how fast."""

    model: str
    version: int
    output: str
    rejected_output: str | None
    run_id: str
    input: str
    input_fingerprint: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    files: int
    nodes: list[str]
    devices: list[str]
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


def rejected_uri(output: str) -> str:
    """Where skipped rows go: a directory beside the output."""
    return f"{output.rstrip('/')}.rejected"


def resolve_version(registry, name: str, version: int | None, alias: str | None) -> int:
    """The version to score with: `version` when given, else the one `alias` names (default champion)."""
    from training import CHAMPION, RegistryError

    if version is not None:
        registry.version(name, version)  # RegistryError naming the model and version
        return int(version)
    alias = alias or CHAMPION
    aliases = registry.aliases(name)
    if alias not in aliases:
        raise RegistryError(f"model {name!r} has no alias {alias!r} (it has: {', '.join(sorted(aliases)) or 'none'})")
    return aliases[alias]


def predict_table(registry, name: str, input_uri: str, output_uri: str, *, version: int | None = None,
                  alias: str | None = None, config: BatchConfig | None = None, overwrite: bool = False,
                  artifact_root: str | None = None, progress: bool = True,
                  say: Callable[[str], None] = lambda _: None) -> BatchResult:
    """Score every row of the Parquet table at `input_uri` with NAME's version (or alias) into Parquet
    files under `output_uri`; return what was written. Runs on the connected Ray (else `ray.init()`).

    Refused before any work, naming the problem: an unknown model, version or alias; an input that
    is missing or not Parquet; missing feature columns or columns not of their kind (text where a number is
    expected), in any of its files; unknown carried columns; an output that overlaps the input, or
    an existing one (unless `overwrite`)."""
    from training import load_version

    config = config or BatchConfig()
    input_uri, output_uri = absolute(input_uri), absolute(output_uri)
    number = resolve_version(registry, name, version, alias)
    say(f"loading {name} v{number} to check its inputs")
    try:
        model = load_version(name, number, registry.tracking_uri, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a version whose model cannot load is refused, named
        raise BatchInputError(f"{name} v{number} cannot be loaded: {exc}") from exc
    table = open_input(input_uri)
    if table.rows == 0:
        raise BatchInputError(f"input {input_uri!r} has no rows ({len(table.files)} file(s), all empty); "
                              "nothing to score")
    carry = check_input(table.schema, model.features, model.classes, config.columns, model.preparation, model.task)
    check_files(zip(table.files, table.file_schemas), table.schema, model.features, carry, model.preparation)
    refuse_overlap(input_uri, output_uri)
    refuse_existing(output_uri, overwrite)
    if config.on_invalid == "skip" or overwrite:  # written, or an earlier run's removed: never the input
        refuse_overlap(input_uri, rejected_uri(output_uri), "rejected-rows output")
    if config.on_invalid == "skip":
        refuse_existing(rejected_uri(output_uri), overwrite, "rejected-rows output")
    import ray
    import ray.data

    if not ray.is_initialized():  # as Ray Data itself would: the cluster RAY_ADDRESS names, else a local one
        ray.init()
    ray.data.DataContext.get_current().enable_progress_bars = progress  # every Ray Data pass of this run
    free = ray.available_resources()
    config = config.model_copy(update={"cpus_per_actor": actor_cpus(config.cpus_per_actor, free.get("CPU", 0.0))})
    pool_limit = check_pool_fits(config.actors or 1, config.cpus_per_actor, config.gpus_per_actor, free)
    say(f"input {input_uri}: {table.rows:,} row(s) in {len(table.files)} file(s); carrying {carry or 'no columns'}")

    from serving.batch.run import BatchRun

    run = BatchRun(registry.tracking_uri, config.experiment, artifact_root)
    run_id = run.start(name, number, {"model": name, "version": number, "alias": alias or "", "input": input_uri,
                                      "output": output_uri, "batch_size": config.batch_size,
                                      "actors": config.actors or "auto", "cpus_per_actor": config.cpus_per_actor,
                                      "gpus_per_actor": config.gpus_per_actor, "on_invalid": config.on_invalid,
                                      "carried_columns": ",".join(carry)})
    staging = staging_uri(output_uri, run_id)
    started = time.perf_counter()
    try:
        digest = fingerprint(table)
        run.log_params({"input_fingerprint": digest})
        say(f"scoring on Ray Data (MLflow run {run_id}, input sha256 {digest[:12]}…)")
        _score(table, staging, model, carry, config, config.actors or pool_limit, run_metadata(name, number, run_id),
               registry)
        written = written_files(staging)
        if written.rows == 0:  # every row skipped as invalid: Ray Data wrote no file, there is no output
            raise BatchInputError(f"all {table.rows:,} row(s) of {input_uri} have {INVALID}; nothing was scored and "
                                  "nothing was written")
        say(f"{written.rows:,} row(s) scored into {len(written.files)} file(s); moving them into place")
        rejected = table.rows - written.rows
        rejected_output = None
        if rejected:
            rejected_output = _write_rejected(table, model.preparation, rejected_uri(output_uri), run_id)
        publish(staging, output_uri)
        if overwrite and rejected_output is None:  # an earlier run's rejected rows are not this output's
            discard(rejected_uri(output_uri))
        seconds = time.perf_counter() - started
        result = BatchResult(
            model=name, version=number, output=output_uri, rejected_output=rejected_output, run_id=run_id,
            input=input_uri, input_fingerprint=digest, rows_in=table.rows, rows_out=written.rows,
            rows_rejected=rejected, files=len(written.files),
            nodes=sorted({m.get(META_NODE, "?") for m in written.metadata}),
            devices=sorted({m.get(META_DEVICE, "?") for m in written.metadata}), seconds=seconds)
        run.finish({"rows_in": result.rows_in, "rows_out": result.rows_out, "rows_rejected": rejected,
                    "files": result.files, "nodes": len(result.nodes), "duration_s": seconds,
                    "rows_per_s": result.rows_per_second})
        run.log_params({"output_files": result.files})
        return result
    except BaseException as exc:
        discard(staging)
        if not _invalid_rows_refused(exc):
            run.fail(f"{type(exc).__name__}: {exc}")
            raise
        # drop the failed pipeline (its traceback holds the datasets, whose actors hold CPUs) before counting
        exc.__traceback__ = None
        del exc
        gc.collect()
    try:
        count = _count_invalid(table, model.preparation)
    except BaseException as exc:
        run.fail(f"counting the invalid rows failed: {type(exc).__name__}: {exc}")
        raise
    refusal = BatchInputError(f"{count:,} row(s) of {input_uri} have {INVALID}; nothing was written. Fix them, or "
                              f"pass --on-invalid skip to score the rest and write them to {rejected_uri(output_uri)}")
    run.fail(f"BatchInputError: {refusal}")
    raise refusal


def _score(table: InputTable, staging: str, model, carry: list[str], config: BatchConfig, actors: int,
           metadata: dict[str, str], registry) -> None:
    """The Ray Data pipeline: read the needed columns, score in the actor pool, write to `staging`."""
    import ray.data

    from serving.batch.predictor import VersionPredictor

    columns = list(dict.fromkeys([*model.features, *carry]))
    # A pool of `actors` starts whole; without a size it starts with one actor and grows while blocks
    # wait (a small table is done before a second actor would have loaded the model).
    pool = (ray.data.ActorPoolStrategy(size=actors) if config.actors
            else ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=1))
    # Reads and writes run at most `actors` tasks at once, as many as the pool can keep busy: left to
    # itself Ray Data starts one per quarter CPU, each a new worker process (~1 s of CPU here), taking
    # the CPU the actors' start needs (1M rows on 2 cores: 5.3 s → 4.25 s, bench/batch_predict.py).
    ds = read_dataset(table, columns, block_rows(table.rows, config.batch_size, actors), concurrency=actors)
    # the version the driver loaded to check the input goes to every actor through the object store
    # (in a list: Ray Data passes it on as it is, the actor fetches it)
    shipped = [ray.put(model)] if shippable(model) else None
    scored = ds.map_batches(
        VersionPredictor, batch_size=None, batch_format="pyarrow", compute=pool,
        num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None,
        fn_constructor_kwargs={"name": model.name, "version": model.version, "tracking_uri": registry.tracking_uri,
                               "registry_uri": None, "carry": carry, "metadata": metadata,
                               "skip_invalid": config.on_invalid == "skip", "threads": int(config.cpus_per_actor),
                               "shipped": shipped, "batch_size": config.batch_size})
    scored.write_parquet(staging, ray_remote_args={"num_cpus": READ_CPUS}, concurrency=actors)


#: the packages whose classes an actor can always unpickle (the cluster's own environment holds them)
_SHIPPED_FROM = frozenset({"torch", "training"})


def shippable(model) -> bool:
    """Whether the version the driver loaded goes to the actors as an object: a portable one whose
    network is made only of classes torch or Handoff defines. A layer class from the model's own code
    (`model.code_paths`) is pickled by reference, and an actor need not be able to import that module
    (its `code/` directory is MLflow's to put on the path): such a version is loaded from the registry
    in each actor, with its code, as a serving replica loads it."""
    network = getattr(model.outputs, "network", None) if model.portable else None
    return network is not None and all(type(layer).__module__.split(".")[0] in _SHIPPED_FROM
                                       for layer in network.modules())


def actor_cpus(configured: float | None, free_cpus: float) -> float:
    """The CPUs each actor asks for: as configured, else one, or less where the cluster has less free
    beside a read task (Serve's replicas hold the rest of a laptop), in quarters, at least a quarter."""
    if configured is not None:
        return configured
    spare = (free_cpus - READ_CPUS) // 0.25 * 0.25
    return 1.0 if spare >= 1.0 else max(0.25, spare)


def check_pool_fits(actors: int, cpus_per_actor: float, gpus_per_actor: float, free: dict[str, float]) -> int:
    """The most actors the pool may grow to, once the `actors` it starts with fit in the cluster's
    `free` resources beside a read task; refused otherwise (Ray Data would wait for them forever),
    naming what is free. A pool without a size starts with one actor."""
    cpus, gpus = free.get("CPU", 0.0), free.get("GPU", 0.0)
    if actors * cpus_per_actor + READ_CPUS > cpus + 1e-9:
        raise BatchInputError(f"{actors} actor(s) × {cpus_per_actor:g} CPU and a read task ({READ_CPUS:g} CPU) do not "
                              f"fit in the {cpus:g} CPU(s) the cluster has free; use fewer actors or fewer CPUs "
                              "per actor (--actors, --cpus-per-actor)")
    if gpus_per_actor and actors * gpus_per_actor > gpus + 1e-9:
        raise BatchInputError(f"{actors} actor(s) × {gpus_per_actor:g} GPU do not fit in the {gpus:g} GPU(s) the "
                              "cluster has free; use fewer actors or a share of a GPU (--gpus-per-actor 0.5)")
    by_cpu = int((cpus - READ_CPUS) // cpus_per_actor)
    by_gpu = int(gpus // gpus_per_actor) if gpus_per_actor else by_cpu
    return max(actors, min(by_cpu, by_gpu))


def _write_rejected(table: InputTable, preparation, uri: str, run_id: str) -> str:
    """Write the rows that could not be scored (every input column) to `uri`, staged like the output."""
    from serving.batch.predictor import rejected_rows

    staging = staging_uri(uri, run_id)
    try:
        read_dataset(table, list(table.schema.names), MAX_BLOCK_ROWS).map_batches(
            rejected_rows, fn_kwargs={"preparation": preparation}, batch_format="pyarrow",
            num_cpus=READ_CPUS).write_parquet(staging, ray_remote_args={"num_cpus": READ_CPUS})
        publish(staging, uri)
    except BaseException:
        discard(staging)
        raise
    return uri


def _count_invalid(table: InputTable, preparation) -> int:
    """How many input rows cannot be scored (read the features only)."""
    from serving.batch.predictor import invalid_count

    ds = read_dataset(table, list(preparation.names), MAX_BLOCK_ROWS)
    return int(ds.map_batches(invalid_count, fn_kwargs={"preparation": preparation}, batch_format="pyarrow",
                              num_cpus=READ_CPUS).sum("invalid") or 0)


def _invalid_rows_refused(exc: BaseException) -> bool:
    """Whether Ray Data stopped because an actor refused rows with invalid features (Ray wraps the
    actor's exception; its chain or its text names `InvalidFeatureRows`)."""
    from serving.batch.predictor import InvalidFeatureRows

    seen = exc
    while seen is not None:
        if isinstance(seen, InvalidFeatureRows) or "InvalidFeatureRows" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
