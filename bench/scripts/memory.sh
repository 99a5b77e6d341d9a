#!/usr/bin/env bash
# Server memory per listener (BENCHMARKS.md §9): for each run, a fresh `dspeak-bench
# serve` process, its VmRSS before the first connection and its peak (sampled every
# 250 ms) while `fanout` runs, for 1 speaker × L listeners (L sessions, transports and
# consumers) and 10 speakers × L/10 listeners (the same consumers, a tenth of the
# sessions and transports) and 1 speaker × L/10 listeners (the transports and sessions
# of the second, nine fewer, and a tenth of its consumers). Prints one JSON line per run
# and configuration.
# Usage: bench/scripts/memory.sh [BENCH_BINARY] [RUNS] [LISTENERS]
set -euo pipefail
bin=${1:-target/release/dspeak-bench}
runs=${2:-3}
listeners=${3:-2000}

one() { # speakers listeners
    local fifo dir pid url before peak rss sampler
    dir=$(mktemp -d)
    fifo=$dir/in
    mkfifo "$fifo"
    "$bin" serve --connections $((listeners + 100)) <"$fifo" >"$dir/out" &
    pid=$!
    exec 9>"$fifo"
    until url=$(grep -o '"url": *"[^"]*"' "$dir/out" | cut -d'"' -f4) && [ -n "$url" ]; do sleep 0.1; done
    sleep 1
    before=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
    (exec 9>&-; peak=0; while [ -e /proc/$pid/status ]; do
        rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null || echo 0)
        [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$dir/peak"
        sleep 0.25
    done) &
    sampler=$!
    "$bin" --url "$url" fanout 9>&- --server-pid "$pid" --speakers "$1" --listeners "$2" --windows 2 --secs 3 >"$dir/fanout" 2>&1 || true
    peak=$(cat "$dir/peak")
    exec 9>&-
    wait "$pid" || true
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local ok failed
    # No "ok" when the fan-out gave up (a listener never connected): reported as false.
    ok=$(grep -o '"ok":[a-z]*' "$dir/fanout" | tail -1 | cut -d: -f2 || true)
    failed=$(grep -c 'client transport failed' "$dir/fanout" || true)
    echo "{\"speakers\": $1, \"listeners\": $2, \"rss_before_kib\": $before, \"rss_peak_kib\": $peak, \"growth_kib\": $((peak - before)), \"fanout_ok\": ${ok:-false}, \"failed_transports\": $failed}"
    rm -rf "$dir"
}

for _ in $(seq "$runs"); do
    one 1 "$listeners"
    one 10 $((listeners / 10))
    one 1 $((listeners / 10))
done
