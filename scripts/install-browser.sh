#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the web page's browser test (tests/service/test_ui.py),
# from Debian's packages (chromium, chromium-driver), idempotently: nothing to do when both are
# on PATH. It never fails `make test`: where it cannot install (no apt-get, not root and no
# password-less sudo, DAT_NO_BROWSER=1, or apt-get failing), it says why and the browser test
# skips with its own reason. On a clean Debian 12 machine (empty package lists) it took 54 s.
set -uo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
skip() { echo "install-browser: $1; the browser test (tests/service/test_ui.py) will skip" >&2; exit 0; }
[ "${DAT_NO_BROWSER:-0}" = 1 ] && skip "DAT_NO_BROWSER=1"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get here (install Chromium and chromedriver yourself)"
if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    skip "not root and no password-less sudo (run: sudo apt-get install chromium chromium-driver)"
fi

echo "installing Debian's chromium and chromium-driver for the browser test"
export DEBIAN_FRONTEND=noninteractive
# A clean machine may have no package lists at all; an old list may name removed versions.
"${sudo[@]}" apt-get update -qq || skip "apt-get update failed"
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || skip "apt-get install chromium chromium-driver failed"
echo "installed $(chromium --version 2>/dev/null)"
