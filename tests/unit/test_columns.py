"""Columns as users have them, pure: kinds inferred or declared, the preparation fitted on a training
split, and the same raw rows always prepared the same way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.columns import (CATEGORICAL, NUMERIC, CategoricalColumn, ColumnError, NumericColumn, Preparation,
                              column_kinds, fit_preparation, infer_kind)


def customers(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({
        "tenure": [1, 5, 12, 30, 2, 7, 40, 3, 9, 18, 24, 60][:n],
        "total": [10.0, None, 120.5, 300.0, 25.0, np.nan, 400.0, 30.0, 90.0, 180.0, 240.0, 600.0][:n],
        "contract": ["month", "month", "year", "two", "month", None, "year", "month", "month", "year", "two", "rare"][:n],
        "senior": [True, False, False, True, False, False, True, False, False, False, True, False][:n],
        "plan": pd.Series([1, 2, 2, 3, 1, 1, 2, 3, 3, 1, 2, 2][:n], dtype="int64"),
    })


def test_kinds_are_inferred_from_the_data_and_declared_where_given():
    frame = customers()
    assert column_kinds(frame, list(frame), {}) == {"tenure": NUMERIC, "total": NUMERIC, "contract": CATEGORICAL,
                                                    "senior": CATEGORICAL, "plan": NUMERIC}
    assert column_kinds(frame, list(frame), {"plan": CATEGORICAL})["plan"] == CATEGORICAL
    assert infer_kind("d", pd.Series(["a", "b"], dtype="category")) == CATEGORICAL
    assert infer_kind("s", pd.Series(["a", None], dtype="string")) == CATEGORICAL
    with pytest.raises(ColumnError, match="'when' has type datetime64"):
        infer_kind("when", pd.Series(pd.to_datetime(["2026-01-01"])))
    with pytest.raises(ColumnError, match="'mixed' mixes value types"):
        infer_kind("mixed", pd.Series(["a", 3], dtype=object))
    with pytest.raises(ColumnError, match="not features: \\['nope'\\]"):
        column_kinds(frame, list(frame), {"nope": NUMERIC})
    with pytest.raises(ColumnError, match="unknown column kind"):
        column_kinds(frame, list(frame), {"plan": "ordinal"})


def test_the_preparation_fits_medians_indicators_and_vocabularies_on_the_training_split():
    frame = customers()
    prep = fit_preparation(frame, column_kinds(frame, list(frame), {"plan": CATEGORICAL}), min_frequency=2)
    tenure, total, contract, senior, plan = prep.columns
    assert tenure == NumericColumn("tenure", 10.5, False)
    assert total == NumericColumn("total", 150.25, True)  # gaps in training: an indicator input
    assert contract == CategoricalColumn("contract", "string", ("month", "two", "year"), True)  # 'rare' seen once
    assert senior == CategoricalColumn("senior", "bool", (False, True), False)
    assert plan == CategoricalColumn("plan", "integer", (1, 2, 3), False)
    assert prep.output_names == ["tenure", "total", "total=<missing>", "contract=month", "contract=two",
                                 "contract=year", "contract=<missing>", "senior=False", "senior=True",
                                 "plan=1", "plan=2", "plan=3"]
    assert Preparation.from_json(prep.to_json()) == prep


def test_raw_rows_are_prepared_with_gaps_imputed_and_unseen_values_in_the_other_bucket():
    frame = customers()
    prep = fit_preparation(frame, column_kinds(frame, list(frame), {"plan": CATEGORICAL}), min_frequency=2)
    rows = {"tenure": [3, None], "total": [None, 50.0], "contract": ["crypto", None], "senior": [True, None],
            "plan": [2, 9]}
    out = prep.transform(rows)
    assert out.x.dtype == np.float32 and out.x.shape == (2, prep.width)
    first = dict(zip(prep.output_names, out.x[0].tolist()))
    assert first["tenure"] == 3 and first["total"] == 150.25 and first["total=<missing>"] == 1
    assert not any(first[f"contract={v}"] for v in ("month", "two", "year", "<missing>"))  # other: nothing set
    assert first["senior=True"] == 1 and first["plan=2"] == 1
    second = dict(zip(prep.output_names, out.x[1].tolist()))
    assert second["tenure"] == 10.5 and second["contract=<missing>"] == 1 and second["total=<missing>"] == 0
    assert second["senior=False"] == second["senior=True"] == 0  # no gaps in training: missing answers as other
    assert out.imputed == {"tenure": 1, "total": 1, "contract": 1, "senior": 1}
    assert out.other == {"contract": 1, "plan": 1}
    again = prep.transform(pd.DataFrame(rows))  # a frame, as the pyfunc and batch inference give it
    assert np.array_equal(again.x, out.x)


@pytest.mark.parametrize("rows, message", [
    ({"tenure": ["3"], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1]}, "'tenure' takes numbers"),
    ({"tenure": [True], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1]}, "'tenure' takes numbers"),
    ({"tenure": [1], "total": [1.0], "contract": [7], "senior": [True], "plan": [1]}, "'contract' takes string"),
    ({"tenure": [1], "total": [1.0], "contract": ["month"], "senior": ["yes"], "plan": [1]}, "'senior' takes bool"),
    ({"tenure": [1], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1.5]}, "'plan' takes integer"),
    ({"tenure": [1], "total": [float("inf")], "contract": ["month"], "senior": [True], "plan": [1]}, "infinite"),
    # beyond float32 (the model's input): it would reach the model as infinity
    ({"tenure": [1], "total": [1e39], "contract": ["month"], "senior": [True], "plan": [1]}, "beyond FP32's range"),
    ({"tenure": [1e300] * 20, "total": [1.0] * 20, "contract": ["month"] * 20, "senior": [True] * 20, "plan": [1] * 20},
     "'tenure' has 20 value\\(s\\) infinite or beyond FP32's range"),
    ({"tenure": [10**400], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1]},
     "'tenure' has a value too large to be a number"),
    ({"tenure": [1], "contract": ["month"], "senior": [True], "plan": [1]}, "missing column\\(s\\) \\['total'\\]"),
    ({"tenure": [1], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1], "x": [1]}, "unknown column"),
    ({"tenure": [1, 2], "total": [1.0], "contract": ["month"], "senior": [True], "plan": [1]}, "has 1 value"),
])
def test_a_value_of_the_wrong_kind_or_a_wrong_column_is_refused_naming_it(rows, message):
    frame = customers()
    prep = fit_preparation(frame, column_kinds(frame, list(frame), {"plan": CATEGORICAL}))
    with pytest.raises(ColumnError, match=message):
        prep.transform(rows)


def test_complete_numeric_columns_prepare_to_the_matrix_earlier_versions_took():
    """Bit for bit, ints and floats alike: so an all-numeric version's training reproduces."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.integers(-1000, 1000, 500), "b": rng.normal(size=500),
                          "c": rng.normal(size=500).astype("float32")})
    prep = fit_preparation(frame, column_kinds(frame, list(frame), {}))
    assert prep.width == 3 and prep.all_numeric
    assert np.array_equal(prep.transform(frame).x, frame.to_numpy(dtype="float32"))
    legacy = Preparation.numeric(["a", "b", "c"])
    assert np.array_equal(legacy.transform(frame).x, frame.to_numpy(dtype="float32"))
    with pytest.raises(ColumnError, match="'b' has 1 missing value"):
        legacy.transform({"a": [1], "b": [None], "c": [2.0]})


