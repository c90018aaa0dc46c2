//go:build reliability

package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// requestCounter counts, by API name, the Kafka requests a kfake cluster
// parsed (what got past TLS), without handling any of them.
type requestCounter struct {
	mu    sync.Mutex
	count map[string]int
}

func (r *requestCounter) observe(c *kfake.Cluster) {
	r.count = map[string]int{}
	c.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		r.mu.Lock()
		r.count[kmsg.NameForKey(req.Key())]++
		r.mu.Unlock()
		return nil, nil, false
	})
}

// take returns the counts since the last take and starts again.
func (r *requestCounter) take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.count
	r.count = map[string]int{}
	return out
}

// attempt is what one kind of client did: records it tried, records the
// broker acknowledged, connections it opened and how they failed, and the
// requests the broker parsed meanwhile.
type attempt struct {
	name     string
	tried    int
	acked    int
	connects int
	errs     map[string]int // the first error of each refused record, by kind
	requests map[string]int
}

func (a attempt) String() string {
	return fmt.Sprintf("%s: %d of %d produced over %d connections, refused %s, broker parsed %s", a.name, a.acked, a.tried,
		a.connects, sortedCounts(a.errs), sortedCounts(a.requests))
}

// sortedCounts renders a count map in key order ("none" when empty).
func sortedCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// connWatch is a client hook: it counts connections and hands the first
// failure (a dial, TLS, SASL or request error) to failed, so an attempt
// ends at its refusal instead of franz-go retrying until the deadline.
type connWatch struct {
	mu       sync.Mutex
	connects int
	first    error
	failed   context.CancelFunc
}

func (w *connWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first == nil {
		w.first = err
		w.failed()
	}
}

func (w *connWatch) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	w.mu.Lock()
	w.connects++
	w.mu.Unlock()
	if err != nil {
		w.fail(fmt.Errorf("connect: %w", err))
	}
}

func (w *connWatch) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if err := e2e.Err(); err != nil {
		w.fail(fmt.Errorf("%s: %w", kmsg.NameForKey(key), err))
	}
}

// errorKind shortens a refusal to what tells the cases apart.
func errorKind(err error) string {
	s := err.Error()
	step, _, _ := strings.Cut(s, ":")
	for _, k := range []string{"SASL_AUTHENTICATION_FAILED", "EOF", "connection reset", "tls:", "broken pipe"} {
		if strings.Contains(s, k) {
			return step + " " + strings.TrimSuffix(k, ":")
		}
	}
	return s
}

// produceEach produces n records, each from a fresh client with c's
// options (a new connection, TLS handshake and SASL exchange each), keyed
// name-i, and reports what happened.
func produceEach(t *testing.T, name string, c Config, n int, seen *requestCounter) attempt {
	t.Helper()
	a := attempt{name: name, tried: n, errs: map[string]int{}}
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		w := &connWatch{failed: cancel}
		cl, err := kgo.NewClient(append(ClientOpts(c, slog.New(slog.DiscardHandler)), kgo.RequestRetries(0), kgo.WithHooks(w))...)
		require.NoError(t, err)
		err = cl.ProduceSync(ctx, &kgo.Record{Topic: c.Topics.Handoffs, Key: fmt.Appendf(nil, "%s-%d", name, i),
			Value: []byte(`{"method":"INVITE","route":"sip:+1900555@premium.example"}`)}).FirstErr()
		cancel()
		cl.Close()
		w.mu.Lock()
		a.connects += w.connects
		first := w.first
		w.mu.Unlock()
		if err != nil {
			if first == nil {
				first = err
			}
			a.errs[errorKind(first)]++
			continue
		}
		a.acked++
	}
	if seen != nil {
		a.requests = seen.take()
	}
	return a
}

