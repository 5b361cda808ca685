"""What a serving change is made of, pure: the deployment versions Serve compares, the config a change
uses, and the lock's leases. Serve restarts a replica when its deployment version changes; these
tests hold every input of that version to "the same change gives the same version, whoever makes it"."""

from __future__ import annotations

import json

import pytest

from cluster.config_layers import ConfigError
from cluster.digest import source_digest, stable_digest
from serving.config import REPLICA_RUNTIME_ENV, ConfigSource, ServingConfig, actor_options, key_digest, load_serving_config
from serving.control import code_version
from serving.control_lock import Leases

DEMO = ["gateway.port=8000", "live_log.flush_seconds=0.5", "version_defaults.cpus=0.25", "gateway.cpus=0.25"]


def versions_of(cfg: ServingConfig) -> tuple:
    """The code versions and actor options `ServingControl` builds for a version and the gateway."""
    sizing = cfg.deployment_for("shuttle", 1)
    g, log = cfg.gateway, cfg.live_log
    return (code_version("version", "shuttle", 1, sizing.cpus, sizing.gpus, sizing.resources),
            json.dumps(actor_options(sizing.cpus, sizing.gpus, sizing.resources)),
            code_version("gateway", g.model_dump(mode="json", exclude={"replicas", "cpus", "resources"}),
                         log.model_dump(mode="json")),
            json.dumps(actor_options(g.cpus, resources=g.resources)))


def test_a_config_and_the_same_config_read_back_give_the_same_deployment_versions():
    """The loop's first canary restarted the champion's replica and the gateway: the CLI held
    `gpus = 0` (an int default) and the monitor, given the config as a dict, `gpus = 0.0`; the
    digest of the two differed, and so did Ray's hash of the actor options."""
    cfg = load_serving_config(None, DEMO, environ={})
    reloaded = ServingConfig.model_validate(cfg.model_dump())
    through_json = ServingConfig.model_validate_json(cfg.model_dump_json())
    assert versions_of(cfg) == versions_of(reloaded) == versions_of(through_json)
    assert isinstance(cfg.version_defaults.gpus, float) and isinstance(cfg.live_log.sample_percent, float)


def test_the_yaml_file_and_its_defaults_give_the_same_versions(tmp_path):
    written = tmp_path / "s.yaml"
    written.write_text("version_defaults: {gpus: 0, cpus: 1}\nlive_log: {sample_percent: 100}\n")
    assert versions_of(load_serving_config(written, [], environ={})) == \
        versions_of(load_serving_config(None, ["version_defaults.cpus=1.0"], environ={}))


def test_placement_resources_give_the_same_versions_however_written_and_are_checked(tmp_path):
    written = tmp_path / "s.yaml"
    written.write_text("version_defaults: {resources: {zone-b: 1, handoff-serving: 0.5}}\n"
                       "gateway: {resources: {handoff-front: 1}}\n")
    from_file = load_serving_config(written, [], environ={})
    from_flags = load_serving_config(None, ["version_defaults.resources={handoff-serving: 0.5, zone-b: 1.0}",
                                            "gateway.resources={handoff-front: 1.0}"], environ={})
    assert versions_of(from_file) == versions_of(from_flags)
    assert versions_of(from_file) != versions_of(load_serving_config(None, [], environ={}))
    options = actor_options(0.25, 0, from_file.version_defaults.resources)
    assert list(options["resources"].items()) == [("handoff-serving", 0.5), ("zone-b", 1.0)]
    assert "resources" not in actor_options(0.25)  # none asked: the key absent, as before placement existed
    for bad, named in [("{CPU: 1}", "Ray's own"), ("{handoff-serving: 0}", "above 0"),
                       ("{'bad name': 1}", "not a resource name"), ("{x: .nan}", "above 0")]:
        with pytest.raises(ConfigError, match=named):
            load_serving_config(None, [f"version_defaults.resources={bad}"], environ={})


def test_numbers_digest_by_value_not_by_type():
    assert stable_digest("v", 0.25, 0) == stable_digest("v", 0.25, 0.0)
    assert stable_digest({"a": [1.0, {"b": 2.0}]}) == stable_digest({"a": [1, {"b": 2}]})
    assert stable_digest(0.5) != stable_digest(0) and stable_digest(True) != stable_digest(1)


def test_actor_options_name_the_runtime_environment_and_use_floats():
    """A caller's runtime environment (a Ray job's working_dir) must not become the replica's: Serve
    only fills one in where none is named."""
    options = actor_options(1, 0)
    assert options == {"num_cpus": 1.0, "runtime_env": {"working_dir": None}}
    assert actor_options(0.5, 1) == {"num_cpus": 0.5, "num_gpus": 1.0, "runtime_env": {"working_dir": None}}
    options["runtime_env"]["working_dir"] = "gcs://x"  # a caller's copy never changes the next one
    assert REPLICA_RUNTIME_ENV == {"working_dir": None} and actor_options(1)["runtime_env"] == {"working_dir": None}


