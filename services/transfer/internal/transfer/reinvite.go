package transfer

// The re-INVITEs of a warm transfer: the one transfer sends the caller to
// move its media to the bridge (moveCaller), and those the destination
// sends once it answered (destinationLeg).

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// moveCaller re-INVITEs the caller's dialog to the bridge's caller leg
// with the destination's codec, ACKs the 2xx and points the leg at the
// caller's answer; the re-INVITE's CSeq is kept (w.cseq). On failure it
// ends the new leg and publishes the outcome.
func (w *warmRun) moveCaller(ctx context.Context) bool {
	d := w.cmd.GetDialog()
	codec := w.codec
	fail := func(code int, reason, detail string) bool {
		w.byeLeg(ctx)
		w.publish(ctx, failed(code, reason, detail))
		return false
	}
	cseq, err := request.CSeq(d, w.cmd.GetAttempt())
	if err != nil {
		return fail(0, "", "re-INVITE not sent: "+err.Error())
	}
	cseq = max(cseq, w.cseqFloor) // after a refused REFER's
	formats := []sdp.Format{codec}
	for _, f := range w.offer.Formats {
		if strings.EqualFold(f.Name, "telephone-event") {
			formats = append(formats, f)
		}
	}
	reoffer := sdp.Session{
		Origin:  sdp.NextOrigin(originOf(w.cmd.GetLocalSdp()), w.inviteOpts.MediaAddr),
		Addr:    netip.AddrPortFrom(w.inviteOpts.MediaAddr, uint16(w.br.Leg(bridge.Caller).Port())),
		Formats: formats,
	}
	req, err := request.InDialogCSeq(sip.INVITE, d, cseq)
	if err != nil {
		return fail(0, "", "re-INVITE not sent: "+err.Error())
	}
	w.callerSDP = reoffer.String()
	request.WithSDP(req, w.callerSDP)
	res, ok := w.send(ctx, req)
	if !ok {
		w.byeLeg(ctx)
		return false
	}
	cseq = req.CSeq().SeqNo // one more per digest challenge answered
	if !res.IsSuccess() {
		return fail(res.StatusCode, res.Reason, "caller re-INVITE rejected: the call stays with the agent")
	}
	ack, err := request.InDialogCSeq(sip.ACK, d, cseq)
	if err == nil {
		err = w.legs.Write(ack)
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
	if err := w.br.Leg(bridge.Caller).SetRemote(ans.Addr, codec.ClockRate, bridge.Keys{}); err != nil {
		return fail(0, "", "caller media: "+err.Error())
	}
	if ans.RTCP.IsValid() {
		w.br.Leg(bridge.Caller).SetRTCP(ans.RTCP)
	}
	w.cseq = cseq
	return true
}

func originOf(body string) string {
	s, err := sdp.Parse(body)
	if err != nil {
		return ""
	}
	return s.Origin
}

// destinationLeg answers the re-INVITEs a destination sends once it
// answered: a session refresh (RFC 4028), a hold and its resume, media
// moved to another address, new SRTP keys. A codec change or a switch
// between RTP and SRTP is refused with 488 (Baton does not transcode).
type destinationLeg struct {
	br    *bridge.Bridge
	codec sdp.Format
	// local is our key on the leg (empty for RTP).
	local sdp.Crypto
	mu    sync.Mutex
	// last is the description we last sent the destination: a re-answer
	// that does not change it keeps its o= version (RFC 3264 8).
	last sdp.Session
	// remote is the destination's current description.
	remote sdp.Session
	held   bool
}

func newDestinationLeg(br *bridge.Bridge, offer, answer sdp.Session, codec sdp.Format, keys bridge.Keys) *destinationLeg {
	last := offer
	last.Formats = []sdp.Format{codec}
	if ev, ok := findEvent(offer, answer); ok {
		last.Formats = append(last.Formats, ev)
	}
	if keys.Local.Suite != "" {
		last.Crypto = []sdp.Crypto{keys.Local}
	}
	return &destinationLeg{br: br, codec: codec, local: keys.Local, last: last, remote: answer}
}

// findEvent is telephone-event when both descriptions carry it, with the
// peer's payload type.
func findEvent(ours, theirs sdp.Session) (sdp.Format, bool) {
	ev := sdp.Format{Name: "telephone-event", ClockRate: 8000}
	if _, ok := ours.Find(ev); !ok {
		return sdp.Format{}, false
	}
	return theirs.Find(ev)
}

// onHold says the destination holds the call: its silence then is not a
// dead leg.
func (d *destinationLeg) onHold() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held
}

