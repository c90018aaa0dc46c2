package whisper

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/pcm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// origin is a whisper server on loopback that counts its requests by
// path.
type origin struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string]int
}

func (o *origin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests[path]
}

func (o *origin) total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.requests {
		n += c
	}
	return n
}

// serve starts an origin (https with useTLS) that answers with h.
func serve(t testing.TB, useTLS bool, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{requests: make(map[string]int)}
	counted := func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.requests[r.URL.Path]++
		o.mu.Unlock()
		h(w, r)
	}
	if useTLS {
		o.Server = httptest.NewTLSServer(http.HandlerFunc(counted))
	} else {
		o.Server = httptest.NewServer(http.HandlerFunc(counted))
	}
	t.Cleanup(o.Close)
	return o
}

// wavHandler serves b.
func wavHandler(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "audio/wav")
		_, _ = w.Write(b)
	}
}

// newFetcher allows 127.0.0.1 (the origins' host) with roomy limits,
// trusting o's certificate when it has one.
func newFetcher(t testing.TB, o *origin, tune func(*FetchOptions)) (*Fetcher, *Metrics) {
	t.Helper()
	opts := FetchOptions{
		AllowHosts:   []string{"127.0.0.1"},
		Timeout:      10 * time.Second,
		MaxBytes:     1 << 20,
		MaxDuration:  10 * time.Second,
		CacheEntries: 8,
		CacheBytes:   8 << 20,
		CacheTTL:     time.Minute,
	}
	if o != nil && o.Certificate() != nil {
		pool := x509.NewCertPool()
		pool.AddCert(o.Certificate())
		opts.RootCAs = pool
	}
	if tune != nil {
		tune(&opts)
	}
	m := NewMetrics(prometheus.NewRegistry())
	f, err := NewFetcher(opts, m, slogDiscard())
	require.NoError(t, err)
	t.Cleanup(f.Close)
	return f, m
}

func tone(n int) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16((i%80)*400 - 16000)
	}
	return s
}

func requireRefused(t testing.TB, err error, reason, detail string) {
	t.Helper()
	require.ErrorIs(t, err, ErrAudio, "a refused URL fails like a bad whisper file")
	require.Equal(t, reason, Reason(err), "%v", err)
	require.ErrorContains(t, err, detail)
}

// TestFetchOverTLS: a whisper from an allowed https origin (its CA passed
// as RootCAs) plays the WAV's frames; the same URL again is served from
// the cache, and the origin sees one request.
func TestFetchOverTLS(t *testing.T) {
	samples := tone(1000)
	wav := WAV(8000, 1, samples)
	o := serve(t, true, wavHandler(wav))
	f, m := newFetcher(t, o, nil)

	a, err := f.Fetch(t.Context(), o.URL+"/summary.wav")
	require.NoError(t, err)
	require.Equal(t, samples, a.Samples)
	want, err := ParseWAV(wav)
	require.NoError(t, err)
	for _, codec := range []string{"PCMU", "PCMA"} {
		got, err := a.Frames(codec)
		require.NoError(t, err)
		wantFrames, err := want.Frames(codec)
		require.NoError(t, err)
		require.Equal(t, wantFrames, got, codec)
	}
	got, err := a.Frames("PCMU")
	require.NoError(t, err)
	require.Equal(t, pcm.ULaw(samples[161]), got[1][1])

	again, err := f.Fetch(t.Context(), o.URL+"/summary.wav")
	require.NoError(t, err)
	require.Equal(t, samples, again.Samples)
	require.Equal(t, 1, o.total(), "the second handoff is served from the cache")
	require.InDelta(t, 1, testutil.ToFloat64(m.URLs.WithLabelValues(ResultMiss)), 0)
	require.InDelta(t, 1, testutil.ToFloat64(m.URLs.WithLabelValues(ResultHit)), 0)
	require.InDelta(t, 0, testutil.ToFloat64(m.URLs.WithLabelValues(ResultRefused)), 0)
}

