#!/usr/bin/env bash
# The main job: train on the embedded digits data set (about a minute on 2 cores), then sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out="${1:-runs/digits}"
kuosan train --out "$out" "${@:2}"
kuosan sample "$out" --sampler ddim --steps 50 --n 64 --seed 0 --out "$out/samples_ddim50.png"
echo "samples: $out/samples.png (during training) and $out/samples_ddim50.png"
