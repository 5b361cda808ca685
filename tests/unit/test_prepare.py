import numpy as np
import pandas as pd
import pytest

from training.config import DatasetConfig
from training.prepare import DataError, prepare, validate_frame

FEATURES = ["a", "b", "c"]


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    df["y"] = (df["a"] > 0).astype("int64")
    return df


def cfg(**kw) -> DatasetConfig:
    return DatasetConfig(uri="unused", label="y", features=FEATURES, **kw)


def test_split_sizes_and_disjointness():
    p = prepare(frame(), cfg(validation_fraction=0.2, test_fraction=0.1), seed=1)
    assert p.sizes == {"train": 140, "validation": 40, "test": 20}
    rows = np.concatenate([p.x_train, p.x_val, p.x_test])
    assert len(np.unique(rows, axis=0)) == 200
    assert p.num_classes == 2 and p.x_train.dtype == np.float32


def test_split_is_deterministic_and_independent_of_row_order():
    df = frame()
    a = prepare(df, cfg(), seed=3)
    b = prepare(df.sample(frac=1.0, random_state=9).reset_index(drop=True), cfg(), seed=3)
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = prepare(df, cfg(), seed=4)
    assert c.fingerprint != a.fingerprint  # another seed uses the rows in another split


def test_fingerprint_changes_when_one_value_changes():
    df = frame()
    changed = df.copy()
    changed.loc[17, "b"] += 1e-3
    assert prepare(df, cfg(), seed=0).fingerprint != prepare(changed, cfg(), seed=0).fingerprint


def test_max_rows_takes_a_seeded_subset():
    p = prepare(frame(), cfg(max_rows=50), seed=0)
    assert sum(p.sizes.values()) == 50
    assert p.fingerprint == prepare(frame(), cfg(max_rows=50), seed=0).fingerprint


def test_int_and_float_columns_hash_alike():
    df = frame()
    as_int = df.copy()
    as_int["a"] = np.round(as_int["a"] * 100)
    as_float = as_int.copy()
    as_float["a"] = as_float["a"].astype("float32")
    as_int["a"] = as_int["a"].astype("int64")
    assert prepare(as_int, cfg(), 0).fingerprint == prepare(as_float, cfg(), 0).fingerprint


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns=["b"]), r"missing from the data: \['b'\]"),
    (lambda df: df.assign(b=pd.Timestamp("2026-01-01")), "feature 'b' has type datetime64"),
    (lambda df: df.assign(b=["x", 1] * (len(df) // 2)), "feature 'b' mixes value types"),
    (lambda df: df.assign(c=np.where(np.arange(len(df)) < 3, np.nan, df["c"])), "feature 'c' has 3 NaN.*refuse"),
    (lambda df: df.assign(a=np.where(np.arange(len(df)) < 2, np.inf, df["a"])), "feature 'a' has 2 infinite"),
    (lambda df: df.assign(y=np.where(np.arange(len(df)) < 4, np.nan, df["y"])), "label 'y' is missing in 4 row"),
    (lambda df: df.assign(y=np.where(np.arange(len(df)) < 5, 0.5, df["y"])), "5 value.* not class ids"),
    (lambda df: df.assign(y=np.where(np.arange(len(df)) < 1, -1, df["y"])), "1 value.* not class ids"),
    (lambda df: df.iloc[:0], "no rows"),
])
def test_schema_problems_name_column_and_count(mutate, message):
    with pytest.raises(DataError, match=message):
        validate_frame(mutate(frame()), FEATURES, "y", missing="refuse")


def test_all_problems_are_reported_together():
    df = frame().assign(a=np.nan, b="x", y=np.nan)
    with pytest.raises(DataError) as exc:
        validate_frame(df, FEATURES, "y", missing="refuse")
    assert "feature 'a' has 200 NaN" in str(exc.value) and "label 'y' is missing in 200" in str(exc.value)
    assert "feature 'b' has 200" not in str(exc.value)  # strings are a categorical column now
    with pytest.raises(DataError, match="'a' has no value at all"):
        validate_frame(df, FEATURES, "y")  # imputing: a column of nothing but gaps is still refused


def test_a_mixed_table_with_gaps_is_prepared_and_its_gaps_counted():
    df = frame()
    df["kind"] = np.where(df["a"] > 0, "up", "down")
    df.loc[::10, "b"] = np.nan
    df.loc[::7, "kind"] = None
    p = prepare(df, DatasetConfig(uri="u", label="y", features=["a", "b", "kind"]), seed=1)
    assert p.preparation.kinds == {"a": "numeric", "b": "numeric", "kind": "categorical"}
    assert p.preparation.output_names == ["a", "b", "b=<missing>", "kind=down", "kind=up", "kind=<missing>"]
    assert p.x_train.shape[1] == 6 and not np.isnan(p.x_train).any()
    assert p.imputed == {"b": 20, "kind": 29}
    assert list(p.raw_train.columns) == ["a", "b", "kind"] and len(p.raw_train) == p.sizes["train"]
    again = prepare(df.sample(frac=1.0, random_state=4), DatasetConfig(uri="u", label="y", features=["a", "b", "kind"]),
                    seed=1)
    assert again.fingerprint == p.fingerprint and np.array_equal(again.x_train, p.x_train)
    declared = prepare(df, DatasetConfig(uri="u", label="y", features={"a": "numeric", "b": None, "kind": "categorical"}),
                       seed=1)
    assert declared.preparation.kinds == p.preparation.kinds and declared.fingerprint == p.fingerprint
    with pytest.raises(DataError, match="'kind' has 29 NaN/missing value"):
        prepare(df, DatasetConfig(uri="u", label="y", features=["a", "b", "kind"], missing="refuse"), seed=1)


def test_too_few_rows_to_split():
    with pytest.raises(DataError, match="too few"):
        prepare(frame(2), cfg(), seed=0)


def test_class_names_as_users_have_them_strings_and_booleans():
    df = frame()
    df["y"] = np.where(df["a"] > 0.5, "high", np.where(df["a"] < -0.5, "low", "mid"))
    p = prepare(df, cfg(), seed=1)
    assert p.classes == ["high", "low", "mid"] and p.num_classes == 3
    index = {name: i for i, name in enumerate(p.classes)}
    rows = pd.DataFrame(np.concatenate([p.x_train, p.x_val, p.x_test]), columns=FEATURES)
    labels = np.concatenate([p.y_train, p.y_val, p.y_test])
    expected = np.where(rows["a"] > 0.5, "high", np.where(rows["a"] < -0.5, "low", "mid"))
    assert [index[e] for e in expected] == labels.tolist()  # each row's index names its own class
    renamed = df.assign(y=df["y"].map({"high": "HIGH", "low": "low", "mid": "mid"}))
    assert prepare(renamed, cfg(), seed=1).fingerprint != p.fingerprint  # the label text is data
    assert prepare(df.sample(frac=1.0, random_state=2), cfg(), seed=1).fingerprint == p.fingerprint
    flags = frame().assign(y=lambda d: d["a"] > 0)
    b = prepare(flags, cfg(), seed=1)
    assert b.classes == [False, True] and set(np.unique(b.y_train)) == {0, 1}


def test_integer_ids_stay_their_own_class_index():
    p = prepare(frame(), cfg(), seed=1)
    assert p.classes == [0, 1]
    with pytest.raises(DataError, match="missing in 2 row"):
        prepare(frame().assign(y=lambda d: d["y"].astype("object").where(d.index > 1, None)), cfg(), seed=1)
