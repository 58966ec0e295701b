#!/usr/bin/env python3
# Usage: bench/slow-sse-flood.py <path to starling binary> <clients>
# Starts one node, opens <clients> SSE streams that never read (4 KiB receive buffers),
# publishes 60 KB messages until every stream was cut off as a slow consumer, closes the
# clients, and prints the node's RSS: at start, at the peak, 2 s and 12 s after.
# Flood a node with slow SSE readers, then measure RSS: during, right after, and settled.
import socket, sys, time, json, urllib.request, subprocess, os, tempfile
binary, n = sys.argv[1], int(sys.argv[2])
d = tempfile.mkdtemp()
cfg = os.path.join(d, "c.toml")
open(cfg, "w").write(f'data_dir = "{d}/data"\n[[nodes]]\nid = "n1"\nhttp_addr = "127.0.0.1:0"\n')
p = subprocess.Popen([binary, "node", "n1", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
addr = None
for line in p.stdout:
    line = line.decode()
    if "listening on http://" in line:
        addr = line.split("listening on http://")[1].strip(); break
host, port = addr.rsplit(":", 1); port = int(port)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def publish(data):
    req = urllib.request.Request(f"http://{addr}/v1/topics/big/messages", data=json.dumps({"data": data}).encode(), method="POST")
    urllib.request.urlopen(req).read()
def metric(name):
    t = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    return sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines() if l.startswith(name) and not l.startswith("#"))
base = rss()
socks = []
for i in range(n):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port)); s.sendall(b"GET /v1/topics/big/events HTTP/1.1\r\nHost: x\r\n\r\n"); socks.append(s)
time.sleep(1)
payload = "x" * 60000
t0 = time.time()
while metric("starling_slow_consumer_disconnects_total") < n and time.time() - t0 < 120:
    for _ in range(10): publish(payload)
peak = rss()
for s in socks: s.close()
time.sleep(2); after = rss()
time.sleep(10); settled = rss()
print(json.dumps({"clients": n, "rss_mb": {"baseline": base, "peak": peak, "after_2s": after, "after_12s": settled}, "disconnects": metric("starling_slow_consumer_disconnects_total")}))
p.terminate(); p.wait()
