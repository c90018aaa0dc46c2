#!/usr/bin/env bash
# Replay from ClickHouse (issue 21, item 1): one call out of 10 million
# stored events, by the events table's primary key (call_id, event_id),
# against the same rows in a table ordered by time (no key for call ids),
# measured in the same run on Debian's clickhouse-server 18.16.
#
#   1. synthgen records CALLS real calls (default 2000) through router
#      replay into events, calls and handoffs, as analytics writes them;
#   2. filler events up to TOTAL (default 10,000,000) are inserted in ten
#      INSERT ... SELECT FROM numbers() blocks, one event of each of 1M
#      calls per block, so a call's events are spread over parts as when
#      they arrive over minutes;
#   3. events_by_time gets the same rows, ORDER BY (time_ms, event_id);
#   4. the lookup query of `baton replay --source clickhouse` runs RUNS
#      times (default 5) on each table (clickhouse-client --time, the
#      server's elapsed time); the median of each and their ratio are
#      printed;
#   5. `baton replay --call ID --source clickhouse` runs end to end
#      (process start, connect, query, decode, print), timed.
#
# Usage: bench/replay/run.sh          Env: TOTAL, CALLS, RUNS
set -euo pipefail
source "$(dirname "$0")/lib.sh"
total=${TOTAL:-10000000}
calls=${CALLS:-2000}
runs=${RUNS:-5}

start_clickhouse
build
"$work/bin/synthgen" -clickhouse "$ch_addr" -router "$work/bin/router" -rules "$root/bench/replay/old.yaml" -calls "$calls" -days 30 >/dev/null
real=$(chq -q "SELECT count() FROM events")
filler=$((total - real))
echo "== $real events of $calls recorded calls; inserting $filler filler events"
blocks=10
per=$(((filler + blocks - 1) / blocks))
for ((b = 0; b < blocks; b++)); do
	n=$((filler - b * per < per ? filler - b * per : per))
	((n > 0)) || break
	chq -q "INSERT INTO events (event_id, type, call_id, source, time, time_ms, topic, partition, offset, payload_proto, ce_time)
		SELECT hex(cityHash64(number, $b)), 'baton.v1.TransferOutcome', concat('filler-', toString(number % 1000000), '@sbc'),
		       'baton/bench', toDateTime(1764547200 + intDiv(number, 4) + $b * 250000), (1764547200 + intDiv(number, 4) + $b * 250000) * 1000,
		       'baton.transfers', toInt32(number % 3), toInt64(number + $b * $per),
		       concat(hex(cityHash64(number)), hex(cityHash64(number, 1)), hex(cityHash64(number, 2)), hex(cityHash64(number, 3)), hex(cityHash64(number, 4)), hex(cityHash64(number, 5))), ''
		FROM numbers($n)"
done
chq -q "CREATE TABLE events_by_time AS events ENGINE = ReplacingMergeTree() ORDER BY (time_ms, event_id)"
chq -q "INSERT INTO events_by_time SELECT * FROM events"
stored=$(chq -q "SELECT count() FROM events")
parts=$(chq -q "SELECT count() FROM system.parts WHERE database = 'baton' AND table = 'events' AND active")
call=$(chq -q "SELECT call_id FROM calls ORDER BY call_id LIMIT 1 OFFSET $((calls / 2))")
echo "== $stored events stored ($parts active parts); looking up call $call"

cols="topic, partition, offset, event_id, type, source, call_id, time_ms, ce_time, traceparent, payload_proto"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_query() { # table → median seconds over $runs runs
	for ((i = 0; i < runs; i++)); do
		chq --time --format Null -q "SELECT $cols FROM $1 WHERE call_id = '$call' ORDER BY topic, partition, offset, event_id" 2>&1 >/dev/null
	done | median
}
rows=$(chq -q "SELECT count() FROM events WHERE call_id = '$call'")
[[ $rows == $(chq -q "SELECT count() FROM events_by_time WHERE call_id = '$call'") ]] || { echo "tables differ" >&2; exit 1; }
key=$(time_query events)
scan=$(time_query events_by_time)
printf '%-52s %10s s  (%s rows)\n' "events, ORDER BY (call_id, event_id): by key" "$key" "$rows"
printf '%-52s %10s s\n' "events_by_time, ORDER BY (time_ms, event_id): scan" "$scan"
awk -v k="$key" -v s="$scan" 'BEGIN { printf "ratio scan / key: %.1fx\n", (k > 0 ? s / k : 0) }'

echo
echo "== $work/bin/baton replay --call $call --source clickhouse --clickhouse $ch_addr"
start=$(date +%s.%N)
"$work/bin/baton" replay --call "$call" --source clickhouse --clickhouse "$ch_addr" >"$work/timeline.txt" 2>"$work/stderr.txt"
end=$(date +%s.%N)
cat "$work/stderr.txt"
head -3 "$work/timeline.txt"
awk -v a="$start" -v b="$end" 'BEGIN { printf "baton replay end to end: %.3f s (target: under 1 s)\n", b - a }'
