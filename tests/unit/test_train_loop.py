import numpy as np
import pandas as pd
import pytest
import torch

from training.config import DatasetConfig
from training.devices import choose_device, cpu_threads
from training.prepare import prepare
from training.train_loop import TrialSpec, checkpoint_state, fit, weights_hash


def data():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(600, 4)), columns=list("abcd"))
    df["y"] = ((df.a + df.b) > 0).astype("int64")
    return prepare(df, DatasetConfig(uri="x", label="y", features=list("abcd")), seed=0)


def spec(**kw):
    base = dict(family="mlp", model_params={"hidden_layers": 2, "width": 8, "dropout": 0.2},
                lr=0.01, batch_size=32, weight_decay=0.0, seed=5, threads=1)
    return TrialSpec(**{**base, **kw})


def test_training_learns_and_is_bit_identical_on_rerun():
    d = data()
    seen = []
    a = fit(spec(), d, epochs=4, on_epoch=lambda e, m, *_: seen.append((e, m["val_loss"])))
    b = fit(spec(), d, epochs=4)
    assert [e for e, _ in seen] == [1, 2, 3, 4] and seen[-1][1] < seen[0][1]
    assert weights_hash(a.state_dict()) == weights_hash(b.state_dict())
    assert weights_hash(a.state_dict()) != weights_hash(fit(spec(seed=6), d, epochs=4).state_dict())


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run():
    d = data()
    saved = {}

    def keep(epoch, metrics, model, opt):
        if epoch == 2:
            saved.update(checkpoint_state(model, opt, epoch))

    full = fit(spec(), d, epochs=5, on_epoch=keep)
    resumed = fit(spec(), d, epochs=5, start_epoch=saved["epoch"], state=saved)
    assert weights_hash(full.state_dict()) == weights_hash(resumed.state_dict())


def test_trial_config_splits_into_optimiser_and_model_params():
    s = TrialSpec.from_trial_config("mlp", {"activation": "relu"}, {"lr": 1e-3, "batch_size": 64, "weight_decay": 0},
                                    {"lr": 0.02, "width": 32}, seed=1, threads=2)
    assert s.lr == 0.02 and s.batch_size == 64 and s.model_params == {"activation": "relu", "width": 32}


def test_weights_hash_sees_a_single_changed_value():
    sd = {"w": torch.zeros(3, 3), "b": torch.ones(3)}
    h = weights_hash(sd)
    sd["w"][1, 1] = 1e-7
    assert weights_hash(sd) != h


def test_device_choice_follows_rays_assignment():
    assert choose_device([], cuda_available=True) == "cpu"
    assert choose_device([], cuda_available=False) == "cpu"
    assert choose_device(["0"], cuda_available=True) == "cuda:0"
    try:
        choose_device([1], cuda_available=False)
    except RuntimeError as exc:
        assert "torch sees no CUDA" in str(exc)
    else:
        raise AssertionError("a GPU assigned without CUDA must be refused")
    assert cpu_threads(0.5) == 1 and cpu_threads(2) == 2


def test_a_trial_checkpoint_loads_with_weights_only_and_a_pickled_object_is_refused(tmp_path):
    """What a trial saves (weights, optimiser, epoch, its clock and best figure) loads with
    `weights_only=True` and resumes exactly; a checkpoint carrying any other object is refused."""
    import pickle

    from ray import tune

    from training.trial import STATE_FILE, load_state

    d = data()
    saved = {}

    def keep(epoch, metrics, model, opt):
        if epoch == 2:
            saved.update({**checkpoint_state(model, opt, epoch), "train_seconds": 1.25, "best": metrics["val_loss"]})

    full = fit(spec(), d, epochs=4, on_epoch=keep)
    torch.save(saved, tmp_path / STATE_FILE)
    state = load_state(tune.Checkpoint.from_directory(str(tmp_path)))
    resumed = fit(spec(), d, epochs=4, start_epoch=state["epoch"], state=state)
    assert weights_hash(full.state_dict()) == weights_hash(resumed.state_dict())
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    torch.save({**saved, "extra": pd.Timestamp("2026-01-01")}, hostile / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_state(tune.Checkpoint.from_directory(str(hostile)))
