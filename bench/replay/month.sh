#!/usr/bin/env bash
# What-if over a month (issue 21, item 2) on Debian's clickhouse-server
# 18.16: synthgen records CALLS synthetic calls (default 100,000) over the
# last 30 days with bench/replay/old.yaml (each call's decisions made by
# `router replay`, the router's fold), then
#
#   baton replay --rules bench/replay/new.yaml --since 30d --report FILE
#
# re-decides every call of the month in streamed batches and prints the
# aggregate, its throughput (calls re-decided per second, measured by
# baton itself) and the report file.
#
# Usage: bench/replay/month.sh [extra baton replay flags, e.g. --batch 2000]
# Env: CALLS
set -euo pipefail
source "$(dirname "$0")/lib.sh"
calls=${CALLS:-100000}

start_clickhouse
build
echo "== recording $calls calls over 30 days with old.yaml"
"$work/bin/synthgen" -clickhouse "$ch_addr" -router "$work/bin/router" -rules "$root/bench/replay/old.yaml" -calls "$calls" -days 30
echo
echo "== baton replay --rules bench/replay/new.yaml --since 30d --report report.md $*"
"$work/bin/baton" replay --rules "$root/bench/replay/new.yaml" --since 30d --clickhouse "$ch_addr" \
	--router-bin "$work/bin/router" --report "$work/report.md" "$@"
echo
echo "== report.md"
cat "$work/report.md"
