package maildir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "mail"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// deliverers are the two ways to deliver, which the tests that take them
// run both: Deliver from a reader, and DeliverBytes through the batcher.
var deliverers = []struct {
	name string
	fn   func(s *Store, ctx context.Context, mailboxes []string, msg []byte) (string, int64, error)
}{
	{"Deliver", func(s *Store, ctx context.Context, mailboxes []string, msg []byte) (string, int64, error) {
		return s.Deliver(ctx, mailboxes, bytes.NewReader(msg))
	}},
	{"DeliverBytes", func(s *Store, ctx context.Context, mailboxes []string, msg []byte) (string, int64, error) {
		return s.DeliverBytes(ctx, mailboxes, msg)
	}},
}

// files lists the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var uniqueRE = regexp.MustCompile(`^\d+\.M\d+P\d+Q\d+\.[A-Za-z0-9.\\-]+,S=\d+$`)

func TestDeliver(t *testing.T) {
	tests := []struct {
		name      string
		mailboxes []string
		want      []string // distinct mailboxes that receive the message
	}{
		{"one", []string{"alice"}, []string{"alice"}},
		{"three", []string{"alice", "bob", "carol"}, []string{"alice", "bob", "carol"}},
		{"duplicates after mapping", []string{"alice", "Alice", "ALICE", "bob"}, []string{"alice", "bob"}},
	}
	for _, d := range deliverers {
		for _, tt := range tests {
			t.Run(d.name+"/"+tt.name, func(t *testing.T) {
				s := newStore(t)
				msg := []byte("From: a@example.org\nSubject: test\n\nbody\n")
				id, size, err := d.fn(s, t.Context(), tt.mailboxes, msg)
				if err != nil {
					t.Fatal(err)
				}
				if size != int64(len(msg)) {
					t.Errorf("size = %d, want %d", size, len(msg))
				}
				if !uniqueRE.MatchString(id) || !strings.HasSuffix(id, fmt.Sprintf(",S=%d", len(msg))) {
					t.Errorf("id %q is not a Maildir unique name with size", id)
				}
				var want []string
				for _, m := range tt.want {
					want = append(want, filepath.Join(m, "new", id))
					names, err := s.List(m)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(names, []string{id}) {
						t.Errorf("List(%q) = %q, want [%q]", m, names, id)
					}
					path := filepath.Join(s.root, m, "new", id)
					got, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, msg) {
						t.Errorf("%s holds %q", path, got)
					}
					fi, _ := os.Stat(path)
					if fi.Mode().Perm() != 0o600 {
						t.Errorf("mode of %s = %v, want 0600", path, fi.Mode().Perm())
					}
					for _, sub := range []string{"", "tmp", "new", "cur"} {
						fi, err := os.Stat(filepath.Join(s.root, m, sub))
						if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
							t.Errorf("%s/%s: %v, %v", m, sub, fi.Mode(), err)
						}
					}
				}
				slices.Sort(want)
				if got := files(t, s.root); !slices.Equal(got, want) {
					t.Errorf("files under root = %q, want %q (spool file left?)", got, want)
				}
			})
		}
	}
}

func TestDeliverEmpty(t *testing.T) {
	s := newStore(t)
	id, size, err := s.Deliver(t.Context(), []string{"a"}, strings.NewReader(""))
	if err != nil || size != 0 || !strings.HasSuffix(id, ",S=0") {
		t.Errorf("Deliver(empty) = %q, %d, %v", id, size, err)
	}
}

func TestDeliverLarge(t *testing.T) {
	s := newStore(t)
	msg := bytes.Repeat([]byte("0123456789abcdef\n"), 100_000) // 1.7 MB, many reads
	id, size, err := s.Deliver(t.Context(), []string{"a", "b"}, iotest.HalfReader(bytes.NewReader(msg)))
	if err != nil || size != int64(len(msg)) {
		t.Fatalf("Deliver = %d, %v", size, err)
	}
	for _, m := range []string{"a", "b"} {
		got, err := os.ReadFile(filepath.Join(s.root, m, "new", id))
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("%s: content differs (%d bytes), %v", m, len(got), err)
		}
	}
}

