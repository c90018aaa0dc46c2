package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/pkg/sipprobe"
)

// MaxParallel bounds the probes under way at once.
const MaxParallel = 8

// Options says what to probe and how.
type Options struct {
	// RouterConfig and TransferConfig are the services' configuration
	// files; TransferConfig may be empty.
	RouterConfig, TransferConfig string
	// Only, when set, probes only the targets of these names.
	Only []string
	// Timeout bounds one probe (and a test call's wait for its answer).
	Timeout time.Duration
	// WarnDays warns about a TLS certificate that expires within this many
	// days.
	WarnDays int
	// JSON writes the report as JSON instead of a table.
	JSON bool
	// Call places a test call to every probed destination that answered
	// OPTIONS, with the headers the router renders (RouterBin) for Test.
	Call      bool
	RouterBin string
	Test      TestCall
	// Hold is how long an answered test call stays up before its BYE.
	Hold time.Duration
	// Logger receives the SIP stack's logs.
	Logger *slog.Logger
}

// Report is one target's line of the report.
type Report struct {
	Entry
	// Result is the OPTIONS probe's, nil when the target was skipped.
	Result *sipprobe.Result `json:"result,omitempty"`
	// Call is the test call's (Options.Call), nil when none was placed;
	// CallSkip says why none was.
	Call     *sipprobe.CallResult `json:"call,omitempty"`
	CallSkip string               `json:"call_skip,omitempty"`
}

// Summary counts the report's targets.
type Summary struct {
	Up, Down, Skipped, Warnings int
}

// Run probes what the configurations name and writes the report to out.
// It returns the summary; a caller exits non-zero when Down > 0.
func Run(ctx context.Context, opts Options, out io.Writer) (Summary, error) {
	plan, err := Load(opts.RouterConfig, opts.TransferConfig)
	if err != nil {
		return Summary{}, err
	}
	var entries []Entry
	for _, e := range plan.Entries {
		if len(opts.Only) == 0 || slices.Contains(opts.Only, e.Name) {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return Summary{}, fmt.Errorf("%w: %s names no destination or trunk to probe%s", ErrConfig, opts.RouterConfig,
			onlyNote(opts.Only))
	}
	prober, err := sipprobe.New(sipprobe.Options{
		Timeout: opts.Timeout, TLS: plan.TLS, ExpiryWarning: time.Duration(opts.WarnDays) * 24 * time.Hour,
		Logger: opts.Logger,
	})
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = prober.Close() }()

	reports := probeAll(ctx, prober, entries)
	if opts.Call {
		if err := callAll(ctx, prober, opts, reports); err != nil {
			return Summary{}, err
		}
	}
	sum := summarize(reports)
	if opts.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return sum, enc.Encode(struct {
			Targets []Report `json:"targets"`
			Up      int      `json:"up"`
			Down    int      `json:"down"`
			Skipped int      `json:"skipped"`
		}{reports, sum.Up, sum.Down, sum.Skipped})
	}
	return sum, writeTable(out, reports, opts.Call, sum)
}

func onlyNote(only []string) string {
	if len(only) == 0 {
		return ""
	}
	return " named " + strings.Join(only, ", ")
}

// probeAll probes every entry, at most MaxParallel at once, and returns
// the reports in the entries' order.
func probeAll(ctx context.Context, p *sipprobe.Prober, entries []Entry) []Report {
	reports := make([]Report, len(entries))
	sem := make(chan struct{}, MaxParallel)
	var wg sync.WaitGroup
	for i, e := range entries {
		reports[i].Entry = e
		if e.Skip != "" {
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			r := p.Probe(ctx, e.Target)
			if e.Kind == KindTrunk && (e.Method == "" || e.Method == "REFER") && r.Up && !r.AcceptsRefer && len(r.Allow) > 0 {
				r.Warnings = append(r.Warnings, "Allow does not list REFER: blind transfers through this trunk will fail")
			}
			reports[i].Result = &r
		})
	}
	wg.Wait()
	return reports
}

