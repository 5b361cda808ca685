"""Reference profile, window scoring and the drift decision (pure), on seeded streams with known truth."""

import numpy as np
import pytest

from monitoring.decision import DriftState, decide
from monitoring.reference import ReferenceProfile, build_profile
from monitoring.scoring import score_window

FEATURES = [f"x{j}" for j in range(20)]


def softmax_two(x: np.ndarray) -> np.ndarray:
    s = x[:, :3].sum(axis=1, keepdims=True)
    p = 1 / (1 + np.exp(-s))
    return np.hstack([1 - p, p])


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    x = np.random.default_rng(0).normal(size=(20_000, 20))
    return build_profile(x, FEATURES, softmax_two(x), ["no", "yes"], "fp")


def test_the_profile_survives_its_stored_form(profile):
    back = ReferenceProfile.from_bytes(profile.to_bytes())
    assert back.classes == ("no", "yes") and back.rows == 20_000 and back.fingerprint == "fp"
    for name in FEATURES:
        a, b = profile.features[name], back.features[name]
        assert np.array_equal(a.sorted_sample, b.sorted_sample) and np.array_equal(a.psi_edges, b.psi_edges)
        assert a.mean == b.mean and a.std == b.std
    assert np.array_equal(back.class_counts, profile.class_counts) and set(back.probabilities) == {"no", "yes"}
    assert np.all(np.diff(profile.features["x0"].sorted_sample) >= 0)


def test_no_drift_windows_rarely_alarm_and_a_shift_flags_exactly_the_shifted_features(profile):
    rng = np.random.default_rng(1)
    alarms = sum(score_window(profile, FEATURES, rng.normal(size=(2_000, 20))).drifted for _ in range(40))
    assert alarms <= 3  # BH at α = 0.05 over 20 features: a few of 40 at most
    x = rng.normal(size=(5_000, 20))
    x[:, [2, 7, 11]] += 0.3  # a 0.3σ mean shift in three features
    scores = score_window(profile, FEATURES, x, softmax_two(x))
    assert scores.drifted and scores.drifted_features == ["x2", "x7", "x11"]
    shifted = {s.column: s for s in scores.features}
    assert shifted["x2"].wasserstein == pytest.approx(0.3, abs=0.06) and shifted["x2"].psi > shifted["x0"].psi
    assert shifted["x2"].adjusted_p < 0.05 <= shifted["x0"].adjusted_p
    prediction = {s.column: s for s in scores.prediction}
    assert set(prediction) == {"probability_no", "probability_yes", "predicted_class"}
    assert prediction["predicted_class"].drifted  # x2 feeds the model: more "yes"


