#!/usr/bin/env bash
# Ingress benchmarks (issue 3, "Benchmark"), each printed with a baseline
# measured in the same run:
#  1. what ingress does with an INVITE before it answers (validate,
#     canonicalise, parse, build and encode CallStarted) vs sipgo's raw
#     parse of the same bytes: Go benchmark BenchmarkInvite
#     (services/ingress/internal/server), ns/op and allocs, ratio printed;
#  2. SIPp `-sn uac` (INVITE, 200, ACK, 1 s call, BYE) at each rate for
#     DURATION seconds against: the ingress binary publishing to the embedded
#     broker (`baton broker`); `sipp -sn uas` (the floor); Kamailio from
#     Debian answering every request 200 statelessly (sl_send_reply); and
#     bench/ingress/sipgouas, the same stateless 200s through sipgo's server
#     transactions (the floor of any sipgo-based server), once as Go
#     schedules it by default and once with GOMAXPROCS=1 (sipgo-p1, its
#     cheapest setting at these rates); ingress too runs twice, by default
#     and with GOMAXPROCS=1 (ingress-p1, a second process on its own port
#     and broker topics). Printed:
#     successful and failed calls, CPU-ms per call of the target (utime +
#     stime from /proc/<pid>/stat, summed over Kamailio's processes; the
#     broker's CPU is printed apart), and the ratio ingress/Kamailio.
#
# Usage: bench/ingress/run.sh
# Env: RATES (default 200,500,1000), DURATION (seconds, default 30),
#      CALL_MS (call length, default 1000), SKIP_GO=1, SKIP_LOAD=1,
#      BIN_DIR (where to build; default a temporary dir),
#      TARGETS (comma-separated subset of uas,kamailio,sipgo,sipgo-p1,
#      ingress,ingress-p1; default all: TARGETS=sipgo,ingress is the
#      issue 18 comparison in a third of the time).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
rates=${RATES:-200,500,1000}
duration=${DURATION:-30}
call_ms=${CALL_MS:-1000}
tck=$(getconf CLK_TCK)
work=$(mktemp -d)
bin=${BIN_DIR:-$work/bin}
mkdir -p "$bin"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

if [[ ${SKIP_GO:-} != 1 ]]; then
	echo "== INVITE to encoded CallStarted vs sipgo parse (GOMAXPROCS=1)"
	(cd "$root/services/ingress" && GOMAXPROCS=1 go test -run '^$' -bench 'Invite' -benchtime 2s ./internal/server) |
		grep -E '^BenchmarkInvite/' | tee "$work/go.txt"
	awk '/sipgo-parse/ {p=$3; pa=$(NF-1)} /ingress/ {i=$3; ia=$(NF-1)}
		END {printf "ratio ingress/sipgo-parse: %.1fx ns/op, %.1fx allocs/op\n", i/p, ia/pa}' "$work/go.txt"
	echo
fi
[[ ${SKIP_LOAD:-} == 1 ]] && exit 0

command -v sipp >/dev/null || { echo "sipp not found: install Debian's sip-tester" >&2; exit 1; }
command -v kamailio >/dev/null || { echo "kamailio not found: install Debian's kamailio" >&2; exit 1; }

echo "== building ingress and baton into $bin"
(cd "$root/services/ingress" && go build -o "$bin/ingress" ./cmd/ingress)
(cd "$root/cmd/baton" && go build -o "$bin/baton" .)
(cd "$root/bench" && go build -o "$bin/sipgouas" ./ingress/sipgouas)

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# cpu_ticks PID...: utime+stime of the processes, in clock ticks.
cpu_ticks() {
	local t=0 p f
	for p in "$@"; do
		[[ -r /proc/$p/stat ]] || continue
		f=$(sed 's/^.*) //' "/proc/$p/stat")
		set -- $f
		t=$((t + ${12} + ${13}))
	done
	echo "$t"
}

# wait_udp PORT: until something is bound there.
wait_udp() {
	for _ in $(seq 100); do
		ss -Hlun "sport = :$1" | grep -q . && return 0
		sleep 0.1
	done
	echo "nothing bound to udp $1" >&2
	return 1
}

