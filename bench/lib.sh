# Shared by the benchmark scripts (sourced, not run): free ports, waiting for a port,
# starting NATS and Starling nodes as background processes, and stopping them all.
# The caller sets WORK (a scratch directory) and PIDS=() and traps stop_all on EXIT;
# NATS names the nats-server binary (default: the one on PATH).
NATS=${NATS:-nats-server}

free_ports() {
    local ports
    ports=$(python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$#")
    local i=1
    for p in $ports; do
        printf -v "${!i}" '%s' "$p"
        i=$((i + 1))
    done
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

stop_all() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    rm -rf "$WORK/nats" "$WORK/starling"
}

# start_nats N SYNC: N nodes; SYNC "" (default: fsync every 2 min) or e.g. "always".
start_nats() {
    local n=$1 sync=$2 i routes=""
    NATS_WS=() NATS_PID=() ROUTE=()
    for i in $(seq 1 "$n"); do
        local c w r
        free_ports c w r
        NATS_CLIENT[i]=$c NATS_WS[i]=$w ROUTE[i]=$r
        routes+="nats-route://127.0.0.1:$r,"
    done
    for i in $(seq 1 "$n"); do
        local dir="$WORK/nats/n$i"
        mkdir -p "$dir"
        {
            echo "server_name: n$i"
            echo "listen: 127.0.0.1:${NATS_CLIENT[i]}"
            echo "websocket { listen: \"127.0.0.1:${NATS_WS[i]}\", no_tls: true }"
            if [ -n "$sync" ]; then
                echo "jetstream { store_dir: \"$dir/js\", sync_interval: $sync }"
            else
                echo "jetstream { store_dir: \"$dir/js\" }"
            fi
            if [ "$n" -gt 1 ]; then
                echo "cluster { name: bench, listen: \"127.0.0.1:${ROUTE[i]}\", routes: [${routes%,}] }"
            fi
        } >"$dir/nats.conf"
        "$NATS" -c "$dir/nats.conf" >"$dir/log" 2>&1 &
        NATS_PID[i]=$!
        PIDS+=("$!")
    done
    for i in $(seq 1 "$n"); do wait_port "${NATS_WS[i]}"; done
    [ "$n" -gt 1 ] && sleep 3 # routes and the JetStream meta leader
    return 0
}

# start_starling BIN N [FACTOR]: N nodes, fsync = "batch"; sets ST_URL[i], ST_PID[i].
start_starling() {
    local bin=$1 n=$2 factor=${3:-} i
    ST_URL=() ST_PID=()
    local cfg="$WORK/starling/cluster.toml"
    mkdir -p "$WORK/starling"
    {
        echo "data_dir = \"$WORK/starling/data\""
        echo '[storage]'
        echo 'fsync = "batch"'
        [ -n "$factor" ] && printf '[replication]\nfactor = %s\n' "$factor"
        for i in $(seq 1 "$n"); do
            local h g c
            free_ports h g c
            ST_HTTP[i]=$h
            echo '[[nodes]]'
            echo "id = \"n$i\""
            echo "http_addr = \"127.0.0.1:$h\""
            if [ "$n" -gt 1 ]; then
                echo "gossip_addr = \"127.0.0.1:$g\""
                echo "cluster_addr = \"127.0.0.1:$c\""
            fi
        done
    } >"$cfg"
    for i in $(seq 1 "$n"); do
        RUST_LOG=warn "$bin" node "n$i" --config "$cfg" >"$WORK/starling/n$i.log" 2>&1 &
        ST_PID[i]=$!
        PIDS+=("$!")
        ST_URL[i]="http://127.0.0.1:${ST_HTTP[i]}"
    done
    for i in $(seq 1 "$n"); do wait_port "${ST_HTTP[i]}"; done
    # every node ready (members joined; with replication: its shards have leaders)
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 150); do
            [ "$(curl -s -o /dev/null -w '%{http_code}' "${ST_URL[i]}/readyz")" = 200 ] && break
            sleep 0.2
        done
    done
    return 0
}

