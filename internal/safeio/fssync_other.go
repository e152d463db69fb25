//go:build !linux

package safeio

import "errors"

// FSSync makes everything written to one file system durable with
// syncfs(2), which only Linux has; elsewhere OpenFSSync fails.
type FSSync struct{}

// OpenFSSync fails with errors.ErrUnsupported where there is no syncfs:
// fsync each file instead.
func OpenFSSync(dir string) (*FSSync, error) { return nil, errors.ErrUnsupported }

// Sync is never called: there is no FSSync.
func (s *FSSync) Sync() error { return errors.ErrUnsupported }

// Close does nothing.
func (s *FSSync) Close() error { return nil }
