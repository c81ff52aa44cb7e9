#!/usr/bin/env bash
# Runs the README's results suite against a fresh sable and prints the results table in
# Markdown, then the issue's targets as the ratios they are stated in (met / missed). Each
# workload runs DURATION seconds (default 10). The broker's CPU time is read from
# /proc; the client runs on the same machine and competes with it for the cores.
#
# Usage: bench/measure.sh [DURATION]
# Env:   SABLE_BIN, SABLE_BENCH_BIN as for smoke.sh; SABLE_ARGS broker flags, replacing the
#        suite's retention flags (RETENTION_ARGS below);
#        SABLE_TCP_CONGESTION_CONTROL (e.g. cubic) for the broker's connections, which
#        sable-bench's connections and loopback probes then use too (default: the system's);
#        MEASURE_KEEP=1 keeps the JSON outputs and the broker's log (not its data: tens of GB).

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
    if [ "${MEASURE_KEEP:-0}" = 1 ]; then
        rm -rf "$WORK/data"
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
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
# A fast run writes over 60 GB in all; this machine's disk has had as little as 53 GB free, and a
# full disk fails the workloads. Segments past 1 GiB per partition are deleted, which bounds the
# data to about 40 GB and leaves consume of the 1 KiB topic up to 10 GB to read.
RETENTION_ARGS="--segment-bytes 268435456 --retention-bytes 1073741824 --log-retention-check-interval-ms 2000"
free_gb=$(df -P -BG "$WORK" | awk 'NR == 2 {sub("G", "", $4); print $4}')
if [ "${free_gb:-0}" -lt 45 ]; then
    echo "warning: ${free_gb:-?} GB free under $WORK; the suite may write about 40 GB" >&2
fi
# shellcheck disable=SC2086
"$SABLE_BIN" --data-dir "$WORK/data" --listen "$BOOT" ${SABLE_ARGS-$RETENTION_ARGS} > "$WORK/sable.log" 2>&1 &
SABLE_PID=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
done

# The client side, and so the loopback TCP probe, uses the broker's congestion control.
CC_ARGS=()
[ -n "${SABLE_TCP_CONGESTION_CONTROL:-}" ] && CC_ARGS=(--tcp-congestion-control "$SABLE_TCP_CONGESTION_CONTROL")

# bench NAME ARGS...: one run, JSON kept as $WORK/NAME.json; the exit status is reported.
bench() {
    local name=$1; shift
    # Earlier workloads leave gigabytes of dirty pages; their writeback would compete with this
    # one's writes and fdatasyncs. Start each as the limits probes started: with none under way.
    sync
    echo "running $name: sable-bench $*" >&2
    "$BENCH_BIN" --bootstrap "$BOOT" --json --broker-pid "$SABLE_PID" ${CC_ARGS[@]+"${CC_ARGS[@]}"} "$@" \
        > "$WORK/$name.json" 2> "$WORK/$name.err" || echo "  $name exited $?" >&2
}

# rss NAME: the broker's resident memory now, in KiB, kept as $WORK/NAME.rss.
rss() {
    awk '/^VmRSS:/ {print $2}' "/proc/$SABLE_PID/status" > "$WORK/$1.rss"
}

