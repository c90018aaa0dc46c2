package termsafe

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestString(t *testing.T) {
	cases := map[string]string{
		"":                              "",
		"+15550100":                     "+15550100",
		"Jürgen (Büro) \\ 50%":          "Jürgen (Büro) \\ 50%",
		"\x1b[2J\x1b]0;owned\a":         `\x1b[2J\x1b]0;owned\a`,
		"a\tb\nc\rd\x00e\x7f":           `a\tb\nc\rd\x00e\x7f`,
		"csi \u009b2J":                  `csi \u009b2J`,
		"bidi \u202egnp.exe":            `bidi \u202egnp.exe`,
		"not utf-8 \x9b2J \xff":         `not utf-8 \x9b2J \xff`,
		"replacement char \uFFFD stays": "replacement char \uFFFD stays",
	}
	for in, want := range cases {
		got := String(in)
		require.Equal(t, want, got, "%q", in)
		require.True(t, printable(got), "%q", got)
	}
}

type named string

func TestFprintf(t *testing.T) {
	var b bytes.Buffer
	_, err := Fprintf(&b, "%-6s|%s|%v|%s|%d|%q\n", "\x1b", named("\a"), errors.New("e\x1b"), []byte("\x07"), 42, "ok")
	require.NoError(t, err)
	require.Equal(t, `\x1b  |\a|e\x1b|\a|42|"ok"`+"\n", b.String(), "the format's own newline is kept")
	require.Equal(t, "a\\tb\tc", Sprintf("%s\t%s", "a\tb", "c"))
}
