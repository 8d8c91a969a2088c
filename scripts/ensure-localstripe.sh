#!/usr/bin/env bash
# The Stripe connector's tests run against localstripe (PyPI; a fake but
# stateful Stripe server, GPL-3.0, run as a separate process and never linked).
# It lives in its own virtualenv under target/, pinned, so nothing is installed
# system-wide. Needs python3 with venv (Debian: python3-venv), installed when
# absent as root; otherwise this says what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.15.10
VENV=${LOCALSTRIPE_VENV:-target/localstripe}
say() { printf 'localstripe: %s\n' "$*" >&2; }
fail() { printf 'localstripe: ERROR: %s\n' "$*" >&2; exit 1; }

if [ -x "$VENV/bin/localstripe" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('localstripe') != '$VERSION')" 2>/dev/null; then
    exit 0
fi
command -v python3 >/dev/null 2>&1 || {
    [ "$(id -u)" -eq 0 ] || fail "python3 is needed. Run: sudo apt-get update && sudo apt-get install -y python3 python3-venv"
    say "installing python3 from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
}
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] || fail "python3's venv is missing. Run: sudo apt-get install -y python3-venv"
    say "installing python3-venv from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
say "installing localstripe $VERSION into $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "localstripe==$VERSION"
"$VENV/bin/localstripe" --help >/dev/null
