package sipx

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRefusal(t *testing.T) {
	for method, want := range map[string]int{"UPDATE": 405, "REGISTER": 405, "PUBLISH": 405, "FROBNICATE": 501, "update": 501} {
		code, reason := Refusal(method)
		require.Equal(t, want, code, method)
		require.NotEmpty(t, reason)
	}
}
