//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package broker

import "os"

// lockFile does nothing where flock is missing: the operator must not
// start two brokers on one data dir.
func lockFile(*os.File) error { return nil }
