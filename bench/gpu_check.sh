#!/usr/bin/env bash
# GPU path check: a short search with one GPU per trial; prints the device every trial trained on.
# Run on a machine with a CUDA GPU and a CUDA build of torch (the pinned CPU wheel has no CUDA):
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
HOME_DIR=$(mktemp -d)
trap 'rm -rf "$HOME_DIR"' EXIT
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"devices: {torch.cuda.device_count()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible: this check needs a GPU machine and a CUDA build of torch")
PY
RAY_AUTH_MODE=token "$PY" -m handoff tune configs/shuttle.yaml --home "$HOME_DIR" --json \
  --set resources.gpu=1 --set resources.cpu=1 --set search.num_samples=2 --set search.epochs=2 \
  --set search.scheduler.type=fifo > "$HOME_DIR/result.json"
"$PY" - "$HOME_DIR/result.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
print(f"registered {result['name']} v{result['version']}; val_loss {result['metrics']['val_loss']:.5f}")
PY
# every trial reports the device it trained on; it is stored with each epoch's result
grep -ho '"device": "[^"]*"' "$HOME_DIR"/tune/*/*/result.json | sort | uniq -c
