#!/usr/bin/env bash
# The test suite (CPU; GPU tests skip without CUDA). Installs what it needs into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
