package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// fakeClock is the injected clock of the tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
}

func openSpool(t testing.TB, dir string, clk *fakeClock) *Spool {
	t.Helper()
	opts := Options{LeaseTime: 10 * time.Minute}
	if clk != nil {
		opts.Now = clk.Now
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func env(from string, rcpts ...string) Envelope {
	e := Envelope{From: from}
	for _, r := range rcpts {
		e.Rcpts = append(e.Rcpts, Recipient{Addr: r})
	}
	return e
}

func put(t testing.TB, q Queue, e Envelope, body string) string {
	t.Helper()
	id, err := q.Put(context.Background(), e, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func lease(t testing.TB, q Queue, max int) []*Lease {
	t.Helper()
	ls, err := q.Lease(context.Background(), max)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func get(t testing.TB, q Queue, id string) Message {
	t.Helper()
	m, err := q.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func rcpt(m Message, addr string) Recipient {
	for _, r := range m.Rcpts {
		if r.Addr == addr {
			return r
		}
	}
	return Recipient{}
}

func addrs(rs []Recipient) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Addr)
	}
	slices.Sort(out)
	return out
}

// spoolFiles lists the files under dir, relative to it, without the lock
// files and the journal (journalFiles lists those).
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			if rel != "lock" && rel != "owner.lock" && !strings.HasPrefix(rel, "journal/") {
				out = append(out, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestPutGetBodyList(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openSpool(t, dir, clk)
	ctx := context.Background()
	e := Envelope{
		From: "alice@example.org",
		Rcpts: []Recipient{
			{Addr: "bob@example.net", ORCPT: "rfc822;bob@example.net", Notify: "FAILURE,DELAY"},
			{Addr: "carol@example.com"},
			{Addr: "bob@example.net"}, // repeated: stored once
		},
		Attrs: map[string]string{AttrAuthUser: "alice", AttrClientIP: "192.0.2.1"},
	}
	body := "Subject: hi\r\n\r\nhello\r\n"
	id := put(t, s, e, body)
	if !ValidID(id) {
		t.Fatalf("ID %q is not valid", id)
	}
	m := get(t, s, id)
	want := Message{
		ID:   id,
		From: "alice@example.org",
		Rcpts: []Recipient{
			{Addr: "bob@example.net", ORCPT: "rfc822;bob@example.net", Notify: "FAILURE,DELAY"},
			{Addr: "carol@example.com"},
		},
		Received: clk.Now(),
		Size:     int64(len(body)),
		Attrs:    map[string]string{AttrAuthUser: "alice", AttrClientIP: "192.0.2.1"},
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("Get:\n got %+v\nwant %+v", m, want)
	}
	rc, err := s.Body(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != body {
		t.Errorf("Body = %q, want %q", b, body)
	}

	clk.Advance(time.Second)
	id2 := put(t, s, env("", "postmaster@example.org"), "")
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != id || list[1].ID != id2 || list[1].Size != 0 || list[1].From != "" {
		t.Errorf("List = %+v", list)
	}
	// Resident until a checkpoint: no files.
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("files of resident messages = %q", got)
	}
	if err := s.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got := spoolFiles(t, dir); !slices.Equal(got, []string{
		"msg/" + id + ".body", "msg/" + id + ".json", "msg/" + id2 + ".body", "msg/" + id2 + ".json",
	}) {
		t.Errorf("files after a checkpoint = %q", got)
	}
	if list2, err := s.List(ctx); err != nil || !slices.EqualFunc(list, list2, func(a, b Message) bool { return a.ID == b.ID }) {
		t.Errorf("List after a checkpoint = %+v, %v", list2, err)
	}
	select {
	case <-s.Notify():
	default:
		t.Error("Put did not notify")
	}

	for _, bad := range []string{"", "../../etc/passwd", "0123456789ABCDEI", strings.ToLower(id)} {
		if _, err := s.Get(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", bad, err)
		}
		if _, err := s.Body(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Body(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestPutErrors(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, newClock())
	ctx := context.Background()
	bad := []struct {
		name string
		env  Envelope
	}{
		{"no recipients", env("a@x")},
		{"empty recipient", env("a@x", "")},
		{"invalid UTF-8", env("a@x", "b\xff@y")},
		{"invalid ID", Envelope{ID: "nope", From: "a@x", Rcpts: []Recipient{{Addr: "b@y"}}}},
	}
	for _, tt := range bad {
		if _, err := s.Put(ctx, tt.env, strings.NewReader("x")); err == nil {
			t.Errorf("%s: Put succeeded", tt.name)
		}
	}
	// A body that fails half-way, or a cancelled context, leaves nothing.
	if _, err := s.Put(ctx, env("a@x", "b@y"), io.MultiReader(strings.NewReader("part"), iotest.ErrReader(io.ErrUnexpectedEOF))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Put with a failing body: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, env("a@x", "b@y"), strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("failed Puts left files: %q", got)
	}
	// An ID chosen by the caller is used once.
	id := NewID(time.Now())
	e := env("a@x", "b@y")
	e.ID = id
	if got := put(t, s, e, "one"); got != id {
		t.Errorf("Put returned %s, want the given ID %s", got, id)
	}
	if _, err := s.Put(ctx, e, strings.NewReader("two")); !errors.Is(err, ErrExists) {
		t.Errorf("second Put with the same ID: %v, want ErrExists", err)
	}
	rc, _ := s.Body(ctx, id)
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "one" {
		t.Errorf("body of %s is %q after a refused Put", id, b)
	}
}

func TestGroupCommit(t *testing.T) {
	s := openSpool(t, t.TempDir(), nil)
	// A slow disk, so that Puts pile up behind one fdatasync of the
	// journal (and state changes behind one fsync of msg/).
	s.gsync = safeio.NewGroupSync(s.msgDir, func(dir string) error {
		time.Sleep(2 * time.Millisecond)
		return safeio.SyncDir(dir)
	})
	setJournalSync(s, func(f *os.File) error {
		time.Sleep(2 * time.Millisecond)
		return datasync(f)
	})
	const goroutines, each = 16, 10
	var wg sync.WaitGroup
	ids := make(chan string, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id, err := s.Put(context.Background(), env("a@x", "b@y"), strings.NewReader(fmt.Sprintf("%d-%d", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	n := 0
	for id := range ids {
		get(t, s, id)
		n++
	}
	s.jnl.mu.Lock()
	syncs := s.jnl.syncs
	s.jnl.mu.Unlock()
	t.Logf("%d Puts, %d journal fdatasyncs", n, syncs)
	if n != goroutines*each || syncs >= uint64(n)/2 {
		t.Errorf("%d Puts shared only down to %d journal fdatasyncs", n, syncs)
	}
}

// setJournalSync replaces the fdatasync of s's journal.
func setJournalSync(s *Spool, fn func(*os.File) error) {
	s.jnl.mu.Lock()
	s.jnl.syncFn = fn
	s.jnl.mu.Unlock()
}

func TestPutStorageError(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, nil)
	s.gsync = safeio.NewGroupSync(s.msgDir, func(string) error { return errors.New("EIO") })
	setJournalSync(s, func(*os.File) error { return errors.New("EIO") })
	if _, err := s.Put(context.Background(), env("a@x", "b@y"), strings.NewReader("x")); err == nil {
		t.Fatal("Put succeeded without its fdatasync")
	}
	// A body too big for the journal has fsyncs of its own.
	big := strings.Repeat("x", s.inlineMax+1)
	if _, err := s.Put(context.Background(), env("a@x", "b@y"), strings.NewReader(big)); err == nil {
		t.Fatal("Put of a big body succeeded without its fsync")
	}
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("a failed Put left %q", got)
	}
}

func BenchmarkPut(b *testing.B) {
	s := openSpool(b, b.TempDir(), nil)
	body := bytes.Repeat([]byte("0123456789abcde\n"), 64) // 1 KiB
	e := env("alice@example.org", "bob@example.net")
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Put(ctx, e, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutParallel measures Puts from 16 and 64 concurrent sessions,
// which share fsyncs (group commit).
func BenchmarkPutParallel(b *testing.B) {
	for _, g := range []int{16, 64} {
		b.Run(fmt.Sprintf("g=%d", g), func(b *testing.B) {
			s := openSpool(b, b.TempDir(), nil)
			body := bytes.Repeat([]byte("0123456789abcde\n"), 64)
			e := env("alice@example.org", "bob@example.net")
			b.SetBytes(int64(len(body)))
			// RunParallel starts parallelism × GOMAXPROCS goroutines.
			b.SetParallelism((g + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Put(context.Background(), e, bytes.NewReader(body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
