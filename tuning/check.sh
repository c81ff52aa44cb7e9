#!/usr/bin/env bash
# Checks (and with --apply, sets) host settings for running Sable as a low-latency broker.
#
# Dry run by default: every setting is reported with its current value, the recommended one
# and why. Nothing is written unless --apply is given, and then only as root. A setting whose
# sysfs/procfs file does not exist here is reported as "not available here".
#
# Usage: tuning/check.sh [--apply] [--data-dir DIR] [--irq-cpus LIST]
#   --data-dir DIR   Sable's data directory; its disk's I/O scheduler is checked (default ./data,
#                    or the nearest existing parent).
#   --irq-cpus LIST  CPUs that should take device interrupts (e.g. "0" or "0-1"). Sable runs a
#                    shard on every core unless told otherwise; start it with fewer shards and
#                    give the spare cores here. Without it IRQ affinity is only reported.
#
# Exit status: 0 if every available setting is at its recommendation (or was set), 1 otherwise.

set -u

APPLY=0
DATA_DIR=./data
IRQ_CPUS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --apply) APPLY=1 ;;
        --data-dir) DATA_DIR=${2:?--data-dir needs a directory}; shift ;;
        --irq-cpus) IRQ_CPUS=${2:?--irq-cpus needs a CPU list}; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$APPLY" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "--apply needs root; run without it for a report" >&2
    exit 2
fi

PENDING=0   # settings away from their recommendation after this run

# report STATUS NAME CURRENT RECOMMENDED WHY
report() {
    printf '%-8s %-34s current: %-22s recommended: %s\n         why: %s\n' "[$1]" "$2" "$3" "$4" "$5"
}

