package uac

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-voice/baton/pkg/connguard"
)

// Limits bounds what peers can make the TCP and TLS listeners hold; a zero
// field takes connguard's default (1024 connections, 64 per source, 5 s to
// the first bytes, 3 min idle).
//
// There is no source check (connguard.Policy.Allow is nil): transfer has
// no trunk list of its own. Its peers are the SBC of each caller's dialog
// and whatever destination a command names, so any address may have to
// send it a BYE in one of its legs; the caps and the timeouts are the
// bound.
type Limits = connguard.Config

// Counters is what the client's listeners and UDP socket counted.
type Counters struct {
	// TCP and TLS together.
	ConnsRefusedFull, ConnsRefusedPerSource, ConnsTimedOut uint64
	ConnsOpen                                              int64
	// UDP datagrams dropped, by reason, and passed on to sipgo.
	UDPGarbage, UDPStrayResponse, UDPStrayRequest, UDPPassed uint64
	// UDPPoolEntries is the size of sipgo's UDP connection pool;
	// UDPSources the sources whose entries the guard will delete.
	UDPPoolEntries, UDPSources int
}

// UDPDropped is the number of UDP datagrams dropped.
func (c Counters) UDPDropped() uint64 { return c.UDPGarbage + c.UDPStrayResponse + c.UDPStrayRequest }

// Counters returns the counts now.
func (c *Client) Counters() Counters {
	out := Counters{
		ConnsRefusedFull:      c.conns.RefusedFull.Load(),
		ConnsRefusedPerSource: c.conns.RefusedSource.Load(),
		ConnsTimedOut:         c.conns.TimedOut.Load(),
		ConnsOpen:             c.conns.Open.Load(),
		UDPGarbage:            c.guard.stats.Garbage.Load(),
		UDPStrayResponse:      c.guard.stats.StrayResponse.Load(),
		UDPStrayRequest:       c.guard.stats.StrayRequest.Load(),
		UDPPassed:             c.guard.stats.Passed.Load(),
		UDPSources:            c.guard.sourceCount(),
	}
	if p := c.ua.TransportLayer().Pool("udp"); p != nil {
		out.UDPPoolEntries = p.Size()
	}
	return out
}

// RegisterMetrics exposes the counters on reg.
func (c *Client) RegisterMetrics(reg prometheus.Registerer) {
	for reason, f := range map[string]func() uint64{
		"full":       c.conns.RefusedFull.Load,
		"per_source": c.conns.RefusedSource.Load,
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "baton_transfer_sip_connections_refused_total",
			Help: "SIP TCP and TLS connections closed at accept: sip.max_connections open (full), " +
				"sip.max_connections_per_source open from its address (per_source).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(f()) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_transfer_sip_connections_timed_out_total",
		Help: "SIP TCP and TLS connections closed for silence (sip.first_read_timeout, TLS handshake included, or sip.idle_timeout).",
	}, func() float64 { return float64(c.conns.TimedOut.Load()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_transfer_sip_connections_open", Help: "SIP TCP and TLS connections open now (accepted ones).",
	}, func() float64 { return float64(c.conns.Open.Load()) }))
	for reason, f := range map[string]func() uint64{
		DropGarbage:       c.guard.stats.Garbage.Load,
		DropStrayResponse: c.guard.stats.StrayResponse.Load,
		DropStrayRequest:  c.guard.stats.StrayRequest.Load,
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "baton_transfer_sip_udp_dropped_total",
			Help: "UDP datagrams dropped before SIP processing: not SIP (garbage), a response to no request of ours " +
				"(stray_response), a request outside our dialogs (stray_request).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(f()) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_transfer_sip_udp_pool_entries", Help: "Entries in sipgo's UDP connection pool (one per recent peer address).",
	}, func() float64 { return float64(c.Counters().UDPPoolEntries) }))
}
