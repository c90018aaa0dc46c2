// Package kafkatest starts an in-process Kafka cluster (franz-go's kfake)
// that tests reach over real TCP on loopback, and injects broker-side
// faults into it.
package kafkatest

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Start starts a one-broker kfake cluster with the given topics
// (partitions each) and stops it when the test ends. The cluster is
// returned for its controls (ControlKey, SleepControl...).
func Start(tb testing.TB, partitions int32, topics ...string) *kfake.Cluster {
	tb.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatalf("start kfake cluster: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// NewCluster is Start for tests that need only the cluster's address.
func NewCluster(tb testing.TB, partitions int32, topics ...string) []string {
	tb.Helper()
	return Start(tb, partitions, topics...).ListenAddrs()
}

// ErrDropped is what a dropped request's connection dies of.
var ErrDropped = errors.New("kafkatest: request dropped")

// DropRequests makes c drop every request of kind key while drop returns
// true: the connection it came on is closed and the request never reaches
// the cluster's state, as if the broker or the network failed. Requests
// are handled as usual otherwise. The control stays installed for the
// cluster's life.
func DropRequests(c *kfake.Cluster, key kmsg.Key, drop func() bool) {
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !drop() {
			return nil, nil, false
		}
		return nil, ErrDropped, true
	})
}
