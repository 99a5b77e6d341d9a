#!/usr/bin/env bash
# Runs every test of the project: generated-file drift, Rust (unit, integration, real
# pymediasoup clients), and the TypeScript SDK against live servers.
# Sets up what the tests need on first use: a Python virtualenv for the e2e clients
# and the SDK's npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "Python e2e virtualenv (.venv)"
if [ ! -x .venv/bin/python ] || ! cmp -s e2e/python/requirements.txt .venv/.requirements 2>/dev/null \
   || ! cmp -s e2e/python/constraints.txt .venv/.constraints 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r e2e/python/requirements.txt
  cp e2e/python/requirements.txt .venv/.requirements
  cp e2e/python/constraints.txt .venv/.constraints
fi
export DSPEAK_PYTHON="$root/.venv/bin/python"

step "SDK packages (npm ci)"
(cd sdk && npm ci --no-audit --no-fund --loglevel=error)

step "Generated files are up to date (cargo xtask check)"
cargo xtask check

step "Python client self-tests (no server)"
(cd e2e/python && "$DSPEAK_PYTHON" -m pytest -q -p no:cacheprovider test_offline.py)

step "Rust tests (unit, integration, pymediasoup end to end)"
cargo test --workspace --all-targets

step "SDK: build, typecheck, tests against live servers"
cargo build -p dspeak-server
(cd sdk && npm run build && npm run typecheck && npm test)
