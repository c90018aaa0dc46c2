#!/usr/bin/env bash
# Private, throwaway ClickHouse cluster for tests of the cluster DDL
# (services/analytics/internal/migrate, ForCluster): a ZooKeeper and four
# clickhouse-server processes, two shards of two replicas, on 127.0.0.1.
#
#   clickhouse-cluster.sh start  DIR   start the cluster; all its state lives under DIR
#   clickhouse-cluster.sh stop   DIR   stop the four servers, then ZooKeeper
#   clickhouse-cluster.sh status DIR   exit 0 if everything runs, 1 if not
#
# Environment:
#   CH_CLUSTER_BASE_PORT  first port (default 29100). The cluster uses
#                         base+0 ZooKeeper client port, and for node N (1-4)
#                         base+10N tcp, base+10N+1 http, base+10N+2 interserver.
#   CLICKHOUSE_SERVER     server binary (as in clickhouse.sh)
#   JAVA                  java binary (default: java on PATH)
#   ZOOKEEPER_JAR         ZooKeeper jar (default /usr/share/java/zookeeper.jar;
#                         its manifest names the rest of the class path)
#   CH_START_TIMEOUT      seconds each server may take to answer SELECT 1 (default 60)
#   ZK_START_TIMEOUT      seconds ZooKeeper may take to answer ruok (default 60)
#   CH_STOP_TIMEOUT       seconds to wait after SIGTERM before SIGKILL (default 30)
#
# Built for Debian bookworm's packages: clickhouse-server 18.16 and zookeeper
# 3.8 (apt-get install clickhouse-server clickhouse-client zookeeper, and a
# Java runtime). It never uses or touches the system services, /etc,
# /var/lib or /var/log: ZooKeeper runs as a plain java process of the caller.
# Works as root and as a normal user.
#
# The cluster, as every server's remote_servers names it, is "baton":
#   node1  shard 01  replica s1r1        node3  shard 02  replica s2r1
#   node2  shard 01  replica s1r2        node4  shard 02  replica s2r2
# with internal_replication (a Distributed insert writes one replica of a
# shard; ReplicatedMergeTree copies it to the other), the macros {shard} and
# {replica} set per node, and distributed DDL (ON CLUSTER) queued in
# ZooKeeper under /clickhouse/task_queue/ddl.
#
# Each node is a server of deploy/local/clickhouse.sh, in DIR/nodeN, with
# the cluster settings in DIR/nodeN/config.d/cluster.xml, which the server
# merges into the config.xml that clickhouse.sh writes.
#
# DIR layout: ports.env  zookeeper/{zoo.cfg,log4j.properties,zookeeper.pid,
#             data/,logs/}  node1/ .. node4/ (clickhouse.sh's layout, plus
#             config.d/cluster.xml and start.log)
set -euo pipefail

usage() {
	echo "usage: $0 start|stop|status DIR" >&2
	echo "  env: CH_CLUSTER_BASE_PORT (default 29100)" >&2
	exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
[[ -n $2 ]] || usage

log() { echo "clickhouse-cluster.sh: $*"; }
die() { echo "clickhouse-cluster.sh: error: $*" >&2; exit 1; }

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
single=$here/clickhouse.sh
[[ -x $single ]] || die "$single is missing or not executable"

readonly nodes=(1 2 3 4)
readonly cluster=baton

abs_dir() {
	local d=$1 create=$2
	if [[ $create == yes ]]; then mkdir -p -- "$d"; fi
	[[ -d $d ]] || return 1
	(cd -- "$d" && pwd -P)
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

shard_of() { printf '%02d' $((($1 + 1) / 2)); }          # 1,2 -> 01; 3,4 -> 02
replica_of() { echo "s$((($1 + 1) / 2))r$((($1 + 1) % 2 + 1))"; } # s1r1 s1r2 s2r1 s2r2

# Ports from a base: globals zk_port, tcp[N], http[N], inter[N].
set_ports() {
	local base=$1 n
	if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base + 42 > 65535)); then
		die "CH_CLUSTER_BASE_PORT must be a number from 1024 to 65493, not '$base'"
	fi
	zk_port=$base
	declare -gA tcp=() http=() inter=()
	for n in "${nodes[@]}"; do
		tcp[$n]=$((base + 10 * n))
		http[$n]=$((base + 10 * n + 1))
		inter[$n]=$((base + 10 * n + 2))
	done
}