func TestMailboxName(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"alice", "alice", false},
		{"Alice.Smith+tag_x-1", "alice.smith+tag_x-1", false},
		{"a/b", "a%2Fb", false},
		{"../../etc", "%2E.%2F..%2Fetc", false},
		{".", "%2E", false},
		{"..", "%2E.", false},
		{".hidden", "%2Ehidden", false},
		{"a%2fb", "a%252fb", false},
		{"a b\x00\r\n", "a%20b%00%0D%0A", false},
		{"\\", "%5C", false},
		{"josé", "jos%C3%A9", false},
		{"", "", true},
		{strings.Repeat("/", 86), "", true},
	}
	for _, tt := range tests {
		got, err := MailboxName(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("MailboxName(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("MailboxName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestHostileMailboxes delivers to names that try to leave the root and
// checks that every file lands in a direct child of the root.
func TestHostileMailboxes(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "mail")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	hostile := []string{"../../etc", "..", ".", "a/b", "/etc/passwd", "..\\..\\x", ".spool", "x/../../y", "%2e%2e", "tmp\x00"}
	for _, m := range hostile {
		dir, err := s.Dir(m)
		if err != nil {
			t.Fatalf("Dir(%q): %v", m, err)
		}
		rel, err := filepath.Rel(s.root, dir)
		if err != nil || rel == "." || rel == ".." || strings.Contains(rel, string(filepath.Separator)) || strings.HasPrefix(rel, ".") {
			t.Errorf("Dir(%q) = %q: not a direct child of the root (rel %q)", m, dir, rel)
		}
	}
	if _, _, err := s.Deliver(t.Context(), hostile, strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
	for _, f := range files(t, parent) {
		rel, err := filepath.Rel(root, filepath.Join(parent, f))
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("file %s is outside the root", f)
		}
		if parts := strings.Split(rel, string(filepath.Separator)); len(parts) != 3 || parts[1] != "new" {
			t.Errorf("file %s is not in <mailbox>/new", rel)
		}
	}
	if n := len(files(t, root)); n != len(hostile) {
		t.Errorf("%d files delivered, want %d", n, len(hostile))
	}
}

func TestDeliverInvalid(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name      string
		mailboxes []string
	}{
		{"no mailbox", nil},
		{"empty name", []string{"a", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Deliver(t.Context(), tt.mailboxes, strings.NewReader("x")); err == nil {
				t.Error("Deliver succeeded")
			}
			if f := files(t, s.root); len(f) != 0 {
				t.Errorf("files left: %q", f)
			}
		})
	}
}

// cancelReader cancels its context after its first read.
type cancelReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func TestDeliverFailureLeavesNothing(t *testing.T) {
	errBroken := errors.New("connection reset")
	var pathErr *fs.PathError
	tests := []struct {
		name  string
		msg   func(cancel context.CancelFunc) io.Reader
		check func(error) bool
	}{
		{"reader error at once", func(context.CancelFunc) io.Reader { return iotest.ErrReader(errBroken) },
			func(err error) bool { return errors.Is(err, errBroken) }},
		{"reader error midway", func(context.CancelFunc) io.Reader {
			return io.MultiReader(strings.NewReader(strings.Repeat("x", 100_000)), iotest.ErrReader(errBroken))
		}, func(err error) bool { return errors.Is(err, errBroken) }},
		{"typed reader error", func(context.CancelFunc) io.Reader {
			return io.MultiReader(strings.NewReader("x"), iotest.ErrReader(&fs.PathError{Op: "read", Path: "conn", Err: syscall.ECONNRESET}))
		}, func(err error) bool { return errors.As(err, &pathErr) && errors.Is(err, syscall.ECONNRESET) }},
		{"context cancelled while copying", func(cancel context.CancelFunc) io.Reader {
			return &cancelReader{r: strings.NewReader(strings.Repeat("y", 200_000)), cancel: cancel}
		}, func(err error) bool { return errors.Is(err, context.Canceled) }},
		{"context cancelled before", func(cancel context.CancelFunc) io.Reader {
			cancel()
			return strings.NewReader("z")
		}, func(err error) bool { return errors.Is(err, context.Canceled) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, _, err := s.Deliver(ctx, []string{"a", "b", "c"}, tt.msg(cancel))
			if err == nil || !tt.check(err) {
				t.Fatalf("Deliver error = %v", err)
			}
			if f := files(t, s.root); len(f) != 0 {
				t.Errorf("files left: %q", f)
			}
		})
	}
}

// TestDeliverLinkFailure makes the link into the second mailbox fail and
// checks that the first link is removed as well.
func TestDeliverLinkFailure(t *testing.T) {
	for _, d := range deliverers {
		t.Run(d.name, func(t *testing.T) {
			s := newStore(t)
			// A file where the directory of mailbox "b" should be.
			if err := os.WriteFile(filepath.Join(s.root, "b"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.fn(s, t.Context(), []string{"a", "b"}, []byte("m\n")); err == nil {
				t.Fatal("delivery succeeded")
			}
			if got := files(t, s.root); !slices.Equal(got, []string{"b"}) {
				t.Errorf("files left: %q, want only the obstacle", got)
			}
		})
	}
}

// TestDeliverBytesBatchFailure: in a batch, the delivery that fails (its
// mailbox's new/ is not writable) takes nothing with it, and the others of
// the batch are delivered.
func TestDeliverBytesBatchFailure(t *testing.T) {
	s := newStore(t)
	if _, _, err := s.DeliverBytes(t.Context(), []string{"broken"}, []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(s.root, "broken", "new")
	if err := os.RemoveAll(newDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newDir, nil, 0o600); err != nil { // rename into it fails
		t.Fatal(err)
	}
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			box := fmt.Sprintf("ok%d", i%4)
			if i%5 == 0 {
				box = "broken"
			}
			_, _, errs[i] = s.DeliverBytes(t.Context(), []string{box}, fmt.Appendf(nil, "message %d\n", i))
		})
	}
	wg.Wait()
	delivered := 0
	for i, err := range errs {
		if (i%5 == 0) != (err != nil) {
			t.Errorf("delivery %d: %v", i, err)
		}
		if err == nil {
			delivered++
		}
	}
	total := 0
	for u := range 4 {
		names, _ := s.List(fmt.Sprintf("ok%d", u))
		total += len(names)
	}
	if total != delivered {
		t.Errorf("%d messages in the mailboxes, %d deliveries succeeded", total, delivered)
	}
	if entries, _ := os.ReadDir(s.spool); len(entries) != 0 {
		t.Errorf("%d spool files left", len(entries))
	}
}

func TestDeliverConcurrent(t *testing.T) {
	for _, d := range deliverers {
		t.Run(d.name, func(t *testing.T) { testDeliverConcurrent(t, d.fn) })
	}
}

func testDeliverConcurrent(t *testing.T, deliver func(s *Store, ctx context.Context, mailboxes []string, msg []byte) (string, int64, error)) {
	s := newStore(t)
	const workers = 20
	ids := make([]string, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			msg := fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("x", i*1000))
			ids[i], _, errs[i] = deliver(s, t.Context(), []string{"shared", fmt.Sprintf("user%d", i%5)}, []byte(msg))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if names, _ := s.List("shared"); len(names) != workers {
		t.Errorf("shared has %d messages, want %d", len(names), workers)
	}
	if sorted := slices.Sorted(slices.Values(ids)); len(slices.Compact(sorted)) != workers {
		t.Error("ids are not unique")
	}
	for u := range 5 {
		if names, _ := s.List(fmt.Sprintf("user%d", u)); len(names) != workers/5 {
			t.Errorf("user%d has %d messages, want %d", u, len(names), workers/5)
		}
	}
	for i, id := range ids {
		got, err := os.ReadFile(filepath.Join(s.root, "shared", "new", id))
		if err != nil || !bytes.HasPrefix(got, fmt.Appendf(nil, "Subject: %d\n", i)) {
			t.Errorf("message %d: %q, %v", i, got, err)
		}
	}
	if entries, _ := os.ReadDir(s.spool); len(entries) != 0 {
		t.Errorf("%d spool files left", len(entries))
	}
}

func TestCleanup(t *testing.T) {
	s := newStore(t)
	old := filepath.Join(s.spool, "old")
	fresh := filepath.Join(s.spool, "fresh")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Deliver(t.Context(), []string{"a"}, strings.NewReader("kept\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Cleanup(time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := files(t, s.root); len(got) != 2 || got[0] != filepath.Join(".spool", "fresh") || !strings.HasPrefix(got[1], filepath.Join("a", "new")) {
		t.Errorf("after Cleanup: %q", got)
	}
}

func TestListMissing(t *testing.T) {
	s := newStore(t)
	names, err := s.List("nobody")
	if err != nil || len(names) != 0 {
		t.Errorf("List(nobody) = %q, %v", names, err)
	}
	if _, err := s.List(""); err == nil {
		t.Error("List(\"\") succeeded")
	}
}

func TestSanitizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx1.example.org", "mx1.example.org"},
		{"a/b:c,d", `a\057b\072c\054d`},
		{"x_y", `x\137y`},
	}
	for _, tt := range tests {
		if got := sanitizeHost(tt.in); got != tt.want {
			t.Errorf("sanitizeHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewCreatesRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "b")
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, ".spool"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf(".spool: %v, %v", fi, err)
	}
}

func TestDeliverBytesAfterClose(t *testing.T) {
	s := newStore(t)
	if _, _, err := s.DeliverBytes(t.Context(), []string{"a"}, []byte("m\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeliverBytes(t.Context(), []string{"a"}, []byte("m\n")); err == nil {
		t.Error("DeliverBytes after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// BenchmarkDeliverParallel: 1 KiB messages into one mailbox from 16
// goroutines (b.SetParallelism(8) on two CPUs here), each durable before it
// returns: Deliver (a file, its fsync or a shared syncfs, a rename and a
// shared fsync of new/ per call) against DeliverBytes (the calls waiting at
// one moment made together by one goroutine).
func BenchmarkDeliverParallel(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 16)
	for _, d := range deliverers {
		b.Run(d.name, func(b *testing.B) {
			s, err := New(filepath.Join(b.TempDir(), "mail"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetParallelism(8)
			b.SetBytes(int64(len(msg)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := d.fn(s, context.Background(), []string{"bench"}, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
