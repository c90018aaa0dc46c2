// Package kafkatest starts an in-process Kafka cluster (franz-go's kfake)
// that tests reach over real TCP on loopback.
package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// NewCluster starts a one-broker kfake cluster with the given topics
// (partitions each), stops it when the test ends, and returns its address.
func NewCluster(tb testing.TB, partitions int32, topics ...string) []string {
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
	return c.ListenAddrs()
}
