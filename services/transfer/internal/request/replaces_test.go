package request

import (
	"net/url"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// TestReferReplacesNamesTheDialog: the REFER is in the caller's dialog
// with the CSeq asked for; its Refer-To is the target with the Replaces
// escaped into the URI, which the far end reads back unchanged.
func TestReferReplacesNamesTheDialog(t *testing.T) {
	var target sip.Uri
	require.NoError(t, sip.ParseUri("sip:queue@192.0.2.7:5080;transport=udp", &target))
	rep := Replaces{CallID: "a84b4c76e66710@192.0.2.1", ToTag: "dest-tag", FromTag: "baton-tag"}
	req, err := ReferReplaces(dialog(), 12, target, rep)
	require.NoError(t, err)
	got := parse(t, req)
	require.Equal(t, sip.REFER, got.Method)
	require.Equal(t, "call-1@sbc", got.CallID().Value())
	require.Equal(t, uint32(12), got.CSeq().SeqNo)
	referTo := got.GetHeader("Refer-To").Value()
	require.Equal(t, "<sip:queue@192.0.2.7:5080;transport=udp?Replaces=a84b4c76e66710%40192.0.2.1%3Bto-tag%3Ddest-tag%3Bfrom-tag%3Dbaton-tag>",
		referTo)
	_, query, _ := strings.Cut(strings.Trim(referTo, "<>"), "?")
	v, err := url.PathUnescape(strings.TrimPrefix(query, "Replaces="))
	require.NoError(t, err)
	require.Equal(t, "a84b4c76e66710@192.0.2.1;to-tag=dest-tag;from-tag=baton-tag", v)
	require.Equal(t, "<sip:agent@127.0.0.1:5060>", got.GetHeader("Referred-By").Value())
}

// TestReferReplacesRefusesBadInput: a missing tag, a separator or a
// control character in a part, a target that is not sip: build nothing.
func TestReferReplacesRefusesBadInput(t *testing.T) {
	var sipTarget, telTarget sip.Uri
	require.NoError(t, sip.ParseUri("sip:queue@192.0.2.7", &sipTarget))
	require.NoError(t, sip.ParseUri("tel:+15551234567", &telTarget))
	good := Replaces{CallID: "c", ToTag: "t", FromTag: "f"}
	for name, tc := range map[string]struct {
		target sip.Uri
		rep    Replaces
	}{
		"no to-tag":      {sipTarget, Replaces{CallID: "c", FromTag: "f"}},
		"no call-id":     {sipTarget, Replaces{ToTag: "t", FromTag: "f"}},
		"separator":      {sipTarget, Replaces{CallID: "c;to-tag=x", ToTag: "t", FromTag: "f"}},
		"control":        {sipTarget, Replaces{CallID: "c\r\nX-Evil: 1", ToTag: "t", FromTag: "f"}},
		"tel: target":    {telTarget, good},
		"no dialog cseq": {sipTarget, good},
	} {
		t.Run(name, func(t *testing.T) {
			cseq := uint32(3)
			if name == "no dialog cseq" {
				cseq = 1 << 31
			}
			_, err := ReferReplaces(dialog(), cseq, tc.target, tc.rep)
			require.ErrorIs(t, err, ErrDialog)
		})
	}
}