def test_a_refusing_preparation_refuses_gaps_and_an_empty_column_cannot_be_fitted():
    frame = customers()
    kinds = column_kinds(frame, list(frame), {})
    prep = fit_preparation(frame, kinds, refuse_missing=True)
    with pytest.raises(ColumnError, match="'contract' has 1 missing value"):
        prep.transform({"tenure": [1], "total": [2.0], "contract": [None], "senior": [True], "plan": [1]})
    with pytest.raises(ColumnError, match="'total' has no value in the training split"):
        fit_preparation(frame.assign(total=np.nan), kinds)
    with pytest.raises(ColumnError, match="holds fractional numbers"):
        fit_preparation(frame, {**kinds, "total": CATEGORICAL})


def test_only_the_most_frequent_categories_get_inputs_of_their_own():
    train = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 4 + ["c"] * 4 + ["d"] * 1})
    prep = fit_preparation(train, {"c": CATEGORICAL}, min_frequency=2, max_categories=2)
    assert prep.columns[0].vocabulary == ("a", "b")  # b and c tie: the smaller value first; d is rare
    out = prep.transform({"c": ["c", "d", "a"]})
    assert out.other == {"c": 2} and out.x.tolist() == [[0, 0], [0, 0], [1, 0]]


def test_a_numeric_matrix_is_prepared_like_its_columns_and_untouched_when_complete():
    frame = pd.DataFrame({"a": [1.0, 2.0, None, 4.0], "b": [5.0, 6.0, 7.0, 8.0]})
    prep = fit_preparation(frame, {"a": NUMERIC, "b": NUMERIC})
    x = np.array([[np.nan, 1.0], [3.0, np.nan]], dtype=np.float32)
    by_matrix = prep.transform_matrix(x)
    by_columns = prep.transform({"a": x[:, 0], "b": x[:, 1]})
    assert np.array_equal(by_matrix.x, by_columns.x) and by_matrix.imputed == by_columns.imputed == {"a": 1, "b": 1}
    complete = fit_preparation(frame.fillna(0), {"a": NUMERIC, "b": NUMERIC})
    x = np.ones((3, 2), dtype=np.float32)
    assert complete.transform_matrix(x).x is x  # no copy on the hot path
    with pytest.raises(ColumnError, match="'b' has 1 missing value"):
        Preparation.numeric(["a", "b"]).transform_matrix(np.array([[1.0, np.nan]], dtype=np.float32))


