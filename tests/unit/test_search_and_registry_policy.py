from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from training.config import SchedulerConfig, SearchConfig
from training.lineage import lineage_tags, package_versions
from training.registry import CHALLENGER, CHAMPION, alias_for_new_version
from training.search_space import param_space, scheduler, trial_count


def test_space_translation_covers_every_distribution():
    search = SearchConfig.model_validate({"space": {
        "a": {"type": "choice", "values": [1, 2]}, "b": {"type": "uniform", "low": 0, "high": 1},
        "c": {"type": "loguniform", "low": 1e-4, "high": 1e-1}, "d": {"type": "randint", "low": 1, "high": 4},
        "e": {"type": "grid", "values": ["x", "y"]},
    }})
    space = param_space(search)
    assert space["a"].categories == [1, 2]
    assert (space["b"].lower, space["b"].upper) == (0, 1)
    assert type(space["c"].sampler).__name__ == "_LogUniform" and space["c"].lower == 1e-4
    assert (space["d"].lower, space["d"].upper) == (1, 4)
    assert space["e"] == {"grid_search": ["x", "y"]}


def test_a_complete_search_runs_num_samples_for_every_grid_combination():
    grids = {"g": {"type": "grid", "values": [1, 2, 3]}, "h": {"type": "grid", "values": ["x", "y"]},
             "c": {"type": "choice", "values": [1, 2]}}
    assert trial_count(SearchConfig.model_validate({"num_samples": 4, "space": grids})) == 24
    assert trial_count(SearchConfig.model_validate({"num_samples": 4, "space": {}})) == 4


def test_scheduler_choice():
    asha = scheduler(SchedulerConfig(type="asha", grace_period=2, reduction_factor=4), max_epochs=10)
    assert isinstance(asha, ASHAScheduler)
    assert isinstance(scheduler(SchedulerConfig(type="fifo"), 10), FIFOScheduler)


def test_first_version_is_champion_later_ones_challenger():
    assert alias_for_new_version(set()) == CHAMPION
    assert alias_for_new_version({CHAMPION}) == CHALLENGER
    assert alias_for_new_version({CHALLENGER}) == CHAMPION  # a model that lost its champion gets one


def test_lineage_tags_are_prefixed_strings():
    tags = lineage_tags(commit="abc", dirty=False, data_fingerprint="f", data_uri="u", config_hash="h", seed=3,
                        versions=package_versions(), experiment_path="/p", trial_id="t1", trial_params="{}",
                        epochs_trained=4, weights_sha256="w", threads=1, device="cpu", search_run_id="r")
    assert all(k.startswith("handoff.") and isinstance(v, str) for k, v in tags.items())
    assert tags["handoff.git_dirty"] == "false" and tags["handoff.seed"] == "3"
    assert {"handoff.torch_version", "handoff.ray_version", "handoff.mlflow_version",
            "handoff.python_version"} <= set(tags)