// TestFetchVerifiesTLS: without the origin's CA the certificate is
// refused; there is no switch to skip verification.
func TestFetchVerifiesTLS(t *testing.T) {
	o := serve(t, true, wavHandler(WAV(8000, 1, tone(160))))
	f, m := newFetcher(t, nil, nil)
	_, err := f.Fetch(t.Context(), o.URL+"/w.wav")
	requireRefused(t, err, ReasonFetch, "certificate")
	require.InDelta(t, 1, testutil.ToFloat64(m.Refused.WithLabelValues(ReasonFetch)), 0)
}

// TestFetchOnceForConcurrentHandoffs: handoffs that want the same URL
// while it is being fetched wait for that fetch: one request.
func TestFetchOnceForConcurrentHandoffs(t *testing.T) {
	const handoffs = 8
	samples := tone(500)
	release := make(chan struct{})
	o := serve(t, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		wavHandler(WAV(8000, 1, samples))(w, r)
	})
	f, m := newFetcher(t, o, nil)
	u := o.URL + "/w.wav"
	type result struct {
		a   Audio
		err error
	}
	results := make(chan result, handoffs)
	for range handoffs {
		go func() {
			a, err := f.Fetch(t.Context(), u)
			results <- result{a, err}
		}()
	}
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		fl := f.flights[u]
		return fl != nil && fl.waiters == handoffs-1
	}, 10*time.Second, time.Millisecond, "all but one handoff wait for the fetch under way")
	close(release)
	for range handoffs {
		r := <-results
		require.NoError(t, r.err)
		require.Equal(t, samples, r.a.Samples)
	}
	require.Equal(t, 1, o.total())
	require.InDelta(t, 1, testutil.ToFloat64(m.URLs.WithLabelValues(ResultMiss)), 0)
	require.InDelta(t, handoffs-1, testutil.ToFloat64(m.URLs.WithLabelValues(ResultHit)), 0)
}

// TestFetchAbandonedByItsHandoff: when the handoff that started a fetch
// goes away (shutdown), one that waited for it fetches for itself.
func TestFetchAbandonedByItsHandoff(t *testing.T) {
	samples := tone(160)
	var first atomic.Bool
	o := serve(t, false, func(w http.ResponseWriter, r *http.Request) {
		if first.CompareAndSwap(false, true) {
			<-r.Context().Done() // never answers the first request
			return
		}
		wavHandler(WAV(8000, 1, samples))(w, r)
	})
	f, _ := newFetcher(t, o, nil)
	u := o.URL + "/w.wav"
	leaderCtx, cancel := context.WithCancel(t.Context())
	defer cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := f.Fetch(leaderCtx, u)
		leader <- err
	}()
	require.Eventually(t, func() bool { return o.total() == 1 }, 10*time.Second, time.Millisecond)
	waiter := make(chan Audio, 1)
	go func() {
		a, err := f.Fetch(t.Context(), u)
		if err != nil {
			t.Error(err)
		}
		waiter <- a
	}()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.flights[u] != nil && f.flights[u].waiters == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	requireRefused(t, <-leader, ReasonCanceled, "abandoned")
	require.Equal(t, samples, (<-waiter).Samples)
	require.Equal(t, 2, o.total())
}

