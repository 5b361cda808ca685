"""Drift reports from a real scored episode (pure core, no Ray): the data the core keeps, the picture, the page."""

import time

import numpy as np

from monitoring.report import histograms, shown_features, write_report
from tests.unit.test_monitor_core import core, kinds, write


def test_histograms_share_bins_and_each_side_sums_to_one():
    rng = np.random.default_rng(3)
    h = histograms({"a": np.sort(rng.normal(size=5000))}, {"a": rng.normal(size=800) + 2}, ["a"], bins=20)["a"]
    assert len(h["edges"]) == 21 and len(h["reference"]) == len(h["window"]) == 20
    assert abs(sum(h["reference"]) - 1) < 1e-5 and abs(sum(h["window"]) - 1) < 1e-5
    centre = (np.asarray(h["edges"][1:]) + np.asarray(h["edges"][:-1])) / 2
    assert np.dot(centre, h["window"]) - np.dot(centre, h["reference"]) > 1.5  # the window sits to the right
    same = histograms({"c": np.full(10, 3.0)}, {"c": np.full(5, 3.0)}, ["c"])["c"]
    assert same["edges"][0] < 3 < same["edges"][-1] and max(same["window"]) == 1.0  # a constant still draws


def test_drifted_features_are_shown_first_then_the_largest_shifts():
    scores = {"a": {"drifted": False, "wasserstein": 0.5, "test": "ks"}, "b": {"drifted": True, "wasserstein": 0.2,
                                                                            "test": "ks"},
              "c": {"drifted": True, "wasserstein": 0.9, "test": "ks"}, "predicted_class": {"drifted": True, "test": "chi2"},
              "probability_1": {"drifted": True, "wasserstein": 3.0, "test": "ks"}}
    assert shown_features(scores, limit=2) == ["c", "b"] and shown_features(scores) == ["c", "b", "a"]


def test_a_declared_drift_carries_what_its_report_draws_and_the_report_names_the_moved_features(tmp_path):
    write(tmp_path / "live", [(1, 500, 0.0, False)] * 2 + [(1, 500, 0.0, False)] * 3)
    day = next((tmp_path / "live" / "model=m").iterdir())
    monitor = core(tmp_path, persistence=2)
    monitor.step()
    from serving.live_log import LiveLog

    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    for i in range(3):
        x = np.random.default_rng(i).normal(size=(500, 4)).astype(np.float32)
        x[:, 2] += 1.0  # f2 moves by one standard deviation
        log.append("m", ("f0", "f1", "f2", "f3"), f"s{i}", 1, None, x, np.zeros(500, dtype=np.int64), 1.0)
        log.flush()
    log.close()
    time.sleep(0.01)
    events = monitor.step()
    declared = kinds(events, "drift_declared")
    assert len(declared) == 1 and list(declared[0]["histograms"])[0] == "f2" and declared[0]["alpha"] == 0.05
    from monitoring.state_store import StateStore

    stored = StateStore(str(tmp_path / "state"), "m").events()
    assert list(next(e for e in stored if e["kind"] == "drift_declared")["histograms"])[0] == "f0"  # sorted by name
    page = write_report(declared[0], stored, tmp_path / "report")
    text = page.read_text()
    assert "f2" in text and "data:image/png;base64," in text and "<tr class='drifted'><td>f2</td>" in text
    png = (tmp_path / "report" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert day.exists()


def test_a_shown_column_with_no_value_in_the_last_window_is_drawn_and_said(tmp_path):
    """A column every live row left empty has no shift, PSI or KS in its window record (None): the
    report says so in its title instead of failing on the number (it once raised TypeError)."""
    from monitoring.report import render

    edges = [0.0, 1.0, 2.0]
    event = {"model": "m", "version": 1, "first_window": 3, "last_window": 4, "features": {"f0": {}},
             "alpha": 0.05, "histograms": {"f0": {"edges": edges, "reference": [0.5, 0.5], "window": [0.0, 0.0]}}}
    last = {"f0": {"test": "ks", "statistic": None, "p_value": 1.0, "adjusted_p": 1.0, "psi": None,
                   "wasserstein": None, "jensen_shannon": None, "drifted": False, "tolerance": None}}
    png = render(event, [{"window": 3, "scores": last}, {"window": 4, "scores": last}])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
