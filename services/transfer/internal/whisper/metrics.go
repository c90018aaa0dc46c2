package whisper

import "github.com/prometheus/client_golang/prometheus"

// Results of a whisper URL looked up by Fetcher.Fetch: the result label
// of baton_transfer_whisper_urls_total.
const (
	// ResultHit: served from the cache, or from another handoff's fetch
	// of the same URL under way (no request of its own).
	ResultHit = "hit"
	// ResultMiss: fetched, checked and cached.
	ResultMiss = "miss"
	// ResultRefused: no audio (see RefusedError.Reason).
	ResultRefused = "refused"
)

// Metrics count the whisper URLs looked up. A nil *Metrics counts nothing.
type Metrics struct {
	// URLs counts the whisper URLs looked up, by result (hit, miss,
	// refused).
	URLs *prometheus.CounterVec
	// Refused counts the refused ones, by reason (host_not_allowed,
	// too_large, timeout, …).
	Refused *prometheus.CounterVec
}

// NewMetrics registers the whisper URL metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		URLs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_whisper_urls_total",
			Help: "Whisper URLs looked up, by result: hit (cache or a fetch under way), miss (fetched), refused.",
		}, []string{"result"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_whisper_url_refused_total",
			Help: "Whisper URLs refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{ResultHit, ResultMiss, ResultRefused} {
		m.URLs.WithLabelValues(r) // shown at 0 before the first lookup
	}
	reg.MustRegister(m.URLs, m.Refused)
	return m
}

func (m *Metrics) result(result string) {
	if m != nil {
		m.URLs.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.URLs.WithLabelValues(ResultRefused).Inc()
		m.Refused.WithLabelValues(reason).Inc()
	}
}

// RegisterCache exposes the cache's size.
func (f *Fetcher) RegisterCache(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "baton_transfer_whisper_cache_entries", Help: "Whispers fetched from URLs held in the cache.",
		}, func() float64 { n, _ := f.cacheLen(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "baton_transfer_whisper_cache_bytes", Help: "Bytes of samples held in the whisper cache.",
		}, func() float64 { _, b := f.cacheLen(); return float64(b) }),
	)
}
