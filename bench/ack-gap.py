#!/usr/bin/env python3
"""Publishes over HTTP, one at a time on a fixed schedule, and reports the longest time
without an acknowledged publish (from one ack to the next, however the time was lost:
failed requests or a slow one that succeeded late) and the slowest single publish.

`starling bench failover` reports a stall only when a publish failed or the epoch changed,
so a publish that hangs for a second and then succeeds is not one of its stalls; this probe
runs beside it to catch those.

    bench/ack-gap.py URL TOPIC SECONDS [INTERVAL_MS] [JSON_OUT]
"""
import http.client
import json
import sys
import time
import urllib.parse

url, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
interval = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.005
out = sys.argv[5] if len(sys.argv) > 5 else None
u = urllib.parse.urlparse(url)
path = f"/v1/topics/{urllib.parse.quote(topic, safe='')}/messages"


def connect():
    return http.client.HTTPConnection(u.hostname, u.port, timeout=5)


conn = connect()
start = time.monotonic()
end = start + seconds
last_ack = None
gaps = []  # (gap_s, at_s, failed_in_between)
slowest = (0.0, 0.0)
ok = failed = failed_since = 0
k = 0
epochs = set()
nxt = start
while time.monotonic() < end:
    now = time.monotonic()
    if now < nxt:
        time.sleep(nxt - now)
    nxt += interval
    k += 1
    body = json.dumps({"data": k, "id": f"gap-{k}-{int(start * 1000)}"})
    t0 = time.monotonic()
    try:
        conn.request("POST", path, body, {"content-type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
        if r.status // 100 != 2:
            raise RuntimeError(f"status {r.status}")
        epochs.add(json.loads(payload).get("epoch"))
    except Exception:
        failed += 1
        failed_since += 1
        conn.close()
        conn = connect()
        continue
    t1 = time.monotonic()
    ok += 1
    if t1 - t0 > slowest[0]:
        slowest = (t1 - t0, t0 - start)
    if last_ack is not None:
        gaps.append((t1 - last_ack, last_ack - start, failed_since))
    last_ack, failed_since = t1, 0
    if nxt < time.monotonic():
        nxt = time.monotonic()

gaps.sort(reverse=True)
top = [
    {"gap_ms": round(g * 1000, 1), "from_s": round(a, 2), "failed": f} for g, a, f in gaps[:3]
]
res = {
    "url": url,
    "topic": topic,
    "interval_ms": interval * 1000,
    "accepted": ok,
    "failed": failed,
    "longest_gaps_between_acks": top,
    "slowest_publish_ms": round(slowest[0] * 1000, 1),
    "slowest_publish_started_at_s": round(slowest[1], 2),
    "epochs_seen": sorted(e for e in epochs if e is not None),
}
print(json.dumps(res))
if out:
    with open(out, "w") as f:
        json.dump(res, f)
