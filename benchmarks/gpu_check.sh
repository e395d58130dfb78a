#!/usr/bin/env bash
# GPU check: the device tests on CUDA (policy.device: auto puts every tiny test model on the GPU),
# then rollout and RL-step throughput (benchmarks/gpu_step.py, arguments passed through).
# Without a CUDA device it prints a clear skip and exits 0.
#   benchmarks/gpu_check.sh                      # shipped SmolLM2 (after `make install`)
#   benchmarks/gpu_check.sh --random-like DIR    # DIR's architecture with random weights
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: skipped: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
  exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(), 'torch', torch.__version__)"
status=0
"$PY" -m pytest -q -p no:warnings -m "not smollm2" tests/test_devices.py tests/test_objective.py tests/test_rl.py \
  tests/test_two_learners.py tests/test_train.py tests/test_checkpoint.py tests/test_selfplay.py || status=$?
"$PY" benchmarks/gpu_step.py "$@" || status=$?
exit $status