def test_code_versions_follow_the_source_and_the_parts():
    assert code_version("version", "m", 1, 0.25, 0.0) == code_version("version", "m", 1, 0.25, 0)
    assert code_version("version", "m", 1, 0.25, 0.0) != code_version("version", "m", 1, 0.5, 0.0)
    assert len(source_digest("serving")) == 16 and source_digest("serving") != source_digest("cluster")
    with pytest.raises(ValueError, match="not an importable package"):
        source_digest("no_such_package_here")


def test_a_change_uses_the_declared_config_else_the_one_in_force_with_its_overrides():
    stored = load_serving_config(None, ["gateway.port=8123", "gateway.api_keys=[k1]"], environ={})
    file = load_serving_config(None, [], environ={})
    declared = load_serving_config(None, ["gateway.port=9000"], environ={})
    assert ConfigSource(declared=declared, fallback=file).resolve(stored) == declared
    assert ConfigSource(fallback=file).resolve(stored) == stored            # the loop, a bare command
    changed = ConfigSource(overrides=("version_defaults.cpus=0.5",), fallback=file).resolve(stored)
    assert changed.version_defaults.cpus == 0.5
    assert changed.gateway.port == 8123 and changed.gateway.api_keys == [key_digest("k1")]  # the rest stays in force
    by_env = ConfigSource(environ={"HANDOFF_SERVING__GATEWAY__REPLICAS": "2"}).resolve(stored)
    assert by_env.gateway.replicas == 2 and by_env.gateway.port == 8123
    assert ConfigSource(fallback=file).resolve(None) == file                  # nothing served yet
    with pytest.raises(ConfigError, match="no serving config is in force"):
        ConfigSource().resolve(None)
    with pytest.raises(ConfigError, match="gateway.prot"):
        ConfigSource(overrides=("gateway.prot=1",)).resolve(stored)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_leases_go_in_the_order_asked_and_one_at_a_time():
    clock = Clock()
    leases = Leases(clock, clock)
    assert leases.try_acquire("a", "cli")["granted"]
    assert leases.try_acquire("b", "loop") == {"granted": False, "holder": "cli", "ahead": 0}
    assert not leases.try_acquire("c", "job")["granted"]
    leases.release("a")
    assert not leases.try_acquire("c", "job")["granted"]  # b asked first
    assert leases.try_acquire("b", "loop")["granted"]
    leases.release("b")
    assert leases.try_acquire("c", "job")["granted"] and leases.holder()["who"] == "job"


def test_a_holder_that_stops_renewing_loses_the_lease_and_one_that_renews_keeps_it():
    clock = Clock()
    leases = Leases(clock, clock)
    assert leases.try_acquire("a", "cli", lease_s=30)["granted"]
    clock.now += 20
    assert leases.renew("a", lease_s=30)
    clock.now += 20
    assert not leases.try_acquire("b", "loop")["granted"]  # renewed 20 s ago: still held
    clock.now += 11
    assert leases.try_acquire("b", "loop")["granted"]      # a killed holder's lease ran out
    assert not leases.renew("a") and leases.holder()["who"] == "loop"
    leases.release("a")                                    # a stale release frees nothing
    assert leases.holder()["who"] == "loop"


def test_a_waiter_that_stops_asking_loses_its_place():
    clock = Clock()
    leases = Leases(clock, clock)
    assert leases.try_acquire("a", "cli")["granted"]
    assert not leases.try_acquire("gone", "killed while waiting")["granted"]
    assert not leases.try_acquire("b", "loop")["granted"]
    leases.release("a")
    clock.now += 6
    assert leases.try_acquire("b", "loop")["granted"]


def test_unserve_refuses_a_model_that_is_not_served_naming_those_that_are():
    """`handoff unserve` of a mistyped name said "no longer served" and exited 0; `ServingControl.unserve`
    asks this under the serving lock, before anything changes, and a model whose versions still run
    without the gateway is still stopped."""
    from serving.policy import NotServed, PolicyError, check_served

    with pytest.raises(NotServed, match=r"'shutle' is not served; served: iris, shuttle"):
        check_served("shutle", {"shuttle": None, "iris": None}, [])
    with pytest.raises(PolicyError, match="nothing is served"):
        check_served("shuttle", {}, [])
    check_served("shuttle", {"shuttle": None}, [])
    check_served("shuttle", {}, [2])  # its versions run, the gateway is gone: still stopped
