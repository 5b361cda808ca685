"""`handoff predict NAME --input URI --output URI`: score a whole Parquet table with a registered version.

Ray Data reads the table, an actor pool scores it (the model loaded once per actor, on the CPU or
on the GPU Ray assigned the actor) and the scored rows are written as Parquet files into one
directory; the run is an MLflow run (experiment `handoff-batch`) and every output file names the
version and the run in its metadata. `serving.predict_table` is the same from Python.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from handoff.common import command_settings, command_tracking_uri, err, fail, layered_config, out, print_result
from handoff.options import AddressOpt, HomeOpt, JsonOpt, TrackingOpt

DEFAULT_PREDICT_CONFIG = Path("configs/predict.yaml")


def predict(
    name: Annotated[str, typer.Argument(help="registered model name")],
    input_uri: Annotated[str, typer.Option("--input", help="Parquet file or directory: a local path or any pyarrow "
                                           "filesystem URI (s3://, gs://, hdfs://); on a cluster, storage every "
                                           "node reaches")],
    output_uri: Annotated[str, typer.Option("--output", help="directory the scored Parquet files are written to "
                                            "(refused if it exists, unless --overwrite)")],
    version: Annotated[int | None, typer.Option(help="score with this version")] = None,
    alias: Annotated[str | None, typer.Option(help="score with the version this alias names [default: champion]")] = None,
    columns: Annotated[str | None, typer.Option(help="input columns carried into the output, comma-separated "
                                                "(ids, timestamps) [default: every column that is not a feature]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="rows per model call [config: batch_size, 1024]")] = None,
    actors: Annotated[int | None, typer.Option(help="actors in the pool, each loading the model once "
                                               "[config: actors; default: as many as free CPUs/GPUs allow]")] = None,
    cpus_per_actor: Annotated[float | None, typer.Option(help="CPUs per actor, its torch threads [config: cpus_per_actor; default: "
                                                    "one, or what is free when less]")] = None,
    gpus_per_actor: Annotated[float | None, typer.Option(help="GPUs (or a share of one) per actor; an actor given "
                                                         "one predicts on it [config: gpus_per_actor, 0]")] = None,
    on_invalid: Annotated[str | None, typer.Option(help="rows with NaN/inf/null features: refuse (nothing is "
                                                   "written) or skip (they go to OUTPUT.rejected/) "
                                                   "[config: on_invalid, refuse]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output (only once the new "
                                            "one is complete)")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="batch YAML (default configs/predict.yaml if "
                                                "present)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a batch field: --set "
                                                        "batch_size=4096 (env HANDOFF_PREDICT__BATCH_SIZE)")] = None,
    progress: Annotated[bool, typer.Option(help="show Ray Data's progress while it runs")] = True,
    home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False,
) -> None:
    """Score every row of a Parquet table with NAME's champion (or --version/--alias), on Ray Data.

    Before any work it refuses, naming the problem: an unknown model, version or alias; an input
    that is missing or not Parquet; missing feature columns or columns not of their kind (text where a number is
    expected), in any of the input's files; an output that overlaps the input, or that exists.
    The output gets the carried columns, `prediction` (class index), `label` (the class),
    `probability_<class>` per class and `version`; it appears whole or not at all. The run is
    logged to MLflow (input fingerprint, rows, duration, rows/s). Exit code 0 when written.
    """
    from cluster.connect import ClusterUnavailable, connect_ray, ray_address
    from cluster.services import read_services
    from handoff.model_environment import RequirementsUnmet, run_where_met
    from serving import BatchInputError, load_batch_config, predict_table
    from training import CHAMPION, Registry, RegistryError, recorded_requirements

    if version is not None and alias is not None:
        fail("give --version or --alias, not both")
    sets = list(overrides or [])
    for key, value in (("batch_size", batch_size), ("actors", actors), ("cpus_per_actor", cpus_per_actor),
                       ("gpus_per_actor", gpus_per_actor), ("on_invalid", on_invalid)):
        if value is not None:
            sets.append(f"{key}={value}")
    if columns is not None:
        sets.append(f"columns=[{', '.join(repr(c.strip()) for c in columns.split(',') if c.strip())}]")
    cfg = layered_config(load_batch_config, config, DEFAULT_PREDICT_CONFIG, sets)
    settings = command_settings(home, address, tracking_uri)
    services = read_services(settings)
    uri = command_tracking_uri(None, settings, services)
    artifact_root = settings.artifacts_dir.as_uri() if uri.startswith("sqlite:") else None
    try:
        registry = Registry(uri)
        chosen = version if version is not None else registry.aliases(name).get(alias or CHAMPION)
        if chosen is not None:  # the version's own code needs packages this process lacks: scored where they are
            code = run_where_met(recorded_requirements(registry.version(name, chosen).lineage), services,
                                 f"{name} v{chosen}")
            if code is not None:
                raise typer.Exit(code)
        connect_ray(ray_address(settings, services))
        # Ray Data reports progress on stderr; stdout keeps the result (--json parses it)
        with contextlib.redirect_stdout(sys.stderr):
            result = predict_table(registry, name, input_uri, output_uri, version=version, alias=alias,
                                   config=cfg, overwrite=overwrite, artifact_root=artifact_root, progress=progress,
                                   say=lambda line: err.log(line, highlight=False))
    except (BatchInputError, RegistryError, RequirementsUnmet) as exc:
        fail(str(exc))
    except ClusterUnavailable as exc:
        fail(str(exc), 1)
    if as_json:
        print_result(result.to_dict())
        return
    out.print(f"[bold green]scored[/bold green] {result.rows_out:,} row(s) of {result.input} with {name} "
              f"v{result.version} in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s)", highlight=False)
    out.print(f"  output   {result.output}  ({result.files} file(s))", highlight=False)
    if result.rows_rejected:
        out.print(f"  rejected {result.rows_rejected:,} row(s) with NaN/inf/null features → {result.rejected_output}",
                  highlight=False)
    out.print(f"  ran on   {len(result.nodes)} node(s), device(s) {', '.join(result.devices)}", highlight=False)
    out.print(f"  MLflow run {result.run_id}; input sha256 {result.input_fingerprint[:16]}…", highlight=False)
