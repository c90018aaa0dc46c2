package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"google.golang.org/protobuf/types/known/durationpb"

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
	// TrunkHost (host[:port]) is where tel: and extension routes are
	// dialled; empty refuses them.
	TrunkHost string
}

// Sender's leg-related methods (uac.Client implements them).
type legSender interface {
	Invite(ctx context.Context, req *sip.Request) (*sipgo.DialogClientSession, error)
	Write(req *sip.Request) error
	OnReInvite(d *sipgo.DialogClientSession, f uac.ReInviteFunc) (stop func())
}

// idlePoll is how often a bridged call checks its media.
const idlePoll = 200 * time.Millisecond

// invite carries out a warm transfer: a new leg to the route, then the
// caller's media moved to a bridge with a re-INVITE, until either side
// hangs up or the media stops.
func (s *Service) invite(ctx context.Context, e *execution, log *slog.Logger) {
	o := s.opts.Invite
	legs, ok := s.sip.(legSender)
	if !ok || o.Ports == nil {
		s.notSent(ctx, e, log, "INVITE", RefusedNotConfigured, errors.New("warm transfer (INVITE) is not configured"))
		return
	}
	cmd := e.cmd
	enc, err := encryptionOf(cmd, o.AllowSDESOverUDP, o.TLS)
	if err != nil {
		s.notSent(ctx, e, log, "INVITE", RefusedInvalidEncryption, err)
		return
	}
	// The whisper is read before any SIP: a bad file fails the command
	// with nothing sent.
	var whisperAudio *whisper.Audio
	if w := cmd.GetWhisper(); w != "" {
		a, err := whisper.Load(w, o.WhisperMax)
		if err != nil {
			s.notSent(ctx, e, log, "INVITE", RefusedInvalidWhisper, err)
			return
		}
		whisperAudio = &a
	}
	br, err := bridge.New(o.Ports)
	if err != nil {
		s.notSent(ctx, e, log, "INVITE", RefusedNoMediaPort, err)
		return
	}
	defer br.Close()

	// The offer to the destination: the caller's codec when ingress's
	// answer names it (Baton does not transcode), else G.711.
	formats := []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}, {PT: 8, Name: "PCMA", ClockRate: 8000}}
	if prev, err := sdp.Parse(cmd.GetLocalSdp()); err == nil && len(prev.Formats) > 0 {
		formats = prev.Formats
	} else {
		formats = append(formats, sdp.Format{PT: 101, Name: "telephone-event", ClockRate: 8000, Fmtp: "0-16"})
	}
	offer := sdp.Session{
		Origin:  sdp.NextOrigin("", o.MediaAddr),
		Addr:    netip.AddrPortFrom(o.MediaAddr, uint16(br.Leg(bridge.Destination).Port())),
		Formats: formats,
	}
	if enc == encUDPSRTP || enc == encTLSSRTP {
		offer.Proto = "RTP/SAVP"
		for i, suite := range o.SRTPSuites {
			c, err := sdp.NewCrypto(i+1, suite)
			if err != nil {
				s.notSent(ctx, e, log, "INVITE", RefusedInvalidEncryption, err)
				return
			}
			offer.Crypto = append(offer.Crypto, c)
		}
	}
	req, err := request.NewLeg(cmd.GetRoute(), request.LegOptions{TLS: enc == encTLSSRTP, TrunkHost: o.TrunkHost},
		cmd.GetDialog(), o.CallerID, cmd.GetHeaders(), offer.String())
	if err != nil {
		s.notSent(ctx, e, log, "INVITE", requestReason(err), err)
		return
	}
	req.AppendHeader(sip.NewHeader("Allow", uac.Allow)) // what the destination may send us
	log.InfoContext(ctx, "sending request", "method", "INVITE", "request_uri", req.Recipient.String(),
		"encryption", enc, "media_port", br.Leg(bridge.Destination).Port())
	leg, err := legs.Invite(ctx, req)
	if err != nil {
		s.publish(ctx, e, log, failed(0, "", err.Error()))
		return
	}
	defer func() { _ = leg.Close() }()

	if !s.ring(ctx, e, log, leg) {
		return
	}
	if err := leg.Ack(ctx); err != nil {
		s.publish(ctx, e, log, failed(leg.InviteResponse.StatusCode, leg.InviteResponse.Reason, "ACK: "+err.Error()))
		s.byeLeg(ctx, leg, log)
		return
	}
	s.publish(ctx, e, log, step{status: answered, code: leg.InviteResponse.StatusCode, reason: leg.InviteResponse.Reason})

	codec, dest, err := s.answerDestination(br, offer, leg.InviteResponse)
	if err != nil {
		s.byeLeg(ctx, leg, log)
		s.publish(ctx, e, log, failed(0, "", "destination answer: "+err.Error()))
		return
	}
	br.SetCodec(fmt.Sprintf("%s/%d", codec.Name, codec.ClockRate))
	// From here the destination may re-INVITE (hold, refresh, new address).
	defer legs.OnReInvite(leg, dest.answer)()
	if whisperAudio != nil && !s.whisper(ctx, e, log, br, leg, codec, *whisperAudio) {
		return
	}

	cseq, ok := s.moveCaller(ctx, e, log, br, codec, offer.Formats, leg)
	if !ok {
		return
	}
	br.Activate()
	s.publish(ctx, e, log, step{status: bridged, code: 200, reason: "OK"})
	s.bridged(ctx, e, log, br, leg, dest, cseq)
}

