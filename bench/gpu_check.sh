#!/usr/bin/env bash
# GPU path check, training, serving and batch inference: `make demo`'s main job with every trial and
# every served replica given a share of one GPU, then `handoff predict` with two actors on half a GPU
# each. Prints the device each trial trained on (from its results), the device each served version's
# weights are on (asked of a replica) and the devices the batch actors predicted on (from the output
# files' metadata).
# Run on a machine with a CUDA GPU and a CUDA build of torch (the pinned CPU wheel has no CUDA):
#   bash bench/gpu_check.sh            # PYTHON=python3 to use another interpreter than .venv's
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
HOME_DIR=$(mktemp -d)
trap '"$PY" -m handoff down --home "$HOME_DIR" >/dev/null 2>&1; rm -rf "$HOME_DIR"' EXIT
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"devices: {torch.cuda.device_count()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible: this check needs a GPU machine and a CUDA build of torch")
PY
# four trials share the GPU (0.25 each); each served version's replica takes half of it
export RAY_AUTH_MODE=token HANDOFF_RESOURCES__GPU=0.25 HANDOFF_SEARCH__NUM_SAMPLES=4 HANDOFF_SEARCH__EPOCHS=3
export HANDOFF_SERVING__VERSION_DEFAULTS__GPUS=0.5
"$PY" -m handoff demo --home "$HOME_DIR" --port "${PORT:-8000}"
echo "--- device of every trial's results (training):"
grep -ho '"device": "[^"]*"' "$HOME_DIR"/tune/*/*/result.json | sort | uniq -c
echo "--- batch inference: 100,000 rows, two actors on half a GPU each (devices from the output files):"
"$PY" - "$HOME_DIR/tonight.parquet" <<'PY'
import sys
import numpy as np
import pandas as pd
from training.datasets import BUILTIN_DATASETS
rows = pd.read_csv(BUILTIN_DATASETS["shuttle"][0]()).drop(columns=["anomaly"])
rows.iloc[np.random.default_rng(0).integers(0, len(rows), 100_000)].to_parquet(sys.argv[1], index=False)
PY
"$PY" -m handoff predict shuttle --home "$HOME_DIR" --input "$HOME_DIR/tonight.parquet" \
  --output "$HOME_DIR/scored" --gpus-per-actor 0.5 --actors 2 --no-progress --json \
  | "$PY" -c 'import json, sys; r = json.load(sys.stdin); print("rows", r["rows_out"], "devices", r["devices"], "nodes", len(r["nodes"]))'