@pytest.mark.parametrize("values, kind", [
    (["month", "two", "year", None, "crypto"], "string"), ([True, False, None], "bool"), ([1, 2, 3, None, 9], "integer"),
])
def test_large_batches_are_encoded_as_the_value_by_value_path_encodes_them(values, kind):
    from training.columns import VECTORISED_FROM

    rng = np.random.default_rng(2)
    column = pd.Series([values[i] for i in rng.integers(0, len(values), 3 * VECTORISED_FROM)], dtype=object)
    prep = fit_preparation(pd.DataFrame({"c": column.iloc[:400]}), {"c": CATEGORICAL}, min_frequency=1)
    big = prep.transform({"c": column.tolist()})
    small = [prep.transform({"c": column.iloc[i:i + 100].tolist()}) for i in range(0, len(column), 100)]
    assert np.array_equal(big.x, np.concatenate([s.x for s in small]))
    assert big.other.get("c", 0) == sum(s.other.get("c", 0) for s in small)
    assert big.imputed.get("c", 0) == sum(s.imputed.get("c", 0) for s in small)
    wrong = column.tolist()
    wrong[500] = 3.5 if kind != "bool" else "yes"
    with pytest.raises(ColumnError, match="'c' takes"):
        prep.transform({"c": wrong})


def test_a_few_values_in_a_list_prepare_exactly_as_an_array_does():
    """The one-row path (a served request's list) and NumPy's agree value for value, refusals included."""
    import numpy as np
    import pytest

    from training.columns import ColumnError, NumericColumn, Preparation

    prep = Preparation((NumericColumn("a", 2.5, True), NumericColumn("b", -1.0, False)))
    few = {"a": [None, 3, 1e30, float("nan")], "b": [np.int64(7), 0.1, 16777217, -2.0]}
    many = {k: np.asarray([np.nan if v is None else v for v in vs], dtype=object) for k, vs in few.items()}
    small, big = prep.transform(few), prep.transform(many)
    assert np.array_equal(small.x, big.x) and small.imputed == big.imputed == {"a": 2}
    for bad, message in (("3", "takes numbers"), (True, "takes numbers"), (float("inf"), "infinite")):
        with pytest.raises(ColumnError, match=message):
            prep.transform({"a": [bad], "b": [1.0]})


def test_an_integer_code_beyond_int64_is_other_in_a_large_batch_as_in_a_small_one():
    """2**64 - 1 in an integer-coded column: the vectorised path (pandas' int64) cannot hold it; no
    vocabulary holds it either, so it is answered as the other bucket, as the value-by-value path does."""
    from training.columns import CategoricalColumn

    column = CategoricalColumn("plan", "integer", (1, 2, 3), False)
    for rows in (2, 300):
        out = np.zeros((rows, 3), np.float32)
        assert column.encode([2**64 - 1] + [2] * (rows - 1), out) == (1, 0)
        assert out[0].tolist() == [0, 0, 0] and out[1].tolist() == [0, 1, 0]
