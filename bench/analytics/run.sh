#!/usr/bin/env bash
# Analytics benchmark: Kafka -> ClickHouse through the writer against the
# floor (clickhouse-client inserting the same rows from TabSeparated files),
# both in this run against one private ClickHouse (Debian's 18.16 here), and
# the event-to-visible lag under a sustained produce rate.
#
#   bench/analytics/run.sh
#
# Environment (defaults in brackets):
#   BENCH_CALLS    calls for the throughput runs, 4 events each  [25000]
#   BENCH_RATE     events/s produced for the lag run             [4000]
#   BENCH_SECONDS  length of the lag run                         [10]
#   BENCH_ROUNDS   writer and floor runs, alternated; medians     [3]
#   BENCH_PROFILE  write the benchmark process's CPU profile here (go tool pprof)
#   BIN_DIR        where to build baton [a temporary directory]
#
# Kafka is the embedded broker (`baton broker`, kfake) in a process of its
# own, as `baton dev` runs it, so the benchmark's process holds the writer
# alone; every phase gets topics of its own on it. The throughput phase
# pre-loads all records before the writer starts and its clock runs.
# Broker, writer and ClickHouse still share the machine's CPUs (and, on a
# shared machine, everyone else's work): writer and floor alternate over
# BENCH_ROUNDS rounds, each on a fresh database, and the medians compare.
# Targets (issue 6): writer >= 50% of the floor's rows/s; lag p99 <= 2 s.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
bin=${BIN_DIR:-$work/bin}
broker_pid=
cleanup() {
	if [[ -n $broker_pid ]]; then
		kill "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building baton into $bin"
mkdir -p "$bin"
(cd "$root/cmd/baton" && go build -o "$bin/baton" .)

echo "== starting the embedded broker (baton broker, its own process)"
"$bin/baton" broker --listen 127.0.0.1:0 --data-dir "$work/broker" --partitions 6 \
	--log-level warn >"$work/broker.out" 2>"$work/broker.log" &
broker_pid=$!
addr=
for _ in $(seq 1 300); do
	addr=$(sed -n 's/^broker ready on \([^ ]*\) .*/\1/p' "$work/broker.out")
	[[ -n $addr ]] && break
	if ! kill -0 "$broker_pid" 2>/dev/null; then
		cat "$work/broker.log" >&2
		echo "baton broker exited" >&2
		exit 1
	fi
	sleep 0.1
done
[[ -n $addr ]] || {
	echo "baton broker: no ready line" >&2
	exit 1
}
echo "   broker on $addr (pid $broker_pid)"

profile=()
[[ -n ${BENCH_PROFILE:-} ]] && profile=(-cpuprofile "$BENCH_PROFILE" -o "$work/writer.test")
out=$work/bench.out
(cd "$root/services/analytics" &&
	BENCH_BROKERS=$addr go test -run '^$' -bench '^BenchmarkAnalytics$' -benchtime 1x -timeout 30m \
		"${profile[@]}" ./internal/writer/) | tee "$out"
[[ -n ${BENCH_PROFILE:-} ]] && cp "$work/writer.test" "$BENCH_PROFILE.test" &&
	echo "profile: go tool pprof $BENCH_PROFILE.test $BENCH_PROFILE"
line=$(grep '^BenchmarkAnalytics' "$out")
metric() { awk -v m="$1" '{for (i = 2; i <= NF; i++) if ($i == m) print $(i-1)}' <<<"$line"; }
writer=$(metric writer-rows/s)
steady=$(metric writer-steady-rows/s)
floor=$(metric floor-rows/s)
p50=$(metric lag-p50-ms)
p99=$(metric lag-p99-ms)
lmax=$(metric lag-max-ms)
n=$(metric lag-events)
echo
echo "analytics benchmark (calls=${BENCH_CALLS:-25000} -> $((4 * ${BENCH_CALLS:-25000})) rows, medians of ${BENCH_ROUNDS:-3} rounds, lag at ${BENCH_RATE:-4000} events/s for ${BENCH_SECONDS:-10}s; broker: baton broker, own process)"
printf '  writer, Kafka -> ClickHouse  %12.0f rows/s  (from Run: connect, group join, all batches)\n' "$writer"
printf '  writer, steady state         %12.0f rows/s  (after the first batch)\n' "$steady"
printf '  floor, clickhouse-client     %12.0f rows/s\n' "$floor"
awk -v w="$writer" -v s="$steady" -v f="$floor" 'BEGIN {
	r = w / f; q = s / f
	printf "  ratio writer/floor           %12.2f   (target >= 0.50: %s)\n", r, (r >= 0.5 ? "met" : "NOT met")
	printf "  ratio steady/floor           %12.2f   (target >= 0.50: %s)\n", q, (q >= 0.5 ? "met" : "NOT met")
}'
printf '  lag p50 / p99 / max          %6s / %s / %s ms over %s events\n' "$p50" "$p99" "$lmax" "$n"
awk -v p="$p99" 'BEGIN { printf "  lag p99 target <= 2000 ms: %s\n", (p <= 2000 ? "met" : "NOT met") }'
