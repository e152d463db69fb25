package safeio_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/internal/safeio"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, content := range []string{"first", "second, longer"} {
		if err := safeio.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("got %q %v, want %q", got, err, content)
		}
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := safeio.WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	if err := safeio.SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}

func TestRawFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := safeio.CreateNew(path, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write([]byte("hello, ")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := io.Copy(f, strings.NewReader("world")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v (it must do nothing: the descriptor may be another file's by then)", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "hello, world" {
		t.Errorf("file = %q, %v", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, %v", fi.Mode(), err)
	}
	if _, err := safeio.CreateNew(path, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateNew of an existing file: %v, want ErrExist", err)
	}
}

func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("a"), 0o600)
	os.WriteFile(b, []byte("b"), 0o600)
	if err := safeio.RenameNoReplace(a, b); !errors.Is(err, fs.ErrExist) {
		t.Errorf("rename over an existing file: %v, want ErrExist", err)
	}
	if got, _ := os.ReadFile(b); string(got) != "b" {
		t.Errorf("the existing file was replaced: %q", got)
	}
	c := filepath.Join(dir, "c")
	if err := safeio.RenameNoReplace(a, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old name still there: %v", err)
	}
	if got, _ := os.ReadFile(c); string(got) != "a" {
		t.Errorf("renamed file holds %q", got)
	}
}
