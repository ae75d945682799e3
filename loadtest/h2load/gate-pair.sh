#!/usr/bin/env bash
# Paired publish benchmark of two builds of the node (e.g. before and after a change), in turns
# within one run: each build serves its own fresh database on loopback, and h2load (Debian
# nghttp2-client) sends a prebuilt one-event durable PublishEvents body with 50 calls in flight
# (-c connections x -m streams). h2load does not read grpc-status, so each turn also counts
# the rows stored; a turn that stored fewer than it sent is reported.
# Usage: loadtest/h2load/gate-pair.sh BIN_A BIN_B [turns] [requests-per-turn]
set -euo pipefail
A=$1; B=$2; TURNS=${3:-6}; N=${4:-40000}; C=${C:-5}; M=${M:-10}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
eval "$("$ROOT/scripts/services.sh")"
BODY=$(mktemp); LOGS=$(mktemp -d)
python3 - "$BODY" <<'PY'
import struct, sys
def field(n, payload): return bytes([n << 3 | 2, len(payload)]) + payload
event = field(1, b"bench.event") + field(2, b'{"n": 1, "user": "someone@example.com"}') + field(3, b"h2load")
msg = field(1, b"bench") + field(2, event) + bytes([3 << 3, 1])
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
declare -A GRPC TOKEN DB
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for db in "${DB[@]}"; do psql "$ER_PG_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
    rm -rf "$BODY" "$LOGS"
}
trap cleanup EXIT
for side in a b; do
    bin=$A; [[ $side == b ]] && bin=$B
    db="er_bench_gate_${side}_$$"; DB[$side]=$db
    psql "$ER_PG_URL" -qc "CREATE DATABASE $db"
    url="${ER_PG_URL%/*}/$db"
    g=$(port); h=$(port); GRPC[$side]=$g
    DATABASE_URL=$url ER_GRPC_ADDR=127.0.0.1:$g ER_HTTP_ADDR=127.0.0.1:$h RUST_LOG=warn \
      ER_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
      ER_RATE_LIMIT_DURABLE_PUBLISH_PER_SECOND=0 "$bin" serve >"$LOGS/$side.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$h/readyz" >/dev/null && break; sleep 0.1; done
    TOKEN[$side]=$(DATABASE_URL=$url "$bin" api-key create --type admin | python3 -c 'import json,sys; print(json.load(sys.stdin)["bearer_token"])')
    grpcurl -plaintext -H "authorization: Bearer ${TOKEN[$side]}" -d '{"name": "bench"}' \
      "127.0.0.1:$g" eventrelay.EventRelay.CreateTopic >/dev/null
done
stored() { psql "${ER_PG_URL%/*}/${DB[$1]}" -Atqc 'SELECT count(*) FROM bench_events'; }
run() { # run SIDE -> req/s
    local before after rps
    before=$(stored "$1")
    rps=$(h2load -n "$N" -c "$C" -m "$M" -d "$BODY" -H 'content-type: application/grpc' -H 'te: trailers' \
        -H "authorization: Bearer ${TOKEN[$1]}" "http://127.0.0.1:${GRPC[$1]}/eventrelay.EventRelay/PublishEvents" \
        | awk '/^finished in/ {print $4}')
    after=$(stored "$1")
    (( after - before == N )) || echo "  ($1: stored $((after - before)) of $N)" >&2
    echo "$rps"
}
run a >/dev/null; run b >/dev/null   # warm-up turn each, not counted
echo "turn  a(req/s)  b(req/s)  b/a"
for t in $(seq 1 "$TURNS"); do
    if (( t % 2 )); then ra=$(run a); rb=$(run b); else rb=$(run b); ra=$(run a); fi
    printf '%4d  %8s  %8s  %.3f\n' "$t" "$ra" "$rb" "$(python3 -c "print($rb/$ra)")"
done
