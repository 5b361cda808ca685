"""Where a version's replicas run: its extra packages, and the check that the cluster can answer as it did.

Before a version's first replica starts, `check_version_environment` compares the core versions that
can change answers with those the version recorded when it was trained (training/environment.py).
A version with packages to install gets one Ray task first, on a node with the replicas' custom
resources (not their GPUs: it only installs and reads versions), in the replicas' own runtime
environment: it installs them there (a failure is the installer's message,
before any traffic moves; Ray keeps the environment for the replicas that follow) and reports the
core versions there. A version with nothing to install runs in the cluster's environment, this
process's, read here: it starts as fast as before.
A difference is refused unless a person accepted it (`--allow-env-drift`: recorded on the version
as a tag, which later changes of traffic, by anyone, read).

The package list is decided in the control plane's own process, which runs in the cluster's
environment (the CLI on the head, the monitor actor, Handoff's jobs: none runs in a model's), so
every caller builds the same replica options and Serve restarts nothing.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping

from cluster.runtime_env import installer_failure, pip_env
from serving.policy import PolicyError
from training import accepted, differences, recorded_core, recorded_requirements, unaccepted, unmet

PROBE_TIMEOUT_S = 900.0  # installing a model's packages on a node (its first time there) may take minutes


class EnvironmentMismatch(PolicyError):
    """The cluster's core versions differ from the version's recorded ones in a way that can change answers."""


class EnvironmentSetupFailed(PolicyError):
    """The version's requirements could not be installed (the message carries the installer's)."""


def replica_packages(lineage: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """The version's recorded requirements the cluster's environment lacks (what its replicas install)."""
    return unmet(recorded_requirements(lineage), installed)


@functools.lru_cache(maxsize=1)
def _this_environment() -> dict[str, str]:
    from training import this_environment

    return this_environment()


def probe(packages: list[str], resources: Mapping[str, float]) -> dict[str, str]:
    """The core versions a replica would see: one task in the replicas' runtime environment, on a node
    with their custom resources (installing the packages there first, as the replicas would)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RuntimeEnvSetupError

    from training import this_environment

    task = ray.remote(this_environment).options(
        num_cpus=0, resources=dict(resources) or None, max_retries=0,
        runtime_env={"working_dir": None, **pip_env(packages)})
    ref = task.remote()
    try:
        return ray.get(ref, timeout=PROBE_TIMEOUT_S)
    except RuntimeEnvSetupError as exc:
        raise EnvironmentSetupFailed(f"installing {', '.join(packages)} failed: {installer_failure(exc)}") from None
    except GetTimeoutError:
        ray.cancel(ref, force=True)
        raise EnvironmentSetupFailed(f"installing {', '.join(packages)} did not finish within {PROBE_TIMEOUT_S:.0f} s "
                                     f"(or no node offers {dict(resources) or 'a CPU'})") from None
    except RayError as exc:
        raise EnvironmentSetupFailed(f"checking the environment with {', '.join(packages)} failed: {exc}") from None


def check_version_environment(name: str, version: int, lineage: Mapping[str, str], packages: list[str],
                              resources: Mapping[str, float], allow_drift: bool,
                              record_accepted: Callable[[str], None], say: Callable[[str], None]) -> list[dict]:
    """Refuse to serve `name` v`version` where its replicas could answer differently from how it was
    trained (or its packages do not install); with `allow_drift`, accept the differences found and
    record them (`record_accepted` stores the tag's new value). The differences accepted now."""
    if packages:
        say(f"{name} v{version} needs {', '.join(packages)}: installing them for its replicas (cached per node)")
        started = time.monotonic()
        try:
            here = probe(packages, resources)
        except EnvironmentSetupFailed as exc:
            raise EnvironmentSetupFailed(f"{name} v{version}: {exc}; nothing was changed") from None
        say(f"{name} v{version}: its environment is ready ({time.monotonic() - started:.1f} s)")
    else:  # the replicas run in the cluster's environment, which is this process's: no task needed
        here = _this_environment()
    found = unaccepted(differences(recorded_core(lineage), here), lineage)
    if not found:
        return []
    listed = "; ".join(map(str, found))
    if not allow_drift:
        raise EnvironmentMismatch(
            f"{name} v{version} was trained where {listed}: its answers here may differ from those it was "
            f"trained and tested to give. Serve it from an environment that matches, retrain it here, or accept "
            f"the difference with --allow-env-drift (recorded on the version); traffic is unchanged")
    record_accepted(json.dumps([*accepted(lineage), *(
        {**d.to_dict(), "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} for d in found)]))
    say(f"{name} v{version}: environment difference accepted and recorded ({listed})")
    return [d.to_dict() for d in found]


__all__ = ["EnvironmentMismatch", "EnvironmentSetupFailed", "check_version_environment",
           "replica_packages"]
