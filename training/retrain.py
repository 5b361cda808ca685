"""Retraining a registered version on what production taught it, and the offline gate.

The training side of `handoff retrain` (the CLI composes it with the labelled live rows the
monitor's reader gives): `retrain_frame` mixes the champion's own training split with recent
labelled live rows (weighted), `retrain_config` derives the search from the champion's recorded
config (its hyperparameters, or a short search), and `gate_verdict` (pure) decides whether the
candidate may face live traffic: it must beat the champion on recent rows held out of training
and may not lose more than a set margin on the champion's original test split (accuracy in points
for a classifier; RMSE as relative changes for a regression model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import Choice, ExperimentConfig
from training.prepare import PreparedData


def retrain_frame(original: PreparedData, recent: pd.DataFrame, recent_y: np.ndarray, weight: int) -> pd.DataFrame:
    """The champion's training rows once, then each recent row `weight` times, both as raw rows (the
    feature columns as the data and the clients have them, so the new version fits its own
    preparation: a category that turned up in production enters its vocabulary) and the label
    column, labels as the user names the classes (what a dataset file holds)."""
    if list(recent.columns) != list(original.features):
        raise ValueError(f"recent rows have columns {list(recent.columns)}; the model has {list(original.features)}")
    repeated = recent.iloc[np.repeat(np.arange(len(recent)), weight)]
    frame = pd.concat([original.raw_train[original.features].reset_index(drop=True),
                       repeated.reset_index(drop=True)], ignore_index=True)
    for name in original.features:  # a column of numbers stays numbers, of values one type (None for a gap)
        if original.preparation.kinds[name] == "categorical":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    y = np.concatenate([original.y_train, np.repeat(recent_y, weight)])
    if original.task == "regression":  # the true values, in the target's units
        frame[original.label] = y.astype(np.float64)
    else:
        frame[original.label] = np.asarray(list(original.classes), dtype=object)[y]  # ints, booleans or strings
    return frame


def retrain_config(champion: ExperimentConfig, data_uri: str, trial_params: dict, search_samples: int) -> ExperimentConfig:
    """The champion's config on the new data: its own hyperparameters (one trial) or, with
    `search_samples` > 1, its search space for that many trials."""
    update = {"dataset": champion.dataset.model_copy(update={"uri": data_uri})}
    if search_samples <= 1:
        fixed = {k: Choice(type="choice", values=[trial_params[k]]) for k in champion.search.space if k in trial_params}
        update["search"] = champion.search.model_copy(update={"space": fixed, "num_samples": 1})
    else:
        update["search"] = champion.search.model_copy(update={"num_samples": search_samples})
    return champion.model_copy(update=update)


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held out) indices of n recent rows: a seeded share held out for the gate, never trained on."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fraction))
    return np.sort(order[cut:]), np.sort(order[:cut])


def gate_verdict(scores: dict[str, dict[str, float]], min_gain_recent: float,
                 max_loss_original: float, task: str = "classification") -> tuple[bool, str]:
    """Whether the candidate may face traffic, and why: `scores` has "recent" and "original", each
    with the "candidate"'s and the "champion"'s accuracy (for `task` regression: RMSE, lower is
    better, compared as relative changes of the champion's)."""
    recent, original = scores["recent"], scores["original"]
    if task == "regression":
        gain = (recent["champion"] - recent["candidate"]) / recent["champion"] if recent["champion"] else 0.0
        loss = (original["candidate"] - original["champion"]) / original["champion"] if original["champion"] else 0.0
        summary = (f"RMSE on recent held-out rows: candidate {recent['candidate']:.5g} vs champion "
                   f"{recent['champion']:.5g} ({gain:+.1%} better); original test split: {original['candidate']:.5g} "
                   f"vs {original['champion']:.5g} ({loss:+.1%} worse)")
        if not gain > min_gain_recent:
            return False, f"does not lower RMSE on recent rows by more than {min_gain_recent:.1%} ({summary})"
        if loss > max_loss_original:
            return False, f"raises RMSE on the original test split by {loss:.1%}, more than {max_loss_original:.1%} ({summary})"
        return True, summary
    gain = recent["candidate"] - recent["champion"]
    loss = original["champion"] - original["candidate"]
    summary = (f"recent held-out rows: candidate {recent['candidate']:.2%} vs champion {recent['champion']:.2%}; "
               f"original test split: {original['candidate']:.2%} vs {original['champion']:.2%}")
    if gain <= min_gain_recent:
        return False, f"does not beat the champion on recent rows by more than {min_gain_recent:.2%} ({summary})"
    if loss > max_loss_original:
        return False, f"loses {loss:.2%} on the original test split, more than {max_loss_original:.2%} ({summary})"
    return True, summary
