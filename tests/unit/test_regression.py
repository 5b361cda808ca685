"""Regression in the training core, pure: the target's scale inside the model, the losses, the
figures, the search objective and the refusals (no Ray, no MLflow)."""

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from training.config import DatasetConfig, ExperimentConfig, SearchConfig
from training.contract import pyfunc_answer
from training.prepare import DataError, prepare
from training.train_loop import TrialSpec, fit, new_model, predict_outputs, regression_figures, weights_hash


def table(n=800, seed=0, scale=1000.0, offset=50_000.0):
    """A quantity in large units (a price): far from the network's natural output scale, so only a
    model that standardises its target learns it in a few epochs."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "city": rng.choice(["north", "south", "east"], size=n)})
    df["price"] = offset + scale * (2 * df.a - df.b + (df.city == "north") * 1.5) + rng.normal(scale=scale * 0.1, size=n)
    return df


def data(df=None, **kw):
    df = table() if df is None else df
    return prepare(df, DatasetConfig(uri="x", label="price", features=["a", "b", "city"]), seed=0, **kw)


def spec(**kw):
    base = dict(family="mlp", model_params={"hidden_layers": 1, "width": 16}, lr=0.01, batch_size=64,
                weight_decay=0.0, seed=3, threads=1)
    return TrialSpec(**{**base, **kw})


def test_a_fractional_target_is_regression_with_one_output():
    d = data()
    assert d.task == "regression" and d.classes == [] and d.n_outputs == 1
    assert d.y_train.dtype == np.float64 and d.y_train.mean() > 40_000  # the target's own units


def test_the_model_learns_a_target_in_large_units_and_answers_in_them():
    d = data()
    seen = []
    model = fit(spec(), d, epochs=15, on_epoch=lambda e, m, *_: seen.append(m))
    assert set(seen[0]) == {"train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"}
    last = seen[-1]
    assert last["val_rmse"] < 0.25 * d.y_val.std() and last["val_r2"] > 0.9 and last["val_rmse"] < seen[0]["val_rmse"]
    predicted = predict_outputs(model, d.x_test, "regression")
    assert predicted.shape == (len(d.y_test), 1)
    assert abs(predicted.mean() - d.y_test.mean()) < 0.1 * d.y_test.std()  # in the target's units
    state = model.state_dict()  # its scale travels with the weights
    assert float(state["target_mean"]) == pytest.approx(d.y_train.mean(), rel=1e-6)
    assert float(state["target_std"]) == pytest.approx(d.y_train.std(), rel=1e-6)


@pytest.mark.parametrize("loss", [None, "huber", "l1"])
def test_each_loss_trains_bit_identically_on_rerun(loss):
    d = data(table(n=300))
    a, b = fit(spec(loss=loss), d, epochs=3), fit(spec(loss=loss), d, epochs=3)
    assert weights_hash(a.state_dict()) == weights_hash(b.state_dict())


def test_the_losses_differ():
    d = data(table(n=300))
    hashes = {weights_hash(fit(spec(loss=loss), d, epochs=2).state_dict()) for loss in ("mse", "huber", "l1")}
    assert len(hashes) == 3


def test_regression_figures_by_their_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    f = regression_figures(y, p)
    assert f["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert f["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert f["r2"] == pytest.approx(1 - 2.25 / 5.0)
    assert regression_figures(y, y)["r2"] == 1.0 and regression_figures(np.ones(3), np.ones(3))["r2"] == 0.0


def test_a_factory_that_answers_the_wrong_shape_is_refused_naming_it():
    class Flat(torch.nn.Module):
        def __init__(self, n_features, n_outputs):
            super().__init__()
            self.linear = torch.nn.Linear(n_features, 3)

        def forward(self, x):
            return self.linear(x)

    import sys
    import types

    module = types.ModuleType("flat_factory")
    module.build = Flat
    sys.modules["flat_factory"] = module
    with pytest.raises(ValueError, match=r"answers shape \[2, 3\].*\[2, 1\].*one predicted value"):
        new_model(spec(family="flat_factory:build", model_params={}), data(table(n=100)))


def test_the_pyfunc_answer_of_a_regression_model_is_the_values():
    answer = pyfunc_answer(np.array([[1.5], [2.25]], dtype=np.float32), [], task="regression")
    assert answer.dtype == np.float64 and answer.tolist() == [1.5, 2.25]


def test_the_search_objective_follows_the_task():
    search = SearchConfig()
    assert search.objective("classification") == ("val_loss", "min")
    assert search.objective("regression") == ("val_rmse", "min")
    assert SearchConfig(metric="val_r2").objective("regression") == ("val_r2", "max")
    with pytest.raises(ValueError, match="'val_accuracy' does not measure regression"):
        SearchConfig(metric="val_accuracy").objective("regression")
    with pytest.raises(ValidationError, match="optimised with mode 'max'"):
        SearchConfig(metric="val_r2", mode="min")


def base_config(**kw):
    return {"name": "m", "dataset": {"uri": "x", "label": "price", "features": ["a", "b"]}, **kw}


def test_a_declared_task_checks_its_metric_and_loss_at_load():
    with pytest.raises(ValidationError, match="does not measure regression"):
        ExperimentConfig.model_validate(base_config(task="regression", search={"metric": "val_accuracy"}))
    with pytest.raises(ValidationError, match="train.loss 'huber' is for regression"):
        ExperimentConfig.model_validate(base_config(task="classification", train={"loss": "huber"}))
    cfg = ExperimentConfig.model_validate(base_config(task="regression", train={"loss": "huber"}))
    assert cfg.train.loss == "huber"


def test_an_infinite_or_missing_target_is_refused_naming_it():
    df = table(n=50)
    df.loc[3, "price"] = np.inf
    with pytest.raises(DataError, match="label 'price' has 1 infinite value"):
        data(df)
    df.loc[3, "price"] = np.nan
    with pytest.raises(DataError, match="label 'price' is missing in 1 row"):
        data(df)
    df.loc[3, "price"] = 1e39  # finite in float64, infinite in the model's float32
    with pytest.raises(DataError, match="label 'price' has 1 value\\(s\\) infinite or beyond FP32's range"):
        data(df)


def test_the_config_hash_without_loss_or_metric_is_as_before():
    """Left out, metric and mode hash as the classification default always did; a declared
    regression's default is its own."""
    plain = ExperimentConfig.model_validate(base_config())
    explicit = ExperimentConfig.model_validate(base_config(search={"metric": "val_loss", "mode": "min"}))
    assert plain.search.metric is None and plain.config_hash() == explicit.config_hash()
    regression = ExperimentConfig.model_validate(base_config(task="regression"))
    assert regression.config_hash() != ExperimentConfig.model_validate(
        base_config(task="regression", search={"metric": "val_loss"})).config_hash()
