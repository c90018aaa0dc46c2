// Package clustertest runs a private ClickHouse cluster for tests of the
// cluster DDL (migrate.ForCluster): Start (from TestMain) launches, through
// deploy/local/clickhouse-cluster.sh in a temporary directory, a ZooKeeper
// and four of Debian's clickhouse-server 18.16, two shards of two replicas
// on 127.0.0.1, under the cluster name Name.
//
// Like chtest, a missing binary fails the tests that need the cluster,
// loudly; only `go test -short` skips them.
package clustertest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/chtest"
	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// Name is the cluster as the servers' remote_servers name it.
const Name = "baton"

// SkipMessage is the reason cluster tests give under -short.
const SkipMessage = "needs clickhouse-server and zookeeper; run without -short"

const (
	// startAttempts retries a start whose ports were taken meanwhile.
	startAttempts = 3
	// scriptTimeout bounds one run of the script (start waits for
	// ZooKeeper and for all four servers).
	scriptTimeout = 3 * time.Minute
)

// Node is one server of the cluster.
type Node struct {
	// Addr is the native TCP host:port.
	Addr string
	// Shard and Replica are the node's {shard} and {replica} macros.
	Shard, Replica string
}

// Cluster is a private four-node cluster, or why there is none.
type Cluster struct {
	// Nodes are node1..node4: shard 01 replicas s1r1 and s1r2, then shard
	// 02 replicas s2r1 and s2r2.
	Nodes []Node
	// StartTime is how long the script took to start the cluster.
	StartTime time.Duration
	script    chtest.Script
	err       error
	short     bool
}

// Start launches the cluster unless testing.Short() (flags must be parsed:
// call flag.Parse() in TestMain first). It never fails: an error is kept
// and reported by every test that asks for the cluster.
func Start() *Cluster {
	if testing.Short() {
		return &Cluster{short: true}
	}
	c := &Cluster{}
	c.err = c.start()
	return c
}

func (c *Cluster) start() error {
	if err := requireBinaries(); err != nil {
		return err
	}
	root, err := chtest.RepoRoot()
	if err != nil {
		return err
	}
	c.script = chtest.Script{Path: filepath.Join(root, "deploy", "local", "clickhouse-cluster.sh"), Timeout: scriptTimeout}
	c.script.Dir, err = os.MkdirTemp("", "baton-clickhouse-cluster-")
	if err != nil {
		return fmt.Errorf("clickhouse test cluster: %w", err)
	}
	var errs []error
	for range startAttempts {
		base, err := freeBase()
		if err != nil {
			errs = append(errs, err)
			break
		}
		t0 := time.Now()
		out, err := c.script.Run("start", "CH_CLUSTER_BASE_PORT="+strconv.Itoa(base))
		if err == nil {
			c.StartTime = time.Since(t0)
			if c.Nodes, err = parseNodes(out); err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("%s start: %w\n%s", c.script.Path, err, out))
			break
		}
		errs = append(errs, fmt.Errorf("%s start: %w\n%s", c.script.Path, err, out))
		// A failed start stops what it started; make sure before retrying.
		if out, err := c.script.Run("stop"); err != nil {
			errs = append(errs, fmt.Errorf("%s stop: %w\n%s", c.script.Path, err, out))
			return fmt.Errorf("clickhouse test cluster did not start: %w", errors.Join(errs...))
		}
	}
	if out, err := c.script.Run("stop"); err != nil {
		errs = append(errs, fmt.Errorf("%s stop: %w\n%s", c.script.Path, err, out))
	} else {
		_ = os.RemoveAll(c.script.Dir)
	}
	c.script.Dir = ""
	return fmt.Errorf("clickhouse test cluster did not start: %w", errors.Join(errs...))
}

// Stop stops the cluster and removes its directory (kept, with its logs,
// when the stop fails).
func (c *Cluster) Stop() { c.script.Stop("clustertest") }

// Require skips the test under -short and fails it when there is no cluster.
func (c *Cluster) Require(tb testing.TB) {
	tb.Helper()
	if c.short {
		tb.Skip(SkipMessage)
	}
	if c.err != nil {
		tb.Fatalf("ClickHouse cluster tests need Debian's clickhouse-server and zookeeper "+
			"(apt-get install clickhouse-server zookeeper, and a Java runtime), "+
			"or run `go test -short` to skip them: %v", c.err)
	}
}

