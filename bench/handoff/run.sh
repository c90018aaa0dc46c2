#!/usr/bin/env bash
# Handoff latency budget (issue 18, item 3): per hop, from the agent's
# POST /v1/calls/{id}/handoff to the REFER on the SBC's socket, and from
# the SBC's NOTIFY sipfrag to the outcome row written to ClickHouse, p50 and
# p99 at several handoff rates, through the real binaries on loopback, with
# a bare franz-go produce -> consume round trip on the same broker as the
# baseline (bench/handoff/README.md).
#
# Usage: bench/handoff/run.sh [flags]   e.g. --rates 20,200,1000 --duration 5s
# Env: BIN_DIR (where to build; default a temporary dir).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN_DIR:-}
if [[ -z $bin ]]; then
	bin=$(mktemp -d)
	trap 'rm -rf "$bin"' EXIT
fi
echo "== building baton, ingress, router, transfer, analytics and the bench into $bin"
(cd "$root/cmd/baton" && go build -o "$bin/baton" .)
for s in ingress router transfer analytics; do
	(cd "$root/services/$s" && go build -o "$bin/$s" "./cmd/$s")
done
(cd "$root/bench" && go build -o "$bin/handoffbench" ./handoff)
"$bin/handoffbench" --bin-dir "$bin" --repo-dir "$root" "$@"
