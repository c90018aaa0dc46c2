package sipprobe

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		uri, transport   string
		wantT, wantAddr  string
		wantErrSubstring string
	}{
		{uri: "sip:queue@10.0.0.5", wantT: UDP, wantAddr: "10.0.0.5:5060"},
		{uri: "sip:queue@10.0.0.5:5080;transport=tcp", wantT: TCP, wantAddr: "10.0.0.5:5080"},
		{uri: "sips:desk@pbx.example.com", wantT: TLS, wantAddr: "pbx.example.com:5061"},
		{uri: "sip:desk@pbx.example.com", transport: "tls", wantT: TLS, wantAddr: "pbx.example.com:5061"},
		{uri: "sip:desk@[2001:db8::1]:5070", wantT: UDP, wantAddr: "[2001:db8::1]:5070"},
		{uri: "tel:+15551234567", wantErrSubstring: "want a sip: or sips: URI"},
		{uri: "sip:desk@pbx.example.com;transport=sctp", wantErrSubstring: `transport "SCTP"`},
		{uri: "not a uri", wantErrSubstring: "probe target"},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			_, transport, addr, err := Resolve(Target{Name: "d", URI: tc.uri, Transport: tc.transport})
			if tc.wantErrSubstring != "" {
				require.ErrorIs(t, err, ErrTarget)
				require.ErrorContains(t, err, tc.wantErrSubstring)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantT, transport)
			require.Equal(t, tc.wantAddr, addr)
		})
	}
}

// TestProbeDown: a target that cannot be probed as given and a UDP peer
// that reads but never answers are both reported down with the reason;
// neither is an error or a crash.
func TestProbeDown(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	got := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 2048)
		if _, _, err := silent.ReadFrom(buf); err == nil {
			got <- struct{}{}
		}
	}()
	p, err := New(Options{Timeout: 300 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })

	r := p.Probe(t.Context(), Target{Name: "bad", URI: "tel:+1555"})
	require.False(t, r.Up)
	require.Contains(t, r.Error, "sip: or sips:")

	r = p.Probe(t.Context(), Target{Name: "silent", URI: "sip:x@" + silent.LocalAddr().String()})
	require.False(t, r.Up)
	require.Zero(t, r.Status)
	require.Equal(t, "no answer (timeout)", r.Error)
	<-got // the OPTIONS did reach the peer
}
