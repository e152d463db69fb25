//go:build !unix

package safeio

// SyncDir does nothing where directories cannot be fsynced.
func SyncDir(string) error { return nil }
