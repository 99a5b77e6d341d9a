#!/usr/bin/env bash
# Runs every test of the project: generated-file drift, Rust (unit, integration, real
# pymediasoup clients), a smoke run of the load tool, the TypeScript SDK against live
# servers, the SDK's packed tarball in fresh projects, and the voice-room page in
# headless Chromium.
# Sets up what the tests need on first use: a Python virtualenv for the e2e clients,
# the SDK's npm packages, and (as root) Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "Chromium for the browser test, nftables for its UDP-blocked part"
if [ ! -x "${DSPEAK_CHROMIUM:-/usr/bin/chromium}" ] || ! command -v nft >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nftables >/dev/null
  elif [ ! -x "${DSPEAK_CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "Chromium is missing: run 'apt-get install -y chromium' as root, or set DSPEAK_CHROMIUM" >&2
    exit 1
  else
    echo "nft is missing: the browser test's ICE-TCP part (UDP dropped) needs root and nftables; it is skipped" >&2
  fi
fi

step "redis-server for the cluster tests"
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  else
    echo "redis-server is missing: run 'apt-get install -y redis-server' as root (the cluster tests are skipped)" >&2
  fi
fi

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

step "Rust tests (unit, integration, fuzzing, soak)"
cargo test --workspace --all-targets -- --skip pymediasoup

step "Rust backend example: dspeak-schema mints tokens and calls a live server; no jsonrpsee without feature client"
if cargo tree -p dspeak-schema -e normal --prefix none | grep '^jsonrpsee' >/dev/null; then
  echo "dspeak-schema without features depends on jsonrpsee; only feature client may" >&2
  exit 1
fi
cargo build --workspace --examples
backend_example() {
  local bin=${CARGO_TARGET_DIR:-target}/debug secret log pid url="" rc=0
  secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  log=$(mktemp)
  NO_COLOR=1 "$bin/dspeak" --listen 127.0.0.1:0 --rtc-port 0 --workers 1 --auth-secret "$secret" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    url=$(grep -o 'listening on ws://[^ ]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  if [ -n "$url" ]; then "$bin/examples/backend" "$url" "$secret" || rc=$?; else rc=1; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$rc" = 0 ] || cat "$log" >&2
  rm -f "$log"
  return "$rc"
}
backend_example

step "Real WebRTC clients: pymediasoup + aiortc end to end, then metrics and drain with them (one at a time: their timing checks want the cores)"
cargo test --workspace --all-targets -- pymediasoup --nocapture --test-threads 1

step "Load tool smoke run (correctness at small N; BENCHMARKS.md has the real runs)"
(cd bench/node-baseline && npm ci --no-audit --no-fund --loglevel=error)
cargo test --workspace --all-targets -- --ignored smoke --nocapture

step "SDK: build, typecheck, tests against live servers (target/debug/dspeak)"
(cd sdk && npm run build && npm run typecheck && npm test)

step "SDK package: npm pack, installed into fresh ESM and CommonJS projects without mediasoup-client; publint, attw; API docs"
(cd sdk && npm run test:package && npm run docs)

step "Browser: the voice-room page in headless Chromium, then over ICE-TCP with UDP dropped (screenshots in artifacts/browser/)"
(cd sdk && npm run test:browser)
