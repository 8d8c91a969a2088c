#!/usr/bin/env bash
# The checkout's browser tests drive Debian's Chromium through chromedriver.
# Installs both when absent (as root); otherwise says what to run.
set -euo pipefail
cd "$(dirname "$0")/.."
# axe-core (npm, pinned by tests/a11y/package-lock.json): the accessibility
# checks the browser tests run on every checkout page.
if [ ! -f tests/a11y/node_modules/axe-core/axe.min.js ]; then
    command -v npm >/dev/null || { echo "browser: ERROR: npm is missing; install it with: apt-get install nodejs npm" >&2; exit 1; }
    echo "browser: installing axe-core into tests/a11y" >&2
    npm ci --prefix tests/a11y --no-audit --no-fund --silent
fi
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser: ERROR: the checkout tests need Chromium. Run: sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
echo "browser: installing chromium and chromium-driver from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
