package server

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

func TestAdmissionRemembersDecisions(t *testing.T) {
	var active atomic.Int64
	a := newAdmission(2, 1, &active)
	tr := &trunks.Trunk{Name: "t"}
	now := time.Unix(1000, 0)
	v, fresh := a.decide("a", tr, now)
	require.Equal(t, admitted, v)
	require.True(t, fresh)
	v, fresh = a.decide("b", tr, now)
	require.Equal(t, overRate, v)
	require.True(t, fresh)
	v, fresh = a.decide("a", tr, now) // retransmission: same verdict, not fresh
	require.Equal(t, admitted, v)
	require.False(t, fresh)
	v, _ = a.decide("c", tr, now.Add(time.Second)) // a token came back
	require.Equal(t, admitted, v)
	active.Store(2)
	v, _ = a.decide("d", tr, now.Add(10*time.Second))
	require.Equal(t, overCalls, v)

	// The memory is bounded: a flood of distinct keys never grows it.
	for i := range 10 * len(a.ring) {
		a.decide(string(rune(i)), tr, now)
	}
	require.LessOrEqual(t, len(a.seen), len(a.ring))
}

func TestAdmissionPerTrunk(t *testing.T) {
	var active atomic.Int64
	a := newAdmission(100, 100, &active)
	flood := &trunks.Trunk{Name: "flood", MaxCalls: 2, MaxCPS: 3}
	legit := &trunks.Trunk{Name: "legit"}
	now := time.Unix(1000, 0)
	var got []verdict
	for i := range 5 {
		v, _ := a.decide(fmt.Sprint("f", i), flood, now)
		got = append(got, v)
	}
	require.Equal(t, []verdict{admitted, admitted, admitted, overTrunkRate, overTrunkRate}, got,
		"the trunk's bucket holds max_cps tokens")
	v, _ := a.decide("l0", legit, now)
	require.Equal(t, admitted, v, "another trunk keeps the global capacity")

	// Calls in the table count against the trunk's max_calls.
	require.True(t, a.enter(flood))
	require.True(t, a.enter(flood))
	require.False(t, a.enter(flood), "max_calls 2")
	v, _ = a.decide("f9", flood, now.Add(time.Second))
	require.Equal(t, overTrunkCalls, v)
	a.leave(flood)
	v, _ = a.decide("f10", flood, now.Add(time.Second))
	require.Equal(t, admitted, v)
	require.True(t, a.enter(legit), "no max_calls on the legit trunk")

	// A refused INVITE uses no global token: the legit trunk still gets
	// the global rate.
	b := newAdmission(100, 2, &active)
	for i := range 10 {
		b.decide(fmt.Sprint("x", i), &trunks.Trunk{Name: "flood", MaxCPS: 1}, now)
	}
	v, _ = b.decide("l1", legit, now)
	require.Equal(t, admitted, v)
}
