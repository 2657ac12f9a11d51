#!/usr/bin/env bash
# The engine's figures on a GPU, in one script of under 5 minutes (run from the repository root on a CUDA machine
# with the project's environment, e.g. STEER_TORCH=<a CUDA torch build> scripts/bootstrap.sh first):
#   1. nvidia-smi and the CUDA/bfloat16 support torch sees;
#   2. whole runs of the demo's work on the GPU: decode throughput over the run, bfloat16 (what auto picks there)
#      against float32, and the sequential run's per-case cost (bench_run.py --device cuda; the step's bound is
#      measured on CPUs only: bench_roofline.py times CPU matmuls);
#   3. the CUDA paths of the tests (device and dtype selection, one worker per GPU, the compiled step).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${STEER_VENV:-.venv}/bin/python"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
timeout 200 "$python" benchmarks/bench_run.py --device cuda --prompts 99 --new-tokens 64 --dtypes float32,auto || echo "bench_run: no result in 200 s"
timeout 40 "$python" -m pytest -q -p no:cacheprovider tests/test_models.py tests/test_numerics.py tests/test_devices.py -k "cuda or gpu or auto" || true