// callAll places a test call to every destination that answered OPTIONS,
// one after another, with the headers the router renders for it.
func callAll(ctx context.Context, p *sipprobe.Prober, opts Options, reports []Report) error {
	var names []string
	for _, r := range reports {
		if r.Kind == KindDestination && r.Result != nil && r.Result.Up {
			names = append(names, r.Name)
		}
	}
	var rendered map[string]Rendered
	if len(names) > 0 {
		bin, err := replay.RouterBinary(opts.RouterBin)
		if err != nil {
			return err
		}
		if rendered, err = Render(ctx, bin, opts.RouterConfig, opts.Test, names); err != nil {
			return err
		}
	}
	for i := range reports {
		r := &reports[i]
		switch {
		case r.Kind != KindDestination:
			continue
		case r.Result == nil:
			r.CallSkip = "not probed"
			continue
		case !r.Result.Up:
			r.CallSkip = "down"
			continue
		}
		rd, ok := rendered[r.Name]
		switch {
		case !ok:
			r.CallSkip = "the router decided nothing for the test call"
			continue
		case rd.Refused != "":
			r.CallSkip = "the router refuses the handoff: " + rd.Refused
			continue
		}
		c := p.Call(ctx, r.Target, rd.Headers, opts.Hold)
		r.Call = &c
	}
	return nil
}

func summarize(reports []Report) Summary {
	var s Summary
	for _, r := range reports {
		switch {
		case r.Result == nil:
			s.Skipped++
		case r.Result.Up:
			s.Up++
		default:
			s.Down++
		}
		if r.Result != nil && len(r.Result.Warnings) > 0 {
			s.Warnings++
		}
	}
	return s
}

// writeTable writes the report as an aligned table, then each target's
// warnings and errors in full.
func writeTable(out io.Writer, reports []Report, call bool, sum Summary) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "TARGET\tKIND\tTRANSPORT\tADDRESS\tSTATE\tSTATUS\tRTT\tREFER\tTLS EXPIRES"
	if call {
		head += "\tTEST CALL"
	}
	fmt.Fprintln(tw, head)
	var notes []string
	for _, r := range reports {
		cols := []string{r.Name, r.Kind, "-", "-", "skipped", "-", "-", "-", "-"}
		if res := r.Result; res != nil {
			cols[2], cols[3] = res.Transport, res.Addr
			cols[4] = "down"
			if res.Up {
				cols[4] = "up"
				if len(res.Warnings) > 0 {
					cols[4] = "up (warning)"
				}
			}
			if res.Status != 0 {
				cols[5] = fmt.Sprintf("%d %s", res.Status, res.Reason)
				cols[6] = res.RTT.Round(100 * time.Microsecond).String()
				switch {
				case res.AcceptsRefer:
					cols[7] = "yes"
				case len(res.Allow) == 0:
					cols[7] = "?" // no Allow header: not advertised either way
				default:
					cols[7] = "no"
				}
			}
			if res.Cert != nil {
				cols[8] = fmt.Sprintf("%s (%dd)", res.Cert.NotAfter.UTC().Format("2006-01-02"), res.Cert.ExpiresInDays)
			}
			if res.Error != "" {
				notes = append(notes, fmt.Sprintf("%s: down: %s", r.Name, res.Error))
			}
			for _, w := range res.Warnings {
				notes = append(notes, fmt.Sprintf("%s: warning: %s", r.Name, w))
			}
			if len(res.Allow) > 0 || len(res.Supported) > 0 {
				notes = append(notes, fmt.Sprintf("%s: Allow: %s; Supported: %s", r.Name,
					strings.Join(res.Allow, ", "), strings.Join(res.Supported, ", ")))
			}
		} else {
			notes = append(notes, fmt.Sprintf("%s: skipped: %s", r.Name, r.Skip))
		}
		if call {
			cols = append(cols, callColumn(r))
		}
		for i := range cols {
			cols[i] = termsafe.String(cols[i])
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(out, termsafe.String(n)); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(out, "%d up, %d down, %d skipped, %d with warnings\n", sum.Up, sum.Down, sum.Skipped, sum.Warnings)
	return err
}

func callColumn(r Report) string {
	switch {
	case r.Call == nil && r.CallSkip != "":
		return "not placed: " + r.CallSkip
	case r.Call == nil:
		return "-"
	case r.Call.Answered:
		s := fmt.Sprintf("answered %d in %s, BYE %d", r.Call.Status, r.Call.AnswerTime.Round(time.Millisecond), r.Call.ByeStatus)
		if r.Call.Error != "" {
			s += " (" + r.Call.Error + ")"
		}
		return s
	case r.Call.Status != 0:
		return fmt.Sprintf("not answered: %d %s", r.Call.Status, r.Call.Reason)
	default:
		return "failed: " + r.Call.Error
	}
}
