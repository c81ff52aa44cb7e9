#!/usr/bin/env bash
# Runs the README's results suite against a fresh sable and prints the results table in
# Markdown. Each workload runs DURATION seconds (default 10). The broker's CPU time is read from
# /proc; the client runs on the same machine and competes with it for the cores.
#
# Usage: bench/measure.sh [DURATION]
# Env:   SABLE_BIN, SABLE_BENCH_BIN as for smoke.sh; SABLE_ARGS extra broker flags;
#        MEASURE_KEEP=1 keeps the JSON outputs.

set -u
cd "$(dirname "$0")/.."
DURATION=${1:-10}
SABLE_BIN=${SABLE_BIN:-target/release/sable}
BENCH_BIN=${SABLE_BENCH_BIN:-target/release/sable-bench}
[ -x "$SABLE_BIN" ] && [ -x "$BENCH_BIN" ] || cargo build --release --bin sable --bin sable-bench || exit 1

WORK=$(mktemp -d -t sable-measure.XXXXXX)
SABLE_PID=""
cleanup() {
    [ -n "$SABLE_PID" ] && kill "$SABLE_PID" 2>/dev/null && wait "$SABLE_PID" 2>/dev/null
    if [ "${MEASURE_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
PORT=$(python3 -c "
import random, socket
for _ in range(200):
    base = random.randint(10000, max(10001, $low - 20)); socks = []
    try:
        for p in range(base, base + 17):
            s = socket.socket(); s.bind(('127.0.0.1', p)); socks.append(s)
        print(base); break
    except OSError: pass
    finally:
        for s in socks: s.close()")
BOOT=127.0.0.1:$PORT
# shellcheck disable=SC2086
"$SABLE_BIN" --data-dir "$WORK/data" --listen "$BOOT" ${SABLE_ARGS:-} > "$WORK/sable.log" 2>&1 &
SABLE_PID=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
done

# bench NAME ARGS...: one run, JSON kept as $WORK/NAME.json; the exit status is reported.
bench() {
    local name=$1; shift
    echo "running $name: sable-bench $*" >&2
    "$BENCH_BIN" --bootstrap "$BOOT" --json --broker-pid "$SABLE_PID" "$@" \
        > "$WORK/$name.json" 2> "$WORK/$name.err" || echo "  $name exited $?" >&2
}

D=$DURATION
bench limits limits --dir "$WORK" --test-seconds 2
bench p-acks1 produce --topic t100 --duration "$D" --acks 1
bench p-acksall produce --topic t100 --duration "$D" --acks all
bench p-1k produce --topic t1k --duration "$D" --acks 1 --record-size 1000 --batch-records 64
bench c-100 consume --topic t100
bench c-1k consume --topic t1k
bench p-rate produce --topic trate --duration "$D" --acks 1 --rate 100000 --linger-ms 1
bench e2e-1 e2e --topic e1 --duration "$D" --rate 10000 --acks 1
bench e2e-all e2e --topic eall --duration "$D" --rate 2000 --acks all

python3 - "$WORK" "$D" <<'EOF'
import json, sys, os
w, d = sys.argv[1], sys.argv[2]
def load(n):
    try: return json.load(open(os.path.join(w, n + ".json")))
    except Exception: return None
lim = load("limits") or {}
tcp = lim.get("loopback_tcp_mb_per_s") or 0
rows = [
    ("p-acks1", "produce 100 B x 100/batch, acks=1, max rate", "produce --acks 1"),
    ("p-acksall", "produce 100 B x 100/batch, acks=all (fdatasync), max rate", "produce --acks all"),
    ("p-1k", "produce 1000 B x 64/batch, acks=1, max rate", "produce --acks 1 --record-size 1000 --batch-records 64"),
    ("c-100", "consume the 100 B topic from earliest", "consume --topic t100"),
    ("c-1k", "consume the 1000 B topic from earliest", "consume --topic t1k"),
    ("p-rate", "produce 100 000 msg/s, acks=1, linger 1 ms", "produce --rate 100000 --linger-ms 1"),
    ("e2e-1", "e2e 10 000 msg/s, 1 record/batch, acks=1", "e2e --rate 10000 --acks 1"),
    ("e2e-all", "e2e 2 000 msg/s, 1 record/batch, acks=all", "e2e --rate 2000 --acks all"),
]
disk = lim.get("seq_write_fdatasync_mb_per_s") or 0
print("| workload | msgs/s | MB/s | % of limit | p50 / p99 / p99.9 / max latency (ms) | broker CPU-s/GB | client CPU-s | errors |")
print("|---|---|---|---|---|---|---|---|")
for name, label, _ in rows:
    r = load(name)
    if r is None:
        print(f"| {label} | failed | | | | | | |"); continue
    l = r["latency_us"]; ms = lambda v: f"{v/1000:.2f}"
    cpu = r.get("cpu_s_per_gb"); cpu = f"{cpu:.1f}" if cpu is not None else "-"
    # Durable produce is bounded by the disk (write + fdatasync), the rest by loopback TCP.
    limit, what = (disk, "disk") if r.get("acks") == "all" else (tcp, "TCP")
    pct = f"{100*r['mb_per_s']/limit:.1f} % {what}" if limit and not r.get("target_rate") else "-"
    print(f"| {label} | {r['msgs_per_s']:,.0f} | {r['mb_per_s']:,.1f} | {pct} | "
          f"{ms(l['p50'])} / {ms(l['p99'])} / {ms(l['p99_9'])} / {ms(l['max'])} | {cpu} | "
          f"{r['client_cpu_s']:.1f} | {r['errors']} |")
rtt = lim.get("loopback_rtt_us") or {}; sync = lim.get("fdatasync_4k_append_us") or {}
print()
print(f"Machine limits (same run): loopback TCP {tcp:,.0f} MB/s, 1-byte RTT p50 {rtt.get('p50')} us / "
      f"p99 {rtt.get('p99')} us, memcpy {lim.get('memcpy_mb_per_s') or 0:,.0f} MB/s, sequential write + "
      f"fdatasync {lim.get('seq_write_fdatasync_mb_per_s') or 0:,.0f} MB/s, fdatasync after 4 KiB append "
      f"p50 {sync.get('p50')} us / p99 {sync.get('p99')} us.")
EOF