// TestFetchRefusesHostsNotAllowed: nothing is requested from a host
// outside allow_hosts, and an empty allow_hosts refuses every URL.
func TestFetchRefusesHostsNotAllowed(t *testing.T) {
	o := serve(t, false, wavHandler(WAV(8000, 1, tone(160))))
	for _, tc := range []struct {
		name   string
		allow  []string
		url    string
		reason string
		detail string
	}{
		{name: "other host", allow: []string{"cdn.example.com", "*.tts.example.net"}, url: o.URL + "/w.wav",
			reason: ReasonHostNotAllowed, detail: "host 127.0.0.1 is not in invite.whisper.allow_hosts"},
		{name: "empty allowlist", url: o.URL + "/w.wav",
			reason: ReasonHostNotAllowed, detail: "whisper URLs are refused: invite.whisper.allow_hosts is empty"},
		{name: "localhost is not 127.0.0.1", allow: []string{"127.0.0.1"}, url: strings.Replace(o.URL, "127.0.0.1", "localhost", 1) + "/w.wav",
			reason: ReasonHostNotAllowed, detail: "host localhost is not"},
		{name: "scheme", allow: []string{"127.0.0.1"}, url: "ftp://127.0.0.1/w.wav", reason: ReasonBadURL, detail: `scheme "ftp"`},
		{name: "credentials", allow: []string{"127.0.0.1"}, url: strings.Replace(o.URL, "://", "://user:secret@", 1) + "/w.wav",
			reason: ReasonBadURL, detail: "credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := newFetcher(t, o, func(opts *FetchOptions) { opts.AllowHosts = tc.allow })
			_, err := f.Fetch(t.Context(), tc.url)
			requireRefused(t, err, tc.reason, tc.detail)
			require.NotContains(t, err.Error(), "secret")
			require.InDelta(t, 1, testutil.ToFloat64(m.Refused.WithLabelValues(tc.reason)), 0)
			require.InDelta(t, 1, testutil.ToFloat64(m.URLs.WithLabelValues(ResultRefused)), 0)
		})
	}
	require.Zero(t, o.total(), "no request for a refused URL")
}

// TestFetchRefusesLargeBodies: a body beyond max_bytes is refused after
// max_bytes+1 bytes: the origin cannot write all it wanted. An announced
// Content-Length beyond it is refused before reading.
func TestFetchRefusesLargeBodies(t *testing.T) {
	const maxBytes = 64 << 10
	const streamed = 256 << 20 // far beyond socket buffers
	for _, tc := range []struct {
		name          string
		contentLength bool
		detail        string
	}{
		{name: "streamed", detail: "body is more than invite.whisper.max_bytes 65536"},
		{name: "announced", contentLength: true, detail: "announced body of 268435456 bytes (Content-Length)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var written atomic.Int64
			done := make(chan struct{})
			o := serve(t, false, func(w http.ResponseWriter, _ *http.Request) {
				defer close(done)
				if tc.contentLength {
					w.Header().Set("Content-Length", "268435456")
				}
				chunk := WAV(8000, 1, make([]int16, 16<<10))
				for written.Load() < streamed {
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
					w.(http.Flusher).Flush()
				}
			})
			f, _ := newFetcher(t, o, func(opts *FetchOptions) { opts.MaxBytes = maxBytes })
			_, err := f.Fetch(t.Context(), o.URL+"/big.wav")
			requireRefused(t, err, ReasonTooLarge, tc.detail)
			<-done // the origin's write failed once the connection was dropped
			require.Less(t, written.Load(), int64(streamed), "the body was not read to its end")
		})
	}
}

// TestFetchTimeout: an origin that does not answer, or stops in the
// middle of the body, is given up after the timeout.
func TestFetchTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{name: "no answer", h: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "stalled body", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100000")
			_, _ = w.Write([]byte("RIFF"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := serve(t, false, tc.h)
			f, m := newFetcher(t, o, func(opts *FetchOptions) { opts.Timeout = 100 * time.Millisecond })
			_, err := f.Fetch(t.Context(), o.URL+"/slow.wav?token=s3cr3t")
			requireRefused(t, err, ReasonTimeout, "no whole answer within invite.whisper.timeout 100ms")
			require.Contains(t, err.Error(), o.URL+"/slow.wav")
			require.NotContains(t, err.Error(), "s3cr3t", "a signed URL's token stays out of outcomes")
			require.InDelta(t, 1, testutil.ToFloat64(m.Refused.WithLabelValues(ReasonTimeout)), 0)
		})
	}
}

