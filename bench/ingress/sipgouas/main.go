// Command sipgouas is the ingress benchmark's library floor: the least a
// server built on sipgo (the SIP stack Baton must use) can do per call.
// It answers INVITE and BYE 200 through sipgo's server transactions and
// ignores ACK, with no dialog state, media or Kafka, the same work as the
// stateless Kamailio in bench/ingress/run.sh. Its CPU per call bounds how
// close to Kamailio any sipgo-based ingress can get.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sipgouas:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:5060", "UDP address to answer on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("sipgouas"))
	if err != nil {
		return fmt.Errorf("user agent: %w", err)
	}
	defer func() { _ = ua.Close() }()
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log))
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		if err := tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)); err != nil {
			log.Warn("respond", "err", err)
		}
	}
	srv.OnInvite(ok)
	srv.OnBye(ok)
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	err = srv.ListenAndServe(ctx, "udp", *listen)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	return nil
}
