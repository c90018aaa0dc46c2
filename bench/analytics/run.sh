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
#
# Needs clickhouse-server and clickhouse-client. Kafka is kfake over TCP in
# the benchmark's process, so broker, writer and ClickHouse share the CPUs.
# Targets (issue 6): writer >= 50% of the floor's rows/s; lag p99 <= 2 s.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
(cd "$root/services/analytics" &&
	go test -run '^$' -bench '^BenchmarkAnalytics$' -benchtime 1x -timeout 30m ./internal/writer/) | tee "$out"
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
echo "analytics benchmark (calls=${BENCH_CALLS:-25000}, lag at ${BENCH_RATE:-4000} events/s for ${BENCH_SECONDS:-10}s)"
printf '  writer, Kafka -> ClickHouse  %12.0f rows/s  (from process start: connect, group join)\n' "$writer"
printf '  writer, steady state         %12.0f rows/s  (after the first batch)\n' "$steady"
printf '  floor, clickhouse-client     %12.0f rows/s\n' "$floor"
awk -v w="$writer" -v s="$steady" -v f="$floor" 'BEGIN {
	r = w / f; q = s / f
	printf "  ratio writer/floor           %12.2f   (target >= 0.50: %s)\n", r, (r >= 0.5 ? "met" : "NOT met")
	printf "  ratio steady/floor           %12.2f   (target >= 0.50: %s)\n", q, (q >= 0.5 ? "met" : "NOT met")
}'
printf '  lag p50 / p99 / max          %6s / %s / %s ms over %s events\n' "$p50" "$p99" "$lmax" "$n"
awk -v p="$p99" 'BEGIN { printf "  lag p99 target <= 2000 ms: %s\n", (p <= 2000 ? "met" : "NOT met") }'