// whisper plays the audio to the destination before the caller is moved
// to the bridge. It returns false when the transfer ended (outcome
// published, destination BYEd when still there).
func (s *Service) whisper(ctx context.Context, e *execution, log *slog.Logger, br *bridge.Bridge,
	leg *sipgo.DialogClientSession, codec sdp.Format, audio whisper.Audio) bool {
	frames, err := audio.Frames(codec.Name)
	if err != nil {
		s.byeLeg(ctx, leg, log)
		s.publish(ctx, e, log, failed(0, "", "whisper: "+err.Error()))
		return false
	}
	playCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := br.Play(playCtx, bridge.Destination, codec.PT, whisper.FrameSamples, frames)
		done <- result{n, err}
	}()
	var why string
	byeDestination := true
	for why == "" {
		select {
		case r := <-done:
			if r.err != nil {
				s.byeLeg(ctx, leg, log)
				s.publish(ctx, e, log, failed(0, "", "whisper: "+r.err.Error()))
				return false
			}
			log.InfoContext(ctx, "whisper played", "packets", r.n, "duration", audio.Duration().String())
			return true
		case <-leg.Context().Done():
			why, byeDestination = "destination hung up during the whisper", false
		case fact := <-e.facts:
			if _, ok := fact.(*batonv1.CallEnded); ok {
				why = "caller hung up during the whisper"
			}
		case <-ctx.Done():
			why = "transfer shut down during the whisper"
		}
	}
	cancel()
	<-done
	if byeDestination {
		s.byeLeg(ctx, leg, log)
	}
	s.publish(ctx, e, log, failed(0, "", why))
	return false
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

// ring waits for the new leg's answer, publishing RINGING on 18x. The
// answer timeout or the caller hanging up CANCELs it. It returns true on
// a 2xx; otherwise the outcome is published.
func (s *Service) ring(ctx context.Context, e *execution, log *slog.Logger, leg *sipgo.DialogClientSession) bool {
	timeout := s.opts.Invite.AnswerTimeout
	if t := e.cmd.GetAnswerTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	answerCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lastRinging := 0
	result := make(chan error, 1)
	go func() {
		result <- leg.WaitAnswer(answerCtx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
			if res.StatusCode > 100 && res.StatusCode < 200 && res.StatusCode != lastRinging {
				lastRinging = res.StatusCode
				s.publish(ctx, e, log, step{status: ringing, code: res.StatusCode, reason: res.Reason})
			}
			return nil
		}})
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var why string
	for why == "" {
		select {
		case err := <-result:
			return s.answerResult(ctx, e, log, err)
		case <-timer.C:
			why = fmt.Sprintf("no answer within %v: cancelled", timeout)
		case fact := <-e.facts:
			if _, ok := fact.(*batonv1.CallEnded); ok {
				why = "caller hung up while the destination was ringing: cancelled"
			}
		case <-ctx.Done():
			why = "transfer shut down while ringing: cancelled"
		}
	}
	cancel(errors.New(why))
	err := <-result
	if err == nil {
		// Answered while being cancelled: take it down again.
		_ = leg.Ack(ctx)
		s.byeLeg(ctx, leg, log)
	}
	code := 0
	if r := leg.InviteResponse; r != nil && r.StatusCode >= 300 {
		code = r.StatusCode
	}
	s.publish(ctx, e, log, failed(code, finalReason(leg.InviteResponse, code), why))
	return false
}

func finalReason(r *sip.Response, code int) string {
	if r == nil || code == 0 {
		return ""
	}
	return r.Reason
}

