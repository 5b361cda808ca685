"""Retraining's data mix, derived config and offline gate (pure)."""

import numpy as np
import pandas as pd
import pytest

from training.config_loader import load_config
from training.config import DatasetConfig
from training.prepare import PreparedData, prepare
from training.retrain import gate_verdict, retrain_config, retrain_frame, split_holdout
from cluster.jobs import REPO_ROOT as REPO

CFG = load_config(REPO / "configs" / "shuttle.yaml", [], environ={})


def data(classes):
    x = np.arange(12, dtype=float).reshape(4, 3)
    return PreparedData(["a", "b", "c"], "label", classes, x, np.array([0, 1, 0, 1]), x[:1], np.array([0]), x[:1],
                        np.array([1]), "fp")


@pytest.mark.parametrize("classes", [[0, 1], ["no", "yes"], [False, True]])
def test_the_mix_keeps_the_original_rows_once_and_weights_the_recent_ones(classes):
    frame = retrain_frame(data(classes), pd.DataFrame(np.full((2, 3), 9.0), columns=["a", "b", "c"]),
                          np.array([1, 0]), weight=3)
    assert len(frame) == 4 + 6 and list(frame.columns) == ["a", "b", "c", "label"]
    assert frame["label"].tolist() == [classes[i] for i in [0, 1, 0, 1, 1, 1, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"columns \['a', 'b'\]"):
        retrain_frame(data(classes), pd.DataFrame(np.ones((1, 2)), columns=["a", "b"]), np.array([0]), 1)


def test_the_mix_carries_raw_values_so_a_new_category_enters_the_retrained_vocabulary():
    """Recent rows as the live log gives them (a category training never held, a column left empty):
    the mix keeps them raw, and the preparation fitted on it knows the new value."""
    rng = np.random.default_rng(0)
    n = 400
    table = pd.DataFrame({"tenure": rng.integers(0, 70, n), "charges": rng.gamma(2, 30, n),
                          "pay": rng.choice(["card", "bank"], n), "senior": rng.random(n) < 0.2,
                          "y": rng.choice(["no", "yes"], n)})
    table.loc[:9, "charges"] = np.nan
    original = prepare(table, DatasetConfig(uri="u", label="y", features=["tenure", "charges", "pay", "senior"],
                                            min_frequency=5), seed=1)
    recent = pd.DataFrame({"tenure": [3.0] * 10, "charges": [np.nan] * 10, "pay": ["crypto"] * 10,
                           "senior": [True, None] * 5})
    frame = retrain_frame(original, recent, np.ones(10, dtype=np.int64), weight=2)
    assert len(frame) == len(original.y_train) + 20 and frame["pay"].tolist()[-1] == "crypto"
    assert frame["senior"].tolist()[-4:] == [True, True, None, None] and np.isnan(frame["charges"].iloc[-1])
    retrained = prepare(frame, DatasetConfig(uri="u", label="y", features=["tenure", "charges", "pay", "senior"],
                                             min_frequency=5), seed=1)
    pay = next(c for c in retrained.preparation.columns if c.name == "pay")
    assert "crypto" in pay.vocabulary and "crypto" not in next(
        c for c in original.preparation.columns if c.name == "pay").vocabulary


def test_the_derived_config_keeps_the_champions_hyperparameters_or_searches_around_them():
    params = {"hidden_layers": 2, "width": 32, "dropout": 0.1, "lr": 0.001, "batch_size": 256}
    fixed = retrain_config(CFG, "/data/mix.parquet", params, 1)
    assert fixed.dataset.uri == "/data/mix.parquet" and fixed.search.num_samples == 1 and fixed.name == CFG.name
    assert {k: v.values for k, v in fixed.search.space.items()} == {k: [v] for k, v in params.items()}
    assert fixed.seed == CFG.seed and fixed.dataset.features == CFG.dataset.features
    wide = retrain_config(CFG, "/data/mix.parquet", params, 4)
    assert wide.search.num_samples == 4 and wide.search.space == CFG.search.space


def test_the_holdout_is_seeded_and_disjoint():
    train, held = split_holdout(100, 0.3, seed=5)
    assert len(held) == 30 and not set(train) & set(held) and sorted([*train, *held]) == list(range(100))
    assert split_holdout(100, 0.3, seed=5)[1].tolist() == held.tolist()


@pytest.mark.parametrize("recent, original, passed, why", [
    ((0.95, 0.80), (0.97, 0.98), True, "recent held-out rows: candidate 95.00% vs champion 80.00%"),
    ((0.80, 0.80), (0.98, 0.98), False, "does not beat the champion"),
    ((0.95, 0.80), (0.90, 0.98), False, "loses 8.00% on the original test split"),
])
def test_the_gate_wants_a_gain_on_recent_rows_and_no_large_loss_on_the_original_test(recent, original, passed, why):
    scores = {"recent": {"candidate": recent[0], "champion": recent[1]},
              "original": {"candidate": original[0], "champion": original[1]}}
    verdict, reason = gate_verdict(scores, min_gain_recent=0.0, max_loss_original=0.05)
    assert verdict is passed and why in reason