// answer is the uac.ReInviteFunc of the leg.
func (d *destinationLeg) answer(req *sip.Request) (int, string, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(req.Body()) == 0 {
		// An offerless re-INVITE (RFC 3261 14.2): our description is the
		// offer, and the ACK's answer can only confirm it (the leg keeps
		// the negotiated stream).
		return 200, "OK", []byte(d.last.String())
	}
	offer, err := sdp.Parse(string(req.Body()))
	if err != nil {
		return 488, "Not Acceptable Here", nil
	}
	next, keys, err := d.negotiate(offer)
	if err != nil {
		return 488, "Not Acceptable Here", nil
	}
	leg := d.br.Leg(bridge.Destination)
	if keys.Remote.Suite != "" && !sameCrypto(keys.Remote, d.remote.Crypto) {
		// New keys: a new SRTP context for what the destination sends.
		if err := leg.SetRemote(offer.Addr, d.codec.ClockRate, keys); err != nil {
			return 488, "Not Acceptable Here", nil
		}
	}
	if offer.Addr != d.remote.Addr && offer.Addr.Addr().IsValid() && !offer.Addr.Addr().IsUnspecified() {
		leg.Move(offer.Addr)
	}
	if next.String() != d.last.String() {
		next.Origin = sdp.NextOrigin(d.last.Origin, d.last.Addr.Addr())
	}
	d.last, d.remote = next, offer
	d.held = offer.Direction == "sendonly" || offer.Direction == "inactive" || offer.Addr.Addr().IsUnspecified()
	// A destination that does not receive (it holds) is sent nothing
	// until it resumes (issue 19, 5).
	leg.SetReceiving(!d.held)
	return 200, "OK", []byte(next.String())
}

// negotiate is our answer to the destination's new offer: the leg's codec
// (and telephone-event) in the peer's payload types, the direction
// mirrored, our key under the peer's tag.
func (d *destinationLeg) negotiate(offer sdp.Session) (sdp.Session, bridge.Keys, error) {
	codec, ok := offer.Find(d.codec)
	if !ok {
		return sdp.Session{}, bridge.Keys{}, fmt.Errorf("codec %s not offered: Baton does not transcode", d.codec.Name)
	}
	next := d.last
	next.Crypto = nil
	next.Proto = offer.Proto
	next.Formats = []sdp.Format{codec}
	if ev, ok := findEvent(d.last, offer); ok {
		next.Formats = append(next.Formats, ev)
	}
	next.Direction = sipx.AnswerDirection(offer.Direction)
	var keys bridge.Keys
	srtp := d.local.Suite != ""
	switch {
	case srtp != (len(offer.Crypto) > 0):
		return sdp.Session{}, bridge.Keys{}, fmt.Errorf("the offer changes between RTP and SRTP")
	case srtp:
		for _, c := range offer.Crypto {
			if c.Suite == d.local.Suite {
				local := d.local
				local.Tag = c.Tag
				next.Crypto = []sdp.Crypto{local}
				keys = bridge.Keys{Local: d.local, Remote: c}
				break
			}
		}
		if len(next.Crypto) == 0 {
			return sdp.Session{}, bridge.Keys{}, fmt.Errorf("suite %s not offered", d.local.Suite)
		}
	}
	return next, keys, nil
}

func sameCrypto(c sdp.Crypto, in []sdp.Crypto) bool {
	for _, o := range in {
		if o.Suite == c.Suite && string(o.Key) == string(c.Key) {
			return true
		}
	}
	return false
}
