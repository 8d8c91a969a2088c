#!/usr/bin/env bash
# Offline checks of what is published beside the code: the Kubernetes and KEDA
# manifests and docker-compose.yml against their schemas (scripts/validate/
# manifests.py), the AsyncAPI document with the AsyncAPI project's parser and
# the OpenAPI one with @readme/openapi-parser (scripts/validate/node), and the image built when a Docker daemon is
# reachable. Tools come pinned from PyPI (into target/validate-venv) and the
# npm registry (package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/validate-venv
if [ ! -x "$venv/bin/check-jsonschema" ] || ! cmp -s scripts/validate/requirements.txt "$venv/requirements.txt"; then
  command -v python3 >/dev/null || { echo "validate: python3 is missing; install it with: apt-get install python3 python3-venv" >&2; exit 1; }
  python3 -m venv "$venv" || { echo "validate: cannot make a virtualenv; install it with: apt-get install python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/validate/requirements.txt
  cp scripts/validate/requirements.txt "$venv/requirements.txt"
fi
PATH="$PWD/$venv/bin:$PATH" python scripts/validate/manifests.py
command -v npm >/dev/null || { echo "validate: npm is missing; install it with: apt-get install nodejs npm" >&2; exit 1; }
if [ ! -d scripts/validate/node/node_modules/@asyncapi/parser ] || [ ! -d scripts/validate/node/node_modules/@readme/openapi-parser ]; then
  npm ci --prefix scripts/validate/node --no-audit --no-fund --silent
fi
node scripts/validate/node/asyncapi.mjs docs/asyncapi.json
node scripts/validate/node/openapi.mjs docs/openapi.json
if docker info >/dev/null 2>&1; then
  docker build --tag payment-sessions:ci .
  docker run --rm payment-sessions:ci session-intake --version
else
  echo "validate: no Docker daemon here, so the image was not built (docker build -t payment-sessions:0.1.0 .)"
fi
