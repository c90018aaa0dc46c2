#!/usr/bin/env bash
# Where ingress's CPU per call goes (issue 18, "Profile first"): SIPp `-sn
# uac` (INVITE, 200, ACK, a call of CALL_MS, BYE) at RATE calls/s against
# the ingress binary on the embedded broker, with metrics.pprof on; a CPU
# profile and an allocation profile taken over the steady part of the
# run. Printed: calls, ingress CPU per call (utime+stime from /proc), the
# CPU profile's flat time grouped by where it is spent (the table kept in
# bench/ingress/README.md), and the top functions of both profiles.
#
# RTP=1 plays deploy/sipp/ingress_basic.xml instead (the same call with a
# PCMA offer and SIPp playing g711a.pcap to ingress for its 1 s: RTP
# flowing; CALL_MS does not apply).
#
# Usage: bench/ingress/profile.sh
# Env: RATE (default 500), DURATION (seconds, default 30), CALL_MS
#      (default 1000), PROFILE_S (default 20), RTP (1: with RTP), OUT
#      (where the profiles are kept; default a temporary dir, removed).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
rate=${RATE:-500}
duration=${DURATION:-30}
call_ms=${CALL_MS:-1000}
profile_s=${PROFILE_S:-20}
tck=$(getconf CLK_TCK)
work=$(mktemp -d)
out=${OUT:-$work}
mkdir -p "$out"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
command -v sipp >/dev/null || { echo "sipp not found: install Debian's sip-tester" >&2; exit 1; }

(cd "$root/services/ingress" && go build -o "$work/ingress" ./cmd/ingress)
(cd "$root/cmd/baton" && go build -o "$work/baton" .)
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

