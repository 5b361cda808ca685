"""Read a dataset through Ray Data: local paths, pyarrow filesystem URIs, or a built-in example.

Built-in datasets ship inside a dependency (river), so they work offline: `builtin://shuttle` is
materialised once to Parquet under HANDOFF_HOME/datasets and read from there like any other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from training.prepare import DataError
from cluster.storage import filesystem

BUILTIN_SCHEME = "builtin://"


def _shuttle_csv() -> Path:
    from river import datasets  # imported lazily: river is only needed for the example

    return Path(datasets.Shuttle().path)


#: name -> (function returning the shipped CSV, what it is)
BUILTIN_DATASETS = {
    "shuttle": (_shuttle_csv, "NASA shuttle sensor readings, 49,097 rows, 9 features, label 'anomaly'"),
}


def resolve_uri(uri: str, datasets_dir: Path) -> str:
    """Return a Parquet URI for `uri`, materialising a built-in dataset on first use."""
    if not uri.startswith(BUILTIN_SCHEME):
        return uri
    name = uri[len(BUILTIN_SCHEME):]
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown built-in dataset {uri!r}; built-ins: "
                        + ", ".join(f"{BUILTIN_SCHEME}{n}" for n in BUILTIN_DATASETS))
    target = datasets_dir / name / f"{name}.parquet"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        table = pacsv.read_csv(BUILTIN_DATASETS[name][0]())
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(target)  # atomic: a crash never leaves a half-written dataset behind
    return str(target)


def check_exists(uri: str) -> None:
    """Fail early, naming the URI, when nothing is there."""
    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot open dataset {uri!r}: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"dataset not found: {uri!r}")


def read_frame(uri: str, *, on_this_node: bool = False) -> pd.DataFrame:
    """Read every Parquet file under `uri` through Ray Data into one pandas frame.

    `on_this_node`: the path exists only on this node's disk (a built-in dataset materialised here),
    so this process reads it and hands Ray Data the table (`from_arrow`: its blocks live in the
    object store, which every node reaches; Ray's `local://` paths, deprecated after January 2027,
    are not used). Otherwise the read tasks may run on any node and `uri` must be shared storage."""
    import ray.data

    check_exists(uri)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        if on_this_node:
            fs, path = filesystem(uri)
            ds = ray.data.from_arrow(pq.read_table(path, filesystem=fs))
        else:
            ds = ray.data.read_parquet(uri, num_cpus=0.25)
        return ds.to_pandas()
    except Exception as exc:  # Ray wraps reader errors; name the URI either way
        raise DataError(f"cannot read Parquet from {uri!r}: {exc}") from exc
