"""The monitor of a regression model on real live-log and label files written by the gateway's own
writers (no Ray): the predicted values' drift against the validation predictions, numeric labels
joined into live RMSE and MAE, the figures in status, Prometheus and MLflow form."""

import time

import numpy as np
import pytest

from monitoring.core import DriftSettings, LabelJoin, MonitorCore
from monitoring.labels import Feedback, WindowRows, label_stats, summary
from monitoring.metrics import gauge_values
from monitoring.mlflow_sink import window_metrics
from monitoring.monitor import status_of
from monitoring.reference import ReferenceProfile, build_profile
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback
from serving.live_log import LiveLog

FEATURES = ("f0", "f1")
RNG = np.random.default_rng(11)
REFERENCE = RNG.normal(size=(6_000, 2))
VALIDATION_PREDICTIONS = 100.0 + 10.0 * RNG.normal(size=2_000)
PROFILE = build_profile(REFERENCE, list(FEATURES), (100.0 + 10.0 * REFERENCE[:, :1]), [], "fp", task="regression",
                        predictions=VALIDATION_PREDICTIONS)


def test_the_profile_of_a_regression_model_keeps_its_validation_predictions_and_round_trips():
    again = ReferenceProfile.from_bytes(PROFILE.to_bytes())
    assert again.regression and again.classes == () and list(again.probabilities) == ["prediction"]
    assert again.probabilities["prediction"].mean == pytest.approx(VALIDATION_PREDICTIONS.mean())
    with pytest.raises(ValueError, match="rows × 1 prediction"):
        build_profile(REFERENCE, list(FEATURES), np.zeros((6_000, 2)), [], "fp", task="regression")


def write(root, rows, prediction_shift=0.0, request="req"):
    log = LiveLog(str(root), flush_seconds=3600)
    x = RNG.normal(size=(rows, 2)).astype(np.float32)
    predicted = 100.0 + 10.0 * RNG.normal(size=rows) + prediction_shift
    log.append("price", FEATURES, request, 1, None, x, predicted, 1.0)
    log.close()
    return predicted


def monitor(tmp_path):
    return MonitorCore("price", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "price"), {1: PROFILE}.get,
                       WindowSpec(rows=500, seconds=3600, min_rows=100), DriftSettings(),
                       clock=lambda: time.time() + 60,
                       labels=LabelJoin(Feedback(str(tmp_path / "live"), "price"),
                                        WindowRows(str(tmp_path / "state"), "price"), horizon=5))


def test_predicted_values_are_scored_against_the_validation_predictions(tmp_path):
    write(tmp_path / "live", 500)
    write(tmp_path / "live", 500, prediction_shift=8.0, request="later")
    core = monitor(tmp_path)
    scored = [e for e in core.step() if e["kind"] == "window_scored"]
    same, moved = (s["scores"]["prediction"] for s in scored)
    assert same["test"] == "ks" and same["p_value"] > 0.001 and not same["drifted"]
    assert moved["p_value"] < 1e-10 and moved["wasserstein"] == pytest.approx(0.8, abs=0.15) and moved["drifted"]
    assert core.state["tasks"] == {"1": "regression"}


def test_numeric_labels_join_into_live_rmse_and_mae_and_every_surface_shows_them(tmp_path):
    predicted = write(tmp_path / "live", 500)
    core = monitor(tmp_path)
    core.step()
    ids = ["req"] + [f"req#{i}" for i in range(1, 200)]
    truth = predicted[:200] + np.where(np.arange(200) % 2 == 0, 3.0, -4.0)  # errors of 3 and 4 in turn
    FeedbackLog(str(tmp_path / "live")).write("price", parse_feedback(
        [{"request_id": rid, "label": float(v)} for rid, v in zip(ids, truth)], (), regression=True))
    joined = [e for e in core.step() if e["kind"] == "window_labels"]
    assert [(e["rows"], e["labelled"]) for e in joined] == [(500, 200)]
    live = summary(core.state["labels"]["1"])
    assert live["rmse"] == pytest.approx(np.sqrt((9 + 16) / 2)) and live["mae"] == pytest.approx(3.5)
    status = status_of("price", core.state, running=True)
    assert status["live"]["1"]["rmse"] == pytest.approx(live["rmse"])
    assert status["label_free_estimate"] == {"1": None} and status["estimated"] == {}  # no estimate shown
    gauges = {g: v for g, v, _ in gauge_values("price", None, {}, {}, {}, core.state["labels"])}
    assert gauges["rmse"] == pytest.approx(live["rmse"]) and gauges["mae"] == pytest.approx(3.5)
    assert dict((k, v) for k, v, _ in window_metrics(joined[0]))["live_rmse"] == pytest.approx(live["rmse"])
    restarted = monitor(tmp_path)  # the values are read back from the label files
    assert restarted.labels.feedback.lookup(np.array(["req", "nope"]), regression=True)[0] == pytest.approx(truth[0])


def test_label_stats_of_a_regression_window():
    stats = label_stats(np.array([1.0, 2.0, 3.0]), None, np.array([1.5, np.nan, 1.0]), regression=True)
    assert stats == {"rows": 3, "labelled": 2, "squared_error_sum": 0.25 + 4.0, "absolute_error_sum": 2.5}


def test_drift_on_a_regression_model_is_declared_with_its_predicted_values_drawn(tmp_path):
    """The declaration draws the predicted values beside the features (a KeyError on 'prediction'
    once failed the pass that declared drift, and the event was never recorded)."""
    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    for i in range(DriftSettings().persistence + 1):
        x = (RNG.normal(size=(500, 2)) + 2.0).astype(np.float32)  # both features moved by 2σ
        log.append("price", FEATURES, f"moved{i}", 1, None, x, 130.0 + 10.0 * RNG.normal(size=500), 1.0)
    log.close()
    core = monitor(tmp_path)
    found = core.step()
    declared = [e for e in found if e["kind"] == "drift_declared"]
    assert len(declared) == 1, [e["kind"] for e in found]
    assert "prediction" in declared[0]["histograms"] and set(FEATURES) <= set(declared[0]["histograms"])
    assert "drift_declared" in [e["kind"] for e in StateStore(str(tmp_path / "state"), "price").events()]
