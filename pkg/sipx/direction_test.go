package sipx

import "testing"

func TestAnswerDirection(t *testing.T) {
	for offer, want := range map[string]string{
		"sendonly": "recvonly", "SENDONLY": "recvonly", "recvonly": "sendonly",
		"inactive": "inactive", "sendrecv": "sendrecv", "": "sendrecv", "bogus": "sendrecv",
	} {
		if got := AnswerDirection(offer); got != want {
			t.Errorf("AnswerDirection(%q) = %q, want %q", offer, got, want)
		}
	}
}
