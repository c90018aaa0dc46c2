#!/usr/bin/env bash
# What-if over a month (issue 21, item 2) on Debian's clickhouse-server
# 18.16: synthgen records CALLS synthetic calls (default 100,000) over the
# last 30 days with bench/replay/old.yaml (each call's decisions made by
# `router replay`, the router's fold), then
#
#   baton replay --rules bench/replay/new.yaml --since 30d --report FILE
#
# (with --from/--to set to the recorded month) re-decides every call of
# the month in streamed batches and prints the aggregate, its throughput
# (calls re-decided per second, measured by baton itself) and the report
# file. It runs twice: with one router process at a time (the default,
# the baseline) and with --workers 2, and prints the ratio.
#
# Usage: bench/replay/month.sh [extra baton replay flags, e.g. --batch 2000]
# Env: CALLS
set -euo pipefail
source "$(dirname "$0")/lib.sh"
calls=${CALLS:-100000}

start_clickhouse
build
end=$(date -u +%Y-%m-%dT%H:%M:%SZ)
from=$(date -u -d "$end - 30 days" +%Y-%m-%dT%H:%M:%SZ)
echo "== recording $calls calls from $from to $end with old.yaml"
"$work/bin/synthgen" -clickhouse "$ch_addr" -router "$work/bin/router" -rules "$root/bench/replay/old.yaml" -calls "$calls" -days 30 -end "$end"
whatif() { # workers, extra flags
	local w=$1
	shift
	echo
	echo "== baton replay --rules bench/replay/new.yaml --from $from --to $end --workers $w $*"
	"$work/bin/baton" replay --rules "$root/bench/replay/new.yaml" --from "$from" --to "$end" --clickhouse "$ch_addr" \
		--router-bin "$work/bin/router" --workers "$w" "$@" 2>"$work/stderr.txt" | tee "$work/out-$w.txt"
	tr '\r' '\n' <"$work/stderr.txt" | grep -v '^re-decided' || true
}
whatif 1 "$@"
whatif 2 --report "$work/report.md" "$@"
rate() { grep -o '([0-9]* calls/s)' "$work/out-$1.txt" | tr -dc '0-9'; }
echo
awk -v a="$(rate 1)" -v b="$(rate 2)" 'BEGIN { printf "throughput: %d calls/s with 1 router process, %d with 2 (%.2fx)\n", a, b, (a > 0 ? b / a : 0) }'
echo
echo "== report.md"
cat "$work/report.md"