bport=$(free_tcp)
"$work/baton" broker --listen "127.0.0.1:$bport" --data-dir "$work/broker" >"$work/broker.log" 2>&1 &
pids+=($!)
iport=$(free_port)
mport=$(free_tcp)
cat >"$work/ingress.yaml" <<CFG
listen: 127.0.0.1:$iport
limits: {max_calls: 15000, max_cps: 100000}
rtp: {port_min: 30000, port_max: 59999}
kafka: {brokers: ["127.0.0.1:$bport"], partitions: 6, replication_factor: 1}
log: {level: warn}
metrics: {listen: "127.0.0.1:$mport", pprof: true}
CFG
"$work/ingress" --config "$work/ingress.yaml" >"$work/ingress.log" 2>&1 &
ipid=$!
pids+=("$ipid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null && break; sleep 0.1; done

before=$(cpu_ticks "$ipid")
scenario=(-sn uac)
[[ ${RTP:-} == 1 ]] && scenario=(-sf "$root/deploy/sipp/ingress_basic.xml")
sipp "${scenario[@]}" "127.0.0.1:$iport" -i 127.0.0.1 -p "$(free_port)" -mi 127.0.0.1 -mp "$(($(free_port) & ~1))" \
	-r "$rate" -m "$((rate * duration))" -l "$((rate * (call_ms / 1000 + 3)))" -d "$call_ms" \
	-timeout "$((duration + 60))s" -timeout_error -max_recv_loops 10000 -nostdin >"$work/sipp.txt" 2>&1 &
spid=$!
sleep 5 # past the ramp-up
p0=$(cpu_ticks "$ipid")
# perf sees every cycle of the process, the kernel's work for it included;
# Go's own CPU profile is kept too (it sampled a fraction of the CPU time
# in this setup: compare its total with the process's).
if command -v perf >/dev/null; then
	perf record -q -F 499 -g -p "$ipid" -o "$out/perf.data" -- sleep "$profile_s" >/dev/null 2>&1 &
	perfpid=$!
fi
curl -sf "http://127.0.0.1:$mport/debug/pprof/profile?seconds=$profile_s" -o "$out/cpu.pprof"
[[ -n ${perfpid:-} ]] && wait "$perfpid"
p1=$(cpu_ticks "$ipid")
ustime=$(sed 's/^.*) //' "/proc/$ipid/stat" | awk '{print $12 " " $13}')
curl -sf "http://127.0.0.1:$mport/debug/pprof/allocs" -o "$out/allocs.pprof"
wait "$spid" || true
[[ $out != "$work" ]] && cp "$work/sipp.txt" "$out/sipp.txt"
after=$(cpu_ticks "$ipid")
ok=$(grep -E '^ *Successful call' "$work/sipp.txt" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
failed=$(grep -E '^ *Failed call' "$work/sipp.txt" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
echo "== ingress at $rate calls/s for ${duration}s (${call_ms} ms calls$([[ ${RTP:-} == 1 ]] && echo ", RTP: g711a.pcap for 1 s")) on $(nproc) CPUs"
awk -v ok="${ok:-0}" -v f="${failed:-0}" -v t="$((after - before))" -v tck="$tck" \
	'BEGIN {printf "calls ok %d, failed %d; ingress cpu %.0f ms, %.3f cpu-ms per call\n", ok, f, t*1000/tck, ok ? t*1000/tck/ok : 0}'

awk -v t="$((p1 - p0))" -v tck="$tck" -v s="$profile_s" -v us="$ustime" \
	'BEGIN {split(us, a, " "); printf "during the %ds profile: ingress cpu %.0f ms (so far user %.0f ms, system %.0f ms)\n", s, t*1000/tck, a[1]*1000/tck, a[2]*1000/tck}'
echo
# group NAME_FIELD: reads "<value> <function>" lines, sums by group.
group() {
	awk '
	{
		ms = $1; fn = $2
		g = "other (Go standard library)"
		if (fn ~ /^\[k\]/) g = "kernel: sockets, scheduling, timers"
		if (fn ~ /^(runtime\.|internal\/runtime|gcWriteBarrier|aeshash|memeqbody|indexbytebody|memmove|memclr)/) g = "Go runtime: scheduler, GC, memory"
		if (fn ~ /(syscall|Syscall|internal\/poll|runtime\.netpoll|epollwait|futex)/) g = "Go side of syscalls and the poller"
		if (fn ~ /^github.com\/emiago\/sipgo/) g = "sipgo: parse, transactions, transport"
		if (fn ~ /^github.com\/twmb\/franz-go/) g = "franz-go: Kafka produce"
		if (fn ~ /^github.com\/pierrec\/lz4/) g = "lz4 compression (Kafka batches)"
		if (fn ~ /^google.golang.org\/protobuf/) g = "protobuf encoding"
		if (fn ~ /services\/ingress\/internal\/(server|headers|numbers|trunks)/) g = "Baton: admission, dialog, call, headers"
		if (fn ~ /services\/ingress\/internal\/sipcheck/) g = "Baton: validation gate (sipcheck)"
		if (fn ~ /services\/ingress\/internal\/sdp/) g = "Baton: SDP offer/answer"
		if (fn ~ /services\/ingress\/internal\/rtp/) g = "Baton: RTP socket and media"
		if (fn ~ /baton-voice\/baton\/pkg\//) g = "Baton: pkg (events, sipx, kafka)"
		if (fn ~ /^log\/slog/) g = "logging (slog)"
		if (fn ~ /^github.com\/prometheus/) g = "metrics (Prometheus)"
		if (fn ~ /^(encoding\/|strings\.|strconv\.|bytes\.|unicode|fmt\.|regexp|sort\.)/) g = "string and encoding work (std lib)"
		if (fn ~ /^(crypto\/|math\/rand)/) g = "randomness and hashing (tags, branches, ids)"
		sum[g] += ms; total += ms
	}
	END {
		for (g in sum) printf "%7.1f%%  %s\n", 100 * sum[g] / total, g | "sort -rn"
		close("sort -rn")
	}'
}
if [[ -s $out/perf.data ]]; then
	echo "== where ingress's CPU goes: perf, ${profile_s}s, self time grouped (share of all samples)"
	perf report -i "$out/perf.data" --stdio --no-children --sort sym -q 2>/dev/null |
		awk '$1 ~ /%$/ {v = $1; sub(/%/, "", v); $1 = ""; sub(/^ +/, ""); k = ($1 == "[k]") ? "[k]" : ""; $1 = ""; sub(/^ +/, ""); print v, k $0}' | group
	echo
fi
echo "== Go's CPU profile over the same ${profile_s}s (a sample of the CPU time; see the totals)"
go tool pprof -top -nodecount=100000 "$work/ingress" "$out/cpu.pprof" 2>/dev/null | awk '
	/^ *[0-9.]+(ms|s|us) / {
		v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/(ms|s|us)$/, "", v)
		print ((u == "s") ? v * 1000 : (u == "us" ? v / 1000 : v)), $6
	}' | group
go tool pprof -top -nodecount=1 "$work/ingress" "$out/cpu.pprof" 2>/dev/null | grep -m1 'Total samples' || true
echo
echo "== top functions, CPU (flat)"
go tool pprof -top -nodecount=25 "$work/ingress" "$out/cpu.pprof" 2>/dev/null | tail -n +6
echo
echo "== top functions, allocated bytes since start (flat)"
go tool pprof -sample_index=alloc_space -top -nodecount=20 "$work/ingress" "$out/allocs.pprof" 2>/dev/null | tail -n +6
