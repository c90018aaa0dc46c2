#!/usr/bin/env bash
# System calls per call (issue 18, item 2: what remains): `strace -c -f`
# attached to ingress (on the embedded broker) and to the stateless sipgo
# UAS (bench/ingress/sipgouas) in turn while SIPp `-sn uac` places CALLS
# calls at RATE calls/s (INVITE, 200, ACK, 1 s, BYE) against each; prints
# each syscall's count per call side by side. strace slows the traced
# process down, so the counts matter here, not the times.
#
# Usage: bench/ingress/syscalls.sh
# Env: RATE (default 200), CALLS (default 1000), BIN_DIR (default a
#      temporary dir).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
rate=${RATE:-200}
calls=${CALLS:-1000}
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
for c in strace sipp; do command -v $c >/dev/null || { echo "$c not found (apt-get install strace sip-tester)" >&2; exit 1; }; done

(cd "$root/services/ingress" && go build -o "$bin/ingress" ./cmd/ingress)
(cd "$root/cmd/baton" && go build -o "$bin/baton" .)
(cd "$root/bench" && go build -o "$bin/sipgouas" ./ingress/sipgouas)
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_udp() {
	for _ in $(seq 100); do
		ss -Hlun "sport = :$1" | grep -q . && return 0
		sleep 0.1
	done
	echo "nothing bound to udp $1" >&2
	return 1
}

bport=$(free_tcp)
"$bin/baton" broker --listen "127.0.0.1:$bport" --data-dir "$work/broker" >"$work/broker.log" 2>&1 &
pids+=($!)
iport=$(free_port)
cat >"$work/ingress.yaml" <<CFG
listen: 127.0.0.1:$iport
limits: {max_calls: 15000, max_cps: 100000}
rtp: {port_min: 30000, port_max: 59999}
kafka: {brokers: ["127.0.0.1:$bport"], partitions: 6, replication_factor: 1}
log: {level: warn}
CFG
"$bin/ingress" --config "$work/ingress.yaml" >"$work/ingress.log" 2>&1 &
ipid=$!
pids+=("$ipid")
gport=$(free_port)
"$bin/sipgouas" --listen "127.0.0.1:$gport" >"$work/sipgouas.log" 2>&1 &
gpid=$!
pids+=("$gpid")
wait_udp "$iport"
wait_udp "$gport"

for t in "ingress $iport $ipid" "sipgo $gport $gpid"; do
	read -r name port pid <<<"$t"
	strace -c -f -p "$pid" -o "$work/strace-$name.txt" 2>/dev/null &
	spid=$!
	sleep 1
	sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p "$(free_port)" -r "$rate" -m "$calls" -l "$((rate * 4))" -d 1000 \
		-timeout 120s -timeout_error -nostdin >"$work/sipp-$name.txt" 2>&1 || true
	sleep 2
	kill -INT "$spid"
	wait "$spid" || true
	ok=$(grep -E '^ *Successful call' "$work/sipp-$name.txt" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	echo "${ok:-0}" >"$work/ok-$name"
done
echo "== system calls per call at $rate calls/s ($(cat "$work/ok-ingress") ingress calls, $(cat "$work/ok-sipgo") sipgo calls)"
awk -v oi="$(cat "$work/ok-ingress")" -v og="$(cat "$work/ok-sipgo")" '
	FNR == 1 { f++ }
	$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { n[f, $NF] = $4; s[$NF] = 1 }
	END {
		printf "%-16s %9s %9s %9s\n", "syscall", "ingress", "sipgo", "extra"
		for (k in s) {
			i = n[1, k] / (oi ? oi : 1); g = n[2, k] / (og ? og : 1)
			ti += i; tg += g
			if (i >= 0.05 || g >= 0.05) printf "%-16s %9.2f %9.2f %+9.2f\n", k, i, g, i - g | "sort -k4 -gr"
		}
		close("sort -k4 -gr")
		printf "%-16s %9.2f %9.2f %+9.2f\n", "all", ti, tg, ti - tg
	}' "$work/strace-ingress.txt" "$work/strace-sipgo.txt"
