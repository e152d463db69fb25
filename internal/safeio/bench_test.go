package safeio_test

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFsyncFloor is the disk's durability floor, which bounds the
// latency of any 250 that follows a durable write: append 1 KiB to a file
// and fsync it, one at a time, in the package's temporary directory (set
// TMPDIR to the file system the spool is on). Nothing of Petrel's is
// measured.
func BenchmarkFsyncFloor(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "floor"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1024)
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
