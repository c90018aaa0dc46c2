package broker

import "errors"

// Sentinel errors the operator can act on; Start wraps them with the
// address or directory they concern.
var (
	// ErrAddrInUse means another process already listens on the address.
	ErrAddrInUse = errors.New("address already in use; another broker may be running there")
	// ErrDataDirNotWritable means the data directory cannot be created or written.
	ErrDataDirNotWritable = errors.New("data dir not writable")
	// ErrDataDirLocked means another broker holds the data directory.
	ErrDataDirLocked = errors.New("data dir in use by another broker")
)
