package observability

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestQuietSIPDropsPacketsAndLimits(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(QuietSIP(slog.NewTextHandler(&out, nil), NewRateLog(2)))
	for range 5 {
		log.Error("failed to parse", "data", "INVITE sip:secret@example.com SIP/2.0",
			"error", "transmission beginning 'INVITE sip:secret' is not a SIP message")
	}
	if strings.Contains(out.String(), "secret") {
		t.Fatalf("the raw packet reached the log: %s", out.String())
	}
	if n := strings.Count(out.String(), "failed to parse"); n != 2 {
		t.Fatalf("%d records through a limit of 2:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "data_bytes=37") || !strings.Contains(out.String(), "(packet text removed)") {
		t.Fatalf("packet length or cut error missing: %s", out.String())
	}
	log.Info("plain", "k", "v")
	if !strings.Contains(out.String(), "k=v") {
		t.Fatal("an INFO record without a packet was held back")
	}
}

func TestRateLogCountsSuppressed(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&out, nil))
	l := NewRateLog(1)
	for range 4 {
		l.Log(logger, "dropped")
	}
	if n := strings.Count(out.String(), "dropped"); n != 1 {
		t.Fatalf("%d lines", n)
	}
	l.window = l.window.Add(-2e9) // a second later
	l.Log(logger, "dropped")
	if !strings.Contains(out.String(), "suppressed=3") {
		t.Fatalf("no count of the held-back records: %s", out.String())
	}
}
