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
        prepare(frame(2).assign(y=[0, 1]), cfg(), seed=0)


@pytest.mark.parametrize("y, message", [
    (["yes"] * 10, "label 'y' holds one class only \\('yes'\\): a classifier needs at least two"),
    ([0] * 10, "label 'y' holds one class only \\(0\\)"),
    # years, codes: as ids 0..2020 the model would have 2,021 outputs, 2,019 of them never seen
    ([2019, 2020] * 5, "holds 2 distinct class ids from 2019 to 2020: as ids 0..2020 that is 2021 classes, 2019 of "
                       "them never seen; map them to 0..K-1, or give them as strings"),
    ([0, 10**9] * 5, "2 distinct class ids from 0 to 1e\\+09"),
    ([-1, 1] * 5, "not class ids 0..K-1 .*give the classes as strings or booleans"),
])
def test_a_label_a_classifier_cannot_learn_from_is_refused_naming_why(y, message):
    """One class only trained a constant; far-apart whole numbers became classes 0..max (2019/2020: 2,021
    outputs; 0/10**9: out of memory)."""
    with pytest.raises(DataError, match=message):
        prepare(frame(10).assign(y=y), cfg(), seed=0, task="classification")


def test_sparse_class_ids_within_the_slack_stay_ids():
    """Labels 1..5 (class 0 unused) and 0, 3, 7 are ids as before: their versions reproduce bit for bit."""
    assert prepare(frame(50).assign(y=[1, 2, 3, 4, 5] * 10), cfg(), seed=0).classes == list(range(6))
    assert prepare(frame(30).assign(y=[0, 3, 7] * 10), cfg(), seed=0, task="classification").classes == list(range(8))


def test_duplicate_column_names_are_refused_naming_them():
    df = frame(20)
    df = pd.concat([df, df[["a"]]], axis=1)  # a Parquet file can hold two fields of one name
    with pytest.raises(DataError, match="more than one column named 'a'"):
        prepare(df, cfg(), seed=0)


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


def test_parquet_decimal_columns_are_numbers_in_training_and_in_serving(tmp_path):
    """A Parquet decimal128 column (Spark, database exports) reads back as Decimal objects: a numeric
    feature, and a regression target, as float64 would be (it was refused as "mixes value types")."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    decimals = lambda values: pa.array([Decimal(f"{v:.2f}") for v in values], pa.decimal128(12, 2))  # noqa: E731
    table = pa.table({"a": decimals(rng.normal(size=80) * 100), "b": rng.normal(size=80), "c": rng.normal(size=80),
                      "y": decimals(rng.normal(size=80) * 10)})
    pq.write_table(table, tmp_path / "d.parquet")
    df = pq.read_table(tmp_path / "d.parquet").to_pandas()
    assert df["a"].dtype == object and isinstance(df["a"].iloc[0], Decimal)
    got = prepare(df, cfg(), seed=0, task="regression")
    as_floats = prepare(df.assign(a=df["a"].astype(float), y=df["y"].astype(float)), cfg(), seed=0, task="regression")
    assert np.array_equal(got.x_train, as_floats.x_train) and got.fingerprint == as_floats.fingerprint
    served = got.preparation.transform(df[FEATURES].head(3))  # a batch of the same file, as batch inference reads it
    assert np.allclose(served.x[:, 0], df["a"].head(3).astype(float))


@pytest.mark.parametrize("values, message", [
    ([1 + 2j] * 20, "holds complex numbers"),
    ([__import__("datetime").date(2026, 1, 1)] * 20, "holds date values, which are neither numeric nor categorical"),
])
def test_a_column_of_no_usable_kind_is_named_with_what_it_holds(values, message):
    with pytest.raises(DataError, match=message):
        prepare(frame(20).assign(a=values), cfg(), seed=0)


def test_numpy_strings_are_text():
    df = frame(40).assign(a=np.array(["x", "y"] * 20, dtype=object))
    df["a"] = [np.str_(v) for v in df["a"]]
    assert prepare(df, cfg(), seed=0).preparation.columns[0].kind == "categorical"
