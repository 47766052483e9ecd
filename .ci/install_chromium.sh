#!/usr/bin/env bash
# Installs Debian's headless Chromium + chromedriver for tests/browser_check.py, only when missing.
# Needs root (CI containers run as root); does nothing on a machine that already has both.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium.sh: no apt-get here; install chromium and chromedriver by hand (the browser test skips without them)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
