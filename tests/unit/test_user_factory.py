"""A user's own model (`model.family=module:callable` with `model.code_paths`): each mistake a user can
make in it is refused naming it, before the search where it can be found then, and nothing that cannot
answer is registered (pure: no Ray, no MLflow server)."""

from __future__ import annotations

import math
import re
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from training.config import DatasetConfig, ExperimentConfig, SearchConfig
from training.models import import_code_paths
from training.prepare import prepare
from training.search_space import first_config
from training.train_loop import TrialSpec, new_model
from training.trial import check_code_paths, check_model

FACTORIES = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n_features, n_outputs, hidden=4):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        return self.layers(x)


def good(n_features, n_outputs, hidden=4):
    return Net(n_features, n_outputs, hidden)


def returns_none(n_features, n_outputs):
    return None


def returns_estimator(n_features, n_outputs):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression()


def returns_class(n_features, n_outputs):
    return nn.Linear


def raises(n_features, n_outputs, hidden=4):
    if hidden > 100:
        raise KeyError("hidden too wide")
    return Net(n_features, n_outputs, hidden)


def ignores_its_inputs(n_features, n_outputs):
    return nn.Linear(3, n_outputs)


class Pair(nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.linear(x), None


class NotANumber(Net):
    def forward(self, x):
        return self.layers(x) * float("nan")
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A directory of the user's source, the working directory; `sys.path` and the modules imported from
    it are put back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("uf_"):
            del sys.modules[name]


def data():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    df["y"] = ((df.a + df.b) > 0).astype("int64")
    return prepare(df, DatasetConfig(uri="x", label="y", features=list("abcd")), seed=0)


def config(family: str, code_paths: list[str], space: dict | None = None, params: dict | None = None):
    return ExperimentConfig.model_validate({
        "name": "m", "dataset": {"uri": "x", "label": "y", "features": list("abcd")},
        "model": {"family": family, "code_paths": code_paths, "params": params or {}},
        "search": {"space": space or {}}})


def spec(family: str, **params) -> TrialSpec:
    return TrialSpec(family=family, model_params=params, lr=0.01, batch_size=32, weight_decay=0.0, seed=1)


@pytest.mark.parametrize("factory, named", [
    ("returns_none", r"returned None, not a torch\.nn\.Module"),
    ("returns_estimator", r"returned a sklearn LogisticRegression, not a torch\.nn\.Module"),
    ("returns_class", r"returned the class Linear, not a torch\.nn\.Module instance"),
])
def test_a_factory_that_returns_no_torch_module_is_refused_naming_what_it_returned(user_code, factory, named):
    (user_code / "uf_returns.py").write_text(FACTORIES)
    import_code_paths(["uf_returns.py"])
    with pytest.raises(ValueError, match=f"model.family 'uf_returns:{factory}' {named}"):
        new_model(spec(f"uf_returns:{factory}"), data())


def test_a_factory_that_raises_is_refused_naming_the_family_its_error_and_its_arguments(user_code):
    (user_code / "uf_raises.py").write_text(FACTORIES)
    import_code_paths(["uf_raises.py"])
    with pytest.raises(ValueError, match=r"model.family 'uf_raises:raises' raised KeyError: 'hidden too wide' "
                                         r"\(called with n_features=4, n_outputs=2, params \{'hidden': 500\}\)"):
        new_model(spec("uf_raises:raises", hidden=500), data())


@pytest.mark.parametrize("source, error", [
    ("def make(n_features, n_outputs:\n    pass\n", "SyntaxError: '(' was never closed"),
    ("raise RuntimeError('needs a GPU at import')\n", "RuntimeError: needs a GPU at import"),
])
def test_a_factory_module_that_fails_as_it_imports_is_refused_naming_its_error(user_code, source, error):
    name = f"uf_broken_{error.split(':')[0].lower()}"
    (user_code / f"{name}.py").write_text(source)
    with pytest.raises(ValueError, match=re.escape(f"model.family '{name}:make' cannot be imported: {error}")):
        check_model(config(f"{name}:make", [f"{name}.py"]))


def test_code_paths_that_are_missing_or_would_not_be_the_module_imported_are_refused(user_code):
    (user_code / "serving.py").write_text(FACTORIES)  # Handoff's own package's name
    (user_code / "types.py").write_text(FACTORIES)  # the standard library's module wins over it
    (user_code / "uf_pkg").mkdir()
    (user_code / "uf_pkg" / "__init__.py").write_text(FACTORIES)
    (user_code / "vocabulary.json").write_text("{}")  # data the code reads: only has to be there
    (user_code / "uf_mod.py").write_text(FACTORIES)
    paths = ["uf_pkg", "uf_mod.py", "vocabulary.json"]
    import_code_paths(paths)
    check_code_paths(paths, user_code)
    missing = f"'uf_missing.py' does not exist (looked at {user_code / 'uf_missing.py'})"
    for path, message in [("uf_missing.py", missing),
                          ("serving.py", "'serving.py' is the module 'serving', the name of Handoff's own package"),
                          ("types.py", "'types.py' is the module 'types', but 'types' imports from")]:
        import_code_paths([path])
        with pytest.raises(ValueError, match=re.escape(f"model.code_paths: {message}")):
            check_code_paths([path], user_code)


@pytest.mark.parametrize("factory, named", [
    ("ignores_its_inputs", r"fails on a batch of 2 rows × 4 inputs: RuntimeError: mat1 and mat2 shapes"),
    ("Pair", r"answers a tuple, not a tensor; the factory contract is \(rows, n_outputs\) = \[2, 2\]"),
    ("NotANumber", "answers NaN for training rows before any training"),
])
def test_a_network_that_fails_answers_no_tensor_or_nan_is_refused_naming_it(user_code, factory, named):
    (user_code / "uf_nets.py").write_text(FACTORIES)
    import_code_paths(["uf_nets.py"])
    with pytest.raises(ValueError, match=f"model.family 'uf_nets:{factory}' {named}"):
        new_model(spec(f"uf_nets:{factory}"), data())


def test_the_first_configuration_of_a_space_is_each_entrys_first_value_or_lower_bound():
    search = SearchConfig.model_validate({"space": {
        "hidden": {"type": "choice", "values": [8, 16]}, "act": {"type": "grid", "values": ["tanh", "relu"]},
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}, "depth": {"type": "randint", "low": 1, "high": 4}}})
    assert first_config(search) == {"hidden": 8, "act": "tanh", "lr": 1e-4, "depth": 1}


