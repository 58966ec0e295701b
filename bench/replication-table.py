#!/usr/bin/env python3
"""Tables from the JSON records that bench/replication.sh leaves in its results folder."""
import glob
import json
import os
import sys

out = sys.argv[1]


def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def lat(d, k):
    v = d.get(k)
    return "n/a" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def durable_cells(name):
    r = load(name)
    if r is None:
        return {}
    return r["results"]["levels"]


# single node, main vs repl
rounds = sorted({f.split("-r")[-1].split(".")[0] for f in glob.glob(f"{out}/durable1-main-r*.json")})
if rounds:
    print("\n| level | round | main acked/s | repl acked/s | repl/main | main p50 / p99 ms | repl p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---|---|")
    for level in ("batch", "always", "none"):
        for r in rounds:
            m = durable_cells(f"durable1-main-r{r}").get(level)
            p = durable_cells(f"durable1-repl-r{r}").get(level)
            if not m or not p:
                continue
            ratio = p["acked_per_sec"] / m["acked_per_sec"] if m["acked_per_sec"] else float("nan")
            print(
                f"| {level} | {r} | {m['acked_per_sec']:,.0f} | {p['acked_per_sec']:,.0f} | {ratio:.2f} "
                f"| {lat(m['ack_latency_ms'], 'p50')} / {lat(m['ack_latency_ms'], 'p99')} "
                f"| {lat(p['ack_latency_ms'], 'p50')} / {lat(p['ack_latency_ms'], 'p99')} |"
            )

print("\n| durable row | acked/s | ack p50 / p99 ms | errors |")
print("|---|---:|---|---:|")
for name in ("durable1-nats-default", "durable1-nats-always", "durable3-repl",
             "durable3-nats-default", "durable3-nats-always"):
    for level, c in durable_cells(name).items():
        print(f"| {name} ({level}) | {c['acked_per_sec']:,.0f} | {lat(c['ack_latency_ms'], 'p50')} / "
              f"{lat(c['ack_latency_ms'], 'p99')} | {c['errors']} |")

print("\n| fan-out row | deliveries/s | delivered/expected | acked pub/s | p50 / p90 / p99 / p99.9 / max ms |")
print("|---|---:|---:|---:|---|")
names = ["xlat-repl", "xlat-main"] + sorted(
    (os.path.basename(f)[:-5] for f in glob.glob(f"{out}/xlat[0-9]*-*.json")),
    key=lambda n: (n.split("-")[1], int(n.split("-")[0][4:])))
for name in names:
    r = load(name)
    if r is None:
        continue
    x = r["results"]
    l = x["latency_ms"]
    print(f"| {name} | {x['deliveries_per_sec']:,.0f} | {x['delivered_ratio'] or 0:.4f} | "
          f"{x['publishes_acked_per_sec']:,.0f} | {lat(l, 'p50')} / {lat(l, 'p90')} / {lat(l, 'p99')} / "
          f"{lat(l, 'p99_9')} / {lat(l, 'max')} |")

print("\n| failover | bench: accepted / failed | bench stalls | probe: longest gap between acks ms | probe failed | slowest publish ms | epochs seen |")
print("|---|---|---|---|---:|---:|---|")
for sig in [f"{b}-{s}" for b in ("repl", "main") for s in ("KILL", "STOP", "TERM")]:
    r, g = load(f"failover-{sig}"), load(f"gap-{sig}")
    if r is None and g is None:
        continue
    cells = ["n/a", "n/a"]
    if r:
        x = r["results"]
        st = "; ".join(
            f"{s['without_accepted_publish_ms']:.0f} ms ({s['failed']} failed, epoch "
            f"{'same' if s['epoch_before'] == s['epoch_after'] else 'changed'})"
            for s in x["stalls"]
        ) or "none"
        cells = [f"{x['accepted']} / {x['failed']}", st]
    gc = ["n/a", "n/a", "n/a", "n/a"]
    if g:
        gc = [", ".join(str(t["gap_ms"]) for t in g["longest_gaps_between_acks"]), str(g["failed"]),
              str(g["slowest_publish_ms"]), str(len(g["epochs_seen"]))]
    print(f"| {sig} | " + " | ".join(cells + gc) + " |")