@pytest.mark.parametrize("rows", [2_000, 30_000])  # exact p-values, and the batched ones of large windows
def test_a_column_with_gaps_is_scored_on_its_values_alone(profile, rows):
    """A client that leaves a value out (a model that imputes it) sends a gap: it says nothing of the
    column's distribution, and a column of nothing but gaps is no evidence of drift."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(rows, 20))
    x[:, 3] += 0.5
    gappy = x.copy()
    gaps = rng.random(rows) < 0.3
    gappy[gaps, 3] = np.nan
    gappy[:, 9] = np.nan
    scores = {s.column: s for s in score_window(profile, FEATURES, gappy).features}
    alone = {s.column: s for s in score_window(profile, ["x3"], x[~gaps][:, [3]]).features}["x3"]
    assert scores["x3"].statistic == alone.statistic and scores["x3"].wasserstein == alone.wasserstein
    assert scores["x3"].drifted and not scores["x9"].drifted and scores["x9"].p_value == 1.0
    assert scores["x0"].statistic == {s.column: s for s in score_window(profile, FEATURES, x).features}["x0"].statistic


def test_bad_windows_are_refused_naming_the_problem(profile):
    with pytest.raises(ValueError, match="20 feature column"):
        score_window(profile, FEATURES, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="no feature"):
        score_window(profile, [*FEATURES[:-1], "zz"], np.zeros((10, 20)))


def test_drift_is_declared_after_persistence_windows_once_per_episode(profile):
    rng = np.random.default_rng(2)
    clean = score_window(profile, FEATURES, rng.normal(size=(2_000, 20)))
    shifted_x = rng.normal(size=(2_000, 20))
    shifted_x[:, 4] += 1.0
    shifted = score_window(profile, FEATURES, shifted_x)
    assert not clean.drifted and shifted.drifted
    stream = [clean, clean, shifted, shifted, shifted, shifted, clean, shifted, shifted, shifted]
    state, events = DriftState(), []
    for i, window in enumerate(stream):
        state, event = decide(state, window, i, "m", 3, persistence=3)
        if event:
            events.append((i, event))
    assert [i for i, _ in events] == [4, 9]  # the third drifted window in a row, once per episode
    first = events[0][1]
    assert (first.first_window, first.last_window, first.version) == (2, 4, 3) and list(first.features) == ["x4"]
    replay, again = DriftState(), None
    for i, window in enumerate(stream[:5]):
        replay, again = decide(replay, window, i, "m", 3, persistence=3)
    assert again.event_id == first.event_id  # a replayed decision is the same event
    with pytest.raises(ValueError, match="persistence"):
        decide(DriftState(), shifted, 0, "m", 3, persistence=0)


def test_gauges_carry_every_statistic_of_the_last_window_and_the_counters(profile):
    from monitoring.metrics import gauge_values

    window = {"version": 3, "scores": {"x0": {"statistic": 0.1, "p_value": 0.2, "adjusted_p": 0.4, "psi": 0.01,
                                              "wasserstein": 0.05, "jensen_shannon": 0.02},
                                       "predicted_class": {"statistic": 2.0, "p_value": 0.3, "adjusted_p": 0.3,
                                                           "psi": None, "wasserstein": None, "jensen_shannon": None}}}
    values = gauge_values("m", window, {"3": {"declared": True}}, {"3": 7}, {"3": 3500})
    scores = {(t["feature"], t["statistic"]): v for g, v, t in values if g == "score"}
    assert scores[("x0", "psi")] == 0.01 and ("predicted_class", "psi") not in scores and len(scores) == 9
    assert ("detected", 1.0, {"model": "m", "version": "3"}) in values
    assert ("windows", 7.0, {"model": "m", "version": "3"}) in values and ("rows", 3500.0, {"model": "m", "version": "3"}) in values
    assert gauge_values("m", None, {}, {}, {}) == []


def test_live_accuracy_gauges_sum_the_labelled_rows_of_the_kept_windows():
    from monitoring.metrics import gauge_values

    labels = {"3": {"0": {"rows": 500, "labelled": 100, "correct": 90, "log_loss_sum": 20.0},
                    "1": {"rows": 500, "labelled": 0, "correct": 0, "log_loss_sum": 0.0},
                    "2": {"rows": 500, "labelled": 300, "correct": 210, "log_loss_sum": 100.0}}}
    values = gauge_values("m", None, {}, {}, {}, labels, rows_behind=42)
    assert ("accuracy", 0.75, {"model": "m", "version": "3"}) in values
    assert ("log_loss", 0.3, {"model": "m", "version": "3"}) in values and ("behind", 42.0, {"model": "m"}) in values


def test_mlflow_metrics_of_each_event_kind_are_stepped_by_window():
    from monitoring.mlflow_sink import metric_key, window_metrics

    scored = {"kind": "window_scored", "version": 2, "window": 4, "rows": 5000, "drifted": True,
              "drifted_features": ["x 0"], "scores": {"x 0": {"adjusted_p": 1e-9, "psi": 0.3, "wasserstein": 0.31},
                                                      "predicted_class": {"adjusted_p": 0.5, "psi": None,
                                                                          "wasserstein": None}}}
    metrics = window_metrics(scored)
    assert ("x 0.psi", 0.3, 4) in metrics and ("drifted", 1.0, 4) in metrics and ("rows", 5000.0, 4) in metrics
    assert not any(k.startswith("predicted_class.psi") for k, _, _ in metrics) and len(metrics) == 7
    labelled = window_metrics({"kind": "window_labels", "version": 2, "window": 1, "rows": 500, "labelled": 200,
                               "correct": 150, "log_loss_sum": 80.0})
    assert labelled == [("labelled", 200.0, 1), ("live_accuracy", 0.75, 1), ("live_log_loss", 0.4, 1)]
    assert window_metrics({"kind": "drift_declared", "version": 2, "last_window": 6}) == [("drift_declared", 1.0, 6)]
    assert window_metrics({"kind": "file_skipped"}) == [] and metric_key("a{b}", "psi") == "a_b_.psi"


def test_a_significant_but_tiny_shift_drifts_only_without_the_minimum_shift(profile):
    window = np.random.default_rng(5).normal(size=(20_000, 20))
    window[:, 4] += 0.06  # KS calls this significant at 20,000 rows; it is a wobble
    strict = score_window(profile, FEATURES, window, min_shift=0.0)
    assert "x4" in strict.drifted_features
    default = score_window(profile, FEATURES, window)
    assert default.drifted_features == [] and not default.drifted
    assert next(s for s in default.features if s.column == "x4").adjusted_p < 0.05  # still reported


def test_a_column_constant_in_training_that_moves_gets_a_finite_shift_in_words():
    """σ 0: any move was infinitely many σ, and `inf` went into the state, the events and MLflow."""
    rng = np.random.default_rng(6)
    x = np.column_stack([np.full(5_000, 3.0), rng.normal(size=5_000)])
    profile = build_profile(x, ["plan", "x"], np.tile([0.5, 0.5], (5_000, 1)), [0, 1], "fp")
    calm = score_window(profile, ["plan", "x"], np.column_stack([np.full(500, 3.0), rng.normal(size=500)]))
    assert calm.features[0].wasserstein == 0.0 and calm.features[0].detail == "" and not calm.drifted
    moved = score_window(profile, ["plan", "x"], np.column_stack([np.full(500, 4.0), rng.normal(size=500)]))
    plan = moved.features[0]
    assert np.isfinite(plan.wasserstein) and plan.drifted and moved.drifted_features == ["plan"]
    assert plan.detail == "constant in training (3): shifted 1 in its own unit"
    state, event = decide(DriftState(), moved, 0, "m", 1, persistence=1)
    assert event.features["plan"]["detail"] == plan.detail
