package request

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// Replaces names a dialog to take over (RFC 3891 3): its Call-ID, and its
// tags as the UA that receives the INVITE with Replaces sees them (ToTag
// its local tag, FromTag its remote one).
type Replaces struct {
	CallID, ToTag, FromTag string
}

// String is the Replaces header's value.
func (r Replaces) String() string {
	return r.CallID + ";to-tag=" + r.ToTag + ";from-tag=" + r.FromTag
}

// validate refuses an empty part or one with characters a header value
// cannot hold.
func (r Replaces) validate() error {
	for name, v := range map[string]string{"call-id": r.CallID, "to-tag": r.ToTag, "from-tag": r.FromTag} {
		if v == "" {
			return fmt.Errorf("%w: replaces %s is empty", ErrDialog, name)
		}
		if strings.ContainsAny(v, "; \t<>\"") || sipx.HasControl(v) {
			return fmt.Errorf("%w: replaces %s %q has a separator or control character", ErrDialog, name, v)
		}
	}
	return nil
}

// ReferReplaces builds an attended transfer's REFER (RFC 5589 7) in the
// caller's dialog d with CSeq cseq: Refer-To is target (the transfer
// target, a sip: or sips: URI without headers) with a Replaces header
// naming the dialog the caller's side takes over, escaped into the URI
// (RFC 3261 19.1.1); Referred-By is Baton's side of d.
func ReferReplaces(d *batonv1.Dialog, cseq uint32, target sip.Uri, r Replaces) (*sip.Request, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	t := target.Clone()
	t.Headers = nil
	s := t.String()
	if scheme, _, _ := strings.Cut(s, ":"); !strings.EqualFold(scheme, "sip") && !strings.EqualFold(scheme, "sips") {
		return nil, fmt.Errorf("%w: refer-to %q: want a sip or sips URI", ErrDialog, s)
	}
	if strings.ContainsAny(s, "?<> ") || sipx.HasControl(s) {
		return nil, fmt.Errorf("%w: refer-to %q: not a bare URI", ErrDialog, s)
	}
	req, err := InDialogCSeq(sip.REFER, d, cseq)
	if err != nil {
		return nil, err
	}
	req.AppendHeader(sip.NewHeader("Refer-To", "<"+s+"?Replaces="+escapeURIHeader(r.String())+">"))
	req.AppendHeader(sip.NewHeader("Referred-By", "<"+req.From().Address.String()+">"))
	req.SetBody(nil)
	return req, nil
}

// escapeURIHeader escapes a URI header value: unreserved characters stay,
// everything else is %XX.
func escapeURIHeader(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
