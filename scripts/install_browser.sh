#!/usr/bin/env bash
# Installs Debian's chromium + chromium-driver for the browser tests of `kuosan serve` (tests/serve/test_browser.py)
# when they are missing and apt-get can install them (root, or password-less sudo; the package mirror reachable).
# Never fails its caller: when it cannot, it says why and exits 0, and the browser tests skip with that reason.
set -u

say() { echo "install_browser: $*"; }

if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 ||
                                                 command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0  # already there
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get on this machine: install chromium and chromedriver yourself to run the browser tests"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  say "not root (and no password-less sudo): the browser tests will skip"
  exit 0
fi

log=$(mktemp -t kuosan-install-browser.XXXXXX)
say "installing chromium and chromium-driver with apt-get (log: $log)"
if timeout 900 ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq >"$log" 2>&1 &&
   timeout 1200 ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
     --no-install-recommends chromium chromium-driver >>"$log" 2>&1; then
  say "installed $(chromium --version 2>/dev/null | head -n 1)"
  rm -f "$log"
else
  say "apt-get could not install them (see $log): the browser tests will skip"
fi
exit 0
