#!/usr/bin/env bash
# User-space instructions per request of the load benchmark's servers, counted by valgrind's
# callgrind: repeatable where wall-clock ratios on a shared VM are not (CPU steal, neighbours).
# It does not see the kernel's share (about 60% of a request's CPU time here: read, write,
# epoll), so a difference of N% in instructions is roughly N * 0.4 % of throughput.
#
#   benches/instructions.sh                       # bare podcycle podcycle-noop-layer axum-noop-layer
#   benches/instructions.sh bare podcycle         # any of the load bench's server kinds
#   benches/instructions.sh bare podcycle podcycle-routing   # the layer vs podcycle::routing
#   LOAD_BIN=path/to/load-<hash> benches/instructions.sh bare podcycle   # a binary built before
#   benches/instructions.sh tonic-bare tonic-podcycle    # gRPC: per call, "vs" tonic-bare
#
# Each server runs under callgrind; its counters are zeroed once it is ready and dumped right
# after wrk (-t1 -c1: one request per wake-up, so batching cannot vary) has run for 3 s, so
# start-up (the clock calibration, the first requests' caches) is left out. The gRPC kinds
# (tonic-*) are loaded by the bench's own gRPC client (`--load-client ADDR 16 SECS grpc`: 16
# unary Health/Check calls in flight over 4 HTTP/2 connections) instead of wrk. Needs valgrind and
# wrk (`apt-get install -y valgrind wrk`); loopback only, every run bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(bare podcycle podcycle-noop-layer axum-noop-layer)
for tool in valgrind callgrind_annotate wrk; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is not installed" >&2; exit 2; }
done
if [ -n "${LOAD_BIN:-}" ]; then
    bin=$LOAD_BIN # a load bench binary built earlier, e.g. from the commit before a change
else
    cargo build --release --bench load >&2
    bin=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\/deps\/load-[^"]*\)".*/\1/p' | tail -1)
fi
[ -x "$bin" ] || { echo "instructions.sh: load bench binary not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# drive KIND ADDR SECONDS -> requests completed
drive() {
    if [[ $1 == tonic* ]]; then
        "$bin" --load-client "$2" 16 "$3" grpc | awk '/^DONE/{print $2}'
    else
        wrk -t1 -c16 -d"$3"s --timeout 5s "http://$2/hello/world" | awk '/requests in/{print $1}'
    fi
}

# run KIND -> "requests instructions"
run() {
    local kind=$1 out="$work/$1"
    # stdin held open for at most 90 s: the server exits when it closes.
    valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$bin" --load-server "$kind" 300 \
        >"$out.stdout" 2>"$out.stderr" < <(sleep 90) &
    local pid=$!
    for _ in $(seq 1 300); do grep -q READY "$out.stdout" 2>/dev/null && break; sleep 0.2; done
    local addr
    addr=$(awk '/READY/{print $2}' "$out.stdout")
    [ -n "$addr" ] || { echo "instructions.sh: $kind did not start" >&2; kill "$pid"; exit 1; }
    drive "$kind" "$addr" 1 >/dev/null # warm caches and routes
    callgrind_control -z "$pid" >/dev/null
    drive "$kind" "$addr" 3 >"$out.requests"
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local requests total
    requests=$(cat "$out.requests")
    total=$(awk '/^summary:/{print $2; exit}' "$out.cg".1)
    echo "$requests $total"
}

printf '| server | instructions per request | vs bare |\n|---|---:|---:|\n'
bare=""
for kind in "${kinds[@]}"; do
    read -r requests total < <(run "$kind")
    per=$(( total / requests ))
    [ "$kind" = bare ] || [ "$kind" = tonic-bare ] && bare=$per
    ratio=$([ -n "$bare" ] && awk -v a="$per" -v b="$bare" 'BEGIN{printf "%+.1f%%", (a/b-1)*100}' || echo -)
    printf '| %s | %s | %s |\n' "$kind" "$per" "$ratio"
done
