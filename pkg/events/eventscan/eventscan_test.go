package eventscan

import (
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func TestFind(t *testing.T) {
	_, ok := Find(&batonv1.HandoffCommand{CallId: "c1", Headers: []*batonv1.SipHeader{{Name: "X-A", Value: "b"}},
		Dialog: &batonv1.Dialog{RouteSet: []string{"<sip:p;lr>"}}})
	require.True(t, ok)
	for _, m := range []*batonv1.HandoffCommand{
		{Reason: "a\nb"},
		{Headers: []*batonv1.SipHeader{{Name: "X-A", Value: "b\r\nRefer-To: sip:evil@x"}}},
		{Dialog: &batonv1.Dialog{RouteSet: []string{"<sip:p;lr>", "a\x00"}}},
	} {
		field, ok := Find(m)
		require.False(t, ok, "%v", m)
		require.NotEmpty(t, field)
	}
	field, ok := Find(&batonv1.HandoffRequested{Variables: map[string]string{"a\r": "b"}})
	require.False(t, ok)
	require.Contains(t, field, "variables")
	_, ok = Find(&batonv1.HandoffRequested{Headers: map[string]string{"X-A": "b\x00"}})
	require.False(t, ok)
}