// TestFetchRefusesContent: what is not a playable WAV, or plays too long,
// or answers with a status other than 200, is refused. Refusals are not
// cached: the next handoff asks again.
func TestFetchRefusesContent(t *testing.T) {
	o := serve(t, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mp3":
			_, _ = w.Write([]byte("ID3\x04\x00 an mp3"))
		case "/wide":
			_, _ = w.Write(WAV(16000, 1, tone(1000)))
		case "/empty":
			_, _ = w.Write(WAV(8000, 1, nil))
		case "/long":
			_, _ = w.Write(WAV(8000, 1, make([]int16, 8000*2)))
		default:
			http.NotFound(w, r)
		}
	})
	f, _ := newFetcher(t, o, func(opts *FetchOptions) { opts.MaxDuration = time.Second })
	for _, tc := range []struct{ path, reason, detail string }{
		{path: "/mp3", reason: ReasonNotWAV, detail: "not a RIFF/WAVE file"},
		{path: "/wide", reason: ReasonNotWAV, detail: "16000 Hz"},
		{path: "/empty", reason: ReasonNotWAV, detail: "no samples"},
		{path: "/long", reason: ReasonTooLong, detail: "plays 2s, more than invite.whisper.max_duration 1s"},
		{path: "/gone", reason: ReasonHTTPStatus, detail: "HTTP status 404 Not Found"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			for range 2 {
				_, err := f.Fetch(t.Context(), o.URL+tc.path)
				requireRefused(t, err, tc.reason, tc.detail)
			}
			require.Equal(t, 2, o.count(tc.path))
		})
	}
}

// TestFetchFollowsNoRedirect: a redirect is refused, even to an allowed
// host; its target is not asked.
func TestFetchFollowsNoRedirect(t *testing.T) {
	target := serve(t, false, wavHandler(WAV(8000, 1, tone(160))))
	o := serve(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/w.wav", http.StatusFound)
	})
	f, _ := newFetcher(t, o, nil)
	_, err := f.Fetch(t.Context(), o.URL+"/w.wav")
	requireRefused(t, err, ReasonHTTPStatus, "HTTP status 302 Found: redirects are not followed")
	require.Equal(t, 1, o.total())
	require.Zero(t, target.total())
}

// TestFetchCacheBounds: entries expire after the TTL, and the least
// recently used go first when entries or bytes run out.
func TestFetchCacheBounds(t *testing.T) {
	o := serve(t, false, wavHandler(WAV(8000, 1, tone(1000)))) // 2000 bytes of samples
	t.Run("ttl", func(t *testing.T) {
		now := time.Unix(1_800_000_000, 0)
		f, _ := newFetcher(t, o, func(opts *FetchOptions) {
			opts.CacheTTL = time.Minute
			opts.Now = func() time.Time { return now }
		})
		u := o.URL + "/ttl"
		for range 2 {
			_, err := f.Fetch(t.Context(), u)
			require.NoError(t, err)
		}
		require.Equal(t, 1, o.count("/ttl"))
		now = now.Add(time.Minute)
		_, err := f.Fetch(t.Context(), u)
		require.NoError(t, err)
		require.Equal(t, 2, o.count("/ttl"), "fetched again once expired")
	})
	for _, tc := range []struct {
		name    string
		entries int
		bytes   int64
	}{
		{name: "entries", entries: 2, bytes: 1 << 20},
		{name: "bytes", entries: 100, bytes: 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newFetcher(t, o, func(opts *FetchOptions) { opts.CacheEntries, opts.CacheBytes = tc.entries, tc.bytes })
			p := "/" + tc.name
			for _, name := range []string{"a", "b", "a", "c", "a", "b"} {
				_, err := f.Fetch(t.Context(), o.URL+p+name)
				require.NoError(t, err)
			}
			require.Equal(t, 1, o.count(p+"a"), "a was used last when c came in")
			require.Equal(t, 2, o.count(p+"b"), "b was evicted by c")
			require.Equal(t, 1, o.count(p+"c"))
			n, b := f.cacheLen()
			require.Equal(t, 2, n)
			require.Equal(t, int64(4000), b)
		})
	}
	t.Run("off", func(t *testing.T) {
		f, _ := newFetcher(t, o, func(opts *FetchOptions) { opts.CacheEntries = 0 })
		for range 2 {
			_, err := f.Fetch(t.Context(), o.URL+"/off")
			require.NoError(t, err)
		}
		require.Equal(t, 2, o.count("/off"))
	})
}

