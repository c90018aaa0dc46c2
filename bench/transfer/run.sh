#!/usr/bin/env bash
# Transfer benchmarks (issue 5, "Benchmark"), each printed with a baseline
# measured in the same run:
#  1. per-packet bridge work without sockets, RTP vs one SRTP leg (Go
#     benchmark BenchmarkPacketPath, services/transfer/internal/bridge);
#  2. bridge capacity: concurrent calls of two 50 packets/s G.711 streams,
#     ramped until loss > 0.1% or p99 one-way delay > 5 ms, for the load
#     generator alone (direct: its own ceiling), a minimal Go UDP relay loop
#     (the floor), the bridge with RTP, and the bridge with an SRTP
#     destination leg (AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM); per
#     step the relay's and the generator's CPU, the rest of the machine's,
#     and UDP drops per side; capacities, ratios and CPU per packet against
#     the targets (services/transfer/internal/bench/bridgecap; each relay
#     runs in its own child process; the generator batches its I/O with
#     sendmmsg/recvmmsg on two sockets). Measured twice: with the relay
#     pinned to one core and the generator to the other (the relay judged
#     alone, per core), then unpinned (the relay may use every core, the
#     generator shares them). As root the measured processes run SCHED_FIFO
#     so that a shared machine's other load does not decide the figures
#     (RT=0: normal scheduling);
#  3. SRTP's cost: the relay's CPU per packet at 600 calls, rtp, srtp and
#     srtp-gcm measured in turn, 11 rounds, relay pinned; per SRTP suite
#     the median of its ratio to rtp in the same round (one step alone
#     varies by 30% on a shared machine);
#  4. HandoffCommand produced -> REFER on the SBC's socket, p50/p99/max at
#     100 and 500 commands/s (the other commands are the background load),
#     through the real transfer Service, an in-process kfake broker over TCP
#     and SIP over UDP, against the broker alone (produce -> group poll)
#     (services/transfer/internal/bench/referlat).
#
# Usage: bench/transfer/run.sh
# Env: CALLS (default 100,250,500,750,1000,1250,1500,2000), STEP (default 3s),
#      MODES (default direct,floor,rtp,srtp,srtp-gcm), PIN (1: pinned only,
#      0: unpinned only; default both), RT (SCHED_FIFO priority; default 10
#      as root, else 0 = normal scheduling), RATES (default 100,500),
#      DURATION (default 5s), ROUNDS (default 11), ROUND_CALLS (default 600),
#      SKIP_PACKET=1, SKIP_CAPACITY=1, SKIP_ROUNDS=1, SKIP_REFER=1.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/services/transfer"

if [[ ${SKIP_PACKET:-} != 1 ]]; then
	echo "== per-packet bridge work (GOMAXPROCS=1), one bridge and 2000 bridges round-robin"
	GOMAXPROCS=1 go test -run '^$' -bench PacketPath -benchtime 1s ./internal/bridge | grep -E '^Benchmark' |
		awk '{ print } { split($1, p, "/"); ns[p[2] "/" p[3]] = $3; b[p[2]] = 1 }
		END {
			for (k in b) for (s in ns) if (index(s, k "/srtp_") == 1) {
				base = ns[k "/rtp-1"] ? ns[k "/rtp-1"] : ns[k "/rtp"]
				if (base) printf "%s: %s costs %.1fx rtp (+%.0f ns per packet)\n", k, substr(s, length(k) + 2), ns[s] / base, ns[s] - base
			}
		}'
	echo
fi

if [[ ${SKIP_CAPACITY:-} != 1 ]]; then
	rt=${RT:-}
	if [[ -z $rt ]]; then
		rt=0
		[[ $(id -u) == 0 ]] && rt=10
	fi
	capacity=(go run ./internal/bench/bridgecap -calls "${CALLS:-100,250,500,750,1000,1250,1500,2000}"
		-step "${STEP:-3s}" -modes "${MODES:-direct,floor,rtp,srtp,srtp-gcm}" -rt "$rt")
	for pin in ${PIN:-1 0}; do
		if [[ $pin == 1 ]]; then
			echo "== bridge capacity per core: relay pinned to one core, load generator to another"
			"${capacity[@]}" -pin
		else
			echo "== bridge capacity on all $(nproc) CPUs, shared with the load generator"
			"${capacity[@]}"
		fi
		echo
	done
fi

if [[ ${SKIP_ROUNDS:-} != 1 ]]; then
	rt=${RT:-}
	if [[ -z $rt ]]; then
		rt=0
		[[ $(id -u) == 0 ]] && rt=10
	fi
	echo "== SRTP's cost: relay cpu per packet, interleaved rounds, relay pinned"
	go run ./internal/bench/bridgecap -pin -rt "$rt" -modes rtp,srtp,srtp-gcm -step 3s \
		-cpu-rounds "${ROUNDS:-11}" -cpu-calls "${ROUND_CALLS:-600}" | sed -n '/^cpu per packet/,$p'
	echo
fi

if [[ ${SKIP_REFER:-} != 1 ]]; then
	echo "== handoff command -> REFER on the wire vs the broker alone"
	go run ./internal/bench/referlat -rates "${RATES:-100,500}" -duration "${DURATION:-5s}"
fi