print_ports() {
	local n
	echo "zookeeper_port=$zk_port"
	for n in "${nodes[@]}"; do
		echo "node${n}_tcp_port=${tcp[$n]} node${n}_http_port=${http[$n]} node${n}_interserver_port=${inter[$n]} shard=$(shard_of "$n") replica=$(replica_of "$n")"
	done
}

# --- ZooKeeper --------------------------------------------------------------

zk_dir() { echo "$dir/zookeeper"; }

is_our_zk() {
	local pid=$1 cmdline
	[[ -r /proc/$pid/cmdline ]] || return 1
	cmdline=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ ${cmdline%%$'\n'*} == *java* ]] || return 1
	grep -qxF -- "$(zk_dir)/zoo.cfg" <<<"$cmdline"
}

# pid of this DIR's ZooKeeper, or nothing (pid file first, then /proc).
zk_pid() {
	local pid p pidfile
	pidfile=$(zk_dir)/zookeeper.pid
	if [[ -f $pidfile ]]; then
		pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)
		if [[ -n $pid ]] && is_our_zk "$pid"; then
			echo "$pid"
			return 0
		fi
	fi
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		if is_our_zk "$p"; then
			echo "$p"
			return 0
		fi
	done
	return 0
}

# Sends a four-letter word to ZooKeeper and prints the answer.
zk_cmd() {
	local out
	exec 4<>"/dev/tcp/127.0.0.1/$zk_port" || return 1
	printf '%s' "$1" >&4
	out=$(timeout 3 cat <&4 || true)
	exec 4<&- 4>&-
	printf '%s\n' "$out"
}

zk_ok() { [[ $(zk_cmd ruok 2>/dev/null || true) == imok ]]; }

find_java() {
	if [[ -n ${JAVA:-} ]]; then
		echo "$JAVA"
	elif command -v java >/dev/null 2>&1; then
		command -v java
	else
		die "java not found (apt-get install default-jre-headless, or set JAVA)"
	fi
}

find_zk_jar() {
	local jar=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}
	[[ -f $jar ]] || die "ZooKeeper not found at $jar (apt-get install zookeeper, or set ZOOKEEPER_JAR)"
	echo "$jar"
}

write_zk_config() {
	local zd
	zd=$(zk_dir)
	mkdir -p "$zd"/{data,logs}
	cat >"$zd/zoo.cfg" <<EOF
# Generated by deploy/local/clickhouse-cluster.sh; rewritten on every start.
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$zd/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
maxClientCnxns=0
# No AdminServer (it would listen on 8080) and only harmless 4lw commands.
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
autopurge.purgeInterval=0
EOF
	cat >"$zd/log4j.properties" <<EOF
# Generated by deploy/local/clickhouse-cluster.sh; rewritten on every start.
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.RollingFileAppender
log4j.appender.FILE.File=$zd/logs/zookeeper.log
log4j.appender.FILE.MaxFileSize=10MB
log4j.appender.FILE.MaxBackupIndex=2
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
EOF
}

start_zk() {
	local java jar zd pid i timeout=${ZK_START_TIMEOUT:-60} cp launcher
	zd=$(zk_dir)
	pid=$(zk_pid)
	if [[ -n $pid ]]; then
		log "zookeeper already running for $dir (pid $pid)"
		zk_ok || die "zookeeper (pid $pid) does not answer ruok on port $zk_port"
		return 0
	fi
	rm -f -- "$zd/zookeeper.pid"
	java=$(find_java)
	jar=$(find_zk_jar)
	# zookeeper.jar's manifest Class-Path names its dependencies; the log4j
	# binding is optional (without it ZooKeeper logs nothing).
	cp=$jar
	for i in /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar; do
		[[ -f $i ]] && cp+=:$i
	done
	write_zk_config
	log "starting zookeeper for $dir (port $zk_port)"
	setsid "$java" -Xms64m -Xmx256m \
		-Dlog4j.configuration="file:$zd/log4j.properties" \
		-Dzookeeper.jmx.log4j.disable=true \
		-cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$zd/zoo.cfg" \
		</dev/null >>"$zd/logs/stdout.log" 2>&1 &
	launcher=$!
	pid=$launcher
	is_our_zk "$pid" || pid=$(zk_pid)
	[[ -z $pid ]] || echo "$pid" >"$zd/zookeeper.pid"
	for ((i = 1; i <= timeout * 2; i++)); do
		if [[ -z $pid ]]; then
			pid=$(zk_pid)
			[[ -z $pid ]] || echo "$pid" >"$zd/zookeeper.pid"
		fi
		if [[ -n $pid ]] && ! is_our_zk "$pid"; then
			tail -n 20 "$zd/logs/stdout.log" "$zd/logs/zookeeper.log" >&2 2>/dev/null || true
			die "zookeeper (pid $pid) exited during startup"
		fi
		if [[ -z $pid ]] && ! kill -0 "$launcher" 2>/dev/null; then
			tail -n 20 "$zd/logs/stdout.log" "$zd/logs/zookeeper.log" >&2 2>/dev/null || true
			die "zookeeper exited immediately"
		fi
		if [[ -n $pid ]] && zk_ok; then
			log "zookeeper ready (pid $pid, port $zk_port)"
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$zd/logs/zookeeper.log" >&2 2>/dev/null || true
	[[ -z $pid ]] || stop_zk
	die "zookeeper did not answer ruok on port $zk_port within ${timeout}s"
}

