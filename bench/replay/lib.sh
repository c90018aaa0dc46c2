# Shared by bench/replay/*.sh: a private clickhouse-server 18.16 (through
# deploy/local/clickhouse.sh) on free ports, migrated with
# schemas/clickhouse/*.sql, and the binaries, built into a temp dir.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CH_TCP_PORT=${CH_TCP_PORT:-$(free_port)} CH_HTTP_PORT=${CH_HTTP_PORT:-$(free_port)}
ch_addr=127.0.0.1:$CH_TCP_PORT
cleanup() {
	"$root/deploy/local/clickhouse.sh" stop "$work/ch" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
chq() { clickhouse-client --port "$CH_TCP_PORT" -d baton "$@"; }

start_clickhouse() {
	"$root/deploy/local/clickhouse.sh" start "$work/ch" >/dev/null
	echo "== clickhouse-server $(clickhouse-client --port "$CH_TCP_PORT" -q 'SELECT version()') on $ch_addr"
	clickhouse-client --port "$CH_TCP_PORT" -q "CREATE DATABASE baton"
	for f in "$root"/schemas/clickhouse/*.sql; do
		chq --multiquery <"$f"
	done
}

build() {
	echo "== building baton and router into $work/bin"
	(cd "$root/services/router" && go build -o "$work/bin/router" ./cmd/router)
	(cd "$root/cmd/baton" && go build -o "$work/bin/baton" . && go build -o "$work/bin/synthgen" ./internal/synthcalls/synthgen)
}
