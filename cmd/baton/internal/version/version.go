// Package version reports what build of baton is running, from the
// information the Go toolchain stamps into every binary.
package version

import (
	"fmt"
	"runtime/debug"
)

// Info describes a build.
type Info struct {
	// Version is the module version, "(devel)" for a local build.
	Version string
	// Revision is the VCS commit, empty when the build was not stamped.
	Revision string
	// Time is the commit time, empty when the build was not stamped.
	Time string
	// Modified reports uncommitted changes in the build's tree.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo extracts Info from Go build information.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is one line: "baton v1.2.3 (abc1234, 2026-01-02T03:04:05Z) go1.26".
func (i Info) String() string {
	s := "baton " + i.Version
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if i.Modified {
			rev += "+dirty"
		}
		if i.Time != "" {
			rev += ", " + i.Time
		}
		s += fmt.Sprintf(" (%s)", rev)
	}
	if i.GoVersion != "" {
		s += " " + i.GoVersion
	}
	return s
}
