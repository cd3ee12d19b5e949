#!/usr/bin/env bash
# Instructions lanyard executes per request (every thread, the log writer's included), counted
# by valgrind's callgrind: deterministic, so two builds compare on a busy or drifting machine
# where timings do not.
#
#   benches/callgrind.sh [--lanyard PATH] [--requests N] [--connections C] [--keep DIR] [SCENARIO...]
#
# SCENARIO is discovery, jwks or client_credentials (default: all three). For each it starts
# lanyard under callgrind twice on one SQLite database (made beforehand, so key generation is
# not counted), sends N/10 and then N requests, each of C keep-alive connections (default 1)
# sending its next request when the last is answered, and prints (instructions of the long run
# - those of the short run) / (the difference in requests), which discounts start and shutdown.
# The config is benches/run.sh's: JSON logs at info, RS256. With one connection SQLite's writer
# batches one request at a time, so client_credentials pays a whole transaction per request,
# more than under load; with several, batches (and so the count) vary a little between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
lanyard=target/release/lanyard
requests=2000
connections=1
keep=""
scenarios=()
while [ $# -gt 0 ]; do
    case "$1" in
        --lanyard) lanyard="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) scenarios+=("$1"); shift ;;
    esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(discovery jwks client_credentials)
lanyard="$(realpath "$lanyard")"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web=$(free_port)
telemetry=$(free_port)
key=$(head -c 32 /dev/urandom | base64)
cat >"$dir/config.yaml" <<EOF
issuer: http://127.0.0.1:$web
storage:
  type: sqlite3
  config:
    file: $dir/lanyard.db
web:
  http: 127.0.0.1:$web
telemetry:
  http: 127.0.0.1:$telemetry
logger:
  level: info
  format: json
staticClients:
- id: bench
  name: Benchmark
  secret: bench-secret-0123456789
  redirectURIs: ["http://127.0.0.1:9/callback"]
  grantTypes: [client_credentials]
keys:
  algorithm: RS256
  encryptionKey: "$key"
EOF

wait_ready() {
    for _ in $(seq 1 600); do
        if python3 - "$telemetry" <<'EOF' 2>/dev/null; then return 0; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", "/healthz/ready")
sys.exit(0 if c.getresponse().status == 200 else 1)
EOF
        sleep 0.2
    done
    echo "lanyard was not ready" >&2
    exit 1
}

# Sends N requests of a scenario from C keep-alive connections; every one must succeed.
drive() {
    python3 - "$web" "$1" "$2" "$connections" <<'EOF'
import base64, http.client, sys, threading
port, scenario, n, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
auth = "Basic " + base64.b64encode(b"bench:bench-secret-0123456789").decode()
failed = []
def run(count):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        if scenario == "discovery":
            c.request("GET", "/.well-known/openid-configuration")
        elif scenario == "jwks":
            c.request("GET", "/keys")
        else:
            c.request("POST", "/token", body="grant_type=client_credentials&scope=openid",
                      headers={"Authorization": auth,
                               "Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            failed.append(f"{scenario}: status {r.status}")
            return
threads = [threading.Thread(target=run, args=(n // conns + (i < n % conns),)) for i in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    sys.exit(failed[0])
EOF
}

# Instructions of one run of lanyard serving N requests of a scenario.
instructions() {
    local out="$dir/callgrind.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$lanyard" serve --config "$dir/config.yaml" \
        2>>"$dir/lanyard.log" &
    local pid=$!
    wait_ready
    drive "$1" "$2"
    kill -TERM "$pid"
    wait "$pid" || true
    [ -z "$keep" ] || cp "$out" "$keep/"
    awk '/^summary:/ {print $2}' "$out"
}

# The database and its first key, made once outside callgrind.
"$lanyard" serve --config "$dir/config.yaml" 2>>"$dir/lanyard.log" &
pid=$!
wait_ready
kill -TERM "$pid"
wait "$pid" || true
[ -z "$keep" ] || mkdir -p "$keep"

short=$((requests / 10))
printf '%-20s %14s\n' scenario instr/req
for scenario in "${scenarios[@]}"; do
    a=$(instructions "$scenario" "$short")
    b=$(instructions "$scenario" "$requests")
    printf '%-20s %14d\n' "$scenario" $(((b - a) / (requests - short)))
done
