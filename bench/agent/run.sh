#!/usr/bin/env bash
# Agent stream benchmark (issue 15, "Benchmark"): concurrent calls
# streaming both ways between RTP and a local Media Streams bot, through
# ingress's own rtp and agent packages, against the floor of relaying the
# same RTP through the same kind of socket (a goroutine per socket, read
# and written back), measured in the same run for each stream count.
# services/ingress/cmd/agentbench runs the media side in a child process,
# so its CPU is its own; the callers and the bot run in the parent
# (harness_s is theirs, printed so a saturated machine shows).
#
# Printed per mode: CPU seconds of the media side in the window, frames
# each way, CPU µs per frame (a frame is one packet through the media
# side: RTP in → WebSocket out, or WebSocket in → RTP out; the relay's
# RTP in → RTP out), latency RTP in → WebSocket frame at the bot (in_),
# latency of what the callers got back (out_: for the relay RTP in → RTP
# out; for the agent the bot's WebSocket frame → RTP, which includes the
# wait for the next 20 ms tick of the pacing, by design up to 20 ms, and
# the playout queue), the p99 of |inter-arrival − 20 ms| at the callers,
# and the player's late frames (sent more than a frame after their slot).
#
# Usage: bench/agent/run.sh
# Env: STREAMS (default 100,300,500), DURATION (default 15s).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root/services/ingress" && go build -o "$work/agentbench" ./cmd/agentbench)
for n in ${STREAMS:-100 300 500}; do
	n=${n//,/ }
	for s in $n; do
		echo "== $s concurrent agent streams, ${DURATION:-15s} measured (nproc $(nproc))"
		"$work/agentbench" --streams "$s" --duration "${DURATION:-15s}"
		echo
	done
done
