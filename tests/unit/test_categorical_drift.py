"""Drift of categorical columns and of gaps, pure, on seeded streams with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.categorical import KNOWN, CategoricalReference, good_turing, missing_figure, score_categorical

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
    # in the shares, a value past the tracked ones is <other>, new or not (how many are new: `.unseen`)
    assert shares.p_value < 1e-6 and shares.effect > shares.tolerance and shares.detail.startswith("<other> 2")
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


def drifted(figures) -> list[str]:
    return [f.column for f in figures if f.p_value < 0.05 and f.effect > f.tolerance]


def test_a_column_that_kept_meeting_new_values_in_training_is_left_alone_when_it_meets_them_live():
    """Ids, or a long tail of values: training met a new value in ~1 row of 4 (Good–Turing), and so does
    live traffic. Their newness is `.unseen`'s figure; the shares counted them again, against a bucket
    training could not fill, and drifted every window."""
    rng = np.random.default_rng(2)
    pool = np.array([f"v{i}" for i in range(200_000)], dtype=object)
    p = 1 / np.arange(1, 200_001) ** 1.1
    reference = CategoricalReference.of(list(rng.choice(pool, 20_000, p=p / p.sum())))
    assert good_turing(reference) > 0.2
    for _ in range(5):
        assert drifted(score_categorical("merchant", reference, list(rng.choice(pool, 2_000, p=p / p.sum())))) == []
    ids = CategoricalReference.of([f"user{i}" for i in range(20_000)])
    assert drifted(score_categorical("user", ids, [f"user{i}" for i in range(50_000, 52_000)])) == []


def test_more_distinct_values_than_remembered_are_not_called_new_and_that_is_said():
    """Training held 30,000 distinct values, each ~3 times; the 10,000 remembered do not tell a value
    past them from a new one: it counts as <other>, and the `.unseen` figure says it is not told."""
    rng = np.random.default_rng(1)
    pool = np.array([f"id{i}" for i in range(30_000)], dtype=object)
    reference = CategoricalReference.from_json(CategoricalReference.of(list(rng.choice(pool, 90_000))).to_json())
    assert not reference.complete and len(reference.known) == KNOWN
    for _ in range(3):
        figures = {f.column: f for f in score_categorical("account", reference, list(rng.choice(pool, 5_000)))}
        assert drifted(figures.values()) == []
        assert figures["account.unseen"].share == 0 and "not told" in figures["account.unseen"].detail
    assert CategoricalReference.of(["a", "b"]).complete


def test_a_column_training_held_no_value_of_is_scored_on_its_gaps_alone():
    """A column added to the table after the training rows were taken: every training row a gap. Its
    shares have nothing to compare with (chi-squared refused them, and the window failed); its gaps'
    figure says what changed."""
    reference = CategoricalReference.of([None] * 1_000)
    figures = score_categorical("channel", reference, ["web"] * 150 + [None] * 50)
    assert [f.column for f in figures] == ["channel.missing"]
    assert figures[0].share == 0.25 and figures[0].reference_share == 1.0 and drifted(figures) == ["channel.missing"]
    assert score_categorical("channel", reference, [None] * 200)[0].effect == 0.0  # still all gaps: no move
