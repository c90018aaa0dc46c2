package whisper

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/baton-voice/baton/pkg/observability"
)

// Why a whisper URL was refused: RefusedError.Reason, and the reason
// label of baton_transfer_whisper_url_refused_total.
const (
	ReasonBadURL         = "bad_url"          // not an http(s) URL, or one with credentials
	ReasonHostNotAllowed = "host_not_allowed" // not in allow_hosts (or allow_hosts is empty)
	ReasonTimeout        = "timeout"          // no whole answer within Timeout
	ReasonHTTPStatus     = "http_status"      // an answer other than 200, redirects included
	ReasonTooLarge       = "too_large"        // more than MaxBytes
	ReasonNotWAV         = "not_wav"          // not 8 kHz mono 16-bit PCM WAV with samples
	ReasonTooLong        = "too_long"         // plays longer than MaxDuration
	ReasonFetch          = "fetch_error"      // DNS, connection, TLS or read error
	ReasonCanceled       = "canceled"         // the handoff's context ended (shutdown)
)

// RefusedError is a whisper URL that gives no audio. It wraps ErrAudio,
// so a refused URL fails a handoff the way a bad whisper file does.
type RefusedError struct {
	// Reason is one of the Reason constants.
	Reason string
	// URL is the URL without credentials, query or fragment (signed URLs
	// carry their token there, and the error goes into outcomes).
	URL string
	Err error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrAudio, e.URL, e.Err)
}

func (e *RefusedError) Unwrap() []error { return []error{ErrAudio, e.Err} }

// Reason is the reason of a *RefusedError in err's chain, else "".
func Reason(err error) string {
	if re, ok := errors.AsType[*RefusedError](err); ok {
		return re.Reason
	}
	return ""
}

// IsURL says whether a HandoffCommand.whisper names a URL rather than a
// local file.
func IsURL(s string) bool { return strings.Contains(s, "://") }

// FetchOptions configures a Fetcher (invite.whisper in the config).
type FetchOptions struct {
	// AllowHosts are the hosts whispers may be fetched from
	// (CheckHostPattern); empty refuses every URL.
	AllowHosts []string
	// Timeout bounds a fetch from the request to the last byte.
	Timeout time.Duration
	// MaxBytes refuses bodies longer than this without reading beyond it.
	MaxBytes int64
	// MaxDuration refuses longer audio (0: no limit).
	MaxDuration time.Duration
	// CacheEntries and CacheBytes (bytes of samples) bound the cache;
	// CacheEntries 0 turns it off. Entries live CacheTTL.
	CacheEntries int
	CacheBytes   int64
	CacheTTL     time.Duration
	// RootCAs verify https servers; nil means the system roots.
	RootCAs *x509.CertPool
	// Now is the cache's clock; nil means time.Now.
	Now func() time.Time
}

// Fetcher gets whispers from http(s) URLs of allowed hosts: one GET
// within a timeout, a bounded body, no redirects followed, TLS verified;
// the audio checked as Load checks a file, then cached. Concurrent
// fetches of one URL make one request. Cached audio is shared: callers
// must not modify its samples.
type Fetcher struct {
	opts    FetchOptions
	allow   hostAllowlist
	client  *http.Client
	metrics *Metrics
	log     *slog.Logger

	mu      sync.Mutex
	cache   *cache
	flights map[string]*flight
}

// flight is one fetch under way; done is closed once audio and err are
// set.
type flight struct {
	done  chan struct{}
	audio Audio
	err   error
	// abandoned: the fetch ended because its caller's context did, not
	// because of the URL; waiters try again themselves.
	abandoned bool
	// waiters counts the Fetch calls that joined it (under Fetcher.mu).
	waiters int
}

