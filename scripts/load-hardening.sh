#!/bin/sh
# The serving load test of BENCHMARKS.md ("Serving"), with the hardening on (default timeouts,
# connection cap): throughput alone, throughput while 300 slow clients each hold a half-sent
# request head, and the time SIGTERM takes with a stalled client connected.
#   sh scripts/load-hardening.sh [BUNDLE]     (default: a pipeline run into /tmp/defed-load)
set -eu
B=${B:-target/release/defed}
PORT=${PORT:-18089}
BUNDLE=${1:-}
if [ -z "$BUNDLE" ]; then
    $B pipeline --benign 160 --calibration 100 --attacked 10 --adaptive 0 --no-robust \
        --out /tmp/defed-load >/dev/null
    BUNDLE=/tmp/defed-load/defender.safetensors
fi
$B serve --bundle "$BUNDLE" --addr "127.0.0.1:$PORT" --header-timeout 5 --max-connections 512 \
    --shutdown-deadline 3 2>/tmp/defed-load-serve.log &
SERVER=$!
sleep 3
URL=http://127.0.0.1:$PORT
echo "== 8 clients, 8 s"
$B client load --url "$URL" --concurrency 8 --seconds 8
echo "== 8 clients, 8 s, with 300 slow clients holding half a request head"
python3 - "$PORT" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
held, cut = [], 0
for _ in range(300):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
    held.append(s)
start = time.time()
for s in held:
    s.settimeout(20)
    try:
        if s.recv(1) == b"":
            cut += 1
    except OSError:
        cut += 1
print(f"slow clients: {cut} of {len(held)} cut off by the server within {time.time() - start:.1f} s")
PY
SLOW=$!
sleep 1
$B client load --url "$URL" --concurrency 8 --seconds 8
wait $SLOW
echo "== 8 clients, 8 s, while one client sends 256-image batches back to back"
python3 - "$PORT" <<'PY' &
import json, sys, time, urllib.request
port = int(sys.argv[1])
body = json.dumps({"images": [{"pixels": [0.0] * 784, "shape": [1, 28, 28]}] * 256}).encode()
n, start = 0, time.time()
while time.time() - start < 9:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/classify/batch", body,
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
    n += 1
print(f"batch client: {n} batches of 256 in {time.time() - start:.1f} s")
PY
BATCH=$!
sleep 1
$B client load --url "$URL" --concurrency 8 --seconds 8
wait $BATCH
echo "== SIGTERM with a stalled client connected"
python3 -c "
import socket, time
s = socket.create_connection(('127.0.0.1', $PORT))
s.sendall(b'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{')
time.sleep(30)
" &
STALL=$!
sleep 1
T0=$(date +%s.%N)
kill -TERM $SERVER
wait $SERVER || true
T1=$(date +%s.%N)
echo "shutdown took $(echo "$T1 - $T0" | bc) s (deadline 3 s)"
kill $STALL 2>/dev/null || true