func TestHostPatterns(t *testing.T) {
	for _, p := range []string{"cdn.example.com", "*.example.com", "127.0.0.1", "::1", "tts-1.internal.example"} {
		require.NoError(t, CheckHostPattern(p), p)
	}
	for p, want := range map[string]string{
		"":                    "want a host name",
		"*":                   "want a host name",
		"*.com":               "whole top-level domain",
		"CDN.example.com":     "lower case",
		"cdn.example.com:443": "want a host name",
		"https://cdn.example": "want a host name",
		"*.*.example.com":     `want "*." and a host name`,
		"cdn.*.example":       "want a host name",
		"10.0.1":              "want a host name",
		"fe80::1%eth0":        "without a zone",
	} {
		require.ErrorContains(t, CheckHostPattern(p), want, p)
	}
	l, err := newHostAllowlist([]string{"cdn.example.com", "*.tts.example.net", "10.1.2.3", "2001:db8::1"})
	require.NoError(t, err)
	for host, want := range map[string]bool{
		"cdn.example.com":       true,
		"CDN.Example.com":       true,
		"a.cdn.example.com":     false,
		"eu.tts.example.net":    true,
		"a.b.tts.example.net":   true,
		"tts.example.net":       false,
		"eviltts.example.net":   false,
		"tts.example.net.evil":  false,
		"10.1.2.3":              true,
		"::ffff:10.1.2.3":       true,
		"2001:db8:0::1":         true,
		"10.1.2.4":              false,
		"cdn.example.com.":      false,
		"example.com":           false,
		"cdn.example.com.evil.": false,
	} {
		require.Equal(t, want, l.allows(host), host)
	}
	_, err = newHostAllowlist([]string{"ok.example", "*"})
	require.ErrorContains(t, err, `allow_hosts[1] "*"`)
}

func TestNewFetcherChecksOptions(t *testing.T) {
	base := FetchOptions{Timeout: time.Second, MaxBytes: 1 << 20, CacheEntries: 1, CacheBytes: 1 << 20, CacheTTL: time.Minute}
	for name, tc := range map[string]struct {
		tune func(*FetchOptions)
		want string
	}{
		"timeout":   {func(o *FetchOptions) { o.Timeout = 0 }, "timeout"},
		"max bytes": {func(o *FetchOptions) { o.MaxBytes = 0 }, "max_bytes"},
		"ttl":       {func(o *FetchOptions) { o.CacheTTL = 0 }, "cache_ttl"},
		"entries":   {func(o *FetchOptions) { o.CacheEntries = -1 }, "cache bounds"},
		"host":      {func(o *FetchOptions) { o.AllowHosts = []string{"a b"} }, "allow_hosts[0]"},
	} {
		o := base
		tc.tune(&o)
		_, err := NewFetcher(o, nil, slogDiscard())
		require.ErrorContains(t, err, tc.want, name)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// FuzzHostAllowlist: a valid exact pattern allows itself, a suffix
// pattern allows only hosts below it, and nothing panics.
func FuzzHostAllowlist(f *testing.F) {
	f.Add("cdn.example.com", "cdn.example.com")
	f.Add("*.example.com", "a.example.com")
	f.Add("*.example.com", "example.com")
	f.Add("10.0.0.1", "::ffff:10.0.0.1")
	f.Add("::1", "[::1]")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		l, err := newHostAllowlist([]string{pattern})
		if err != nil {
			require.Error(t, CheckHostPattern(pattern))
			return
		}
		if !strings.HasPrefix(pattern, "*.") {
			require.True(t, l.allows(pattern), "an exact pattern allows itself")
		}
		if suffix, ok := strings.CutPrefix(pattern, "*"); ok && l.allows(host) {
			require.True(t, strings.HasSuffix(strings.ToLower(host), suffix) && len(host) > len(suffix), "%q allowed by %q", host, pattern)
		}
	})
}