// answerResult turns WaitAnswer's result into an outcome.
func (s *Service) answerResult(ctx context.Context, e *execution, log *slog.Logger, err error) bool {
	var rej *sipgo.ErrDialogResponse
	switch {
	case err == nil:
		return true
	case errors.As(err, &rej):
		s.publish(ctx, e, log, failed(rej.Res.StatusCode, rej.Res.Reason,
			fmt.Sprintf("destination answered %d", rej.Res.StatusCode)))
	case errors.Is(err, sip.ErrTransactionTimeout):
		s.publish(ctx, e, log, failed(0, "", "invite timed out"))
	default:
		s.publish(ctx, e, log, failed(0, "", "INVITE: "+err.Error()))
	}
	return false
}

// answerDestination reads the destination's SDP answer into the bridge
// and returns the codec and the leg that answers its re-INVITEs.
func (s *Service) answerDestination(br *bridge.Bridge, offer sdp.Session, res *sip.Response) (sdp.Format, *destinationLeg, error) {
	ans, err := sdp.Parse(string(res.Body()))
	if err != nil {
		return sdp.Format{}, nil, err
	}
	codec, ok := ans.Audio()
	if !ok {
		return sdp.Format{}, nil, errors.New("no audio codec in the answer")
	}
	if _, ok := offer.Find(codec); !ok {
		return sdp.Format{}, nil, fmt.Errorf("answered codec %s was not offered", codec.Name)
	}
	keys, err := keysOf(offer, ans)
	if err != nil {
		return sdp.Format{}, nil, err
	}
	if err := br.Leg(bridge.Destination).SetRemote(ans.Addr, codec.ClockRate, keys); err != nil {
		return sdp.Format{}, nil, err
	}
	if ans.RTCP.IsValid() {
		br.Leg(bridge.Destination).SetRTCP(ans.RTCP)
	}
	return codec, newDestinationLeg(br, offer, ans, codec, keys), nil
}

// keysOf pairs the answer's crypto with the offered one of the same tag.
func keysOf(offer, ans sdp.Session) (bridge.Keys, error) {
	if len(offer.Crypto) == 0 {
		return bridge.Keys{}, nil
	}
	if len(ans.Crypto) == 0 {
		return bridge.Keys{}, errors.New("SRTP offered, plain RTP answered")
	}
	a := ans.Crypto[0]
	for _, c := range offer.Crypto {
		if c.Tag == a.Tag && c.Suite == a.Suite {
			return bridge.Keys{Local: c, Remote: a}, nil
		}
	}
	return bridge.Keys{}, fmt.Errorf("answered crypto %d %s was not offered", a.Tag, a.Suite)
}

// moveCaller re-INVITEs the caller's dialog to the bridge's caller leg
// with the destination's codec, ACKs the 2xx and points the leg at the
// caller's answer. It returns the re-INVITE's CSeq. On failure it ends the
// new leg and publishes the outcome.
func (s *Service) moveCaller(ctx context.Context, e *execution, log *slog.Logger, br *bridge.Bridge, codec sdp.Format,
	offered []sdp.Format, leg *sipgo.DialogClientSession) (uint32, bool) {
	legs := s.sip.(legSender)
	d := e.cmd.GetDialog()
	fail := func(code int, reason, detail string) (uint32, bool) {
		s.byeLeg(ctx, leg, log)
		s.publish(ctx, e, log, failed(code, reason, detail))
		return 0, false
	}
	cseq, err := request.CSeq(d, e.cmd.GetAttempt())
	if err != nil {
		return fail(0, "", "re-INVITE not sent: "+err.Error())
	}
	formats := []sdp.Format{codec}
	for _, f := range offered {
		if strings.EqualFold(f.Name, "telephone-event") {
			formats = append(formats, f)
		}
	}
	reoffer := sdp.Session{
		Origin:  sdp.NextOrigin(originOf(e.cmd.GetLocalSdp()), s.opts.Invite.MediaAddr),
		Addr:    netip.AddrPortFrom(s.opts.Invite.MediaAddr, uint16(br.Leg(bridge.Caller).Port())),
		Formats: formats,
	}
	req, err := request.InDialogCSeq(sip.INVITE, d, cseq)
	if err != nil {
		return fail(0, "", "re-INVITE not sent: "+err.Error())
	}
	request.WithSDP(req, reoffer.String())
	res, ok := s.send(ctx, e, log, req)
	if !ok {
		s.byeLeg(ctx, leg, log)
		return 0, false
	}
	if !res.IsSuccess() {
		return fail(res.StatusCode, res.Reason, "caller re-INVITE rejected: the call stays with the agent")
	}
	ack, err := request.InDialogCSeq(sip.ACK, d, cseq)
	if err == nil {
		err = legs.Write(ack)
	}
	if err != nil {
		return fail(res.StatusCode, res.Reason, "caller re-INVITE ACK: "+err.Error())
	}
	ans, err := sdp.Parse(string(res.Body()))
	if err != nil {
		return fail(res.StatusCode, res.Reason, "caller re-INVITE answer: "+err.Error())
	}
	if _, ok := ans.Find(codec); !ok {
		return fail(488, "Not Acceptable Here", "caller answered without "+codec.Name)
	}
	if err := br.Leg(bridge.Caller).SetRemote(ans.Addr, codec.ClockRate, bridge.Keys{}); err != nil {
		return fail(0, "", "caller media: "+err.Error())
	}
	if ans.RTCP.IsValid() {
		br.Leg(bridge.Caller).SetRTCP(ans.RTCP)
	}
	return cseq, true
}

