package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
	"github.com/baton-voice/baton/services/transfer/internal/whisper"
)

// Encryption values of a HandoffCommand.
const (
	encUDPRTP  = "udp_rtp"
	encUDPSRTP = "udp_srtp"
	encTLSSRTP = "tls_srtp"
)

// InviteOptions configures warm transfers.
type InviteOptions struct {
	// Ports is where bridge sockets are bound.
	Ports *bridge.Ports
	// MediaAddr is the address written into SDP (c=).
	MediaAddr netip.Addr
	// IdleTimeout tears a bridge down when a leg sent nothing for it.
	IdleTimeout time.Duration
	// AnswerTimeout bounds ringing when the command has no answer_timeout.
	AnswerTimeout time.Duration
	CallerID      request.CallerID
	// SRTPSuites are offered in order on SRTP legs.
	SRTPSuites []string
	// AllowSDESOverUDP lets a command ask for udp_srtp: SDES keys then
	// travel in clear signalling (tests, trusted networks).
	AllowSDESOverUDP bool
	// ByeTimeout bounds the BYEs sent when a bridged call ends.
	ByeTimeout time.Duration
	// TLS says the SIP client has a TLS transport: encryption tls_srtp
	// (and sips: routes) work only with it.
	TLS bool
	// WhisperMax refuses whisper files longer than this (0: no limit).
	WhisperMax time.Duration
	// WhisperURLs gets whispers named by an http(s) URL; nil refuses
	// them (whisper.Load does).
	WhisperURLs WhisperFetcher
	// TrunkHost (host[:port]) is where tel: and extension routes are
	// dialled; empty refuses them.
	TrunkHost string
}

// WhisperFetcher gets a whisper from a URL (*whisper.Fetcher). Its
// errors wrap whisper.ErrAudio.
type WhisperFetcher interface {
	Fetch(ctx context.Context, rawURL string) (whisper.Audio, error)
}

// Sender's leg-related methods (uac.Client implements them).
type legSender interface {
	Invite(ctx context.Context, req *sip.Request) (*sipgo.DialogClientSession, error)
	Write(req *sip.Request) error
	OnReInvite(d *sipgo.DialogClientSession, f uac.ReInviteFunc) (stop func())
}

// warmRun is one warm transfer: a new leg to the route, then the caller's
// media moved to a bridge with a re-INVITE, until either side hangs up or
// the media stops. Its fields are filled in as the transfer goes.
type warmRun struct {
	*execution
	// enc is the new leg's encryption (encUDPRTP, encUDPSRTP, encTLSSRTP).
	enc string
	// audio, when set, is played to the destination before the caller
	// joins.
	audio *whisper.Audio
	br    *bridge.Bridge
	// offer is our offer to the destination.
	offer sdp.Session
	// leg is the new leg, to the destination.
	leg *sipgo.DialogClientSession
	// codec is the one the destination answered, the bridge's.
	codec sdp.Format
	// dest answers the destination's re-INVITEs.
	dest *destinationLeg
	// cseq is the caller's re-INVITE's; the caller's BYE takes the next.
	cseq uint32
	// ringSeen, when the SIP client offers it, returns the first 18x
	// the transport read for the new leg (provisionalWatcher);
	// stopRingWatch ends that watch.
	ringSeen      func() (uac.Provisional, bool)
	stopRingWatch func()
	// bridgedAt is when the bridge's lease was first written.
	bridgedAt time.Time
}

// provisionalWatcher records a leg's first 18x in wire order, which
// sipgo's transaction layer may not deliver (uac.Client.WatchProvisional).
type provisionalWatcher interface {
	WatchProvisional(callID string) (seen func() (uac.Provisional, bool), stop func())
}

func (w *warmRun) run(ctx context.Context) {
	if !w.check(ctx) {
		return
	}
	br, err := bridge.New(w.inviteOpts.Ports)
	if err != nil {
		w.notSent(ctx, "INVITE", RefusedNoMediaPort, err)
		return
	}
	defer br.Close()
	w.br = br
	defer func() {
		if w.stopRingWatch != nil {
			w.stopRingWatch()
		}
	}()
	leg, ok := w.dial(ctx)
	if !ok {
		return
	}
	w.leg = leg
	// ring may replace the leg (an INVITE sent again with credentials).
	defer func() { _ = w.leg.Close() }()
	if !w.ring(ctx) {
		return
	}
	if !w.ack(ctx) {
		return
	}
	if !w.answerDestination(ctx) {
		return
	}
	// From here the destination may re-INVITE (hold, refresh, new address).
	defer w.legs.OnReInvite(leg, w.dest.answer)()
	if w.audio != nil && !w.whisper(ctx) {
		return
	}
	if !w.moveCaller(ctx) {
		return
	}
	w.br.Activate()
	// Held on the log before BRIDGED is told: a process that dies from
	// here on leaves a bridge another instance ends (lost.go).
	w.holdBridge(ctx)
	w.publish(ctx, step{status: bridged, code: 200, reason: "OK"})
	w.bridged(ctx)
}

