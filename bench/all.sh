#!/usr/bin/env bash
# `make bench`: the three benchmarks of issue 18, briefly, one after the
# other, each against its baseline measured in the same run, then their
# ratio lines together:
#  - ingress: CPU-ms per call against Kamailio and a stateless sipgo UAS
#    (bench/ingress/run.sh);
#  - router: HandoffRequested -> HandoffCommand committed against a plain
#    produce -> consume and a transactional pass-through, and 100 CEL
#    rules against 100 plain rules (bench/router/run.sh);
#  - handoff: agent POST -> REFER on the wire and NOTIFY -> outcome row,
#    per hop, against a bare franz-go round trip (bench/handoff/run.sh).
# Timing never fails it: it exits non-zero only when a bench could not run.
# Full output in $OUT (default a temporary file, its path printed).
#
# Usage: bench/all.sh    (make bench)
# Env: OUT, INGRESS_RATES (default 200), INGRESS_DURATION (s, default 10),
#      ROUTER_RATES (default 200), HANDOFF_RATES (default 20,200),
#      HANDOFF_DURATION (default 2s).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(mktemp -t baton-bench.XXXXXX)}
: >"$out"
failed=()

step() {
	local name=$1
	shift
	echo "== $name: $*" | tee -a "$out"
	if ! "$@" >>"$out" 2>&1; then
		failed+=("$name")
		echo "   $name did not complete (see $out)"
	fi
}

echo "baton bench at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
RATES=${INGRESS_RATES:-200} DURATION=${INGRESS_DURATION:-10} SKIP_GO=1 step ingress "$root/bench/ingress/run.sh"
step router "$root/bench/router/run.sh" --rates "${ROUTER_RATES:-200}" --duration 5s --warmup 1s --drain 5s
step handoff "$root/bench/handoff/run.sh" --rates "${HANDOFF_RATES:-20,200}" --duration "${HANDOFF_DURATION:-2s}"

echo
echo "== ratios (full output: $out)"
grep -E '^at [0-9]+ cps:|cpu-ms/call|plain/CEL|^router/passthrough|^ratios at|^target|^= |^baseline' "$out" | grep -v '^== '
if ((${#failed[@]} > 0)); then
	echo "benches that did not complete: ${failed[*]}"
	exit 1
fi
