package config

import (
	"fmt"
	"os"
	"strings"
)

// ExpandEnv replaces each ${NAME} (or $NAME) in s with getenv(NAME),
// passing each value through quote first when quote is not nil. A name
// that is unset or empty is an error: a setting that names a variable
// never silently becomes empty (an empty host binds every address, an
// empty instance id turns static membership off).
func ExpandEnv(s string, getenv func(string) string, quote func(string) string) (string, error) {
	var missing []string
	out := os.Expand(s, func(name string) string {
		v := getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		if quote != nil {
			v = quote(v)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q: environment variable %s is not set", s, strings.Join(missing, ", "))
	}
	return out, nil
}