// NewFetcher checks opts and builds a Fetcher; metrics may be nil.
func NewFetcher(opts FetchOptions, metrics *Metrics, log *slog.Logger) (*Fetcher, error) {
	allow, err := newHostAllowlist(opts.AllowHosts)
	if err != nil {
		return nil, fmt.Errorf("whisper fetcher: %w", err)
	}
	switch {
	case opts.Timeout <= 0:
		return nil, fmt.Errorf("whisper fetcher: timeout %v, want a positive duration", opts.Timeout)
	case opts.MaxBytes <= 0:
		return nil, fmt.Errorf("whisper fetcher: max_bytes %d, want a positive size", opts.MaxBytes)
	case opts.CacheEntries < 0 || opts.CacheBytes < 0:
		return nil, fmt.Errorf("whisper fetcher: cache bounds %d entries, %d bytes, want 0 or more", opts.CacheEntries, opts.CacheBytes)
	case opts.CacheEntries > 0 && opts.CacheTTL <= 0:
		return nil, fmt.Errorf("whisper fetcher: cache_ttl %v, want a positive duration", opts.CacheTTL)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	transport := &http.Transport{
		// An operator's egress proxy (HTTPS_PROXY) applies as to any
		// client; the allowlist is checked on the URL's host.
		Proxy: http.ProxyFromEnvironment,
		// Each step is also bounded by the fetch's own deadline.
		DialContext:         (&net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: opts.Timeout,
		// Certificates are always verified; tests pass their CA here.
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: opts.RootCAs},
		ForceAttemptHTTP2: true,
		// Whispers come from a few hosts, again and again.
		MaxIdleConns:        16,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		// A hostile server cannot make us hold large headers.
		MaxResponseHeaderBytes: 64 << 10,
		// MaxBytes counts the bytes that arrive, not what they inflate to.
		DisableCompression: true,
	}
	client := &http.Client{
		Transport: transport,
		// No redirect is followed: a 3xx is refused like any status but
		// 200, so the allowlisted host is the one that answers.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Fetcher{
		opts:    opts,
		allow:   allow,
		client:  client,
		metrics: metrics,
		log:     log,
		cache:   newCache(opts.CacheEntries, opts.CacheBytes, opts.CacheTTL),
		flights: make(map[string]*flight),
	}, nil
}

// Close drops idle connections.
func (f *Fetcher) Close() { f.client.CloseIdleConnections() }

func (f *Fetcher) cacheLen() (int, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cache.len()
}

// Fetch returns the whisper at rawURL: from the cache, from a fetch of
// the same URL already under way, or fetched now. Every error is a
// *RefusedError.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string) (Audio, error) {
	u, err := f.checkURL(rawURL)
	if err != nil {
		f.metrics.refused(Reason(err))
		return Audio{}, err
	}
	key := u.String()
	for {
		f.mu.Lock()
		if a, ok := f.cache.get(key, f.opts.Now()); ok {
			f.mu.Unlock()
			f.metrics.result(ResultHit)
			return a, nil
		}
		if fl, ok := f.flights[key]; ok {
			fl.waiters++
			f.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				err := refused(ReasonCanceled, u, fmt.Errorf("waiting for the fetch under way: %w", context.Cause(ctx)))
				f.metrics.refused(ReasonCanceled)
				return Audio{}, err
			}
			if fl.abandoned {
				continue
			}
			if fl.err != nil {
				f.metrics.refused(Reason(fl.err))
				return Audio{}, fl.err
			}
			f.metrics.result(ResultHit)
			return fl.audio, nil
		}
		fl := &flight{done: make(chan struct{})}
		f.flights[key] = fl
		f.mu.Unlock()

		a, err := f.fetch(ctx, u)
		f.mu.Lock()
		delete(f.flights, key)
		if err == nil {
			f.cache.add(key, a, f.opts.Now())
		}
		f.mu.Unlock()
		fl.audio, fl.err, fl.abandoned = a, err, Reason(err) == ReasonCanceled
		close(fl.done)
		if err != nil {
			f.metrics.refused(Reason(err))
			return Audio{}, err
		}
		f.metrics.result(ResultMiss)
		return a, nil
	}
}

