// Package durable makes files and directory entries survive a crash: the fsync calls a
// new file or a rename needs before anything may rely on it (a file's contents are on
// disk only once the file is synced, its name only once its directory is).
//
// It must never hold state or decide where anything is written; it only writes what it
// is given where it is told.
package durable

import (
	"os"
)

// WriteFile writes b to path (created with perm, or truncated), syncs it and closes it.
// The new name is durable only once its directory is synced (SyncDir).
func WriteFile(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir syncs directory dir, making the names created, renamed or removed in it
// durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
