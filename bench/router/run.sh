#!/usr/bin/env bash
# Router benchmarks (issue 4, "Benchmark"), printed with their baselines from
# the same run:
#  1. decisions/s on one core, 100 CEL rules vs 100 plain string-equality
#     rules (Go benchmark BenchmarkRules100, services/router/internal/handoff);
#  2. p50/p90/p99/max from HandoffRequested produced to HandoffCommand
#     committed (read_committed) under steady load, on the embedded broker
#     (`baton broker`, a process) with the real router binary and 100 CEL rules,
#     against a plain produce→read_committed consume and a transactional
#     pass-through over the same broker (services/router/cmd/routerbench).
#
# Usage: bench/router/run.sh [routerbench flags]   e.g. --rates 200,1000 --duration 20s
# Env: BIN_DIR (where to build; default a temporary dir), SKIP_DECISIONS=1.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN_DIR:-}
if [[ -z $bin ]]; then
	bin=$(mktemp -d)
	trap 'rm -rf "$bin"' EXIT
fi

echo "== building router, routerbench and baton into $bin"
(cd "$root/services/router" && go build -o "$bin/router" ./cmd/router && go build -o "$bin/routerbench" ./cmd/routerbench)
(cd "$root/cmd/baton" && go build -o "$bin/baton" .)

if [[ ${SKIP_DECISIONS:-} != 1 ]]; then
	echo
	echo "== decisions/s on one core: 100 CEL rules vs 100 plain rules (GOMAXPROCS=1)"
	(cd "$root/services/router" && GOMAXPROCS=1 go test -run '^$' -bench Rules100 -benchtime 2s -v ./internal/handoff) |
		grep -E 'BenchmarkRules100/|plain/CEL'
fi

echo
echo "== latency under steady load: $bin/routerbench --bin-dir $bin $*"
"$bin/routerbench" --bin-dir "$bin" "$@"
