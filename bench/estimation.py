"""Accuracy estimated before labels against realised accuracy, under covariate shift. Not a test.

Trains the example Shuttle model (a short search, in-process Ray, a scratch store), checks its
calibration on the validation split (`monitoring.estimation.calibration`, as registration does),
then cuts 100 windows of 1,000 rows from the held-out test rows with covariate shift: each window
draws its rows with weights that favour one region of the inputs (f1 and f5 above or below their
medians, by a varying strength), so the inputs move while P(y|x) stays what the data has. Per window:
the accuracy its probabilities expect (`expected_accuracy`, with the temperature) against the
accuracy its labels realise; reported: the mean absolute error, also without the temperature.

    .venv/bin/python bench/estimation.py
Writes bench/results/estimation.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    import ray

    from cluster.settings import Settings
    from monitoring.estimation import calibration, expected_accuracy
    from training import load_version
    from training.config_loader import load_config
    from training.pipeline import load_data, tune_and_register

    with tempfile.TemporaryDirectory() as home:
        settings = Settings.resolve(environ={}, home=Path(home))
        cfg = load_config(REPO / "configs" / "shuttle.yaml", ["search.num_samples=2", "search.epochs=3",
                                                               "name=estimation-bench"], environ={})
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            registered = tune_and_register(cfg, settings, settings.embedded_tracking_uri)
            data = load_data(cfg, settings)
            model = load_version(cfg.name, registered.version, settings.embedded_tracking_uri)
            proba_val = model.outputs(data.x_val.astype(np.float32))
            proba_test = model.outputs(data.x_test.astype(np.float32))
        finally:
            ray.shutdown()
    found = calibration(proba_val, data.y_val)
    rng = np.random.default_rng(11)
    f1, f5 = data.x_test[:, data.features.index("f1")], data.x_test[:, data.features.index("f5")]
    region = ((f1 > np.median(f1)).astype(float) + (f5 > np.median(f5))) / 2  # 0, 0.5 or 1
    rows = []
    for w in range(100):
        strength = rng.uniform(-3, 3)  # how strongly this window favours the region (0: no shift)
        weights = np.exp(strength * region)
        pick = rng.choice(len(data.y_test), size=1000, replace=True, p=weights / weights.sum())
        realised = float((proba_test[pick].argmax(axis=1) == data.y_test[pick]).mean())
        rows.append({"window": w, "strength": strength, "realised": realised,
                     "estimated": expected_accuracy(proba_test[pick], found["temperature"]),
                     "estimated_raw": expected_accuracy(proba_test[pick])})
    mae = float(np.mean([abs(r["estimated"] - r["realised"]) for r in rows]))
    mae_raw = float(np.mean([abs(r["estimated_raw"] - r["realised"]) for r in rows]))
    spread = (min(r["realised"] for r in rows), max(r["realised"] for r in rows))
    print(f"validation split: ECE {found['ece']:.4f}; fitted temperature {found['fitted_temperature']:.3f} "
          f"(ECE {found['ece_with_temperature']:.4f}); used {found['temperature']:.3f}")
    print(f"100 windows of 1,000 rows with covariate shift: realised accuracy {spread[0]:.2%} to {spread[1]:.2%}")
    print(f"mean absolute error, estimated vs realised accuracy: {mae * 100:.2f} points "
          f"(without the temperature: {mae_raw * 100:.2f})")
    out = REPO / "bench" / "results" / "estimation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"calibration": found, "mae_points": mae * 100, "mae_raw_points": mae_raw * 100,
                               "windows": rows}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