D=$DURATION
bench limits limits --dir "$WORK" --test-seconds 2
bench p-acks1 produce --topic t100 --duration "$D" --acks 1
bench p-acksall produce --topic t100 --duration "$D" --acks all
bench p-1k produce --topic t1k --partitions 8 --duration "$D" --acks 1 --record-size 1000 --batch-records 64
# The disk probed again just before and just after each durable workload, whose ratios use the mean
# of the two: after the gigabytes written above, writing new page-cache pages (which the disk probe
# does too) can run several times slower than at the start, and it changes within seconds.
bench limits-all1k-before limits --disk-only --dir "$WORK" --test-seconds 2
# Durable throughput is bytes in flight / sync latency: give it 4 connections per shard.
bench p-all1k produce --topic tall1k --partitions 8 --connections 4 --duration "$D" --acks all --record-size 1000 --batch-records 64
bench limits-all1k-after limits --disk-only --dir "$WORK" --test-seconds 2
bench c-100 consume --topic t100
bench c-1k consume --topic t1k
bench p-rate produce --topic trate --duration "$D" --acks 1 --rate 100000 --linger-ms 1
# Its fdatasync probes run as long as it does: the disk's syncs stall now and then (5-23 ms, a
# few times in 15 s, after gigabytes of writes), and a p99 over 50,000 records meets stalls that
# a 5,000-sync probe mostly misses.
bench limits-all5k-before limits --disk-only --dir "$WORK" --test-seconds 2 --sync-seconds "$D"
bench p-all5k produce --topic tall5k --duration "$D" --acks all --rate 5000 --batch-records 1
bench limits-all5k-after limits --disk-only --dir "$WORK" --test-seconds 2 --sync-seconds "$D"
bench e2e-1k e2e --topic e1k --duration "$D" --rate 1000 --acks 1
bench e2e-1 e2e --topic e1 --duration "$D" --rate 10000 --acks 1
bench e2e-all e2e --topic eall --duration "$D" --rate 2000 --acks all
# The two comparisons below run in A B B A order and compare the sums. A workload's cost per GB
# moves with how much new page-cache memory the broker has written since the last deletions (this
# guest's free pages go back to the host, and touching them again costs several times a copy), so
# whichever of a pair runs second was slower, 8 connections or 1,000 alike (bench/README).
# Partitions: the same produce over 8 and over 10,000 partitions; RSS of the idle ones.
bench p-8p produce --topic tp8 --partitions 8 --duration "$D" --acks 1
rss before-10k
bench create-10k produce --topic tp10k --partitions 10000 --count 1 --batch-records 1
sleep 1
rss after-10k
bench p-10kp produce --topic tp10k --duration "$D" --acks 1
bench p-10kp-2 produce --topic tp10k --duration "$D" --acks 1
bench p-8p-2 produce --topic tp8 --duration "$D" --acks 1
# Connections: 8 against 1,000 (per leader: 4 and 500), same topic and settings.
bench p-8c produce --topic tconn --partitions 8 --connections 4 --duration "$D" --acks 1
bench p-1000c produce --topic tconn --connections 500 --duration "$D" --acks 1
bench p-1000c-2 produce --topic tconn --connections 500 --duration "$D" --acks 1
bench p-8c-2 produce --topic tconn --connections 4 --duration "$D" --acks 1

python3 - "$WORK" "$D" <<'EOF'
import json, sys, os
w, d = sys.argv[1], sys.argv[2]
def load(n):
    try: return json.load(open(os.path.join(w, n + ".json")))
    except Exception: return None
def rss_kib(n):
    try: return int(open(os.path.join(w, n + ".rss")).read())
    except Exception: return None
lim = load("limits") or {}
tcp = lim.get("loopback_tcp_mb_per_s") or 0
disk = lim.get("seq_write_fdatasync_mb_per_s") or 0
cache = lim.get("page_cache_write_mb_per_s") or 0
rtt = lim.get("loopback_rtt_us") or {}
sync = lim.get("fdatasync_4k_append_us") or {}
# The disk probed again around the durable workloads (see the comment above them): the mean of the
# probes just before and just after each.
def around(name, *path):
    vals = []
    for when in ("before", "after"):
        v = load(f"{name}-{when}")
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v: vals.append(v)
    return sum(vals) / len(vals) if len(vals) == 2 else 0
disk_near = around("limits-all1k", "seq_write_fdatasync_mb_per_s")
sync_near = {q: around("limits-all5k", "fdatasync_4k_append_us", q) for q in ("p50", "p99")}
rows = [
    ("p-acks1", "produce 100 B x 100/batch, acks=1, max rate"),
    ("p-acksall", "produce 100 B x 100/batch, acks=all (fdatasync), max rate"),
    ("p-1k", "produce 1000 B x 64/batch, 8 partitions, acks=1, max rate"),
    ("p-all1k", "produce 1000 B x 64/batch, 8 partitions, 8 connections, acks=all, max rate"),
    ("c-100", "consume the 100 B topic from earliest"),
    ("c-1k", "consume the 1000 B topic from earliest"),
    ("p-rate", "produce 100 000 msg/s, acks=1, linger 1 ms"),
    ("p-all5k", "produce 5 000 msg/s, 1 record/batch, acks=all"),
    ("e2e-1k", "e2e 1 000 msg/s, 1 record/batch, acks=1"),
    ("e2e-1", "e2e 10 000 msg/s, 1 record/batch, acks=1"),
    ("e2e-all", "e2e 2 000 msg/s, 1 record/batch, acks=all"),
    ("p-8p", "produce 100 B x 100/batch over 8 partitions"),
    ("p-10kp", "the same over 10,000 partitions"),
    ("p-10kp-2", "the same over 10,000 partitions, again"),
    ("p-8p-2", "the same over 8 partitions, again (10,000 idle ones exist now)"),
    ("p-8c", "produce 100 B x 100/batch, 8 partitions, 8 connections"),
    ("p-1000c", "the same over 1,000 connections"),
    ("p-1000c-2", "the same over 1,000 connections, again"),
    ("p-8c-2", "the same over 8 connections, again"),
]
# Consume is bounded by loopback TCP; produce by TCP and by filling page-cache pages, and
# durable produce also by the disk's write + fdatasync.
def pct(r):
    if r.get("target_rate"): return "-"
    parts = []
    if tcp: parts.append(f"{100*r['mb_per_s']/tcp:.1f} % TCP")
    if r["workload"] == "produce":
        if r.get("acks") == "all" and disk: parts.append(f"{100*r['mb_per_s']/disk:.1f} % disk")
        if cache: parts.append(f"{100*r['mb_per_s']/cache:.0f} % page cache")
    return ", ".join(parts) or "-"
