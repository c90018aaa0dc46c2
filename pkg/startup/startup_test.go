package startup

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-voice/baton/pkg/observability"
)

func TestParse(t *testing.T) {
	var out bytes.Buffer
	f, _, done := Parse("svc", []string{"--config", "a.yaml", "--check-config"}, &out, nil)
	if done || f.Config != "a.yaml" || !f.CheckOnly {
		t.Fatalf("got %+v done %v", f, done)
	}
	var extra string
	f, _, done = Parse("svc", []string{"--mode", "x"}, &out, func(fs *flag.FlagSet) { fs.StringVar(&extra, "mode", "", "") })
	if done || extra != "x" || f.Config != "" {
		t.Fatalf("extra flag: %+v %q", f, extra)
	}
	if _, code, done := Parse("svc", []string{"--help"}, &out, nil); !done || code != ExitOK {
		t.Fatalf("--help: code %d done %v", code, done)
	}
	out.Reset()
	if _, code, done := Parse("svc", []string{"--nope"}, &out, nil); !done || code != ExitConfig || !strings.Contains(out.String(), "nope") {
		t.Fatalf("bad flag: code %d done %v %q", code, done, out.String())
	}
}

func TestConfigErrorsAndLogger(t *testing.T) {
	var out bytes.Buffer
	if code := ConfigError(&out, "svc", errors.New("x.yaml:3: a.b: bad")); code != ExitConfig || out.String() != "svc: x.yaml:3: a.b: bad\n" {
		t.Fatalf("code %d, %q", code, out.String())
	}
	out.Reset()
	if _, code, ok := Logger(&out, "svc", observability.LogConfig{Level: "loud"}); ok || code != ExitConfig || !strings.Contains(out.String(), "log.level") {
		t.Fatalf("bad log section: ok %v code %d %q", ok, code, out.String())
	}
	logger, _, ok := Logger(&out, "svc", observability.DefaultLogConfig())
	if !ok || logger == nil {
		t.Fatal("default log section refused")
	}
	out.Reset()
	if Checked(&out) != ExitOK || out.String() != "config ok\n" {
		t.Fatalf("%q", out.String())
	}
}

// The first signal cancels the context; the handler is then released.
func TestSignalsCancelOnce(t *testing.T) {
	ctx, stop := Signals(context.Background())
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not cancel the context")
	}
}

func TestBegin(t *testing.T) {
	type cfg struct{ path string }
	load := func(path string) (cfg, error) {
		if path == "bad.yaml" {
			return cfg{}, errors.New("bad.yaml:1: x: wrong")
		}
		return cfg{path: path}, nil
	}
	logOf := func(cfg) observability.LogConfig { return observability.DefaultLogConfig() }
	var out bytes.Buffer
	b, _, done := Begin("svc", []string{"--config", "ok.yaml"}, &out, load, logOf)
	if done || b.Config.path != "ok.yaml" || b.Logger == nil {
		t.Fatalf("%+v done %v", b, done)
	}
	if _, code, done := Begin("svc", []string{"--config", "bad.yaml"}, &out, load, logOf); !done || code != ExitConfig || !strings.Contains(out.String(), "svc: bad.yaml:1") {
		t.Fatalf("bad config: code %d done %v %q", code, done, out.String())
	}
	out.Reset()
	if _, code, done := Begin("svc", []string{"--check-config"}, &out, load, logOf); !done || code != ExitOK || out.String() != "config ok\n" {
		t.Fatalf("check: code %d %q", code, out.String())
	}
	out.Reset()
	bad := func(cfg) observability.LogConfig { return observability.LogConfig{Level: "loud"} }
	if _, code, done := Begin("svc", nil, &out, load, bad); !done || code != ExitConfig {
		t.Fatalf("bad log: code %d", code)
	}
}
