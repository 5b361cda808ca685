"""Placement by custom Ray resources (pure): every process Handoff starts on a cluster takes them from
its config, checked once, and where a process runs never changes what it computes."""

import pytest

from cluster.config_layers import ConfigError
from cluster.jobs import REPO_ROOT
from cluster.placement import checked_resources
from handoff.jobs import retrain_job
from handoff.loop_port import HandoffLoopPort
from monitoring.config import load_monitoring_config
from training.config_loader import load_config


def test_resources_are_floats_in_name_order_and_odd_ones_are_refused():
    assert list(checked_resources({"b": 1, "a": 0.5, "node:10.0.0.5": 0.01}).items()) == [
        ("a", 0.5), ("b", 1.0), ("node:10.0.0.5", 0.01)]
    for bad, named in [({"GPU": 1}, "Ray's own"), ({"cpu": 1}, "Ray's own"), ({"custom_resources": 1}, "Ray's own"), ({"memory": 1}, "Ray's own"), ({"a b": 1}, "not a resource"),
                       ({"": 1}, "not a resource"), ({"a": -1}, "above 0"), ({"a": float("inf")}, "above 0")]:
        with pytest.raises(ValueError, match=named):
            checked_resources(bad)


def test_the_monitor_and_its_retraining_job_take_resources_from_the_monitoring_config():
    cfg = load_monitoring_config(None, ["resources={handoff-monitor: 1}",
                                        "loop.retrain.job_resources={handoff-train: 1}"], environ={})
    assert cfg.resources == {"handoff-monitor": 1.0} and cfg.loop.retrain.job_resources == {"handoff-train": 1.0}
    with pytest.raises(ConfigError, match="Ray's own"):
        load_monitoring_config(None, ["resources={CPU: 1}"], environ={})
    spec = retrain_job("m", "ev", 0, [], cfg.loop.retrain.job_resources)
    assert spec.resources == {"handoff-train": 1.0} and retrain_job("m", "ev").resources == {}
    assert spec.submission_id == retrain_job("m", "ev").submission_id  # the same work: one job, wherever it runs
    port = HandoffLoopPort("http://t", "http://j", "/live", [], dict(cfg.loop.retrain.job_resources))
    assert port.job_resources == {"handoff-train": 1.0}


def test_where_trials_run_is_not_part_of_what_they_compute():
    plain = load_config(REPO_ROOT / "configs" / "shuttle.yaml", [], environ={})
    placed = load_config(REPO_ROOT / "configs" / "shuttle.yaml", ["resources.custom={handoff-train: 0.5}"], environ={})
    assert placed.resources.custom == {"handoff-train": 0.5} and plain.resources.custom == {}
    assert placed.config_hash() == plain.config_hash()
    with pytest.raises(ConfigError, match="Ray's own"):
        load_config(REPO_ROOT / "configs" / "shuttle.yaml", ["resources.custom={CPU: 2}"], environ={})


def test_unplaceable_names_a_resource_no_node_offers_and_is_silent_when_a_node_could_hold_it():
    from cluster.placement import unplaceable

    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0, "GPU": 1.0, "handoff-serving": 100.0}]
    assert unplaceable({"CPU": 0.1, "GPU": 0.0}, nodes) is None
    assert unplaceable({"CPU": 1.0, "GPU": 1.0, "handoff-serving": 0.01}, nodes) is None
    assert unplaceable({"CPU": 0.1, "no-such-node": 1.0}, nodes) == "no node offers no-such-node"
    assert "no node offers all of" in unplaceable({"CPU": 16.0, "GPU": 1.0}, nodes)
    assert "CPU 8" in unplaceable({"CPU": 16.0}, nodes)
