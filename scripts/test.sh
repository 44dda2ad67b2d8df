#!/usr/bin/env bash
# The test suite (CPU; GPU tests skip without CUDA). Installs what it needs into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/install_browser.sh  # Debian chromium + chromedriver for the explorer page's browser tests (skip without)
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
