// Package broker runs Baton's embedded Kafka-protocol broker: one franz-go
// kfake node that persists its log and state in a data directory, so
// events and committed offsets survive a restart. It is for the local
// stack and tests; production runs a real Kafka cluster.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// lockName is the file in the data dir a running broker holds locked.
const lockName = ".lock"

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	listen  string
	addr    string
	dataDir string
	lock    *os.File

	closeOnce sync.Once
	closeErr  error
}

// Start binds cfg.Listen, loads the data dir (or starts it empty), creates
// the missing topics, ends the transactions a crash left open with abort
// markers (repair.go), and only then lets clients connect.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Bind before touching the data dir: a second `baton broker` with the
	// default flags then hears about the busy port first.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	dir, lock, err := openDataDir(cfg.DataDir)
	if err != nil {
		_ = ln.Close() // nothing was accepted yet
		return nil, err
	}
	// Name the bound address the way the operator wrote it (Go reports a
	// 0.0.0.0 listener as [::]), with the port the OS chose for port 0.
	host, _, _ := net.SplitHostPort(cfg.Listen) // Validate checked it
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	bound := net.JoinHostPort(host, port)
	advertised := bound
	if cfg.Advertise != "" {
		advertised = cfg.Advertise
	}
	// Clients wait at the gate until transactions a crash left open are
	// aborted (repair.go).
	gate := newGatedListener(ln, advertisedAddr(advertised))
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake.Ports always binds 127.0.0.1; hand it our own listener so
		// it serves on the host the operator chose, and make the listener
		// report the advertised address, which kfake puts in metadata.
		kfake.ListenFn(func(string, string) (net.Listener, error) { return gate, nil }),
		kfake.DataDir(dir),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		kfake.WithLogger(slogAdapter{logger: logger.With("component", "kfake")}),
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if cfg.AutoCreateTopics {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		_ = ln.Close() // kfake closes it on most paths; closing twice is harmless
		return nil, errors.Join(fmt.Errorf("start broker on data dir %s: %w", dir, err), lock.Close())
	}
	b := &Broker{cluster: cluster, listen: bound, addr: advertised, dataDir: dir, lock: lock}
	if err := b.ensureTopics(ctx, logger, cfg.Partitions, cfg.Topics); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	if _, err := abortOpenTxns(ctx, gate, advertised, logger); err != nil {
		return nil, errors.Join(fmt.Errorf("abort transactions left open in %s: %w", dir, err), b.Close())
	}
	gate.open()
	return b, nil
}

// ensureTopics creates the topics that do not exist. kfake.SeedTopics is
// not enough: it applies only to an empty data dir, and a topic added to
// --topics later must still appear. Existing topics are left as they are.
func (b *Broker) ensureTopics(ctx context.Context, logger *slog.Logger, partitions int32, topics []string) error {
	for _, t := range topics {
		if b.cluster.TopicInfo(t) != nil {
			if n := int32(len(b.cluster.PartitionInfos(t))); n != partitions {
				logger.WarnContext(ctx, "topic exists with another partition count; leaving it", "topic", t, "partitions", n, "want", partitions)
			}
			continue
		}
		if err := b.cluster.CreateTopic(t, partitions, nil); err != nil {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
		logger.InfoContext(ctx, "created topic", "topic", t, "partitions", partitions)
	}
	return nil
}

// Addr is the address clients are told to connect to.
func (b *Broker) Addr() string { return b.addr }

// ListenAddr is the address the broker is bound to.
func (b *Broker) ListenAddr() string { return b.listen }

// DataDir is the absolute path of the data directory.
func (b *Broker) DataDir() string { return b.dataDir }

// Close stops accepting connections, writes the cluster state to the data
// dir and releases it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.cluster.Close()
		if err := b.lock.Close(); err != nil {
			b.closeErr = fmt.Errorf("release data dir %s: %w", b.dataDir, err)
		}
	})
	return b.closeErr
}

// Run starts the broker, writes one ready line to out, serves until ctx
// ends and closes the broker.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, out io.Writer) error {
	b, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	where := b.ListenAddr()
	if b.Addr() != where {
		where += ", advertised as " + b.Addr()
	}
	if _, err := fmt.Fprintf(out, "broker ready on %s (data dir %s)\n", where, b.DataDir()); err != nil {
		return errors.Join(fmt.Errorf("write ready line: %w", err), b.Close())
	}
	<-ctx.Done()
	logger.InfoContext(ctx, "shutting down; persisting state", "data_dir", b.DataDir())
	if err := b.Close(); err != nil {
		return err
	}
	logger.InfoContext(ctx, "broker stopped")
	return nil
}

// openDataDir creates dir if needed and locks it; the lock file doubles as
// the check that the directory is writable.
func openDataDir(dir string) (string, *os.File, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrDataDirNotWritable, abs, err)
	}
	f, err := os.OpenFile(filepath.Join(abs, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrDataDirNotWritable, abs, err)
	}
	if err := lockFile(f); err != nil {
		return "", nil, errors.Join(fmt.Errorf("%w: %s", err, abs), f.Close())
	}
	return abs, f, nil
}

// advertisedAddr is a net.Addr for a host:port that may name a host.
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// slogAdapter sends kfake's logs to slog. kfake logs every request at its
// info level, so that is slog's debug here, and kfake's debug is below it.
type slogAdapter struct{ logger *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, format string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelInfo:
		l = slog.LevelDebug
	default:
		l = slog.LevelDebug - 4
	}
	ctx := context.Background() // kfake's Logger carries no context
	if !a.logger.Enabled(ctx, l) {
		return
	}
	a.logger.Log(ctx, l, fmt.Sprintf(format, args...))
}
