"""The task from the label, pure: inferred only where the data leaves no doubt, else refused asking for it."""

import numpy as np
import pandas as pd
import pytest

from training.config import DatasetConfig
from training.prepare import DataError, prepare
from training.task import MAX_INFERRED_CLASSES, TaskError, decide_task


def test_a_whole_number_score_is_refused_not_trained_as_hundreds_of_classes():
    """scikit-learn's diabetes table: disease progression 25–346 in whole numbers, the case that
    once became a 214-class classifier without a word."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    assert frame["target"].nunique() == 214
    cfg = DatasetConfig(uri="u", label="target", features=[c for c in frame.columns if c != "target"])
    with pytest.raises(DataError, match=r"'target' holds 214 distinct whole numbers \(25–346\).*task: regression"):
        prepare(frame, cfg, seed=0)
    declared = prepare(frame, cfg, seed=0, task="regression")
    assert declared.task == "regression" and declared.classes == [] and declared.n_outputs == 1
    assert declared.y_train.dtype == np.float64 and set(declared.y_train) <= set(frame["target"])
    assert prepare(frame.assign(target=frame["target"] > 140), cfg, seed=0).classes == [False, True]


@pytest.mark.parametrize("values", [[0, 1, 1, 0], [0.0, 2.0, 1.0], list(range(MAX_INFERRED_CLASSES)) * 2,
                                    ["a", "b"], [True, False], [1, 2, 3]])
def test_class_ids_names_and_booleans_are_classification(values):
    assert decide_task(pd.Series(values), "y", None) == "classification"


def test_numbers_with_a_fractional_part_are_regression():
    assert decide_task(pd.Series([0.5, 1.25, 3.0]), "y", None) == "regression"
    assert decide_task(pd.Series([1, 2, 3]), "y", "regression") == "regression"


@pytest.mark.parametrize("values", [["a", "b"], [True, False]])
def test_regression_of_class_names_is_refused(values):
    with pytest.raises(TaskError, match="task: regression needs a number to predict"):
        decide_task(pd.Series(values), "y", "regression")


@pytest.mark.parametrize("values, message", [
    (list(range(MAX_INFERRED_CLASSES + 1)), "21 distinct whole numbers"),
    ([-1, 0, 1], "3 distinct whole numbers"),
    ([100, 250, 300], "3 distinct whole numbers"),
])
def test_what_could_be_read_two_ways_or_is_a_quantity_is_refused(values, message):
    with pytest.raises(TaskError, match=message):
        decide_task(pd.Series(values), "y", None)


def test_declared_classification_takes_many_class_ids():
    y = pd.Series(np.arange(50).repeat(3))
    assert decide_task(y, "y", "classification") == "classification"


def test_the_task_left_out_keeps_the_config_hash():
    from training.config_loader import load_config
    from cluster.jobs import REPO_ROOT

    plain = load_config(REPO_ROOT / "configs" / "shuttle.yaml", [], environ={})
    declared = load_config(REPO_ROOT / "configs" / "shuttle.yaml", ["task=classification"], environ={})
    assert plain.task is None and declared.task == "classification"
    assert plain.config_hash() == "fb13cf0a912ac7515b8df1208ee46f7acff4baac26d2bf8aa70fee6bba91455d"  # as before `task`
    assert plain.config_hash() != declared.config_hash()
