package checker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func encode(t *testing.T, topic, key string, msg proto.Message) *kgo.Record {
	t.Helper()
	ev, err := events.New("baton/test", key, msg, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode(topic, ev)
	require.NoError(t, err)
	return rec
}

// TestReadSeparatesCommittedFromAborted writes plain records, a committed
// and an aborted transaction, an undecodable record and a transaction left
// open to a kfake broker, and checks what Read makes of each.
func TestReadSeparatesCommittedFromAborted(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(2, "baton.calls", "baton.handoffs", "other"))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")

	plain, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer plain.Close()
	require.NoError(t, plain.ProduceSync(ctx,
		encode(t, "baton.calls", "a", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "a"}}),
		&kgo.Record{Topic: "baton.calls", Key: []byte("junk"), Value: []byte("not an event")},
		encode(t, "other", "x", &batonv1.CallStarted{}),
	).FirstErr())

	txn := func(id string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.TransactionalID(id))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		return cl
	}
	commit, abort, open := txn("commit"), txn("abort"), txn("open")
	for _, step := range []struct {
		cl  *kgo.Client
		cmd string
		end kgo.TransactionEndTry
	}{{abort, "cmd-aborted", kgo.TryAbort}, {commit, "cmd-a", kgo.TryCommit}} {
		require.NoError(t, step.cl.BeginTransaction())
		require.NoError(t, step.cl.ProduceSync(ctx,
			encode(t, "baton.handoffs", "a", &batonv1.HandoffCommand{CommandId: step.cmd, CallId: "a", Attempt: 1})).FirstErr())
		require.NoError(t, step.cl.EndTransaction(ctx, step.end))
	}
	require.NoError(t, open.BeginTransaction())
	require.NoError(t, open.ProduceSync(ctx,
		encode(t, "baton.handoffs", "b", &batonv1.HandoffCommand{CommandId: "cmd-open", CallId: "b", Attempt: 1})).FirstErr())
	require.NoError(t, plain.ProduceSync(ctx,
		encode(t, "baton.calls", "a", &batonv1.CallEnded{CallId: "a"})).FirstErr())

	recs, err := Read(ctx, brokers)
	require.NoError(t, err)
	byCommand := map[string]Record{}
	var calls []Record
	for _, r := range recs {
		require.NotEqual(t, "other", r.Topic, "only baton.* topics are read by default")
		if m, ok := r.Event.Data.(*batonv1.HandoffCommand); ok {
			byCommand[m.GetCommandId()] = r
		}
		if r.Topic == "baton.calls" {
			calls = append(calls, r)
		}
	}
	require.Len(t, calls, 3)
	var types []string
	for _, r := range calls {
		if r.Key == "junk" {
			require.Error(t, r.Err, "the junk record does not decode")
		} else {
			require.NoError(t, r.Err)
			types = append(types, r.Event.Type)
		}
	}
	require.Equal(t, []string{events.TypeCallStarted, events.TypeCallEnded}, types, "one call's records in offset order")
	for _, r := range calls {
		require.False(t, r.Aborted || r.Withheld, r.where())
	}
	require.Contains(t, byCommand, "cmd-a")
	require.False(t, byCommand["cmd-a"].Aborted || byCommand["cmd-a"].Withheld)
	require.True(t, byCommand["cmd-a"].Transactional)
	require.Contains(t, byCommand, "cmd-aborted")
	require.True(t, byCommand["cmd-aborted"].Aborted, "the abort marker was read")
	require.True(t, byCommand["cmd-aborted"].Withheld, "read_committed did not return it")
	require.NotContains(t, byCommand, "cmd-open", "records of open transactions are past the stable offset")

	rep := Check(recs, Options{Calls: []string{"a"}, RequireEnded: true, RequireHandoff: true})
	require.Equal(t, []string{"undecodable: record is not a Baton event"}, rules(rep), rep.Problems())
	require.Equal(t, 1, rep.Started)
	require.Equal(t, 1, rep.Commands)
	var aborted int
	for _, st := range rep.Topics {
		aborted += st.AbortedWithheld
	}
	require.Equal(t, 1, aborted)

	only, err := Read(ctx, brokers, "other")
	require.NoError(t, err)
	require.Len(t, only, 1)
	require.Equal(t, "other", only[0].Topic)
}

func TestAbortedOffsets(t *testing.T) {
	data := func(offset, producer int64, epoch int16) *kgo.Record {
		return &kgo.Record{Topic: "t", Offset: offset, ProducerID: producer, ProducerEpoch: epoch,
			Attrs: kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Transactional: true})}
	}
	marker := func(offset, producer int64, epoch int16, commit bool) *kgo.Record {
		r := data(offset, producer, epoch)
		r.Attrs = kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Transactional: true, Control: true})
		r.Key = []byte{0, 0, 0, 0}
		if commit {
			r.Key[3] = 1
		}
		return r
	}
	plain := &kgo.Record{Topic: "t", Offset: 0, ProducerID: 9}
	recs := []*kgo.Record{
		plain,
		data(1, 1, 0), data(2, 2, 0), data(3, 1, 0),
		marker(4, 1, 0, true),  // producer 1 commits 1 and 3
		marker(5, 2, 0, false), // producer 2 aborts 2
		data(6, 1, 1),          // producer 1, new transaction, fenced below
		data(7, 1, 2),          // a newer epoch: 6 was abandoned
		marker(8, 1, 2, true),  // commits 7 only
		data(9, 3, 0),          // no marker ever: aborted by the crash
	}
	got := abortedOffsets(recs)[tp{"t", 0}]
	var aborted []int64
	for o := range int64(10) {
		if got[o] {
			aborted = append(aborted, o)
		}
	}
	require.Equal(t, []int64{2, 5, 6, 9}, aborted)
}
