#!/usr/bin/env bash
# Transfer benchmarks (issue 5, "Benchmark"), each printed with a baseline
# measured in the same run:
#  1. per-packet bridge work without sockets, RTP vs one SRTP leg (Go
#     benchmark BenchmarkPacketPath, services/transfer/internal/bridge);
#  2. bridge capacity: concurrent calls of two 50 packets/s G.711 streams,
#     ramped until loss > 0.1% or p99 one-way delay > 5 ms, for a minimal Go
#     UDP relay loop (the floor), the bridge with RTP, and the bridge with an
#     SRTP (AES_CM_128_HMAC_SHA1_80) destination leg; ratios printed
#     (services/transfer/internal/bench/bridgecap; each relay runs in its own
#     child process, so cpu_us/pkt and relay_cpu% are the relay's alone; the
#     load generator is the parent process and still shares the machine's
#     cores);
#  3. HandoffCommand produced -> REFER on the SBC's socket, p50/p99/max at
#     100 and 500 commands/s (the other commands are the background load),
#     through the real transfer Service, an in-process kfake broker over TCP
#     and SIP over UDP, against the broker alone (produce -> group poll)
#     (services/transfer/internal/bench/referlat).
#
# Usage: bench/transfer/run.sh
# Env: CALLS (default 100,250,500,750,1000,1250,1500,2000), STEP (default 3s),
#      RATES (default 100,500), DURATION (default 5s), SKIP_PACKET=1,
#      SKIP_CAPACITY=1, SKIP_REFER=1, INPROC=1 (also measure with the relays in
#      the generator's process, the earlier harness, for comparison).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/services/transfer"

if [[ ${SKIP_PACKET:-} != 1 ]]; then
	echo "== per-packet bridge work (GOMAXPROCS=1)"
	GOMAXPROCS=1 go test -run '^$' -bench PacketPath -benchtime 1s ./internal/bridge | grep -E '^Benchmark'
	echo
fi

if [[ ${SKIP_CAPACITY:-} != 1 ]]; then
	echo "== bridge capacity on $(nproc) CPUs: floor (plain Go UDP relay) vs bridge RTP vs bridge SRTP"
	go run ./internal/bench/bridgecap -calls "${CALLS:-100,250,500,750,1000,1250,1500,2000}" -step "${STEP:-3s}"
	echo
	if [[ ${INPROC:-} == 1 ]]; then
		echo "== the same with the relays in the generator's process (cpu counts both)"
		go run ./internal/bench/bridgecap -inproc -calls "${CALLS:-100,250,500,750,1000,1250,1500,2000}" -step "${STEP:-3s}"
		echo
	fi
fi

if [[ ${SKIP_REFER:-} != 1 ]]; then
	echo "== handoff command -> REFER on the wire vs the broker alone"
	go run ./internal/bench/referlat -rates "${RATES:-100,500}" -duration "${DURATION:-5s}"
fi