wait_gone() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
		sleep 0.1
	done
	! kill -0 "$pid" 2>/dev/null
}

stop_zk() {
	local pid timeout=${CH_STOP_TIMEOUT:-30}
	pid=$(zk_pid)
	if [[ -z $pid ]]; then
		rm -f -- "$(zk_dir)/zookeeper.pid"
		return 0
	fi
	log "stopping zookeeper (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$timeout"; then
		log "zookeeper pid $pid still running after ${timeout}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "zookeeper pid $pid survived SIGKILL"
	fi
	rm -f -- "$(zk_dir)/zookeeper.pid"
}

# --- ClickHouse nodes -------------------------------------------------------

node_dir() { echo "$dir/node$1"; }

write_node_config() {
	local n=$1 nd s r
	nd=$(node_dir "$n")
	mkdir -p "$nd/config.d"
	{
		cat <<EOF
<?xml version="1.0"?>
<!-- Generated by deploy/local/clickhouse-cluster.sh; rewritten on every start.
     Merged by the server into the config.xml of clickhouse.sh. -->
<yandex>
    <interserver_http_port>${inter[$n]}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>

    <macros>
        <shard>$(shard_of "$n")</shard>
        <replica>$(replica_of "$n")</replica>
    </macros>

    <remote_servers>
        <$cluster>
EOF
		for s in 1 2; do
			echo "            <shard>"
			echo "                <internal_replication>true</internal_replication>"
			for r in $((2 * s - 1)) $((2 * s)); do
				echo "                <replica><host>127.0.0.1</host><port>${tcp[$r]}</port></replica>"
			done
			echo "            </shard>"
		done
		cat <<EOF
        </$cluster>
    </remote_servers>

    <zookeeper>
        <node>
            <host>127.0.0.1</host>
            <port>$zk_port</port>
        </node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>

    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
</yandex>
EOF
	} >"$nd/config.d/cluster.xml.new"
	mv -f "$nd/config.d/cluster.xml.new" "$nd/config.d/cluster.xml"
}

# Runs clickhouse.sh for node n; output to nodeN/CMD.log.
node_sh() {
	local n=$1 what=$2
	CH_TCP_PORT=${tcp[$n]} CH_HTTP_PORT=${http[$n]} \
		"$single" "$what" "$(node_dir "$n")" >"$(node_dir "$n")/$what.log" 2>&1
}

# Prints the answer of an HTTP query to node n.
http_query() {
	curl -fsS --max-time 10 --data-binary "$2" "http://127.0.0.1:${http[$1]}/" 2>&1
}

