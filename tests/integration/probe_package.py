"""A package in no environment of this project, built into a wheel, and a model factory that imports it.

What a user's model with its own dependency looks like (model.requirements): the tests and
bench/environments.py install it only through a version's runtime environment.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "handoff_env_probe"


@dataclass(frozen=True)
class ProbePackage:
    requirement: str  # `handoff-env-probe @ file:///…whl`: what model.requirements lists
    factory: Path     # the factory's module file: what model.code_paths lists (model.family env_factory:build)


def probe_package(tmp_path: Path, version: str = "0.1.0") -> ProbePackage:
    """A small package that is in no environment of this project (built here into a wheel of
    `version`: another version is another requirement, another environment), and a model factory
    whose module imports it."""
    tmp_path = tmp_path / f"probe-{version}"
    src = tmp_path / "probe-src"
    (src / "handoff_env_probe").mkdir(parents=True)
    (src / "handoff_env_probe" / "__init__.py").write_text('"""A package only a model\'s environment has."""\n\n'
                                                            'ACTIVATION = "relu"\n')
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=69"]\n'
                                        'build-backend = "setuptools.build_meta"\n\n'
                                        '[project]\nname = "handoff-env-probe"\n'
                                        f'version = "{version}"\n')
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    factory = tmp_path / "factory" / "env_factory.py"
    factory.parent.mkdir(parents=True)
    factory.write_text('"""A user\'s model factory that needs a package beyond Handoff."""\n\n'
                       'import handoff_env_probe\n\nfrom training.models import build_mlp\n\n\n'
                       'def build(n_features, n_outputs, **mlp):\n'
                       '    return build_mlp(n_features, n_outputs, **{**mlp, "activation": handoff_env_probe.ACTIVATION})\n')
    wheel = next((tmp_path / "dist").glob("handoff_env_probe-*.whl"))
    return ProbePackage(f"handoff-env-probe @ {wheel.as_uri()}", factory)