def test_the_model_every_trial_would_build_is_checked_before_the_search(user_code):
    (user_code / "uf_check.py").write_text(FACTORIES)
    check_model(config("uf_check:good", ["uf_check.py"], {"hidden": {"type": "choice", "values": [3, 5]},
                                                          "lr": {"type": "uniform", "low": 0.001, "high": 0.01}}),
                data())
    unknown = config("uf_check:good", ["uf_check.py"], {"depth": {"type": "choice", "values": [1, 2]}})
    with pytest.raises(ValueError, match=r"'uf_check:good' does not accept \['depth'\]; it accepts \['hidden'\]"):
        check_model(unknown)  # without the data: before Ray starts
    failing = config("uf_check:raises", ["uf_check.py"], {"hidden": {"type": "choice", "values": [500, 4]}})
    check_model(failing)  # its names are right: only building it tells
    with pytest.raises(ValueError, match="'uf_check:raises' raised KeyError"):
        check_model(failing, data())


def test_tune_refuses_a_factory_that_does_not_take_a_searched_parameter_before_ray_starts(user_code, monkeypatch):
    import cluster.connect

    from handoff.cli import app

    monkeypatch.setattr(cluster.connect, "connect_ray", lambda *a, **k: pytest.fail("Ray was started"))
    (user_code / "uf_cli.py").write_text(FACTORIES)
    (user_code / "c.yaml").write_text(
        "name: m\ndataset: {uri: builtin://shuttle, label: anomaly, features: [f1, f2]}\n"
        "model: {family: 'uf_cli:good', code_paths: [uf_cli.py]}\n"
        "search: {space: {width: {type: choice, values: [8, 16]}}}\n")
    result = CliRunner().invoke(app, ["tune", "c.yaml", "--home", str(user_code / "home")], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "error: model.family 'uf_cli:good' does not accept ['width']; it accepts ['hidden']" in result.output
    assert not (user_code / "home" / "mlflow.db").exists()


def test_a_failed_search_says_why_each_trial_failed_not_which_worker_ran_it():
    from ray.exceptions import RayTaskError

    from training.pipeline import trial_error

    try:
        raise ValueError("model.family 'm:make' answers shape [2, 3] for 2 rows;\nmore")
    except ValueError as exc:
        wrapped = RayTaskError("ImplicitFunc.train", traceback.format_exc(), exc, proctitle="ray::ImplicitFunc.train()",
                               pid=7, ip="10.0.0.2", actor_repr="run_trial").as_instanceof_cause()
    assert "ray::ImplicitFunc.train()" in str(wrapped).splitlines()[0]  # what the summary used to show
    assert trial_error(wrapped) == "ValueError: model.family 'm:make' answers shape [2, 3] for 2 rows;"
    assert trial_error(RuntimeError("out of memory\ndetails")) == "RuntimeError: out of memory"


def test_a_best_trial_whose_model_answers_nan_is_not_registered(tmp_path, monkeypatch):
    """A diverged network's best checkpoint (a search of one trial: Tune then takes it whatever its
    metric) is refused before anything is logged or registered."""
    import training.pipeline as pipeline
    from training.search import SearchOutcome

    d = data()
    cfg = config("mlp", [], params={"hidden_layers": 1, "width": 4})
    model = new_model(TrialSpec.from_trial_config("mlp", dict(cfg.model.params), cfg.train.model_dump(), {},
                                                  seed=0, threads=1), d)
    state = {k: torch.full_like(v, math.nan) if k.startswith("net.") else v for k, v in model.state_dict().items()}

    class Result:
        error, config, metrics = None, {}, {"trial_id": "t0", "val_loss": math.nan, "epoch": 1}

        def get_best_checkpoint(self, metric, mode):
            return "checkpoint"

    class Results(list):
        def get_best_result(self, **kw):
            return self[0]

    class Client:
        def log_metric(self, *args):
            pytest.fail("a metric of an unusable model was logged")

    monkeypatch.setattr(pipeline, "load_state", lambda checkpoint: {"model": state, "epoch": 1})
    monkeypatch.setattr(SearchOutcome, "unfinished_trials", lambda self: 0)
    outcome = SearchOutcome(Results([Result()]), str(tmp_path), 1.0, 1)
    with pytest.raises(pipeline.SearchFailed, match=r"the best trial t0's model gives test_loss, val_loss of NaN"):
        pipeline._register_best(cfg, d, outcome, Client(), "sqlite:///x.db", None, "parent")
    assert not Path("x.db").exists()


def test_a_search_whose_every_trial_reported_nan_is_refused_in_words_not_tunes_runtime_error(tmp_path, monkeypatch):
    """With several trials, Tune's `get_best_result` raises RuntimeError when every figure is NaN:
    that is the search's failure to say (SearchFailed: the CLI's one line), not a traceback."""
    import training.pipeline as pipeline
    from training.search import SearchOutcome

    class Result:
        error, config, metrics = None, {}, {"trial_id": "t0", "val_loss": math.nan, "epoch": 1}

    class Results(list):
        def get_best_result(self, **kw):
            raise RuntimeError("No best trial found for the given metric: val_loss.")

    monkeypatch.setattr(SearchOutcome, "unfinished_trials", lambda self: 0)
    outcome = SearchOutcome(Results([Result(), Result()]), str(tmp_path), 1.0, 2)
    with pytest.raises(pipeline.SearchFailed, match=r"no trial reported a finite val_loss .*nothing registered"):
        pipeline._register_best(config("mlp", []), data(), outcome, None, "sqlite:///x.db", None, "parent")
