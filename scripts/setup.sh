#!/usr/bin/env bash
# Create .venv (once) and install kuosan with the extras named in $1 (e.g. "test" or "mnist").
# Torch: an existing torch is kept; otherwise the CPU build on machines without an NVIDIA GPU
# (torch==2.13.0, which these machines hold on local disk) and the default CUDA build where a GPU is
# present. Override with KUOSAN_TORCH="torch==X --index-url ..." if your machine needs another wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${KUOSAN_TORCH:-}" ]; then
    spec="$KUOSAN_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="torch>=2.1,<3"
  else
    spec="torch==2.13.0"
  fi
  echo "installing $spec"
  # shellcheck disable=SC2086
  python -m pip install -q $spec
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
python -m pip install -q -e "$target"
