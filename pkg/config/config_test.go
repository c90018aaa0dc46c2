package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

type dest struct {
	Name   string `yaml:"name"`
	Method string `yaml:"method"`
}

type sample struct {
	Listen       string `yaml:"listen"`
	Destinations []dest `yaml:"destinations"`
}

func (s *sample) Validate() error {
	var errs []error
	if s.Listen == "" {
		errs = append(errs, Errorf("listen", "required"))
	}
	for i, d := range s.Destinations {
		if d.Method != "REFER" && d.Method != "INVITE" && d.Method != "BYE" {
			errs = append(errs, Errorf("destinations["+string(rune('0'+i))+"].method", "unknown method %q", d.Method))
		}
	}
	return errors.Join(errs...)
}

func TestParseNamesFileLineAndField(t *testing.T) {
	doc := "listen: 127.0.0.1:5060\ndestinations:\n  - name: a\n    method: REFER\n  - name: b\n    method: TELEPORT\n"
	err := Parse("router.yaml", []byte(doc), &sample{})
	require.Error(t, err)
	require.Contains(t, err.Error(), `router.yaml:6: destinations[1].method: unknown method "TELEPORT"`)
	var inv *InvalidError
	require.True(t, errors.As(err, &inv))
	require.Len(t, inv.Problems, 1)
}

func TestParseReportsEveryProblem(t *testing.T) {
	doc := "destinations:\n  - name: a\n    method: X\n"
	err := Parse("c.yaml", []byte(doc), &sample{})
	require.ErrorContains(t, err, "c.yaml: listen: required")
	require.ErrorContains(t, err, `c.yaml:3: destinations[0].method`)
}

func TestParseRejectsUnknownFields(t *testing.T) {
	err := Parse("c.yaml", []byte("listen: x\nlisten_port: 5\n"), &sample{})
	require.ErrorContains(t, err, "c.yaml")
	require.ErrorContains(t, err, "line 2: field listen_port not found")
}

func TestParseKeepsDefaults(t *testing.T) {
	s := &sample{Listen: "default:5060"}
	require.NoError(t, Parse("c.yaml", []byte("destinations: []\n"), s))
	require.Equal(t, "default:5060", s.Listen)
	require.NoError(t, Parse("empty.yaml", nil, s))
}

func TestLoadMissingFile(t *testing.T) {
	err := Load(filepath.Join(t.TempDir(), "nope.yaml"), &sample{})
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestSplitPath(t *testing.T) {
	require.Equal(t, []string{"a", "b", "2", "c"}, splitPath("a.b[2].c"))
	require.Equal(t, []string{"m", "0", "1"}, splitPath("m[0][1]"))
}