// topicKeys reads every record of topic through c and counts them by the
// name part of their key.
func topicKeys(t *testing.T, c Config, topic string) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(append(ClientOpts(c, slog.New(slog.DiscardHandler)), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	end, err := endOffset(ctx, cl, topic)
	require.NoError(t, err)
	out := map[string]int{}
	var read int64
	for read < end {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records", read, end)
		fs.EachRecord(func(r *kgo.Record) {
			read++
			name, _, _ := strings.Cut(string(r.Key), "-")
			out[name]++
		})
	}
	return out
}

// endOffset is the high watermark of topic's partition 0.
func endOffset(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list end offsets: %w", err)
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok {
		return 0, fmt.Errorf("list end offsets: no %s/0", topic)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("list end offsets: %w", o.Err)
	}
	return o.Offset, nil
}

// TestReliabilitySecurityKafkaAuth (issue 14, finding 11): before, Baton's
// clients had no TLS or SASL settings, so brokers had to accept anyone,
// and anyone reaching them could write commands for transfer to execute.
// Now a broker behind TLS and SCRAM-SHA-256 (kfake over TCP) takes records
// only from a client with the CA and the right password: clients without
// TLS (with or without the password), with TLS but no SASL, or with a
// wrong password produce nothing onto baton.commands.
func TestReliabilitySecurityKafkaAuth(t *testing.T) {
	const perClient = 20
	topics := DefaultConfig().Topics

	// Before: the only broker Baton could talk to was an open one.
	open, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	defer open.Close()
	anonymous := DefaultConfig()
	anonymous.Brokers = open.ListenAddrs()
	before := produceEach(t, "anonymous", anonymous, perClient, nil)
	require.Equal(t, perClient, before.acked, "an open broker takes anyone's commands")

	serverTLS, ca := selfSigned(t)
	secured, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.EnableSASL(),
		kfake.Superuser(SASLScramSHA256, "baton", "right-password"), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	defer secured.Close()
	var seen requestCounter
	seen.observe(secured)

	t.Setenv("BATON_TEST_KAFKA_PASSWORD", "right-password")
	t.Setenv("BATON_TEST_KAFKA_WRONG", "wrong-password")
	right := DefaultConfig()
	right.Brokers = secured.ListenAddrs()
	right.TLS = TLS{Enabled: true, CAFile: ca}
	right.SASL = SASL{Mechanism: SASLScramSHA256, Username: "baton", PasswordEnv: "BATON_TEST_KAFKA_PASSWORD"}
	require.NoError(t, right.Validate())

	plainNoSASL := right
	plainNoSASL.TLS, plainNoSASL.SASL = TLS{}, SASL{}
	plainRightPassword := right
	plainRightPassword.TLS = TLS{}
	tlsNoSASL := right
	tlsNoSASL.SASL = SASL{}
	wrongPassword := right
	wrongPassword.SASL.PasswordEnv = "BATON_TEST_KAFKA_WRONG"

	attackers := []attempt{
		produceEach(t, "plaintext", plainNoSASL, perClient, &seen),
		produceEach(t, "plaintextscram", plainRightPassword, perClient, &seen),
		produceEach(t, "tlsnosasl", tlsNoSASL, perClient, &seen),
		produceEach(t, "wrongpassword", wrongPassword, perClient, &seen),
	}
	good := produceEach(t, "baton", right, perClient, &seen)

	for _, a := range attackers {
		require.Zero(t, a.acked, a.String())
		require.Zero(t, a.requests["Produce"], "%s: a produce request reached the broker", a.name)
	}
	for _, a := range attackers[:2] {
		require.Empty(t, a.requests, "%s: a request without TLS was parsed", a.name)
	}
	require.Equal(t, perClient, good.acked, good.String())
	onTopic := topicKeys(t, right, topics.Handoffs)
	require.Equal(t, map[string]int{"baton": perClient}, onTopic, "records on %s", topics.Handoffs)

	var refused []string
	for _, a := range attackers {
		refused = append(refused, a.String())
	}
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load: fmt.Sprintf("kfake over TCP with TLS (self-signed CA) and SCRAM-SHA-256 (user baton); %d records per client kind, each from a fresh client (its own connection, handshake and SASL exchange)",
			perClient),
		Faults: "finding 11: clients that can reach the broker try to write commands (a premium-number INVITE) to " + topics.Handoffs,
		Inputs: "no TLS and no SASL; no TLS with the right SCRAM password; TLS with the CA but no SASL; TLS with SCRAM and a wrong password; TLS with SCRAM and the right password",
		Lost: fmt.Sprintf("before (no kafka.tls/kafka.sasl, brokers had to be open): %s; now %s; %s; records on %s: %d, all %d from the right client, 0 from the others",
			before, strings.Join(refused, "; "), good, topics.Handoffs, onTopic["baton"], perClient),
	})
}
