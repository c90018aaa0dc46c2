// Package precall calls the pre-call webhook when a call starts and
// publishes the answer as a PreCallData fact on the calls topic.
//
// The fetcher sits outside the router's Kafka transactions and outside the
// fold: the router tells it of every CallStarted once the batch holding it
// committed, and the fold only ever sees the resulting PreCallData record.
// So decisions stay a function of the log: a replay decides with the
// PreCallData the log holds, whatever the webhook would answer today, and a
// router replaying with an empty precall.url fetches nothing.
//
// A call is fetched at most once per instance, and not at all when the
// committed fold already holds its pre-call data or the CallStarted is
// older than MaxAge (by its event time), so a group re-reading old history
// does not call the webhook again. A failure (timeout, connection refused,
// non-2xx status, a body that is not a JSON object or is larger than
// handoff.MaxPreCallBytes) is published as PreCallData with error set: the
// call is never held up waiting for the webhook.
//
// Redirects are never followed: a 3xx answer is a failure like any other
// non-2xx status. Following one would send the configured headers (an API
// key) and the caller's data to wherever the Location points, and make
// that host's answer the call's results.
package precall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Source is the ce_source of PreCallData records.
const Source = "baton/router"

// queueSize bounds the calls waiting for a free webhook slot.
const queueSize = 4096

// Calls tells whether a call still needs its pre-call data.
type Calls interface {
	AwaitsPreCall(callID, startedID string) bool
}

// Publisher writes an event to the calls topic and waits for the ack.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) error
}

// Options configures a Fetcher.
type Options struct {
	// URL is the webhook.
	URL string
	// Header is sent with every request, beside Content-Type and Accept.
	Header http.Header
	// Timeout bounds one webhook call.
	Timeout time.Duration
	// MaxAge skips CallStarted events older than this.
	MaxAge time.Duration
	// MaxInFlight bounds concurrent webhook calls.
	MaxInFlight int
	// FetchedBy names this instance in PreCallData.fetched_by.
	FetchedBy string
}

// Fetcher calls the webhook for started calls; see the package doc.
type Fetcher struct {
	opts   Options
	client *http.Client
	calls  Calls
	pub    Publisher
	logger *slog.Logger
	now    func() time.Time
	queue  chan events.Event
}

// New returns a fetcher; Run makes it work.
func New(opts Options, calls Calls, pub Publisher, logger *slog.Logger, now func() time.Time) *Fetcher {
	return &Fetcher{
		opts: opts,
		// The timeout covers connect and reading the body.
		client: &http.Client{Timeout: opts.Timeout, CheckRedirect: refuseRedirect},
		calls:  calls, pub: pub, logger: logger, now: now,
		queue: make(chan events.Event, queueSize),
	}
}

// Started is told of a CallStarted whose batch committed. It never blocks:
// the call is queued for a webhook slot, or skipped (and logged) when it
// is too old, already has its data, or the queue is full.
func (f *Fetcher) Started(ev events.Event) {
	if age := f.now().Sub(ev.Time); age > f.opts.MaxAge {
		f.logger.Debug("pre-call fetch skipped: call started too long ago", "call_id", ev.Subject, "age", age)
		return
	}
	if !f.calls.AwaitsPreCall(ev.Subject, ev.ID) {
		f.logger.Debug("pre-call fetch skipped: data already folded or call gone", "call_id", ev.Subject)
		return
	}
	select {
	case f.queue <- ev:
	default:
		f.logger.Warn("pre-call fetch skipped: queue full; handoffs render without pre-call data", "call_id", ev.Subject)
	}
}

// Run calls the webhook for queued calls until ctx ends; fetches under way
// then finish (each bounded by the timeout) and publish their result.
func (f *Fetcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range f.opts.MaxInFlight {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-f.queue:
					f.fetchAndPublish(context.WithoutCancel(ctx), ev)
				}
			}
		})
	}
	wg.Wait()
}

