package observability

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, LogConfig{Level: "warn", Format: "json"}, "ingress")
	require.NoError(t, err)
	l.Info("hidden")
	l.Warn("shown", "call_id", "c1")
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Equal(t, "shown", line["msg"])
	require.Equal(t, "ingress", line["service"])
	require.Equal(t, "c1", line["call_id"])

	_, err = NewLogger(&buf, LogConfig{Level: "loud"}, "x")
	require.ErrorContains(t, err, "log.level")
	_, err = NewLogger(&buf, LogConfig{Level: "info", Format: "xml"}, "x")
	require.ErrorContains(t, err, "log.format")
}
