"""Evidently's data drift preset on the windows `bench/drift.py` wrote (run in its own virtualenv:
Evidently 0.7 needs pandas below 3, the project pins pandas 3).

Usage: python bench/evidently_side.py WINDOWS.npz OUT.json
Reads `reference` (rows × features) and `windows` (k × rows × features); writes the seconds each
window took and the columns Evidently flagged as drifted.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main(path: str, out: str) -> None:
    data = np.load(path)
    columns = [f"f{i}" for i in range(data["reference"].shape[1])]
    reference = pd.DataFrame(data["reference"], columns=columns)
    seconds, flagged = [], []
    for window in data["windows"]:
        current = pd.DataFrame(window, columns=columns)
        start = time.perf_counter()
        result = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference).dict()
        seconds.append(time.perf_counter() - start)
        drifted = []
        for metric in result["metrics"]:
            config = metric["config"]
            if not config.get("type", "").endswith("ValueDrift"):
                continue
            value, threshold = float(metric["value"]), config["threshold"]
            # a p-value drifts below its threshold, a distance (Wasserstein normed, Evidently's choice
            # for numeric columns over 1,000 rows) at or above it
            if (value < threshold) if "p_value" in config["method"] else (value >= threshold):
                drifted.append(config["column"])
        flagged.append(sorted(drifted, key=lambda c: int(c[1:])))
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "flagged": flagged, "method": "DataDriftPreset (Evidently defaults)"}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