# load NAME PORT RATE PIDS...: run SIPp at RATE for DURATION s, print a line.
load() {
	local name=$1 port=$2 rate=$3
	shift 3
	local calls=$((rate * duration)) before after out ok failed
	before=$(cpu_ticks "$@")
	out=$work/sipp-$name-$rate.txt
	sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p "$(free_port)" -mi 127.0.0.1 -mp "$(($(free_port) & ~1))" \
		-r "$rate" -m "$calls" -l "$((rate * (call_ms / 1000 + 3)))" -d "$call_ms" \
		-timeout "$((duration + 60))s" -timeout_error -max_recv_loops 10000 -nostdin >"$out" 2>&1 || true
	after=$(cpu_ticks "$@")
	ok=$(grep -E '^ *Successful call' "$out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	failed=$(grep -E '^ *Failed call' "$out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	ok=${ok:-0}
	failed=${failed:-0}
	awk -v n="$name" -v r="$rate" -v ok="$ok" -v f="$failed" -v t="$((after - before))" -v tck="$tck" \
		'BEGIN {per = ok > 0 ? t * 1000 / tck / ok : 0; printf "%-9s %5d cps  ok %7d  failed %6d  cpu %7.0f ms  %.3f cpu-ms/call\n", n, r, ok, f, t*1000/tck, per}' |
		tee -a "$work/load.txt"
}

echo "== SIPp uac, ${duration}s per rate, ${call_ms} ms calls, on $(nproc) CPUs"
IFS=, read -ra rate_list <<<"$rates"

# Kamailio, stateless 200 to everything but ACK.
kport=$(free_port)
mpath=$(dirname "$(find /usr/lib -name sl.so -path '*kamailio*' | head -1)")
cat >"$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:$kport
mpath="$mpath"
loadmodule "sl.so"
request_route {
	if (method == "ACK") { exit; }
	sl_send_reply("200", "OK");
	exit;
}
CFG
kamailio -f "$work/kamailio.cfg" -DD -E -m 128 -M 16 -P "$work/kamailio.pid" >"$work/kamailio.log" 2>&1 &
kpid=$!
pids+=("$kpid")
wait_udp "$kport"
kpids=("$kpid" $(pgrep -P "$kpid" | tr '\n' ' '))

# The floor: SIPp's own UAS.
uport=$(free_port)
sipp -sn uas -i 127.0.0.1 -p "$uport" -nostdin -bg >/dev/null 2>&1 || true
upid=$(pgrep -f "sipp -sn uas -i 127.0.0.1 -p $uport" | head -1)
pids+=("$upid")
wait_udp "$uport"

# The library floor: sipgo answering statelessly.
gport=$(free_port)
"$bin/sipgouas" --listen "127.0.0.1:$gport" >"$work/sipgouas.log" 2>&1 &
gpid=$!
pids+=("$gpid")
wait_udp "$gport"
g1port=$(free_port)
GOMAXPROCS=1 "$bin/sipgouas" --listen "127.0.0.1:$g1port" >"$work/sipgouas-p1.log" 2>&1 &
g1pid=$!
pids+=("$g1pid")
wait_udp "$g1port"

# Ingress on the embedded broker.
bport=$(free_tcp)
"$bin/baton" broker --listen "127.0.0.1:$bport" --data-dir "$work/broker" >"$work/broker.log" 2>&1 &
bpid=$!
pids+=("$bpid")
for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$bport") 2>/dev/null && break; sleep 0.1; done
iport=$(free_port)
cat >"$work/ingress.yaml" <<CFG
listen: 127.0.0.1:$iport
metrics: {listen: "127.0.0.1:$(free_tcp)"}
limits: {max_calls: 15000, max_cps: 100000}
rtp: {port_min: 30000, port_max: 59999}
kafka: {brokers: ["127.0.0.1:$bport"], partitions: 6, replication_factor: 1}
log: {level: warn}
CFG
"$bin/ingress" --config "$work/ingress.yaml" >"$work/ingress.log" 2>&1 &
ipid=$!
pids+=("$ipid")
wait_udp "$iport"
# The same with GOMAXPROCS=1: its own RTP range and topics.
i1port=$(free_port)
cat >"$work/ingress-p1.yaml" <<CFG
listen: 127.0.0.1:$i1port
metrics: {listen: "127.0.0.1:$(free_tcp)"}
limits: {max_calls: 5000, max_cps: 100000}
rtp: {port_min: 20000, port_max: 29999}
kafka: {brokers: ["127.0.0.1:$bport"], partitions: 6, replication_factor: 1,
  topics: {calls: p1.calls, handoffs: p1.handoffs, transfers: p1.transfers}}
log: {level: warn}
CFG
GOMAXPROCS=1 "$bin/ingress" --config "$work/ingress-p1.yaml" >"$work/ingress-p1.log" 2>&1 &
i1pid=$!
pids+=("$i1pid")
wait_udp "$i1port"

targets=",${TARGETS:-uas,kamailio,sipgo,sipgo-p1,ingress,ingress-p1},"
want() { [[ $targets == *",$1,"* ]]; }
for rate in "${rate_list[@]}"; do
	if want uas; then load uas "$uport" "$rate" "$upid"; fi
	if want kamailio; then load kamailio "$kport" "$rate" "${kpids[@]}"; fi
	if want sipgo; then load sipgo "$gport" "$rate" "$gpid"; fi
	if want sipgo-p1; then load sipgo-p1 "$g1port" "$rate" "$g1pid"; fi
	if want ingress; then
		b0=$(cpu_ticks "$bpid")
		load ingress "$iport" "$rate" "$ipid"
		b1=$(cpu_ticks "$bpid")
		awk -v t="$((b1 - b0))" -v tck="$tck" 'BEGIN {printf "          (broker during the ingress run: cpu %.0f ms)\n", t*1000/tck}'
	fi
	if want ingress-p1; then load ingress-p1 "$i1port" "$rate" "$i1pid"; fi
done
echo
awk '$1=="kamailio" {k[$2]=$(NF-1)} $1=="ingress" {i[$2]=$(NF-1)} $1=="uas" {u[$2]=$(NF-1)} $1=="sipgo" {g[$2]=$(NF-1)} $1=="sipgo-p1" {g1[$2]=$(NF-1)} $1=="ingress-p1" {i1[$2]=$(NF-1)}
	END {for (r in i) if (k[r] == 0 && g[r] > 0) printf "at %d cps: ingress/sipgo-stateless %.2fx cpu per call (%.3f vs %.3f cpu-ms/call)\n", r, i[r]/g[r], i[r], g[r]
		for (r in i) if (k[r] > 0 && g[r] > 0 && g1[r] > 0) printf "at %d cps: ingress/kamailio %.1fx, sipgo-stateless/kamailio %.1fx (GOMAXPROCS=1: %.1fx), ingress/sipgo-stateless %.1fx cpu per call (floor sipp uas: %.3f cpu-ms/call); GOMAXPROCS=1: ingress-p1/sipgo-stateless %.1fx, ingress-p1/sipgo-p1 %.1fx\n", r, i[r]/k[r], g[r]/k[r], g1[r]/k[r], i[r]/g[r], u[r], i1[r]/g[r], i1[r]/g1[r]}' "$work/load.txt" | sort -t' ' -k2 -n