// Config returns a connection config for node i (0-based) of the cluster,
// with Cluster set to Name, for database. The database is not created;
// it goes with the cluster when Stop removes it.
func (c *Cluster) Config(tb testing.TB, i int, database string) config.ClickHouse {
	tb.Helper()
	c.Require(tb)
	if i < 0 || i >= len(c.Nodes) {
		tb.Fatalf("clustertest: no node %d (the cluster has %d)", i, len(c.Nodes))
	}
	cfg := config.Default().ClickHouse
	cfg.Addr = c.Nodes[i].Addr
	cfg.Database = database
	cfg.Cluster = Name
	return cfg
}

// Conn opens a connection to node i (0-based) and database; it is closed
// when the test ends.
func (c *Cluster) Conn(tb testing.TB, i int, database string) driver.Conn {
	tb.Helper()
	cfg := c.Config(tb, i, database)
	conn, err := clickhouse.Open(chconn.Options(cfg, database))
	if err != nil {
		tb.Fatalf("open clickhouse node %d (%s): %v", i+1, cfg.Addr, err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Database returns a database name unique to the run: t_<random>.
func Database() string {
	return "t_" + strings.ToLower(rand.Text()[:10])
}

var nodeLine = regexp.MustCompile(`(?m)^node([1-4])_tcp_port=([0-9]+) .*shard=([0-9]+) replica=([a-z0-9]+)$`)

// parseNodes reads the four nodes from the script's output.
func parseNodes(out []byte) ([]Node, error) {
	nodes := make([]Node, 4)
	ms := nodeLine.FindAllSubmatch(out, -1)
	for _, m := range ms {
		i, _ := strconv.Atoi(string(m[1]))
		nodes[i-1] = Node{
			Addr:    net.JoinHostPort("127.0.0.1", string(m[2])),
			Shard:   string(m[3]),
			Replica: string(m[4]),
		}
	}
	for i, n := range nodes {
		if n.Addr == "" {
			return nil, fmt.Errorf("no node%d_tcp_port line in the output", i+1)
		}
	}
	return nodes, nil
}

// requireBinaries checks for what the script needs, to fail with the
// package to install.
func requireBinaries() error {
	var missing []string
	if _, err := chtest.ServerBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if p := os.Getenv("JAVA"); p != "" {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, fmt.Sprintf("java: JAVA: %v", err))
		}
	} else if _, err := exec.LookPath("java"); err != nil {
		missing = append(missing, "java is not installed (apt-get install default-jre-headless, or set JAVA)")
	}
	jar := os.Getenv("ZOOKEEPER_JAR")
	if jar == "" {
		jar = "/usr/share/java/zookeeper.jar"
	}
	if _, err := os.Stat(jar); err != nil {
		missing = append(missing, fmt.Sprintf("zookeeper is not installed (apt-get install zookeeper, or set ZOOKEEPER_JAR): %v", err))
	}
	if _, err := exec.LookPath("curl"); err != nil {
		missing = append(missing, "curl is not installed (apt-get install curl)")
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// freeBase finds a base port whose whole span (the ports the script
// derives from it) is free on 127.0.0.1 now. The OS hands out ephemeral
// ports from 32768 up, so bases are drawn below that.
func freeBase() (int, error) {
	const lo, hi = 20000, 32000
	var buf [2]byte
	for range 50 {
		if _, err := rand.Read(buf[:]); err != nil {
			return 0, fmt.Errorf("free base port: %w", err)
		}
		base := lo + (int(buf[0])<<8|int(buf[1]))%((hi-lo)/100)*100
		if spanFree(base) {
			return base, nil
		}
	}
	return 0, errors.New("free base port: no free span of ports between 20000 and 32000")
}

// spanFree reports whether every port the script derives from base (base,
// and base+10N .. base+10N+2 for node N) can be bound.
func spanFree(base int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := []int{base}
	for n := 1; n <= 4; n++ {
		ports = append(ports, base+10*n, base+10*n+1, base+10*n+2)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}