# check_file NAME FILE RECOMMENDED WHY [CURRENT_FILTER]
# For sysfs/procfs files that read as plain values or as "a [b] c" choice lists.
check_file() {
    local name=$1 file=$2 want=$3 why=$4 current
    if [ ! -r "$file" ]; then
        report "n/a" "$name" "not available here" "$want" "$why"
        return
    fi
    current=$(cat "$file" 2>/dev/null)
    # Choice lists mark the active value with brackets: "always [madvise] never".
    if [[ $current == *"["*"]"* ]]; then
        current=${current#*[}; current=${current%%]*}
    fi
    if [ "$current" = "$want" ]; then
        report "ok" "$name" "$current" "$want" "$why"
    elif [ "$APPLY" = 1 ] && echo "$want" > "$file" 2>/dev/null; then
        report "set" "$name" "$current -> $want" "$want" "$why"
    else
        [ "$APPLY" = 1 ] && why="$why (writing $file failed)"
        report "change" "$name" "$current" "$want" "$why"
        PENDING=$((PENDING + 1))
    fi
}

# check_min NAME FILE MINIMUM UNIT WHY HOW PERSIST: FILE should hold at least MINIMUM. HOW sets
# it by hand, PERSIST says how to keep it across reboots (--apply changes only runtime state).
check_min() {
    local name=$1 file=$2 min=$3 unit=$4 why=$5 how=$6 persist=$7 current
    if [ ! -r "$file" ]; then
        report "n/a" "$name" "not available here" ">= $min$unit" "$why"
        return
    fi
    current=$(cat "$file")
    if [ "$current" -ge "$min" ] 2>/dev/null; then
        report "ok" "$name" "$current$unit" ">= $min$unit" "$why"
    elif [ "$APPLY" = 1 ] && echo "$min" > "$file" 2>/dev/null; then
        report "set" "$name" "$current -> $min$unit" ">= $min$unit" \
            "$why (runtime only: $persist)"
    else
        report "change" "$name" "$current$unit" ">= $min$unit" "$why ($how; $persist)"
        PENDING=$((PENDING + 1))
    fi
}

# check_sysctl_min KEY MINIMUM WHY: the value should be at least MINIMUM.
check_sysctl_min() {
    local key=$1 min=$2 why=$3
    check_min "$key" "/proc/sys/${key//.//}" "$min" "" "$why" "sysctl -w $key=$min" \
        "persist in /etc/sysctl.d/90-sable.conf"
}

check_governor() {
    local files=(/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
    local why="frequency ramp-up after idle adds tens of microseconds to the first request of a burst"
    if [ ! -r "${files[0]}" ]; then
        report "n/a" "cpu frequency governor" "not available here (no cpufreq, e.g. a VM)" \
            "performance" "$why"
        return
    fi
    local f
    for f in "${files[@]}"; do
        local cpu=${f#/sys/devices/system/cpu/}; cpu=${cpu%%/*}
        check_file "governor $cpu" "$f" performance "$why"
    done
}

# Guests of KVM/Firecracker with the haltpoll cpuidle driver: guest_halt_poll_ns is the longest
# an idle vCPU polls before halting. With allow_shrink=Y the kernel adapts the window between
# guest_halt_poll_grow_start and this ceiling; 0 turns polling off.
check_halt_poll() {
    local name="guest halt polling" min=200000 driver
    local file=/sys/module/haltpoll/parameters/guest_halt_poll_ns
    local why="without polling an idle vCPU halts at once and each wake-up is a VM exit plus an IPI through the host, tens of microseconds per request; the cost: idle vCPUs spin up to this long, using host CPU a dedicated broker guest can spare"
    local persist="persist with haltpoll.guest_halt_poll_ns=$min on the kernel command line"
    driver=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null)
    if [ "$driver" != haltpoll ]; then
        report "n/a" "$name" "not available here (cpuidle driver: ${driver:-none}, not haltpoll)" \
            ">= $min ns" "only guests using the haltpoll cpuidle driver poll before halting"
        return
    fi
    check_min "$name" "$file" "$min" " ns" "$why" "echo $min > $file" "$persist"
}

check_irq_affinity() {
    local why="interrupts on a shard's core steal it from requests; Sable pins one shard per core"
    if [ ! -d /proc/irq ]; then
        report "n/a" "irq affinity" "not available here" "off the shard cores" "$why"
        return
    fi
    local summary irq list count=0 moved=0
    summary=$(for irq in /proc/irq/[0-9]*; do
        [ -r "$irq/smp_affinity_list" ] && cat "$irq/smp_affinity_list" 2>/dev/null
    done | sort | uniq -c | awk '{printf "%s%s irqs on cpus %s", sep, $1, $2; sep="; "}')
    if [ -z "$IRQ_CPUS" ]; then
        report "info" "irq affinity" "${summary:-none readable}" "off the shard cores" \
            "$why; start sable with fewer shards and pass the spare cores as --irq-cpus"
        if pgrep -x irqbalance >/dev/null 2>&1; then
            report "info" "irqbalance" "running" "stopped, or banned from shard cores" \
                "irqbalance moves interrupts back (IRQBALANCE_BANNED_CPULIST)"
        fi
        return
    fi
    for irq in /proc/irq/[0-9]*; do
        list="$irq/smp_affinity_list"
        [ -r "$list" ] || continue
        count=$((count + 1))
        [ "$(cat "$list" 2>/dev/null)" = "$IRQ_CPUS" ] && continue
        # Some interrupts (per-CPU timers, managed queues) refuse a new affinity; that is fine.
        if [ "$APPLY" = 1 ] && echo "$IRQ_CPUS" > "$list" 2>/dev/null; then
            moved=$((moved + 1))
        fi
    done
    if [ "$APPLY" = 1 ]; then
        report "set" "irq affinity" "$moved of $count irqs moved to cpus $IRQ_CPUS" "$IRQ_CPUS" \
            "$why (not persistent; stop irqbalance or it moves them back)"
    else
        report "change" "irq affinity" "$summary" "all on cpus $IRQ_CPUS" "$why"
        PENDING=$((PENDING + 1))
    fi
}

check_memlock() {
    local current want_kib=65536
    local why="glommio refuses to start below 512 KiB and, when its io_uring buffers (io_memory x 3 rings x shards) do not fit, runs on slower unregistered buffers"
    current=$(ulimit -l)
    # CAP_IPC_LOCK (bit 14) exempts a process from the limit: nothing is charged against it.
    local cap_eff
    cap_eff=$(awk '/^CapEff/ {print $2}' /proc/self/status 2>/dev/null)
    if [ -n "$cap_eff" ] && (( (16#$cap_eff >> 14) & 1 )); then
        report "ok" "locked memory (ulimit -l)" "$current KiB, CAP_IPC_LOCK held" \
            ">= $want_kib KiB or unlimited" "$why; a sable run without CAP_IPC_LOCK still needs the limit"
        return
    fi
    if [ "$current" = unlimited ] || [ "$current" -ge "$want_kib" ] 2>/dev/null; then
        report "ok" "locked memory (ulimit -l)" "$current KiB" ">= $want_kib KiB or unlimited" "$why"
    else
        # A script cannot raise its caller's limit: say where it is set instead.
        report "change" "locked memory (ulimit -l)" "$current KiB" "unlimited" \
            "$why; set LimitMEMLOCK=infinity in sable's systemd unit, 'memlock' in /etc/security/limits.conf, or docker --ulimit memlock=-1"
        PENDING=$((PENDING + 1))
    fi
}

# BBR paces every flow. With the fq qdisc, fq does the pacing; without it (and always over
# loopback, whose qdisc is noqueue) TCP paces each burst with a timer of its own.
check_congestion_control() {
    local name="tcp congestion control" key=net.ipv4.tcp_congestion_control want=cubic
    local file=/proc/sys/net/ipv4/tcp_congestion_control current qdisc
    local why="BBR without the fq qdisc paces each burst with a kernel timer: on a 2-vCPU guest loopback TCP ran at 4.5-5.2 GB/s against 6.3-7.0 with cubic, and Sable's Fetch at 3.1 against 5.3-6.0 GB/s for 1.7x the broker CPU per byte; to leave the host alone, start sable with --tcp-congestion-control cubic instead"
    if [ ! -r "$file" ]; then
        report "n/a" "$name" "not available here" "not bbr without fq" "$why"
        return
    fi
    current=$(cat "$file")
    qdisc=$(cat /proc/sys/net/core/default_qdisc 2>/dev/null)
    if [ "$current" != bbr ]; then
        report "ok" "$name" "$current" "not bbr without fq" "$why"
        return
    fi
    if [ "$qdisc" = fq ]; then
        report "ok" "$name" "bbr, default qdisc fq" "not bbr without fq" \
            "fq paces network interfaces; loopback clients still get TCP's own pacing timers"
        return
    fi
    if ! grep -qw "$want" /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null; then
        [ "$APPLY" = 1 ] && modprobe "tcp_$want" 2>/dev/null
    fi
    if [ "$APPLY" = 1 ] && sysctl -q -w "$key=$want" 2>/dev/null; then
        report "set" "$name" "bbr -> $want" "$want (or fq as the qdisc)" \
            "$why (runtime only: persist in /etc/sysctl.d/90-sable.conf)"
    else
        report "change" "$name" "bbr, default qdisc ${qdisc:-unknown}" "$want (or fq as the qdisc)" \
            "$why (sysctl -w $key=$want; persist in /etc/sysctl.d/90-sable.conf)"
        PENDING=$((PENDING + 1))
    fi
}

check_thp() {
    local why_enabled="'always' lets khugepaged compact memory behind the broker's back: latency spikes"
    local why_defrag="synchronous compaction on a page fault stalls the faulting shard"
    check_file "transparent hugepages" /sys/kernel/mm/transparent_hugepage/enabled madvise \
        "$why_enabled"
    check_file "transparent hugepage defrag" /sys/kernel/mm/transparent_hugepage/defrag madvise \
        "$why_defrag"
}

# The block device holding DIR, as the sysfs directory of the whole disk.
disk_sysfs_of() {
    local dir=$1 dev majmin
    while [ ! -e "$dir" ] && [ "$dir" != / ]; do dir=$(dirname "$dir"); done
    dev=$(stat -c '%d' "$dir" 2>/dev/null) || return 1
    majmin="$((dev >> 8 & 0xfff)):$(((dev & 0xff) | (dev >> 12 & 0xfff00)))"
    local sys=/sys/dev/block/$majmin
    [ -e "$sys" ] || return 1
    sys=$(readlink -f "$sys")
    # A partition's queue settings live on its parent disk.
    [ -e "$sys/partition" ] && sys=$(dirname "$sys")
    echo "$sys"
}

check_io_scheduler() {
    local sys file want=none
    local why="a flash or virtual disk reorders nothing usefully; a scheduler only adds latency to fdatasync"
    if ! sys=$(disk_sysfs_of "$DATA_DIR"); then
        report "n/a" "io scheduler of $DATA_DIR" "not available here (no block device)" "$want" "$why"
        return
    fi
    file=$sys/queue/scheduler
    if [ -r "$sys/queue/rotational" ] && [ "$(cat "$sys/queue/rotational")" = 1 ]; then
        want=mq-deadline
        why="the kernel says this disk rotates, and a spinning disk needs reads kept from starving behind writes (virtual disks often claim to rotate: if this one is flash underneath, prefer none)"
    fi
    check_file "io scheduler ($(basename "$sys"))" "$file" "$want" "$why"
}

echo "Sable host check ($([ "$APPLY" = 1 ] && echo apply || echo dry run)) on $(uname -n), $(nproc) cpus, kernel $(uname -r)"
check_governor
check_halt_poll
check_irq_affinity
check_memlock
check_sysctl_min net.core.somaxconn 1024 \
    "glommio listens with a backlog of 1024; the kernel silently caps it at somaxconn"
check_sysctl_min net.core.rmem_max 16777216 \
    "lets a socket's receive buffer grow to 16 MiB so large produce requests are not throttled"
check_sysctl_min net.core.wmem_max 16777216 \
    "lets a socket's send buffer grow to 16 MiB so one fetch response fits without waiting"
check_congestion_control
check_thp
check_io_scheduler

if [ "$PENDING" -gt 0 ]; then
    echo "$PENDING setting(s) differ from the recommendation$([ "$APPLY" = 0 ] && echo "; rerun with --apply as root to set what can be set")."
    exit 1
fi
echo "All available settings are at their recommendation."
