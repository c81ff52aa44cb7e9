#!/usr/bin/env bash
# kcat (Debian's links librdkafka 2.0, the oldest librdkafka we promise) against Sable: produce
# with acks=all and with gzip, read everything back with keys, then a consumer group that
# commits on exit, so a second run of the same group reads nothing.
#
# Usage: tests/shell/kcat_check.sh HOST:PORT   (run by .ci/run)
set -euo pipefail

BOOT=${1:?usage: kcat_check.sh HOST:PORT}
TIMEOUT_S=60
PLAIN=100
KEYED=50
topic="kcat-$(date +%s%N)"
group="$topic-g"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

seq 1 "$PLAIN" | sed 's/^/plain-/' > "$work/plain"
seq 1 "$KEYED" | awk '{ print "k" ($1 % 5) ":keyed-" $1 }' > "$work/keyed"
# The topic is auto-created by the first produce (Kafka's auto.create.topics.enable).
timeout "$TIMEOUT_S" kcat -b "$BOOT" -P -t "$topic" -X topic.request.required.acks=all < "$work/plain"
timeout "$TIMEOUT_S" kcat -b "$BOOT" -P -t "$topic" -K: -z gzip < "$work/keyed"

# Everything, with keys, from the beginning to the end of the partition.
timeout "$TIMEOUT_S" kcat -b "$BOOT" -C -t "$topic" -o beginning -e -q -f '%k:%s\n' > "$work/read"
{ sed 's/^/:/' "$work/plain"; cat "$work/keyed"; } | sort > "$work/want"
sort "$work/read" > "$work/got"
diff -u "$work/want" "$work/got" > "$work/diff" || fail "records read back differ: $(head -20 "$work/diff")"

# A consumer group reads all of it and commits on close; the same group then reads nothing.
first=$(timeout "$TIMEOUT_S" kcat -b "$BOOT" -G "$group" -X auto.offset.reset=earliest -e -q "$topic" | wc -l)
[ "$first" -eq $((PLAIN + KEYED)) ] || fail "group read $first records, want $((PLAIN + KEYED))"
again=$(timeout "$TIMEOUT_S" kcat -b "$BOOT" -G "$group" -X auto.offset.reset=earliest -e -q "$topic" | wc -l)
[ "$again" -eq 0 ] || fail "the group read $again records again after committing"

echo "kcat ok ($(kcat -V | grep -o 'librdkafka [0-9.]*')): $((PLAIN + KEYED)) records produced (acks=all, gzip), read back with keys, group committed"
