#!/usr/bin/env bash
# Issue 13's GPU figures in one call on a lent GPU (run from the repository root; diffusers and importlib_metadata
# carried as wheels in .whl/, see the device notes): the default digits run end to end per run.compile mode, and
# DDPM's CIFAR-10 layout trained in bf16 at batch 128, kuosan against diffusers' UNet2DModel of the same layout
# (eager), then kuosan under CUDA graphs, with MFU against the H100 SXM's datasheet bf16 peak (989 TFLOP/s).
# Usage: bash benchmarks/gpu_figures.sh [train|cifar|cifar-graphs|train-fp32]...   (default: all four)
set -uo pipefail
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__)"
B="python3 benchmarks/unet_throughput.py --device cuda --size cifar --dtype bf16 --mode train --batch 128"
train() {  # the default digits run (1000 steps) end to end: wall seconds and the log's last lines
    t0=$(date +%s.%N)
    timeout "$1" python3 -m kuosan.cli train --out "/tmp/digits-$RANDOM" "${@:2}" 2>&1 | tr '\r' '\n' | tail -3
    echo "kuosan train ${*:2}: $(python3 -c "import time; print(round(time.time() - $t0, 1))") s wall"
}
for part in ${*:-train cifar cifar-graphs train-fp32}; do
    case $part in
    train) train 150 --set run.compile=reduce-overhead ;;
    train-fp32) train 90 --set run.precision=fp32 ;;
    cifar) timeout 110 $B --iters 20 --repeats 5 --spec-peak 989 ;;
    cifar-graphs) timeout 180 $B --iters 20 --repeats 3 --spec-peak 989 --no-diffusers --compile reduce-overhead \
        2>&1 | grep -v -i warn ;;
    esac
done
