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