// checkURL refuses, before any request, what is not an http(s) URL of an
// allowed host.
func (f *Fetcher) checkURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &RefusedError{Reason: ReasonBadURL, URL: "(unparsable URL)", Err: errors.New("not a URL")}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, refused(ReasonBadURL, u, fmt.Errorf("scheme %q, want http or https", u.Scheme))
	}
	if u.User != nil {
		return nil, refused(ReasonBadURL, u, errors.New("credentials in a whisper URL are refused"))
	}
	if u.Hostname() == "" {
		return nil, refused(ReasonBadURL, u, errors.New("no host"))
	}
	if f.allow.empty() {
		return nil, refused(ReasonHostNotAllowed, u, errors.New("whisper URLs are refused: invite.whisper.allow_hosts is empty"))
	}
	if !f.allow.allows(u.Hostname()) {
		return nil, refused(ReasonHostNotAllowed, u, fmt.Errorf("host %s is not in invite.whisper.allow_hosts", u.Hostname()))
	}
	return u, nil
}

// fetch makes the request and checks the answer.
func (f *Fetcher) fetch(ctx context.Context, u *url.URL) (Audio, error) {
	fetchCtx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(fetchCtx, http.MethodGet, u.String(), http.NoBody)
	if err != nil {
		return Audio{}, refused(ReasonBadURL, u, err)
	}
	req.Header.Set("Accept", "audio/wav, audio/x-wav, audio/wave, */*;q=0.1")
	req.Header.Set("User-Agent", "baton-transfer")
	resp, err := f.client.Do(req)
	if err != nil {
		return Audio{}, f.transportError(ctx, fetchCtx, u, err)
	}
	defer func() { _ = resp.Body.Close() }() // unread rest: the connection is dropped
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Errorf("HTTP status %s", resp.Status)
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg = fmt.Errorf("HTTP status %s: redirects are not followed", resp.Status)
		}
		return Audio{}, refused(ReasonHTTPStatus, u, msg)
	}
	if resp.ContentLength > f.opts.MaxBytes {
		return Audio{}, refused(ReasonTooLarge, u, fmt.Errorf("announced body of %d bytes (Content-Length) is more than invite.whisper.max_bytes %d",
			resp.ContentLength, f.opts.MaxBytes))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, f.opts.MaxBytes+1))
	if err != nil {
		return Audio{}, f.transportError(ctx, fetchCtx, u, err)
	}
	if int64(len(b)) > f.opts.MaxBytes {
		return Audio{}, refused(ReasonTooLarge, u, fmt.Errorf("body is more than invite.whisper.max_bytes %d", f.opts.MaxBytes))
	}
	a, err := decodeWAV(b)
	if err != nil {
		return Audio{}, refused(ReasonNotWAV, u, err)
	}
	if f.opts.MaxDuration > 0 && a.Duration() > f.opts.MaxDuration {
		return Audio{}, refused(ReasonTooLong, u, fmt.Errorf("plays %v, more than invite.whisper.max_duration %v",
			a.Duration(), f.opts.MaxDuration))
	}
	f.log.DebugContext(ctx, "whisper fetched", "whisper_host", u.Host, "bytes", len(b), "duration", a.Duration().String())
	return a, nil
}

// transportError classifies an error of the request or of reading the
// body: ctx is the caller's, fetchCtx has the fetch's timeout too.
func (f *Fetcher) transportError(ctx, fetchCtx context.Context, u *url.URL, err error) error {
	if ctx.Err() != nil {
		return refused(ReasonCanceled, u, fmt.Errorf("fetch abandoned: %w", context.Cause(ctx)))
	}
	if fetchCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return refused(ReasonTimeout, u, fmt.Errorf("no whole answer within invite.whisper.timeout %v", f.opts.Timeout))
	}
	// A *url.Error repeats the whole URL, query included.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	return refused(ReasonFetch, u, fmt.Errorf("GET: %w", err))
}

func refused(reason string, u *url.URL, err error) *RefusedError {
	return &RefusedError{Reason: reason, URL: observability.RedactURL(u.String()), Err: err}
}
