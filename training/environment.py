"""A version's environment: what its model needs beyond Handoff, and whether a cluster's matches.

Two halves, both pure but for reading this process's installed distributions:

- **Requirements** (`model.requirements`, pip requirement strings): what a user's model code
  imports beyond Handoff. A version records them (tag `handoff.requirements`, and MLflow's
  `pip_requirements`); a process that runs the model (a Tune trial, a version replica, a batch
  actor, a retraining job) gets a Ray `runtime_env` that installs only those the cluster does not
  already satisfy (`unmet`), so a version with nothing extra starts as fast as one without.
- **Core versions** that can change a model's answers: Python (major.minor), torch, numpy,
  MLflow's major version, and the code of the `training` modules that prepare raw rows, build the
  network, load the weights and compute answers (`ANSWER_MODULES`), by digest. A version records them at registration;
  `differences` names each one the serving environment does not match.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

#: tags a version carries (without the `handoff.` prefix)
REQUIREMENTS_TAG = "requirements"
ANSWER_CODE_TAG = "answer_code"
DRIFT_ACCEPTED_TAG = "env_drift_accepted"
#: core name → the lineage tag that records it
CORE_TAGS = {"python": "python_version", "torch": "torch_version", "numpy": "numpy_version",
             "mlflow": "mlflow_version", "answer_code": ANSWER_CODE_TAG}
#: what a requirement may not name: the cluster's own runtime, which one model cannot replace
REFUSED = frozenset({"ray", "handoff"})


class RequirementError(ValueError):
    """A requirement that is not a pip requirement string, or names what a model may not replace."""


def check_requirements(lines: Iterable[str]) -> list[str]:
    """`lines` as pip requirement strings, each normalised (`Pkg >= 1.0` → `pkg>=1.0`), in the order
    given, duplicates once; a line that does not parse, or that names Ray or Handoff itself (the
    cluster runs one of each), is refused, naming it."""
    seen: list[str] = []
    for line in lines:
        try:
            req = Requirement(str(line).strip())
        except InvalidRequirement as exc:
            raise RequirementError(f"model.requirements: {line!r} is not a pip requirement ({exc})") from None
        if canonicalize_name(req.name) in REFUSED:
            raise RequirementError(f"model.requirements: {line!r} names {req.name}, which the cluster provides "
                                   "(every process runs the cluster's own); list only what the model's code adds")
        req.name = canonicalize_name(req.name)
        text = str(req)
        if text not in seen:
            seen.append(text)
    return seen


def installed_versions() -> dict[str, str]:
    """This process's installed distributions: canonical name → version."""
    return {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def unmet(requirements: Iterable[str], installed: Mapping[str, str]) -> list[str]:
    """The requirements `installed` does not satisfy, in order: a package missing or at a version
    outside the specifier; one given by URL or with extras (what they bring cannot be read from
    versions alone: pip decides, installing only what is missing); one whose marker does not apply
    here is met."""
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = installed.get(canonicalize_name(req.name))
        if req.url or req.extras or have is None or not req.specifier.contains(have, prereleases=True):
            out.append(text)
    return out


def absent(requirements: Iterable[str], installed: Mapping[str, str]) -> list[str]:
    """The requirements whose package is not installed at all (whatever version; markers that do not
    apply here met): what an environment built for the model cannot lack."""
    out = []
    for text in requirements:
        req = Requirement(text)
        if (req.marker is None or req.marker.evaluate()) and canonicalize_name(req.name) not in installed:
            out.append(text)
    return out


def recorded_requirements(lineage: Mapping[str, str]) -> list[str]:
    """A version's requirements from its lineage tags (none for a version registered before they were kept)."""
    text = lineage.get(REQUIREMENTS_TAG)
    return list(json.loads(text)) if text else []


def core_versions(installed: Mapping[str, str], python: str, answer_code: str) -> dict[str, str]:
    """What can change a model's answers, as this environment has it."""
    return {"python": python, "torch": installed.get("torch", "not installed"),
            "numpy": installed.get("numpy", "not installed"), "mlflow": installed.get("mlflow", "not installed"),
            "answer_code": answer_code}


#: the modules of `training` that a version's answers come from: raw rows prepared (columns), the
#: network built and its weights loaded (models, pyfunc, serving_load), answers computed and named
#: (torch_scorer, contract, task). A change anywhere else (the search, the CLI, docs) changes no answer.
ANSWER_MODULES = ("columns", "contract", "models", "pyfunc", "serving_load", "task", "torch_scorer")


def answer_code() -> str:
    """16 hex digits of the source of `ANSWER_MODULES`, as this process would import them."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ANSWER_MODULES:
        digest.update(f"{name}\0".encode())
        digest.update((root / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def this_environment() -> dict[str, str]:
    """The core versions of this process (what a probe on a cluster node reports)."""
    return core_versions(installed_versions(), platform.python_version(), answer_code())


def recorded_core(lineage: Mapping[str, str]) -> dict[str, str]:
    """A version's recorded core versions (a name it did not record is left out: not compared)."""
    return {name: lineage[tag] for name, tag in CORE_TAGS.items() if lineage.get(tag)}


@dataclass(frozen=True)
class Difference:
    name: str
    recorded: str
    current: str

    def __str__(self) -> str:
        return difference_in_words(self.to_dict())

    def to_dict(self) -> dict:
        return {"name": self.name, "recorded": self.recorded, "current": self.current}


def difference_in_words(difference: Mapping) -> str:
    """One difference as every message shows it: `torch 2.12.0 (trained) vs 2.13.0 (here)`."""
    return f"{difference['name']} {difference['recorded']} (trained) vs {difference['current']} (here)"


def _answer_relevant(name: str, version: str) -> str:
    """The part of a version that can change answers: Python's major.minor, MLflow's major (its
    model format), every other core version whole."""
    if name == "python":
        return ".".join(version.split(".")[:2])
    if name == "mlflow":
        return version.split(".")[0]
    return version


def differences(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[Difference]:
    """Each recorded core version the current environment does not match in a way that can change
    answers (`_answer_relevant`); a name either side lacks is not compared."""
    return [Difference(name, recorded[name], current[name]) for name in CORE_TAGS
            if name in recorded and name in current
            and _answer_relevant(name, recorded[name]) != _answer_relevant(name, current[name])]


def accepted(lineage: Mapping[str, str]) -> list[dict]:
    """The differences a person accepted for this version (`--allow-env-drift`), as recorded."""
    text = lineage.get(DRIFT_ACCEPTED_TAG)
    return list(json.loads(text)) if text else []


def unaccepted(found: list[Difference], lineage: Mapping[str, str]) -> list[Difference]:
    """The differences not covered by what was accepted for this version (the same name, both sides)."""
    ok = {(d["name"], d["recorded"], d["current"]) for d in accepted(lineage)}
    return [d for d in found if (d.name, d.recorded, d.current) not in ok]


def describe(lineage: Mapping[str, str], here: Mapping[str, str], installed: Mapping[str, str]) -> dict:
    """A version's environment against `here` (core versions) and `installed` (distributions): its
    requirements, those a replica would install, whether it matches (None: nothing recorded to
    compare), each difference and whether a person accepted it (what `handoff models` shows)."""
    recorded = recorded_core(lineage)
    found = differences(recorded, here)
    open_ = unaccepted(found, lineage)
    requirements = recorded_requirements(lineage)
    return {"requirements": requirements, "installs": unmet(requirements, installed),
            "core": recorded, "matches": (not found) if recorded else None,
            "differences": [{**d.to_dict(), "accepted": d not in open_} for d in found]}


def in_words(described: Mapping) -> str:
    """`describe`'s answer as one line."""
    needs = ", ".join(described["requirements"]) or "nothing beyond Handoff"
    installs = f" (replicas install {', '.join(described['installs'])})" if described["installs"] else ""
    if described["matches"] is None:
        return f"needs {needs}{installs}; core versions not recorded (registered before they were)"
    if described["matches"]:
        return f"needs {needs}{installs}; matches this cluster"
    diffs = "; ".join(difference_in_words(d) + (" [accepted]" if d["accepted"] else "")
                      for d in described["differences"])
    return f"needs {needs}{installs}; DIFFERS: {diffs}"
