"""Labelled live rows: the live log's answered rows joined with the labels sent back for them.

What the retraining learns from (the most recent labelled rows) and what the canary is judged on
(labelled rows of each version since the canary started). Reads the live log's files (shadow rows
left out; unreadable files skipped) and the label files beside them (one label per row id: the
latest sent), the same layout the monitor reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.storage import filesystem
from monitoring.labels import Feedback
from monitoring.live_reader import categorical_features, feature_columns, model_dir, parquet_files


@dataclass(frozen=True)
class LabelledRows:
    """Rows in answer order: the feature columns as clients sent them (numbers as float64 with NaN for a
    gap, categories as their values with None for a gap), the true class index, the class the version
    predicted, its version; for a regression model the true and the predicted values (float64)."""

    features: list[str]
    frame: pd.DataFrame
    y: np.ndarray
    prediction: np.ndarray
    version: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index) -> LabelledRows:
        return LabelledRows(self.features, self.frame.iloc[index].reset_index(drop=True), self.y[index],
                            self.prediction[index], self.version[index], self.ts[index])


def _plain(table: pa.Table, features: list[str]) -> pa.Table:
    """`table` with its dictionary-encoded (categorical) feature columns decoded to their values, so
    files whose dictionaries differ concatenate."""
    for name in features:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            table = table.set_column(table.schema.get_field_index(name), name, column.cast(column.type.value_type))
    return table


def _frame(table: pa.Table, features: list[str], categorical: set[str]) -> pd.DataFrame:
    """The feature columns as pandas values: numbers float64 (NaN for a gap), categories objects (None)."""
    out = {}
    for name in features:
        column = table.column(name)
        if name not in categorical:
            out[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            out[name] = pd.Series(column.to_pylist(), dtype=object)
    return pd.DataFrame(out, columns=features)


def labelled_rows(root: str, model: str, *, since: float | None = None, versions: set[int] | None = None,
                  last: int | None = None, feedback: Feedback | None = None, with_features: bool = True,
                  regression: bool = False) -> LabelledRows:
    """The answered rows of `model` that have a label, oldest first: answered at or after `since`
    (epoch seconds) and by one of `versions` when given, the `last` most recent when given. Labels
    come from `feedback` brought up to date (a reader kept between calls reads each label file once:
    the canary's figures are read every tick), else from every label file. `with_features=False`
    leaves the feature columns unread (the canary counts answers only). A `regression` model's labels
    are the true values."""
    feedback = feedback or Feedback(root, model)
    feedback.catch_up()  # an unreadable label file is skipped (the monitor records it)
    labels = feedback.labels
    fs, live_dir = filesystem(model_dir(root, model))
    tables, features, categorical = [], None, set()
    for mtime, key in parquet_files(fs, live_dir):
        if since is not None and mtime < since:  # written before `since`: every row in it is older
            continue
        path = f"{live_dir}/{key}"
        try:
            schema = pq.read_schema(path, filesystem=fs)
            names = feature_columns(schema.names)
            if features is None:
                features, categorical = names, set(categorical_features(schema, names))
            if names != features:
                continue
            table = pq.read_table(path, filesystem=fs, columns=["request_id", "ts", "version", "prediction", "shadow",
                                                                *(features if with_features else [])])
        except Exception:  # noqa: BLE001 - a file that cannot be read is skipped, as the monitor does
            continue
        keep = pc.invert(table.column("shadow"))
        if since is not None:
            keep = pc.and_(keep, pc.greater_equal(table.column("ts"), pa.scalar(int(since * 1000),
                                                                                 pa.timestamp("ms", tz="UTC"))))
        if versions is not None:
            keep = pc.and_(keep, pc.is_in(table.column("version"), pa.array(sorted(versions), pa.int32())))
        tables.append(_plain(table.filter(keep), features if with_features else []))
    shown = (features or []) if with_features else []
    if not tables or not labels:
        return LabelledRows(features or [], pd.DataFrame(columns=shown), np.empty(0, np.int64),
                            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, "datetime64[ms]"))
    table = pa.concat_tables(tables, promote_options="permissive").sort_by("ts")
    y = feedback.lookup(table.column("request_id").to_pylist(), regression)
    rows = np.nonzero(~np.isnan(y) if regression else y >= 0)[0]
    if last is not None:
        rows = rows[-last:]
    picked = table.take(pa.array(rows))
    return LabelledRows(features, _frame(picked, shown, categorical), y[rows],
                        picked.column("prediction").to_numpy(zero_copy_only=False),
                        picked.column("version").to_numpy(zero_copy_only=False).astype(np.int64),
                        picked.column("ts").to_numpy(zero_copy_only=False).astype("datetime64[ms]"))