print("| workload | msgs/s | MB/s | % of limit | p50 / p99 / p99.9 / max latency (ms) | broker CPU-s/GB | client CPU-s | errors |")
print("|---|---|---|---|---|---|---|---|")
for name, label in rows:
    r = load(name)
    if r is None:
        print(f"| {label} | failed | | | | | | |"); continue
    l = r["latency_us"]; ms = lambda v: f"{v/1000:.2f}"
    cpu = r.get("cpu_s_per_gb"); cpu = f"{cpu:.1f}" if cpu is not None else "-"
    print(f"| {label} | {r['msgs_per_s']:,.0f} | {r['mb_per_s']:,.1f} | {pct(r)} | "
          f"{ms(l['p50'])} / {ms(l['p99'])} / {ms(l['p99_9'])} / {ms(l['max'])} | {cpu} | "
          f"{r['client_cpu_s']:.1f} | {r['errors']} |")
print()
print(f"Machine limits (same run): loopback TCP {tcp:,.0f} MB/s "
      f"(congestion control {lim.get('tcp_congestion_control')}, as the broker's), 1-byte RTT p50 {rtt.get('p50')} us / "
      f"p99 {rtt.get('p99')} us, memcpy {lim.get('memcpy_mb_per_s') or 0:,.0f} MB/s, "
      f"page-cache write of new pages {cache:,.0f} MB/s at {lim.get('page_cache_write_cpu_s_per_gb') or 0:.2f} CPU-s/GB "
      f"(MemFree {lim.get('mem_free_mb') or 0:,.0f} MB before), sequential write + fdatasync {disk:,.0f} MB/s, "
      f"fdatasync after 4 KiB append p50 {sync.get('p50')} us / p99 {sync.get('p99')} us. "
      f"Probed again around the durable workloads (mean of just before and just after): write + "
      f"fdatasync {disk_near:,.0f} MB/s around acks=all 1 KiB, fdatasync p50 {sync_near['p50']:.0f} us / "
      f"p99 {sync_near['p99']:.0f} us around acks=all 5k msg/s (each probe as long as the workload).")

# The issue's targets, each as the ratio it is stated in.
def get(n, *path):
    v = load(n)
    for k in path:
        if v is None: return None
        v = v.get(k)
    return v
def ratio(a, b): return a / b if a is not None and b else None
def scaled(v, by): return v / by if v is not None else None
targets = []
def target(what, value, fmt, goal, ok=None):
    shown = fmt.format(value) if value is not None else "n/a"
    verdict = "" if ok is None or value is None else ("met" if ok(value) else "missed")
    targets.append((what, shown, goal, verdict))
target("produce 1 KiB, acks=1, 8 partitions: share of loopback TCP",
       ratio(get("p-1k", "mb_per_s"), tcp), "{:.0%}", ">= 40 %", lambda v: v >= 0.40)
target("the same: share of the page-cache write probe", ratio(get("p-1k", "mb_per_s"), cache), "{:.0%}", "context")
target("the same: broker CPU-s per GB", get("p-1k", "cpu_s_per_gb"), "{:.2f}", "<= 0.5", lambda v: v <= 0.5)
target("page-cache write probe alone: CPU-s per GB", lim.get("page_cache_write_cpu_s_per_gb"), "{:.2f}", "context")
target("produce acks=all 1 KiB: share of write + fdatasync probed around it",
       ratio(get("p-all1k", "mb_per_s"), disk_near), "{:.0%}", ">= 70 %", lambda v: v >= 0.70)