// check refuses, before a port is bound or anything is sent, a warm
// transfer this process cannot carry out: not configured, an encryption
// it does not allow, a whisper file or URL it cannot play.
func (w *warmRun) check(ctx context.Context) bool {
	o := w.inviteOpts
	if w.legs == nil || o.Ports == nil {
		w.notSent(ctx, "INVITE", RefusedNotConfigured, errors.New("warm transfer (INVITE) is not configured"))
		return false
	}
	enc, err := encryptionOf(w.cmd, o.AllowSDESOverUDP, o.TLS)
	if err != nil {
		w.notSent(ctx, "INVITE", RefusedInvalidEncryption, err)
		return false
	}
	w.enc = enc
	// The whisper is read (or fetched) before any SIP: a bad file or a
	// refused URL fails the command with nothing sent.
	if f := w.cmd.GetWhisper(); f != "" {
		var a whisper.Audio
		var err error
		if whisper.IsURL(f) && o.WhisperURLs != nil {
			a, err = o.WhisperURLs.Fetch(ctx, f)
		} else {
			a, err = whisper.Load(f, o.WhisperMax)
		}
		if err != nil {
			w.notSent(ctx, "INVITE", RefusedInvalidWhisper, err)
			return false
		}
		w.audio = &a
	}
	return true
}

// dial sends the new leg's INVITE with our offer at the bridge's
// destination leg. It returns false when the INVITE was not sent or
// failed (the outcome is published).
func (w *warmRun) dial(ctx context.Context) (*sipgo.DialogClientSession, bool) {
	o := w.inviteOpts
	cmd := w.cmd
	offer, err := w.newOffer()
	if err != nil {
		w.notSent(ctx, "INVITE", RefusedInvalidEncryption, err)
		return nil, false
	}
	w.offer = offer
	req, err := request.NewLeg(cmd.GetRoute(), request.LegOptions{TLS: w.enc == encTLSSRTP, TrunkHost: o.TrunkHost},
		cmd.GetDialog(), o.CallerID, cmd.GetHeaders(), offer.String())
	if err != nil {
		w.notSent(ctx, "INVITE", requestReason(err), err)
		return nil, false
	}
	req.AppendHeader(sip.NewHeader("Allow", uac.Allow)) // what the destination may send us
	w.log.InfoContext(ctx, "sending request", "method", "INVITE", "request_uri", req.Recipient.String(),
		"encryption", w.enc, "media_port", w.br.Leg(bridge.Destination).Port())
	if pw, ok := w.legs.(provisionalWatcher); ok {
		// Before the INVITE goes (a 180 may come back at once), so the
		// Call-ID sipgo would add on sending is chosen here.
		if req.CallID() == nil {
			id := sip.CallIDHeader(uuid.NewString())
			req.AppendHeader(&id)
		}
		w.ringSeen, w.stopRingWatch = pw.WatchProvisional(req.CallID().Value())
	}
	leg, err := w.legs.Invite(ctx, req)
	if err != nil {
		w.publish(ctx, failed(0, "", err.Error()))
		return nil, false
	}
	return leg, true
}

// newOffer is the offer to the destination: the caller's codec when
// ingress's answer names it (Baton does not transcode), else G.711; with
// our SRTP keys on an encrypted leg.
func (w *warmRun) newOffer() (sdp.Session, error) {
	o := w.inviteOpts
	formats := []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}, {PT: 8, Name: "PCMA", ClockRate: 8000}}
	if prev, err := sdp.Parse(w.cmd.GetLocalSdp()); err == nil && len(prev.Formats) > 0 {
		formats = prev.Formats
	} else {
		formats = append(formats, sdp.Format{PT: 101, Name: "telephone-event", ClockRate: 8000, Fmtp: "0-16"})
	}
	offer := sdp.Session{
		Origin:  sdp.NextOrigin("", o.MediaAddr),
		Addr:    netip.AddrPortFrom(o.MediaAddr, uint16(w.br.Leg(bridge.Destination).Port())),
		Formats: formats,
	}
	if w.enc == encUDPSRTP || w.enc == encTLSSRTP {
		offer.Proto = "RTP/SAVP"
		for i, suite := range o.SRTPSuites {
			c, err := sdp.NewCrypto(i+1, suite)
			if err != nil {
				return sdp.Session{}, err
			}
			offer.Crypto = append(offer.Crypto, c)
		}
	}
	return offer, nil
}

// encryptionOf reads the command's encryption; empty follows the route.
func encryptionOf(cmd *batonv1.HandoffCommand, allowSDES, haveTLS bool) (string, error) {
	enc := strings.ToLower(strings.TrimSpace(cmd.GetEncryption()))
	if enc == "" {
		enc = encUDPRTP
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(cmd.GetRoute())), "sips:") {
			enc = encTLSSRTP
		}
	}
	switch enc {
	case encUDPRTP:
		return enc, nil
	case encUDPSRTP:
		if !allowSDES {
			return "", errors.New("encryption udp_srtp sends SDES keys in clear: set invite.allow_sdes_over_udp")
		}
		return enc, nil
	case encTLSSRTP:
		if !haveTLS {
			return "", errors.New("encryption tls_srtp needs TLS signalling: set tls.listen, tls.cert_file and tls.key_file")
		}
		return enc, nil
	}
	return "", fmt.Errorf("encryption %q, want udp_rtp, tls_srtp or udp_srtp", enc)
}
