package kafkatest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A dropped Produce never lands; once the drop ends, it does.
func TestDropRequests(t *testing.T) {
	c := Start(t, 1, "t")
	var dropping atomic.Bool
	var dropped atomic.Int32
	dropping.Store(true)
	DropRequests(c, kmsg.Produce, func() bool {
		if dropping.Load() {
			dropped.Add(1)
			return true
		}
		return false
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordRetries(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	done := make(chan error, 1)
	cl.Produce(context.Background(), &kgo.Record{Topic: "t", Value: []byte("x")}, func(_ *kgo.Record, err error) { done <- err })
	deadline := time.Now().Add(10 * time.Second)
	for dropped.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if dropped.Load() == 0 {
		t.Fatal("no Produce was dropped")
	}
	select {
	case err := <-done:
		t.Fatalf("produce finished while dropped: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	dropping.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce never landed after the drop ended")
	}
}
