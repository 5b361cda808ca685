"""Retraining's data mix, derived config and offline gate (pure)."""

import numpy as np
import pytest

from training.config_loader import load_config
from training.prepare import PreparedData
from training.retrain import gate_verdict, retrain_config, retrain_frame, split_holdout
from cluster.jobs import REPO_ROOT as REPO

CFG = load_config(REPO / "configs" / "shuttle.yaml", [], environ={})


def data(classes):
    x = np.arange(12, dtype=float).reshape(4, 3)
    return PreparedData(["a", "b", "c"], "label", classes, x, np.array([0, 1, 0, 1]), x[:1], np.array([0]), x[:1],
                        np.array([1]), "fp")


@pytest.mark.parametrize("classes", [[0, 1], ["no", "yes"], [False, True]])
def test_the_mix_keeps_the_original_rows_once_and_weights_the_recent_ones(classes):
    frame = retrain_frame(data(classes), np.full((2, 3), 9.0), np.array([1, 0]), weight=3)
    assert len(frame) == 4 + 6 and list(frame.columns) == ["a", "b", "c", "label"]
    assert frame["label"].tolist() == [classes[i] for i in [0, 1, 0, 1, 1, 1, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match="2 feature"):
        retrain_frame(data(classes), np.ones((1, 2)), np.array([0]), 1)


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