durable = [v for v in (get("p-acksall", "mb_per_s"), get("p-all1k", "mb_per_s")) if v]
target("produce acks=all, best of the two: share of the first probe's write + fdatasync",
       ratio(max(durable), disk) if durable else None, "{:.0%}", "context")
target("produce acks=all 5k msg/s: p50 / fdatasync p50 probed around it",
       ratio(get("p-all5k", "latency_us", "p50"), sync_near.get("p50")), "{:.1f}x", "<= 2x", lambda v: v <= 2)
target("produce acks=all 5k msg/s: p99 / fdatasync p99 probed around it",
       ratio(get("p-all5k", "latency_us", "p99"), sync_near.get("p99")), "{:.1f}x", "<= 3x", lambda v: v <= 3)
target("the same: p50 / the first probe's fdatasync p50",
       ratio(get("p-all5k", "latency_us", "p50"), sync.get("p50")), "{:.1f}x", "context")
target("the same: p99 / the first probe's fdatasync p99 (5,000 syncs at most)",
       ratio(get("p-all5k", "latency_us", "p99"), sync.get("p99")), "{:.1f}x", "context")
target("consume 1 KiB records: share of loopback TCP", ratio(get("c-1k", "mb_per_s"), tcp), "{:.0%}", ">= 60 %", lambda v: v >= 0.60)
target("consume 1 KiB records: broker CPU-s per GB", get("c-1k", "cpu_s_per_gb"), "{:.2f}", "<= 0.2", lambda v: v <= 0.2)
target("loopback TCP probe alone: sender CPU-s per GB", lim.get("loopback_tcp_send_cpu_s_per_gb"), "{:.2f}", "context")
target("e2e acks=1 1k msg/s: p50 / loopback RTT p50",
       ratio(get("e2e-1k", "latency_us", "p50"), rtt.get("p50")), "{:.1f}x", "<= 10x", lambda v: v <= 10)
target("e2e acks=1 1k msg/s: p99.9 (ms)", scaled(get("e2e-1k", "latency_us", "p99_9"), 1000), "{:.2f}", "<= 5 ms", lambda v: v <= 5)
target("100 B records produced per second (M)", scaled(get("p-acks1", "msgs_per_s"), 1e6), "{:.2f}", ">= 2 M", lambda v: v >= 2)
before, after = rss_kib("before-10k"), rss_kib("after-10k")
target("broker RSS per idle partition, 10,000 created (KiB)",
       (after - before) / 10000 if before and after else None, "{:.1f}", "<= 50 KiB", lambda v: v <= 50)
# A B B A: each side's total over its two runs.
def per(names, num, den):
    runs = [load(n) for n in names]
    if any(r is None or r.get(num) is None for r in runs): return None
    d = sum(r[den] for r in runs)
    return sum(r[num] for r in runs) / d if d else None
def cpu_per_gb(*names): return scaled(per(names, "broker_cpu_s", "bytes"), 1e-9)
def msgs_per_s(*names): return per(names, "records", "elapsed_s")
target("produce CPU-s/GB, 10,000 partitions / 8 partitions (both runs of each)",
       ratio(cpu_per_gb("p-10kp", "p-10kp-2"), cpu_per_gb("p-8p", "p-8p-2")), "{:.2f}x", "<= 1.3x", lambda v: v <= 1.3)
target("the same, first pair only (10,000 ran second)",
       ratio(get("p-10kp", "cpu_s_per_gb"), get("p-8p", "cpu_s_per_gb")), "{:.2f}x", "context")
target("produce msgs/s, 1,000 connections / 8 connections (both runs of each)",
       ratio(msgs_per_s("p-1000c", "p-1000c-2"), msgs_per_s("p-8c", "p-8c-2")), "{:.0%}", ">= 80 %", lambda v: v >= 0.8)
target("the same, first pair only (1,000 ran second)",
       ratio(get("p-1000c", "msgs_per_s"), get("p-8c", "msgs_per_s")), "{:.0%}", "context")
print()
print("| target | measured | goal | |")
print("|---|---|---|---|")
for what, shown, goal, verdict in targets:
    print(f"| {what} | {shown} | {goal} | {verdict} |")
EOF
