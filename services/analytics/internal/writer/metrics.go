package writer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a Writer's Prometheus metrics, and its only counts: tests
// and benchmarks read them too.
type Metrics struct {
	batches      prometheus.Counter
	records      prometheus.Counter
	events       prometheus.Counter
	retries      prometheus.Counter
	deadLettered prometheus.Counter
	lastBatch    prometheus.Gauge
	batchRecords prometheus.Histogram
	rowsInserted *prometheus.CounterVec
	insertTime   prometheus.Histogram
}

// NewMetrics makes the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_analytics_" + name, Help: help})
	}
	m := &Metrics{
		batches:      counter("batches_total", "Batches inserted and committed."),
		records:      counter("records_total", "Kafka records in committed batches."),
		events:       counter("events_inserted_total", "Events inserted (rows of the events table)."),
		retries:      counter("insert_retries_total", "Failed batch writes that were retried."),
		deadLettered: counter("dead_lettered_total", "Records sent to the dead-letter topic."),
		lastBatch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_analytics_last_batch_timestamp_seconds", Help: "When the last batch was committed (unix seconds).",
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "baton_analytics_batch_records", Help: "Kafka records per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		rowsInserted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_analytics_rows_inserted_total", Help: "Rows inserted into ClickHouse, by table.",
		}, []string{"table"}),
		insertTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "baton_analytics_insert_duration_seconds", Help: "Time to insert one batch's rows into every table (each attempt).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
	}
	reg.MustRegister(m.batches, m.records, m.events, m.retries, m.deadLettered, m.lastBatch, m.batchRecords,
		m.rowsInserted, m.insertTime)
	return m
}

// inserted counts a written batch's rows by table.
func (m *Metrics) inserted(r *rows) {
	for table, n := range map[string]int{
		eventsTable.name:        len(r.events),
		callsTable.name:         len(r.calls),
		callEndsTable.name:      len(r.callEnds),
		handoffsTable.name:      len(r.handoffs),
		outcomesTable.name:      len(r.outcomes),
		agentMetricsTable.name:  len(r.metrics),
		agentStreamsTable.name:  len(r.streams),
		agentConnectsTable.name: len(r.connects),
	} {
		m.rowsInserted.WithLabelValues(table).Add(float64(n))
	}
}
