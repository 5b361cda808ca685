"""What a Tune result and a trial config become in MLflow (pure conversion, no store)."""

from training.trial_logger import flat_params, result_metrics


def test_result_metrics_keep_model_numbers_and_drop_bookkeeping():
    result = {"val_loss": 0.25, "val_accuracy": 0.9, "epoch": 3, "train_seconds": 1.5, "done": False,
              "pid": 123, "timestamp": 1_700_000_000, "training_iteration": 3, "trial_id": "abc",
              "device": "cpu", "config": {"lr": 0.1}, "should_checkpoint": True}
    metrics = {m.key: m for m in result_metrics(result, step=3, timestamp_ms=42)}
    assert set(metrics) == {"val_loss", "val_accuracy", "epoch", "train_seconds"}
    assert metrics["val_loss"].value == 0.25 and metrics["val_loss"].step == 3
    assert metrics["epoch"].timestamp == 42 and isinstance(metrics["epoch"].value, float)


def test_nested_config_becomes_slash_joined_params():
    params = {p.key: p.value for p in flat_params({"lr": 0.01, "model": {"width": 64, "depth": 2}})}
    assert params == {"lr": "0.01", "model/width": "64", "model/depth": "2"}