start_nodes() {
	local n pids=() failed=() out
	for n in "${nodes[@]}"; do
		write_node_config "$n"
	done
	log "starting 4 clickhouse-server nodes"
	# In parallel: each clickhouse.sh start waits for its server's SELECT 1.
	for n in "${nodes[@]}"; do
		node_sh "$n" start &
		pids[n]=$!
	done
	for n in "${nodes[@]}"; do
		wait "${pids[n]}" || failed+=("$n")
	done
	for n in "${failed[@]}"; do
		echo "--- node$n: clickhouse.sh start failed:" >&2
		tail -n 30 "$(node_dir "$n")/start.log" >&2
	done
	((${#failed[@]} == 0)) || return 1
	for n in "${nodes[@]}"; do
		log "node$n $(grep -m1 '^clickhouse.sh: ready\|already running' "$(node_dir "$n")/start.log" | sed 's/^clickhouse.sh: //')"
	done

	# Every node must see ZooKeeper and the cluster "baton" with its macros.
	command -v curl >/dev/null 2>&1 || die "curl is needed to check the nodes (apt-get install curl)"
	for n in "${nodes[@]}"; do
		local i ok=
		for ((i = 0; i < 30; i++)); do
			if out=$(http_query "$n" "SELECT count() FROM system.zookeeper WHERE path = '/'") && [[ $out =~ ^[0-9]+$ ]]; then
				ok=1
				break
			fi
			sleep 1
		done
		[[ -n $ok ]] || { echo "$out" >&2; return 1; }
		out=$(http_query "$n" "SELECT count() FROM system.clusters WHERE cluster = '$cluster'") || { echo "$out" >&2; return 1; }
		[[ $out == 4 ]] || { echo "node$n: system.clusters has $out rows for $cluster, want 4" >&2; return 1; }
		out=$(http_query "$n" "SELECT substitution FROM system.macros WHERE macro = 'replica'") || { echo "$out" >&2; return 1; }
		[[ $out == "$(replica_of "$n")" ]] || { echo "node$n: macro replica is '$out', want $(replica_of "$n")" >&2; return 1; }
	done
	log "all 4 nodes answer SELECT 1, see zookeeper and cluster $cluster"
}

stop_nodes() {
	local n pids=() rc=0
	for n in "${nodes[@]}"; do
		[[ -d $(node_dir "$n") ]] || continue
		node_sh "$n" stop &
		pids[n]=$!
	done
	for n in "${!pids[@]}"; do
		if wait "${pids[n]}"; then
			log "node$n $(tail -n1 "$(node_dir "$n")/stop.log" | sed 's/^clickhouse.sh: //')"
		else
			echo "--- node$n: clickhouse.sh stop failed:" >&2
			cat "$(node_dir "$n")/stop.log" >&2
			rc=1
		fi
	done
	return "$rc"
}

# --- commands ---------------------------------------------------------------

do_start() {
	local n p running=
	# A cluster already (partly) running keeps the ports it started with.
	if [[ -f $dir/ports.env ]]; then
		[[ -n $(zk_pid) ]] && running=1
		for n in "${nodes[@]}"; do
			CH_TCP_PORT=0 "$single" status "$(node_dir "$n")" >/dev/null 2>&1 && running=1
		done
	fi
	if [[ -n $running ]]; then
		set_ports "$(sed -n 's/^base_port=//p' "$dir/ports.env")"
		log "cluster partly or fully running for $dir: keeping its ports"
	else
		set_ports "${CH_CLUSTER_BASE_PORT:-29100}"
		for p in "$zk_port" "${tcp[@]}" "${http[@]}" "${inter[@]}"; do
			if port_in_use "$p"; then
				die "port $p on 127.0.0.1 is already in use (set CH_CLUSTER_BASE_PORT; the cluster uses base..base+42)"
			fi
		done
		echo "base_port=$zk_port" >"$dir/ports.env"
	fi
	local t0=$SECONDS
	start_zk
	if ! start_nodes; then
		log "start failed; stopping what was started"
		stop_nodes || true
		stop_zk || true
		die "cluster did not start (logs under $dir/node*/logs and $(zk_dir)/logs)"
	fi
	log "cluster $cluster ready after $((SECONDS - t0))s"
	print_ports
}

do_stop() {
	local rc=0
	if [[ -f $dir/ports.env ]]; then
		set_ports "$(sed -n 's/^base_port=//p' "$dir/ports.env")"
	else
		set_ports 29100 # the ports do not matter to clickhouse.sh stop
	fi
	stop_nodes || rc=1
	stop_zk
	((rc == 0)) || die "some nodes did not stop"
	log "stopped"
}

do_status() {
	local n rc=0 pid
	[[ -f $dir/ports.env ]] || { log "not running for $dir (no ports.env)"; return 1; }
	set_ports "$(sed -n 's/^base_port=//p' "$dir/ports.env")"
	pid=$(zk_pid)
	if [[ -n $pid ]] && zk_ok; then
		log "zookeeper running (pid $pid, port $zk_port)"
	else
		log "zookeeper not running"
		rc=1
	fi
	for n in "${nodes[@]}"; do
		if "$single" status "$(node_dir "$n")" >/dev/null 2>&1; then
			log "node$n running (tcp ${tcp[$n]})"
		else
			log "node$n not running"
			rc=1
		fi
	done
	((rc == 0)) && print_ports
	return "$rc"
}

case $cmd in
start)
	dir=$(abs_dir "$2" yes) || die "cannot create $2"
	;;
stop | status)
	if ! dir=$(abs_dir "$2" no); then
		log "not running for $2 (no such directory)"
		[[ $cmd == stop ]] && exit 0 || exit 1
	fi
	;;
*) usage ;;
esac

case $cmd in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
esac
