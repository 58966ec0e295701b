#!/usr/bin/env bash
# Starling vs NATS, in one run, on the same machine, with the same load generator
# (`starling bench <scenario> --target starling|nats`): same transport (WebSocket), message
# size, connection counts and offered rates. Installs Debian's nats-server if it is missing
# (needs root), starts single nodes and then 3-node clusters of both, runs each row against
# both, and prints a table with the ratio Starling/NATS. Results (one JSON record per run)
# stay in $OUT (default: a temporary directory). Takes a few minutes.
#
#   bench/compare-nats.sh            # everything
#   DURATION=5s bench/compare-nats.sh
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
WORK=$(mktemp -d /tmp/starling-vs-nats.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
PIDS=()

trap 'stop_all' EXIT

if ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package)" >&2
    apt-get install -y nats-server >/dev/null
fi
nats-server --version >&2

cargo build --release >&2
BIN=target/release/starling

# shellcheck source=bench/lib.sh
source bench/lib.sh # (the script runs from the repository root)

# bench NAME ARGS...: one run, its JSON record in $OUT/NAME.json.
bench() {
    local name=$1
    shift
    echo "== $name: starling bench $*" >&2
    "$BIN" bench "$@" --json "$OUT/$name.json" >"$OUT/$name.txt"
    cat "$OUT/$name.txt" >&2
}

FANOUT=(--subscribers 1000 --publishers 4 --rate 0 --duration "$DURATION" --warmup "$WARMUP")
LATENCY=(--subscribers 10 --publishers 1 --rate 1000 --duration "$DURATION" --warmup "$WARMUP")
DURABLE=(--publishers 64 --window 16 --rate 0 --duration "$DURATION" --warmup "$WARMUP")
CONNS=(--connections 5000)

# --- single node -------------------------------------------------------------------------
start_starling "$BIN" 1
bench conn-starling connections --url "${ST_URL[1]}" --pid "${ST_PID[1]}" "${CONNS[@]}"
bench fanout-starling fanout --url "${ST_URL[1]}" "${FANOUT[@]}"
bench latency-starling fanout --url "${ST_URL[1]}" "${LATENCY[@]}"
bench durable1-starling durable --url "${ST_URL[1]}" --fsync-label batch "${DURABLE[@]}"
stop_all

start_nats 1
N1="ws://127.0.0.1:${NATS_WS[1]}"
bench conn-nats connections --target nats --url "$N1" --pid "${NATS_PID[1]}" "${CONNS[@]}"
bench fanout-nats fanout --target nats --url "$N1" "${FANOUT[@]}"
bench latency-nats fanout --target nats --url "$N1" "${LATENCY[@]}"
bench durable1-nats durable --target nats --url "$N1" --replicas 1 "${DURABLE[@]}"
stop_all

# --- three nodes: publisher on node 1, subscribers on nodes 2 and 3 -----------------------
start_starling "$BIN" 3
# A topic owned by n1, so the publisher talks to the owner (as in BENCHMARKS.md).
TOPIC=""
for k in $(seq 0 50); do
    # A topic exists (and has an owner to report) once something was published to it.
    curl -s -o /dev/null -X POST -d '{"data":"probe"}' "${ST_URL[1]}/v1/topics/xnode-$k/messages"
    owner=$(curl -s "${ST_URL[1]}/v1/topics/xnode-$k" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("owner",""))' 2>/dev/null || true)
    if [ "$owner" = "n1" ]; then
        TOPIC="xnode-$k"
        break
    fi
done
XS=(--url "${ST_URL[1]}" --sub-url "${ST_URL[2]}" --sub-url "${ST_URL[3]}")
[ -n "$TOPIC" ] && XS+=(--topic "$TOPIC")
bench xfanout-starling fanout "${XS[@]}" "${FANOUT[@]}"
bench xlatency-starling fanout "${XS[@]}" "${LATENCY[@]}"
stop_all

start_nats 3
XN=(--url "ws://127.0.0.1:${NATS_WS[1]}" --sub-url "ws://127.0.0.1:${NATS_WS[2]}"
    --sub-url "ws://127.0.0.1:${NATS_WS[3]}")
bench xfanout-nats fanout --target nats "${XN[@]}" "${FANOUT[@]}"
bench xlatency-nats fanout --target nats "${XN[@]}" "${LATENCY[@]}"
bench durable3-nats durable --target nats --url "ws://127.0.0.1:${NATS_WS[1]}" --replicas 3 \
    "${DURABLE[@]}"
stop_all

# --- the table -----------------------------------------------------------------------------
python3 - "$OUT" <<'EOF'
import json, os, sys

out = sys.argv[1]

def load(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def fanout(name, key):
    r = load(name)
    if r is None:
        return None
    res = r["results"]
    if key == "deliveries":
        return res["deliveries_per_sec"]
    return res["latency_ms"][key]

def conn(name):
    r = load(name)
    return None if r is None else r["results"]["kib_per_connection"]

def durable(name, what):
    r = load(name)
    if r is None:
        return None
    level = next(iter(r["results"]["levels"].values()))
    return level["acked_per_sec"] if what == "rate" else level["ack_latency_ms"][what]

rows = [
    ("fan-out deliveries/s, 1 node, 1,000 WS subs, closed loop", "deliveries", "fanout", ""),
    ("latency p50 ms, 1 node, 1,000 msg/s, 10 subs", "p50", "latency", ""),
    ("latency p99 ms", "p99", "latency", ""),
    ("latency p99.9 ms", "p99_9", "latency", ""),
    ("KiB per idle WS connection (5,000)", "conn", "conn", ""),
    ("durable acked publishes/s, 1 node (batch vs JetStream file R1)", "rate", "durable1", ""),
    ("durable ack p50 ms", "p50", "durable1", ""),
    ("durable ack p99 ms", "p99", "durable1", ""),
    ("durable acked publishes/s, R3 (3 nodes)", "rate", "durable3", ""),
    ("cross-node fan-out deliveries/s (pub n1, subs n2+n3)", "deliveries", "xfanout", ""),
    ("cross-node latency p50 ms, 1,000 msg/s", "p50", "xlatency", ""),
    ("cross-node latency p99 ms", "p99", "xlatency", ""),
    ("cross-node latency p99.9 ms", "p99_9", "xlatency", ""),
]

def value(prefix, key, target):
    name = f"{prefix}-{target}"
    if prefix == "conn":
        return conn(name)
    if prefix.startswith("durable"):
        return durable(name, key)
    return fanout(name, key)

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}"

print()
print(f"| row | Starling | NATS | Starling/NATS |")
print(f"|---|---:|---:|---:|")
for label, key, prefix, _ in rows:
    s, n = value(prefix, key, "starling"), value(prefix, key, "nats")
    ratio = f"{s / n:.2f}" if s is not None and n else "n/a"
    print(f"| {label} | {fmt(s)} | {fmt(n)} | {ratio} |")
print()
print(f"JSON records and tables: {out}")
EOF
