"""Drift of categorical columns and of gaps, pure, on seeded streams with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.categorical import CategoricalReference, good_turing, missing_figure, score_categorical

VALUES = ["month", "year", "two", "weekly"]
SHARES = [0.55, 0.25, 0.15, 0.05]


def draw(rng, n: int, shares=SHARES, values=VALUES, gaps: float = 0.0) -> list:
    out = list(rng.choice(np.asarray(values, dtype=object), size=n, p=shares))
    for i in np.nonzero(rng.random(n) < gaps)[0]:
        out[i] = None
    return out


@pytest.fixture(scope="module")
def reference() -> CategoricalReference:
    return CategoricalReference.of(draw(np.random.default_rng(0), 20_000, gaps=0.02) + ["rare-once"])


def test_the_reference_counts_values_gaps_and_what_training_held(reference):
    assert reference.values == ("month", "year", "two", "weekly", "rare-once")
    assert reference.missing == pytest.approx(400, rel=0.15) and reference.rows == 20_001
    assert "rare-once" in reference.known and reference.singletons == 1
    again = CategoricalReference.from_json(reference.to_json())
    assert again.values == reference.values and np.array_equal(again.counts, reference.counts)
    assert again.known == reference.known and again.missing == reference.missing


@pytest.mark.parametrize("n", [200, 2_000, 20_000])
def test_windows_from_the_reference_rarely_drift_at_any_size(reference, n):
    rng = np.random.default_rng(n)
    drifted = 0
    for _ in range(30):
        figures = score_categorical("contract", reference, draw(rng, n, gaps=0.02))
        drifted += any(f.p_value < 0.05 and f.effect > f.tolerance for f in figures)
    assert drifted <= 2


def test_a_new_value_a_share_move_and_gaps_are_each_named(reference):
    rng = np.random.default_rng(3)
    window = draw(rng, 2_000, shares=[0.30, 0.25, 0.15, 0.05, 0.25], values=[*VALUES, "crypto"], gaps=0.15)
    figures = {f.column: f for f in score_categorical("contract", reference, window)}
    unseen, shares, missing = figures["contract.unseen"], figures["contract"], figures["contract.missing"]
    assert unseen.effect == pytest.approx(0.25, abs=0.03) and unseen.p_value < 1e-6 and unseen.effect > unseen.tolerance
    assert unseen.detail.startswith("'crypto' 2") and "never seen in training" in unseen.detail
    assert shares.p_value < 1e-6 and shares.effect > shares.tolerance and shares.detail.startswith("<unseen> 2")
    assert missing.share == pytest.approx(0.15, abs=0.03) and missing.effect > missing.tolerance
    assert missing.detail.startswith("1") and "2% in training" in missing.detail


def test_a_numeric_column_s_gaps_are_their_own_figure():
    assert missing_figure("x", 0, 100, 0, 1000) == []  # no gaps on either side: nothing to score
    (figure,) = missing_figure("x", 40, 100, 10, 1000)
    assert figure.column == "x.missing" and figure.effect == pytest.approx(0.39) and figure.p_value < 1e-6
    (calm,) = missing_figure("x", 1, 100, 10, 1000)
    assert calm.effect < calm.tolerance


def test_good_turing_reads_how_often_training_met_new_values():
    ref = CategoricalReference.of(["a"] * 90 + [f"id{i}" for i in range(10)])
    assert good_turing(ref) == pytest.approx(0.1)
