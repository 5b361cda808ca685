import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.models import Standardised, build_mlp, build_model, check_params, resolve_factory


def make_tiny(n_features: int, n_classes: int, hidden: int = 4) -> nn.Module:
    """A user factory, as a user would write one."""
    return nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))


def test_mlp_depth_width_dropout():
    net = build_mlp(9, 2, hidden_layers=3, width=16, dropout=0.1)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears] == [16, 16, 16, 2]
    assert sum(isinstance(m, nn.Dropout) for m in net) == 3
    assert [m.out_features for m in build_mlp(9, 3, hidden_layers=0) if isinstance(m, nn.Linear)] == [3]


def test_mlp_rejects_bad_parameters():
    with pytest.raises(ValueError, match="activation"):
        build_mlp(3, 2, activation="swishy")
    with pytest.raises(ValueError, match="dropout"):
        build_mlp(3, 2, dropout=1.5)


def test_standardised_normalises_with_training_statistics():
    mean, std = np.array([10.0, -5.0]), np.array([2.0, 0.0])  # a constant column passes through
    model = Standardised(nn.Identity(), mean, std)
    out = model(torch.tensor([[12.0, -5.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, 0.0]]))
    assert set(model.state_dict()) == {"mean", "std"}  # saved with the weights


def test_user_factory_by_import_path():
    factory = resolve_factory("tests.unit.test_models:make_tiny")
    model = build_model("tests.unit.test_models:make_tiny", {"hidden": 3}, 5, 2, np.zeros(5), np.ones(5))
    assert factory is make_tiny and model(torch.zeros(4, 5)).shape == (4, 2)


def test_factory_errors_are_clear():
    with pytest.raises(ValueError, match="neither a built-in"):
        resolve_factory("transformer")
    with pytest.raises(ValueError, match="cannot be imported"):
        resolve_factory("no_such_module_xyz:make")
    with pytest.raises(ValueError, match=r"does not accept \['depth'\]"):
        check_params(build_mlp, "mlp", {"depth", "width"})


def _portable_version():
    from training.contract import LoadedVersion
    from training.torch_scorer import TorchScorer

    torch.manual_seed(0)
    network = build_model("mlp", {"hidden_layers": 1, "width": 8}, 3, 2, np.zeros(3), np.ones(3))
    return LoadedVersion(name="m", version=4, features=("a", "b", "c"), classes=("no", "yes"), device="cpu",
                         outputs=TorchScorer(network, "cpu"))


def test_a_torch_version_unpickles_without_mlflow_and_predicts_the_same(tmp_path):
    """What batch inference ships to its actors: the version the driver loaded, unpickled in a
    process that never imports MLflow, answering exactly as in the driver."""
    import pickle
    import subprocess
    import sys

    version = _portable_version()
    assert version.portable
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    (tmp_path / "v.pkl").write_bytes(pickle.dumps(version))
    np.save(tmp_path / "x.npy", x)
    script = ("import pickle, sys, numpy as np; v = pickle.loads(open(sys.argv[1], 'rb').read()).on('cpu'); "
              "np.save(sys.argv[3], v.outputs(np.load(sys.argv[2]))); print(sorted(m for m in sys.modules "
              "if m.split('.')[0] == 'mlflow'), v.device)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v.pkl"), str(tmp_path / "x.npy"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True, cwd=str(Path(__file__).parents[2]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "cpu"]
    assert np.array_equal(np.load(tmp_path / "p.npy"), version.outputs(x))


def test_a_version_moves_to_a_device_and_one_behind_a_pyfunc_refuses_by_name():
    version = _portable_version()
    assert version.on("cpu") == version  # already there: the same scorer
    moved = version.on("meta")  # a device torch has on every machine (stands for a GPU here)
    assert moved.device == "meta" and next(moved.outputs.network.parameters()).device.type == "meta"
    behind_pyfunc = dataclasses.replace(version, outputs=lambda x: x)
    assert not behind_pyfunc.portable
    with pytest.raises(TypeError, match="m v4 predicts through its MLflow pyfunc"):
        behind_pyfunc.on("cuda:0")
