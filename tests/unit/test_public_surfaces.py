"""Packages import each other one way round, and only through what each exports.

    cluster  ←  training  ←  serving, monitoring  ←  handoff

A package imports only packages to its left (serving and monitoring not each other: the loop acts
on serving through its port, composed in handoff/). Of training, serving and monitoring it imports
only the names their `__init__` exports (`from monitoring import StateStore`), never a module inside
(`from monitoring.state_store import …`, `import serving.router`): what is not exported can change
without asking anyone. cluster's modules are its surface (it is the layer everyone stands on).
tests/ and bench/ are exempt: they test and measure the insides.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cluster", "training", "serving", "monitoring", "handoff")
#: package → the packages it may import
MAY_IMPORT = {"cluster": set(), "training": {"cluster"}, "serving": {"cluster", "training"},
              "monitoring": {"cluster", "training"}, "handoff": {"cluster", "training", "serving", "monitoring"}}
#: packages imported only through the names their `__init__` exports
SURFACED = ("training", "serving", "monitoring")


def exported(package: str) -> set[str]:
    return set(importlib.import_module(package).__all__)


def violations(root: Path, exports: dict[str, set[str]]) -> list[str]:
    """`file:line: what` for every import in `root`'s packages against the direction or past a surface."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported = [(alias.name, None) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported = [(node.module, [alias.name for alias in node.names])]
                else:
                    continue  # a relative import stays inside its package
                for module, names in imported:
                    other = module.split(".")[0]
                    if other not in PACKAGES or other == package:
                        continue
                    if other not in MAY_IMPORT[package]:
                        found.append(f"{where}:{node.lineno}: {package} imports {module} (against the direction)")
                    elif other in SURFACED and module != other:
                        found.append(f"{where}:{node.lineno}: imports {module}, inside {other} "
                                     f"(import from `{other}` what it exports)")
                    elif other in SURFACED and names:
                        hidden = sorted(set(names) - exports[other])
                        if hidden:
                            found.append(f"{where}:{node.lineno}: imports {', '.join(hidden)} from {other}, "
                                         "which does not export it")
    return found


def test_every_package_imports_the_others_one_way_and_through_their_exports():
    found = violations(REPO, {p: exported(p) for p in SURFACED})
    assert not found, "imports past a package's surface or against the direction:\n" + "\n".join(found)


@pytest.mark.parametrize("package", SURFACED + ("serving.batch",))
def test_no_exported_name_is_also_a_module_of_its_package(package):
    """Importing a submodule sets an attribute of its package with the module's name, which then
    hides an export of the same name: `from training import training_view` once gave the module
    (`handoff monitor profile` called it)."""
    folder = REPO.joinpath(*package.split("."))
    modules = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
    clashes = sorted(exported(package) & modules)
    assert not clashes, f"{package} exports names of its own modules: {clashes}"


@pytest.mark.parametrize("package", SURFACED + ("serving.batch",))
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert all(not isinstance(getattr(module, name), type(module)) for name in module.__all__)


def test_the_check_names_each_kind_of_violation(tmp_path):
    """The check itself, on a tree that plants one of each kind."""
    plants = {
        "cluster/a.py": "from training import Registry\n",                  # against the direction
        "training/a.py": "import cluster.settings\nfrom serving import x\n",  # fine; against the direction
        "serving/a.py": "from monitoring import StateStore\n",             # serving and monitoring: never each other
        "monitoring/a.py": "from training.registry import Registry\n",     # inside training
        "handoff/a.py": "import serving.router\nfrom monitoring import core, StateStore\nfrom handoff import b\n"
                        "from . import c\n",
    }
    for name, text in plants.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path, {"training": {"Registry"}, "serving": set(), "monitoring": {"StateStore"}})
    assert found == [
        "cluster/a.py:1: cluster imports training (against the direction)",
        "training/a.py:2: training imports serving (against the direction)",
        "serving/a.py:1: serving imports monitoring (against the direction)",
        "monitoring/a.py:1: imports training.registry, inside training (import from `training` what it exports)",
        "handoff/a.py:1: imports serving.router, inside serving (import from `serving` what it exports)",
        "handoff/a.py:2: imports core from monitoring, which does not export it",
    ]