func (f *Fetcher) fetchAndPublish(ctx context.Context, started events.Event) {
	id := started.Subject
	if !f.calls.AwaitsPreCall(id, started.ID) {
		return // folded meanwhile (another instance, or the call ended)
	}
	begin := f.now()
	msg := &batonv1.PreCallData{CallId: id, FetchedBy: f.opts.FetchedBy}
	data, err := f.fetch(ctx, started)
	if err != nil {
		msg.Error = err.Error()
		f.logger.WarnContext(ctx, "pre-call webhook failed", "call_id", id, "err", err, "elapsed", f.now().Sub(begin))
	} else {
		msg.DataJson = data
		f.logger.DebugContext(ctx, "pre-call webhook answered", "call_id", id, "bytes", len(data), "elapsed", f.now().Sub(begin))
	}
	ev, err := events.New(Source, id, msg, f.now())
	if err == nil {
		ev.TraceParent = started.TraceParent
		err = f.pub.Publish(ctx, ev)
	}
	if err != nil {
		f.logger.ErrorContext(ctx, "publish pre-call data; handoffs render without it", "call_id", id, "err", err)
	}
}

// request is the JSON body POSTed to the webhook.
type request struct {
	CallID       string              `json:"call_id"`
	CallerNumber string              `json:"caller_number"`
	CalleeNumber string              `json:"callee_number"`
	Trunk        string              `json:"trunk,omitempty"`
	Variables    map[string]string   `json:"variables"`
	SipHeaders   map[string][]string `json:"sip_headers"`
}

// fetch calls the webhook for a started call and returns its answer, a
// JSON object, compacted.
func (f *Fetcher) fetch(ctx context.Context, started events.Event) (string, error) {
	msg, ok := started.Data.(*batonv1.CallStarted)
	if !ok {
		return "", fmt.Errorf("event %s is a %s, not a CallStarted", started.ID, started.Type)
	}
	body := request{
		CallID: started.Subject, CallerNumber: msg.GetCallerNumber(), CalleeNumber: msg.GetCalleeNumber(),
		Trunk: msg.GetTrunk(), Variables: msg.GetVariables(), SipHeaders: map[string][]string{},
	}
	if body.Variables == nil {
		body.Variables = map[string]string{}
	}
	for _, h := range msg.GetSipHeaders() {
		k := strings.ToLower(h.GetName())
		body.SipHeaders[k] = append(body.SipHeaders[k], h.GetValue())
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.opts.URL, bytes.NewReader(payload))
	if err != nil {
		return "", fmt.Errorf("new request: %w", err)
	}
	for k, vs := range f.opts.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("call webhook: %w", redact(err))
	}
	defer func() { _ = resp.Body.Close() }() // the body was read or is abandoned
	data, err := io.ReadAll(io.LimitReader(resp.Body, handoff.MaxPreCallBytes+1))
	if err != nil {
		return "", fmt.Errorf("read webhook response: %w", redact(err))
	}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		// The Location is not in the error: it is published, and may
		// carry a secret as the URL may.
		return "", fmt.Errorf("webhook answered %s: %w", resp.Status, ErrRedirect)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("webhook answered %s", resp.Status)
	}
	if resp.StatusCode == http.StatusNoContent {
		return "{}", nil
	}
	if _, err := handoff.DecodeResults(data); err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, data); err != nil {
		return "", fmt.Errorf("compact webhook response: %w", err)
	}
	return out.String(), nil
}

// ErrRedirect is the error of a webhook that answered a redirect (3xx):
// it is refused, never followed.
var ErrRedirect = errors.New("redirects are refused; not followed")

// refuseRedirect is the client's CheckRedirect: the 3xx answer itself is
// returned, so no request ever reaches the redirect's target.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redact drops the URL from a client error: its query may carry a secret,
// and the error is published.
func redact(err error) error {
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// ParseHeaders reads extra request headers: "Name: value" lines.
func ParseHeaders(s string) (http.Header, error) {
	h := http.Header{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || !headerName.MatchString(name) {
			return nil, fmt.Errorf("line %d: want \"Name: value\"", i+1)
		}
		if strings.ContainsAny(value, "\r\x00") {
			return nil, fmt.Errorf("line %d: header %s: control character in value", i+1, name)
		}
		h.Add(name, value)
	}
	if len(h) == 0 {
		return nil, errors.New("no header")
	}
	return h, nil
}
