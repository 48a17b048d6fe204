package keystore

import "errors"

// Sentinel errors. Errors returned by this package wrap them, so callers use
// errors.Is.
var (
	// ErrNotFound means the requested record does not exist.
	ErrNotFound = errors.New("keystore: not found")
	// ErrWrongMasterKey means the master key given to Open does not open the
	// check record written when the data directory was created.
	ErrWrongMasterKey = errors.New("keystore: master key does not match this data directory")
	// ErrCorrupt means a stored record failed authentication or is malformed:
	// it was tampered with, moved to another key, or damaged on disk.
	ErrCorrupt = errors.New("keystore: record is corrupt or was tampered with")
	// ErrInvalidArgument means a key id, name, value or master key given by the
	// caller breaks this package's rules (see the package documentation).
	ErrInvalidArgument = errors.New("keystore: invalid argument")
	// ErrInvalidMasterKey means a master key source (file, hex string,
	// passphrase) is malformed: wrong length, not hex, salt too short.
	ErrInvalidMasterKey = errors.New("keystore: invalid master key")
	// ErrInsecureKeyFile means a master key file (or another secret file read
	// with ReadSecretFile) is readable or writable by its group or by others;
	// fix it with chmod 600.
	ErrInsecureKeyFile = errors.New("keystore: key file is accessible by group or others")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("keystore: closed")
	// ErrStoreFailed means the storage engine hit a fatal write error (for
	// example a failed WAL sync). The store refuses further calls; close it
	// and restart the node.
	ErrStoreFailed = errors.New("keystore: storage failed; restart the node")
)
