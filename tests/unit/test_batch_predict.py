"""Batch inference's pure parts: column checks, the output's schema and metadata, invalid rows, the
config, and an output that appears whole or not at all."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.config_layers import ConfigError
from cluster.storage import absolute
from serving.batch.table import _invalid_rows_refused, rejected_uri
from serving.batch.config import load_batch_config
from serving.batch.files import (discard, fingerprint, open_input, publish, refuse_existing, staging_uri,
                                 written_files)
from serving.batch.predictor import InvalidFeatureRows, invalid_count, predict_in_batches, rejected_rows
from serving.batch.schema import (BatchInputError, check_input, feature_matrix, invalid_rows, output_names,
                                  output_table, run_metadata)

FEATURES = ["a", "b"]


def schema(**types):
    return pa.schema([(name, t) for name, t in types.items()])


def test_every_feature_must_be_present_and_numeric_and_the_error_names_the_columns():
    with pytest.raises(BatchInputError, match=r"no feature column\(s\) \['b'\].*has \['a', 'id'\]"):
        check_input(schema(a=pa.float64(), id=pa.int64()), FEATURES, [0, 1], None)
    with pytest.raises(BatchInputError, match="b is string"):
        check_input(schema(a=pa.float32(), b=pa.string()), FEATURES, [0, 1], None)
    # integers, decimals and booleans are numbers
    assert check_input(schema(a=pa.int32(), b=pa.decimal128(10, 2), c=pa.bool_()), FEATURES, [0, 1], None) == ["c"]


def test_carried_columns_default_to_every_non_feature_and_a_choice_is_checked():
    s = schema(id=pa.string(), a=pa.float64(), b=pa.float64(), ts=pa.timestamp("ms"))
    assert check_input(s, FEATURES, [0, 1], None) == ["id", "ts"]
    assert check_input(s, FEATURES, [0, 1], ["id", "a"]) == ["id", "a"]
    with pytest.raises(BatchInputError, match=r"does not have: \['nope'\]"):
        check_input(s, FEATURES, [0, 1], ["id", "nope"])


def test_a_carried_column_the_output_would_overwrite_is_refused():
    s = schema(a=pa.float64(), b=pa.float64(), prediction=pa.int64(), probability_cat=pa.float64())
    with pytest.raises(BatchInputError, match=r"\['prediction', 'probability_cat'\] would be overwritten"):
        check_input(s, FEATURES, ["cat", "dog"], None)
    assert output_names(["cat", "dog"]) == ["prediction", "label", "probability_cat", "probability_dog", "version"]


def test_inf_and_gaps_a_version_does_not_impute_are_invalid_rows():
    from training.columns import NUMERIC, Preparation, fit_preparation

    batch = pa.table({"a": pa.array([1.0, None, 3.0, 4.0]), "b": pa.array([1, 2, 3, 4]),
                      "c": [0.0, 0.0, float("inf"), float("nan")]})
    x = feature_matrix(batch, ["a", "b"])
    assert x.dtype == np.float32 and x.shape == (4, 2) and np.isnan(x[1, 0])
    legacy = Preparation.numeric(["a", "c"])  # a version registered before preparations: every gap refused
    assert invalid_rows(batch, Preparation.numeric(["a", "b"])).tolist() == [False, True, False, False]
    assert invalid_rows(batch, legacy).tolist() == [False, True, True, True]
    assert invalid_count(batch, legacy)["invalid"].tolist() == [3]
    rejected = rejected_rows(batch, legacy)
    assert rejected.column_names == ["a", "b", "c"] and rejected.column("b").to_pylist() == [2, 3, 4]
    imputing = fit_preparation(batch.to_pandas().iloc[[0, 3]].assign(c=[0.0, 1.0]), {"a": NUMERIC, "c": NUMERIC})
    assert invalid_rows(batch, imputing).tolist() == [False, False, True, False]  # only the infinite value


def test_a_mixed_table_is_checked_by_kind_and_prepared_as_a_served_request_is():
    import pandas as pd

    from serving.batch.schema import prepared_matrix
    from training.columns import CATEGORICAL, NUMERIC, fit_preparation

    train = pd.DataFrame({"a": [1.0, None, 3.0], "kind": ["x", "y", None], "flag": [True, False, True]})
    prep = fit_preparation(train, {"a": NUMERIC, "kind": CATEGORICAL, "flag": CATEGORICAL})
    batch = pa.table({"a": [2.0, None], "kind": pa.array(["y", "z"]).dictionary_encode(), "flag": [False, True],
                      "id": ["r1", "r2"]})
    assert check_input(batch.schema, prep.names, [0, 1], None, prep) == ["id"]
    assert np.array_equal(prepared_matrix(batch, prep), prep.transform(batch.select(prep.names).to_pandas()).x)
    wrong = pa.table({"a": ["2"], "kind": [3], "flag": [True]})
    with pytest.raises(BatchInputError, match="a is string, the version takes numbers, kind is int64, the version "
                                              "takes string"):
        check_input(wrong.schema, prep.names, [0, 1], None, prep)


def test_output_rows_carry_ids_the_class_its_probabilities_the_version_and_the_run_metadata():
    carried = pa.table({"id": ["r1", "r2"]})
    proba = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    table = output_table(carried, proba, [False, True], 3, run_metadata("m", 3, "run9"))
    assert table.column_names == ["id", "prediction", "label", "probability_False", "probability_True", "version"]
    assert table.column("prediction").to_pylist() == [0, 1]
    assert table.column("label").to_pylist() == [False, True]
    assert table.column("probability_True").to_pylist() == pytest.approx([0.1, 0.8])
    assert table.column("version").to_pylist() == [3, 3]
    assert table.schema.metadata == {b"handoff.model": b"m", b"handoff.version": b"3", b"handoff.mlflow_run_id": b"run9"}
    # string classes name the label; no rows is an empty table of the same columns
    empty = output_table(carried.slice(0, 0), np.zeros((0, 2), np.float32), ["cat", "dog"], 1, {})
    assert empty.num_rows == 0 and empty.column_names[-1] == "version"


def test_batch_config_has_defaults_and_refuses_bad_values_by_name():
    cfg = load_batch_config(None, [], environ={})
    assert (cfg.batch_size, cfg.actors, cfg.cpus_per_actor, cfg.gpus_per_actor, cfg.on_invalid) == (
        1024, None, None, 0.0, "refuse")
    cfg = load_batch_config(None, ["batch_size=4096", "gpus_per_actor=0.5", "columns=[id]"],
                            environ={"HANDOFF_PREDICT__ON_INVALID": "skip"})
    assert (cfg.batch_size, cfg.gpus_per_actor, cfg.columns, cfg.on_invalid) == (4096, 0.5, ["id"], "skip")
    with pytest.raises(ConfigError, match="on_invalid"):
        load_batch_config(None, ["on_invalid=drop"], environ={})
    with pytest.raises(ConfigError, match="batch_size"):
        load_batch_config(None, ["batch_size=0"], environ={})
    with pytest.raises(ConfigError, match="whole number"):
        load_batch_config(None, ["gpus_per_actor=1.5"], environ={})


def test_the_shipped_predict_config_is_valid():
    from pathlib import Path

    assert load_batch_config(Path(__file__).resolve().parents[2] / "configs" / "predict.yaml", [], environ={}).batch_size


def write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_input_is_opened_from_a_file_or_a_directory_and_bad_ones_are_named(tmp_path):
    write(tmp_path / "in" / "x=1" / "a.parquet", pa.table({"a": [1.0, 2.0]}))
    write(tmp_path / "in" / "x=2" / "b.parquet", pa.table({"a": [3.0]}))
    table = open_input(str(tmp_path / "in"))
    assert table.rows == 3 and len(table.files) == 2 and "a" in table.schema.names
    assert open_input(str(tmp_path / "in" / "x=1" / "a.parquet")).rows == 2
    with pytest.raises(BatchInputError, match="input not found"):
        open_input(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="holds no Parquet files"):
        open_input(str(tmp_path / "empty"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(BatchInputError, match="not readable as Parquet"):
        open_input(str(tmp_path / "junk.parquet"))


def test_the_fingerprint_follows_contents_and_relative_names_not_where_the_table_lies(tmp_path):
    t = pa.table({"a": [1.0, 2.0]})
    write(tmp_path / "one" / "p.parquet", t)
    write(tmp_path / "two" / "p.parquet", t)
    same = fingerprint(open_input(str(tmp_path / "one"))), fingerprint(open_input(str(tmp_path / "two")))
    assert same[0] == same[1]
    write(tmp_path / "two" / "p.parquet", pa.table({"a": [1.0, 2.5]}))
    assert fingerprint(open_input(str(tmp_path / "two"))) != same[0]


def test_an_output_appears_whole_an_existing_one_is_refused_and_overwriting_replaces_it_last(tmp_path):
    out = str(tmp_path / "out")
    refuse_existing(out, overwrite=False)  # nothing there yet
    staging = staging_uri(out, "run1")
    assert staging == str(tmp_path / ".out.staging-run1")
    write(tmp_path / ".out.staging-run1" / "p.parquet", pa.table({"x": [1]}).replace_schema_metadata({"k": "v"}))
    publish(staging, out)
    written = written_files(out)
    assert written.rows == 1 and written.metadata == ({"k": "v"},)
    assert not (tmp_path / ".out.staging-run1").exists()
    with pytest.raises(BatchInputError, match="already exists; choose another path or pass --overwrite"):
        refuse_existing(out, overwrite=False)
    refuse_existing(out, overwrite=True)
    write(tmp_path / ".out.staging-run2" / "q.parquet", pa.table({"x": [1, 2]}))
    publish(staging_uri(out, "run2"), out)
    assert written_files(out).rows == 2 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["q.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    discard(staging_uri(out, "never-written"))  # discarding what is not there is fine


def test_paths_become_absolute_for_workers_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("scored") == str(tmp_path / "scored") and absolute("s3://b/k") == "s3://b/k"
    assert rejected_uri("s3://b/out/") == "s3://b/out.rejected"


def test_a_refusal_of_invalid_rows_is_recognised_through_the_wrappers_ray_puts_around_it():
    class Wrapped(RuntimeError):
        pass

    try:
        try:
            raise InvalidFeatureRows("3 row(s)")
        except InvalidFeatureRows as inner:
            raise Wrapped("user code failed") from inner
    except Wrapped as exc:
        assert _invalid_rows_refused(exc)
    assert _invalid_rows_refused(RuntimeError("ray.exceptions.RayTaskError(InvalidFeatureRows): 3 row(s)"))
    assert not _invalid_rows_refused(RuntimeError("disk full"))


def test_blocks_give_every_actor_several_whole_batches_and_stay_bounded():
    from serving.batch.table import MAX_BLOCK_ROWS, block_rows

    assert block_rows(1_000_000, 1024, 2) == 125_952  # 8 blocks of 123 batches
    assert block_rows(1_000_000, 1024, 2) % 1024 == 0
    assert block_rows(100, 1024, 3) == 1024  # never less than one batch
    assert block_rows(10**9, 1024, 2) <= MAX_BLOCK_ROWS
    assert block_rows(10**9, 10**6, 1) == 10**6  # a batch larger than the cap is one block


def test_the_pool_must_fit_in_the_free_cpus_and_gpus_beside_a_read_task_and_grows_to_what_is_free():
    from serving.batch.table import check_pool_fits

    assert check_pool_fits(1, 1.0, 0, {"CPU": 2.0}) == 1  # 2 - 0.25 read task leaves room for one actor
    assert check_pool_fits(1, 0.5, 0, {"CPU": 2.0}) == 3
    assert check_pool_fits(2, 0.5, 0, {"CPU": 3.0}) == 5
    assert check_pool_fits(1, 1.0, 0.5, {"CPU": 16.0, "GPU": 1.0}) == 2  # GPU-bound
    with pytest.raises(BatchInputError, match=r"2 actor\(s\) × 1 CPU and a read task \(0.25 CPU\) do not fit in the "
                                              r"2 CPU\(s\) the cluster has free"):
        check_pool_fits(2, 1.0, 0, {"CPU": 2.0})
    with pytest.raises(BatchInputError, match=r"do not fit in the 0.7 CPU"):  # Serve holds the rest
        check_pool_fits(1, 1.0, 0, {"CPU": 0.7})
    with pytest.raises(BatchInputError, match=r"1 actor\(s\) × 1 GPU do not fit in the 0 GPU"):
        check_pool_fits(1, 1.0, 1.0, {"CPU": 4.0})


def test_a_rows_bytes_are_estimated_for_fixed_and_variable_width_columns():
    from serving.batch.read import row_bytes

    s = pa.schema([("a", pa.float64()), ("b", pa.int32()), ("id", pa.string()), ("ok", pa.bool_())])
    assert row_bytes(s, ["a", "b"]) == 12
    assert row_bytes(s, ["a", "id", "ok"]) == 8 + 32 + 1


def test_the_reader_yields_blocks_of_the_asked_columns_with_hive_partition_values(tmp_path):
    from serving.batch.read import read_blocks, read_units

    write(tmp_path / "in" / "day=3" / "a.parquet", pa.table({"x": [1.0, 2.0, 3.0], "id": ["a", "b", "c"]}))
    write(tmp_path / "in" / "day=4" / "b.parquet", pa.table({"x": [4.0], "id": ["d"]}))
    table = open_input(str(tmp_path / "in"))
    units = read_units(table)
    assert [u["partition.day"] for u in units] == ["3", "4"]
    blocks = list(read_blocks(pa.Table.from_pylist(units[:1]), fs=table.fs, schema=table.schema,
                              columns=["id", "day", "x"], block_rows=2))
    assert [b.num_rows for b in blocks] == [2, 1]
    assert blocks[0].column_names == ["id", "day", "x"] and blocks[0].column("day").to_pylist() == [3, 3]
    assert blocks[0].schema.field("day").type == table.schema.field("day").type


def test_an_actor_asks_for_one_cpu_or_what_is_free_beside_a_read_task():
    from serving.batch.table import actor_cpus

    assert actor_cpus(None, 2.0) == 1.0
    assert actor_cpus(None, 1.0) == 0.75  # a laptop whose other CPU Serve's replicas hold
    assert actor_cpus(None, 0.6) == 0.25
    assert actor_cpus(None, 0.1) == 0.25  # then refused by the pool check, naming what is free
    assert actor_cpus(2.0, 1.0) == 2.0  # as configured


def test_a_block_is_predicted_batch_size_rows_per_call_in_row_order():
    calls = []

    def proba(x):  # a two-class model whose probability is the row's first feature
        calls.append(len(x))
        return np.stack([1 - x[:, 0], x[:, 0]], axis=1)

    x = np.linspace(0, 1, 2500, dtype=np.float32).reshape(-1, 1)
    out = predict_in_batches(proba, x, 1024, 2)
    assert calls == [1024, 1024, 452] and np.array_equal(out[:, 1], x[:, 0])
    calls.clear()
    empty = predict_in_batches(proba, x[:0], 1024, 2)
    assert calls == [] and empty.shape == (0, 2) and empty.dtype == np.float32


def test_every_file_of_the_input_holds_the_scored_and_carried_columns_of_their_kind(tmp_path):
    from serving.batch.schema import check_files

    def files_check(*tables, features=("a", "b"), carry=None):
        for i, t in enumerate(tables):
            write(tmp_path / "in" / f"{i}.parquet", t)
        table = open_input(str(tmp_path / "in"))
        carried = check_input(table.schema, list(features), [0, 1], carry)
        try:
            check_files(zip(table.files, table.file_schemas), table.schema, list(features), carried)
        finally:
            for p in (tmp_path / "in").iterdir():
                p.unlink()

    first = pa.table({"a": [1.0], "b": [2.0], "id": ["r1"]})
    # a file without a feature would be scored with gaps; one with text in it, the text parsed as numbers
    with pytest.raises(BatchInputError, match=r"1.parquet has no column\(s\) \['b'\]"):
        files_check(first, pa.table({"a": [3.0], "id": ["r2"]}))
    with pytest.raises(BatchInputError, match=r"1.parquet holds .* b is string, the version takes numbers"):
        files_check(first, pa.table({"a": [3.0], "b": ["7"], "id": ["r2"]}))
    with pytest.raises(BatchInputError, match=r"1.parquet has no column\(s\) \['id'\]"):
        files_check(first, pa.table({"a": [3.0], "b": [4.0]}))
    with pytest.raises(BatchInputError, match=r"id is int64, the first file's is string"):
        files_check(first, pa.table({"a": [3.0], "b": [4.0], "id": [2]}))
    # other numbers, a wholly empty column, another encoding and uncarried extra columns are fine
    files_check(first, pa.table({"a": [3], "b": pa.nulls(1), "id": pa.array(["r2"]).dictionary_encode(), "x": [1]}))
    files_check(first, pa.table({"a": [3.0], "b": [4.0]}), carry=["a"])


def test_a_null_hive_partition_is_read_as_a_gap_not_as_the_text_none(tmp_path):
    from serving.batch.read import read_blocks, read_units

    for day, city in (("3", "NY"), ("__HIVE_DEFAULT_PARTITION__", "__HIVE_DEFAULT_PARTITION__")):
        write(tmp_path / "in" / f"day={day}" / f"city={city}" / "p.parquet", pa.table({"x": [1.0]}))
    table = open_input(str(tmp_path / "in"))
    blocks = [b for unit in read_units(table) for b in read_blocks(
        pa.Table.from_pylist([unit]), fs=table.fs, schema=table.schema, columns=["x", "day", "city"], block_rows=4)]
    assert [b.column("day").to_pylist() for b in blocks] == [[3], [None]]
    assert [b.column("city").to_pylist() for b in blocks] == [["NY"], [None]]


def test_an_output_that_overlaps_the_input_or_cannot_be_looked_at_is_refused(tmp_path):
    from serving.batch.files import refuse_overlap

    data = str(tmp_path / "data")
    for output in (data, f"{data}/", f"{data}/scored", str(tmp_path)):
        with pytest.raises(BatchInputError, match="overlaps the input"):
            refuse_overlap(data, output)
    with pytest.raises(BatchInputError, match="overlaps the input"):
        refuse_overlap(f"{data}/t.parquet", data)  # --overwrite would delete the input
    refuse_overlap(f"{data}/t.parquet", f"{data}/scored")
    refuse_overlap(data, f"{data}2")
    with pytest.raises(BatchInputError, match="cannot open output 'nope://x/y'"):
        refuse_existing("nope://x/y", overwrite=False)


def test_numbers_beyond_float32s_range_are_invalid_rows_not_infinities_for_the_model():
    from training.columns import NUMERIC, Preparation, fit_preparation

    batch = pa.table({"a": [1.0, 1e300, -1e39, None], "b": [1.0, 2.0, 3.0, 4.0]})
    assert invalid_rows(batch, Preparation.numeric(["a", "b"])).tolist() == [False, True, True, True]
    imputing = fit_preparation(batch.to_pandas().iloc[[0, 3]], {"a": NUMERIC, "b": NUMERIC})
    assert invalid_rows(batch, imputing).tolist() == [False, True, True, False]


def test_a_string_view_column_is_refused_by_name_not_met_as_a_crash_in_an_actor():
    """Arrow's string_view cannot be filtered (pyarrow has no take kernel for it): skipping invalid rows
    would fail inside an actor, so the column is refused before any work, naming its type."""
    import pandas as pd

    from training.columns import CATEGORICAL, fit_preparation

    prep = fit_preparation(pd.DataFrame({"kind": ["x", "y"]}), {"kind": CATEGORICAL})
    batch = pa.table({"kind": pa.array(["y", "x"], pa.string_view())})
    with pytest.raises(BatchInputError, match="kind is string_view, the version takes string"):
        check_input(batch.schema, prep.names, [0, 1], None, prep)


def test_a_very_wide_table_is_checked_and_read_and_its_refusals_stay_short(tmp_path):
    """3,000 columns (the reader once rebuilt the file's schema per column: ~7 s here, 426 s at 20,000;
    its time is not asserted, the machine may be busy)."""
    from serving.batch.read import read_blocks, read_units

    names = [f"c{i}" for i in range(3000)]
    write(tmp_path / "wide.parquet", pa.table({name: np.zeros(2, np.float32) for name in names}))
    table = open_input(str(tmp_path / "wide.parquet"))
    assert len(check_input(table.schema, names[::2], [0, 1], None)) == 1500
    blocks = list(read_blocks(pa.Table.from_pylist(read_units(table)), fs=table.fs, schema=table.schema,
                              columns=names, block_rows=2))
    assert blocks[0].num_columns == 3000 and blocks[0].column_names == names
    with pytest.raises(BatchInputError, match=r"no feature column\(s\) \['nope'\]; .* and 2990 more"):
        check_input(table.schema, ["nope", *names], [0, 1], None)


def test_integer_codes_written_as_floats_with_gaps_are_taken_as_training_takes_them():
    """pandas writes an integer column with a gap as float64; training takes it as integer codes, so
    batch does too: whole numbers are the codes, a gap is a gap, 2.5 or an infinity an invalid row."""
    import pandas as pd

    from serving.batch.schema import invalid_rows, prepared_matrix
    from training.columns import CATEGORICAL, NUMERIC, fit_preparation

    prep = fit_preparation(pd.DataFrame({"a": [1.0, 2.0, 3.0], "plan": [1.0, None, 3.0]}),
                           {"a": NUMERIC, "plan": CATEGORICAL})
    batch = pa.table({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "plan": [3.0, None, 2.5, np.inf, 1.0]})
    assert check_input(batch.schema, prep.names, [0, 1], None, prep) == []
    assert invalid_rows(batch, prep).tolist() == [False, False, True, True, False]
    good = batch.take([0, 1, 4])
    assert np.array_equal(prepared_matrix(good, prep),
                          prep.transform({"a": [1.0, 2.0, 5.0], "plan": [3, None, 1]}, rows=3).x)
    with pytest.raises(BatchInputError, match="plan is string, the version takes integer"):
        check_input(pa.table({"a": [1.0], "plan": ["3"]}).schema, prep.names, [0, 1], None, prep)


class _UsersLayer(__import__("torch").nn.Module):
    """A layer class a user's factory module defines (its module is not the cluster's)."""

    def forward(self, x):
        return x


def test_a_version_goes_to_the_actors_as_an_object_only_when_they_can_unpickle_its_network():
    from types import SimpleNamespace

    import torch

    from serving.batch.table import shippable
    from training.torch_scorer import TorchScorer

    def version(network):
        return SimpleNamespace(outputs=TorchScorer(network, "cpu", False), portable=True)

    assert shippable(version(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())))
    assert not shippable(version(torch.nn.Sequential(torch.nn.Linear(3, 2), _UsersLayer())))
    assert not shippable(SimpleNamespace(outputs=lambda x: x, portable=False))  # an MLflow pyfunc: loaded there
