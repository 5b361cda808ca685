"""Read a dataset through Ray Data: local paths, pyarrow filesystem URIs, or a built-in example.

Built-in datasets ship inside a dependency (river), so they work offline: `builtin://shuttle` is
materialised once to Parquet under HANDOFF_HOME/datasets and read from there like any other;
`builtin://loans` is generated (seeded) from river's Agrawal loan stream, a table as users have
them: strings, booleans, an integer code, and gaps; `builtin://deliveries` is generated here
(seeded): delivery times in minutes, a number to predict, from columns of every kind.
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


def _shuttle_table() -> pa.Table:
    return pacsv.read_csv(_shuttle_csv())


EDUCATION = ("none", "high school", "bachelor", "master", "doctorate")
LOANS_ROWS = 20_000


def loans_table(rows: int = LOANS_ROWS, seed: int = 7, classification_function: int = 3) -> pa.Table:
    """Loan applications from river's Agrawal generator (seeded; 5% of labels flipped), made the way
    a real table is: education as text (2% blank), the car's make as text, the zip code an integer
    code, a boolean, commission blank where the salary is 75,000 or more (none is paid), the house's
    value blank for 3% of rows; label `approved` (boolean)."""
    import numpy as np
    from river.datasets import synth

    stream = synth.Agrawal(classification_function=classification_function, seed=seed, perturbation=0.05)
    records = [{**x, "approved": bool(y)} for x, y in stream.take(rows)]
    frame = pd.DataFrame.from_records(records)
    rng = np.random.default_rng(seed)
    education = frame["elevel"].map(dict(enumerate(EDUCATION))).astype(object)
    education[rng.random(rows) < 0.02] = None
    house_value = frame["hvalue"].where(rng.random(rows) >= 0.03)
    out = pd.DataFrame({
        "salary": frame["salary"].round(2), "commission": frame["commission"].where(frame["salary"] < 75_000),
        "age": frame["age"].astype("int64"), "education": education,
        "car": frame["car"].map(lambda c: f"make {int(c):02d}"), "zipcode": frame["zipcode"].astype("int64"),
        "senior": frame["age"] >= 65, "house_value": house_value.round(2),
        "house_years": frame["hyears"].astype("int64"), "loan": frame["loan"].round(2), "approved": frame["approved"],
    })
    return pa.Table.from_pandas(out, preserve_index=False)


CITIES = {"north": 1.0, "centre": 1.35, "south": 1.1, "harbour": 1.2}  # traffic factor per zone
WEATHER = {"clear": 1.0, "rain": 1.15, "snow": 1.45}
DELIVERIES_ROWS = 20_000


def deliveries_table(rows: int = DELIVERIES_ROWS, seed: int = 11, new_zone: float = 0.0) -> pa.Table:
    """Food deliveries (seeded), label `minutes` (float): distance in km, items in the order (an
    integer), the hour it was placed, the zone and the weather as text (weather blank for 4% of
    rows), express (a boolean), the kitchen's queue length (blank for 3%). Minutes grow with
    distance × the zone's traffic × the weather, with the queue, and at rush hours; express saves a
    share; noise is multiplicative (longer trips vary more), so the target is skewed, as real ones are.
    `new_zone`: the share of orders from a zone the service has just opened ("airport": slow
    traffic, long trips), what production sees after an expansion; the relation elsewhere holds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    zone = rng.choice(list(CITIES), size=rows, p=[0.3, 0.3, 0.25, 0.15]).astype(object)
    weather = rng.choice(list(WEATHER), size=rows, p=[0.7, 0.22, 0.08]).astype(object)
    distance = np.round(rng.gamma(2.0, 2.2, size=rows), 2)
    items = rng.integers(1, 9, size=rows)
    hour = rng.integers(9, 24, size=rows)
    express = rng.random(rows) < 0.25
    queue = rng.poisson(4, size=rows).astype(float)
    opened = rng.random(rows) < new_zone
    zone[opened] = "airport"
    distance[opened] = np.round(rng.gamma(4.0, 3.0, size=int(opened.sum())), 2)
    rush = np.isin(hour, [12, 13, 19, 20]).astype(float)
    traffic = np.vectorize({**CITIES, "airport": 1.7}.get)(zone) * np.vectorize(WEATHER.get)(weather)
    minutes = (8 + 3.2 * distance * traffic + 1.1 * items + 2.5 * queue + 7 * rush) * np.where(express, 0.8, 1.0)
    minutes = np.round(minutes * rng.lognormal(0.0, 0.12, size=rows), 2)
    weather[rng.random(rows) < 0.04] = None
    queue[rng.random(rows) < 0.03] = np.nan
    out = pd.DataFrame({"distance_km": distance, "items": items.astype("int64"), "hour": hour.astype("int64"),
                        "zone": zone.astype(object), "weather": weather, "express": express, "kitchen_queue": queue,
                        "minutes": minutes})
    return pa.Table.from_pandas(out, preserve_index=False)


#: name -> (function returning the table, what it is)
BUILTIN_DATASETS = {
    "shuttle": (_shuttle_table, "NASA shuttle sensor readings, 49,097 rows, 9 features, label 'anomaly'"),
    "loans": (loans_table, f"loan applications (river's Agrawal generator), {LOANS_ROWS:,} rows, 10 features of "
              "every kind with gaps, label 'approved'"),
    "deliveries": (deliveries_table, f"food delivery times (generated), {DELIVERIES_ROWS:,} rows, 7 features of every "
                   "kind with gaps, label 'minutes' (a number: regression)"),
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
        table = BUILTIN_DATASETS[name][0]()
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