func originOf(body string) string {
	s, err := sdp.Parse(body)
	if err != nil {
		return ""
	}
	return s.Origin
}

// bridged runs the bridged call until one side hangs up, the media stops
// or the process shuts down, ends the other side and publishes ENDED with
// the bridge's statistics.
func (s *Service) bridged(ctx context.Context, e *execution, log *slog.Logger, br *bridge.Bridge, leg *sipgo.DialogClientSession,
	dest *destinationLeg, cseq uint32) {
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	var detail, why string
	byeCaller, byeDestination := true, true
	for detail == "" {
		select {
		case <-leg.Context().Done():
			detail, why, byeDestination = "destination hung up", EndDestinationHangup, false
		case fact := <-e.facts:
			if f, ok := fact.(*batonv1.CallEnded); ok {
				detail, why, byeCaller = "caller hung up ("+f.GetMethod()+")", EndCallerHangup, false
			}
		case now := <-tick.C:
			var ignore []bridge.Side
			if dest.onHold() {
				ignore = append(ignore, bridge.Destination) // a held call is silent
			}
			if side, idle := br.Idle(now, s.opts.Invite.IdleTimeout, ignore...); idle {
				detail, why = fmt.Sprintf("no media from the %s for %v", side, s.opts.Invite.IdleTimeout), EndMediaTimeout
			}
		case <-ctx.Done():
			detail, why = "transfer shut down", EndShutdown
		}
	}
	// The BYEs outlive a shutdown's cancelled ctx, briefly.
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Invite.ByeTimeout)
	defer cancel()
	if byeDestination {
		s.byeLeg(byeCtx, leg, log)
	}
	if byeCaller {
		if req, err := request.InDialogCSeq(sip.BYE, e.cmd.GetDialog(), cseq+1); err == nil {
			if _, err := s.sip.Do(byeCtx, req); err != nil {
				log.WarnContext(ctx, "caller BYE", "err", err)
			}
		}
	}
	stats := br.Stats()
	for _, side := range []bridge.Side{bridge.Caller, bridge.Destination} {
		l := br.Leg(side)
		if sent, recv := l.RTCPCounts(); sent+recv > 0 {
			log.InfoContext(ctx, "rtcp", "leg", side.String(), "sent", sent, "received", recv, "rtt", l.RTT().String())
		}
	}
	if since := br.Since(); !since.IsZero() {
		stats.Duration = durationpb.New(s.now().Sub(since))
	}
	for _, side := range []bridge.Side{bridge.Caller, bridge.Destination} {
		if d := br.Leg(side).Drops(); d.Unauthentic+d.Replayed > 0 {
			log.WarnContext(ctx, "srtp packets dropped", "leg", side.String(), "unauthentic", d.Unauthentic, "replayed", d.Replayed)
		}
		if d, n := br.Leg(side).Drops(), br.Leg(side).Relatches(); d.Foreign+n > 0 {
			log.InfoContext(ctx, "media from other sources dropped", "leg", side.String(), "foreign", d.Foreign, "relatches", n)
		}
	}
	s.opts.Metrics.legDrops(br)
	s.publish(ctx, e, log, step{status: ended, detail: detail, bridge: stats, ended: why})
}

// byeLeg ends the new leg, logging a failure.
func (s *Service) byeLeg(ctx context.Context, leg *sipgo.DialogClientSession, log *slog.Logger) {
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Invite.ByeTimeout)
	defer cancel()
	if err := leg.Bye(byeCtx); err != nil {
		log.WarnContext(ctx, "destination BYE", "err", err)
	}
}
