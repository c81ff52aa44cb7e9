#!/usr/bin/env bash
# Smoke test of sable-bench against a real sable: starts target/release/sable on a free port
# with a temporary data directory, runs every workload briefly, and checks that each exits 0
# and its --json output counts records. Exit status 0 = all passed.
#
# Usage: bench/smoke.sh            (builds the release binaries if they are missing)
# Env:   SABLE_BIN, SABLE_BENCH_BIN  binaries to use instead of target/release/{sable,sable-bench}
#        SMOKE_KEEP=1                keep the temporary directory (broker log, JSON outputs)

set -u
cd "$(dirname "$0")/.."

SABLE_BIN=${SABLE_BIN:-target/release/sable}
BENCH_BIN=${SABLE_BENCH_BIN:-target/release/sable-bench}
if [ ! -x "$SABLE_BIN" ] || [ ! -x "$BENCH_BIN" ]; then
    cargo build --release --bin sable --bin sable-bench || exit 1
fi

WORK=$(mktemp -d -t sable-smoke.XXXXXX)
SABLE_PID=""
cleanup() {
    if [ -n "$SABLE_PID" ] && kill -0 "$SABLE_PID" 2>/dev/null; then
        kill -TERM "$SABLE_PID"
        for _ in $(seq 50); do kill -0 "$SABLE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SABLE_PID" 2>/dev/null && kill -KILL "$SABLE_PID"
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A base port with the next 16 ports free too: sable's shard i listens on base + 1 + i. Taken
# below the ephemeral range, so no outgoing connection can grab one of them meanwhile.
free_port() {
    python3 - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    base = random.randint(10000, max(10001, low - 20))
    socks = []
    try:
        for p in range(base, base + 17):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
EOF
}

PORT=$(free_port)
BOOT=127.0.0.1:$PORT
"$SABLE_BIN" --data-dir "$WORK/data" --listen "$BOOT" > "$WORK/sable.log" 2>&1 &
SABLE_PID=$!
for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    kill -0 "$SABLE_PID" 2>/dev/null || { echo "FAIL: sable exited at start"; tail -5 "$WORK/sable.log"; exit 1; }
    sleep 0.1
done
echo "sable pid $SABLE_PID on $BOOT, data in $WORK/data"

FAILED=0
# run NAME MIN_RECORDS_FIELD -- ARGS...: runs sable-bench with --json, checks exit 0 and that
# the JSON field is a number > 0.
run() {
    local name=$1 field=$2; shift 3
    local out="$WORK/$name.json"
    timeout 120 "$BENCH_BIN" --bootstrap "$BOOT" --json --broker-pid "$SABLE_PID" "$@" \
        > "$out" 2> "$WORK/$name.err"
    local rc=$?
    local value
    value=$(python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(v$field)" "$out" 2>/dev/null)
    if [ "$rc" = 0 ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$value" 2>/dev/null; then
        echo "ok    $name: $field = $value"
    else
        echo "FAIL  $name: exit $rc, $field = ${value:-missing}"
        tail -5 "$WORK/$name.err" | sed 's/^/      /'
        FAILED=$((FAILED + 1))
    fi
}

run limits         '["memcpy_mb_per_s"]' -- limits --test-seconds 0.2 --dir "$WORK"
run limits-disk    '["seq_write_fdatasync_mb_per_s"]' -- limits --disk-only --test-seconds 0.2 --dir "$WORK"
run limits-sync    '["fdatasync_4k_append_us"]["samples"]' -- limits --disk-only --test-seconds 0.1 --sync-seconds 0.3 --dir "$WORK"
run produce-acks1  '["records"]' -- produce --topic smoke --count 20000 --acks 1
run produce-acksall '["records"]' -- produce --topic smoke --count 5000 --acks all --batch-records 10
run produce-acks0  '["records"]' -- produce --topic smoke --count 5000 --acks 0
run produce-rate   '["records"]' -- produce --topic smoke --rate 2000 --duration 2 --linger-ms 5
run consume        '["records"]' -- consume --topic smoke --duration 30
run e2e            '["records"]' -- e2e --topic smoke-e2e --rate 500 --duration 2
# reno is in every kernel and allowed to every user; the JSON says what the connections used.
run consume-reno   '["records"]' -- --tcp-congestion-control reno consume --topic smoke --duration 30
run limits-reno    '["loopback_tcp_mb_per_s"]' -- --tcp-congestion-control reno limits --test-seconds 0.2 --dir "$WORK"

# The consumer must have read everything the producers had acknowledged before it started.
python3 - "$WORK" <<'EOF' || FAILED=$((FAILED + 1))
import json, sys
w = sys.argv[1]
def load(n):
    try: return json.load(open(f"{w}/{n}.json"))
    except Exception: return None
for n in ("consume-reno", "limits-reno"):
    r = load(n)
    if r is not None and r.get("tcp_congestion_control") != "reno":
        print(f"FAIL  {n} reports congestion control {r.get('tcp_congestion_control')!r}, not reno"); sys.exit(1)
c = load("consume")
if c is None: sys.exit(0)  # already reported above
if not c.get("reached_high_watermark"):
    print(f"FAIL  consume stopped at {c['records']} of {c['records_available']} records"); sys.exit(1)
print(f"ok    consume read all {c['records_available']} records")
EOF

if [ "$FAILED" != 0 ]; then
    echo "sable log (last lines):"; tail -5 "$WORK/sable.log" | sed 's/^/      /'
fi
if ! kill -0 "$SABLE_PID" 2>/dev/null; then
    echo "FAIL  sable died during the run"; FAILED=$((FAILED + 1))
    grep -m1 -A1 'panicked at' "$WORK/sable.log" || tail -5 "$WORK/sable.log"
fi
[ "$FAILED" = 0 ] && echo "smoke: all passed" || echo "smoke: $FAILED failed (SMOKE_KEEP=1 keeps $WORK)"
[ "$FAILED" = 0 ]
