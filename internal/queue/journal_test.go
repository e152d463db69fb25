package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSalt is the salt of the records in the tests and the fuzz corpus.
const testSalt = 0x5eed5a17

func TestRecordRoundTrip(t *testing.T) {
	id := NewID(time.Now())
	state := []byte(`{"v":1}` + "\n")
	for _, body := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0, 0xff}, 5000)} {
		rec := appendPutRecord(nil, testSalt, id, body, state)
		rec = appendTombstone(rec, testSalt, id)
		r, n, err := decodeRecord(testSalt, rec)
		if err != nil || r.kind != recPut || r.id != id || !bytes.Equal(r.body, body) || !bytes.Equal(r.state, state) {
			t.Fatalf("Put record: %+v %v", r, err)
		}
		r, m, err := decodeRecord(testSalt, rec[n:])
		if err != nil || r.kind != recTombstone || r.id != id || n+m != len(rec) {
			t.Fatalf("tombstone: %+v %v", r, err)
		}
		if _, _, err := decodeRecord(testSalt+1, rec); !errors.Is(err, errBadChecksum) {
			t.Errorf("another salt: %v", err)
		}
		for _, cut := range []int{0, 5, recHeaderLen, n - 1} {
			if _, _, err := decodeRecord(testSalt, rec[:cut]); !errors.Is(err, errShortRecord) {
				t.Errorf("cut at %d of %d: %v", cut, n, err)
			}
		}
		for _, flip := range []int{0, 4, 9, recHeaderLen, n - 1} {
			bad := slices.Clone(rec)
			bad[flip] ^= 0x10
			if _, _, err := decodeRecord(testSalt, bad); err == nil {
				t.Errorf("flipped byte %d: decoded", flip)
			}
		}
	}
}

func TestSegmentName(t *testing.T) {
	name := segmentName(42, 0xdeadbeef)
	if seq, salt, ok := parseSegmentName(name); !ok || seq != 42 || salt != 0xdeadbeef {
		t.Errorf("parseSegmentName(%q) = %d %x %v", name, seq, salt, ok)
	}
	for _, bad := range []string{"", "x.wal", "000000000000002A-deadbeef.wal", "000000000000002a-deadbeef", "000000000000002a-deadbeef.wal.tmp"} {
		if _, _, ok := parseSegmentName(bad); ok {
			t.Errorf("parseSegmentName(%q) ok", bad)
		}
	}
}

// TestScanSegment: a torn tail is reported as such, damage in the middle
// is skipped up to the next record.
func TestScanSegment(t *testing.T) {
	var seg []byte
	var offs []int
	for i := range 4 {
		offs = append(offs, len(seg))
		seg = appendPutRecord(seg, testSalt, NewID(time.Now()), []byte(strings.Repeat("b", 100*i)), []byte("{}"))
	}
	scan := func(data []byte) (got []int, damaged [][2]int, tail int) {
		damaged, tail = scanSegment(testSalt, data, func(off int, r record) { got = append(got, off) })
		return got, damaged, tail
	}
	if got, d, tail := scan(seg); !slices.Equal(got, offs) || d != nil || tail != 0 {
		t.Errorf("whole: %v %v %d", got, d, tail)
	}
	torn := slices.Concat(seg[:len(seg)-7], make([]byte, 4096))
	if got, d, tail := scan(torn); !slices.Equal(got, offs[:3]) || d != nil || tail != len(torn)-offs[3] {
		t.Errorf("torn: %v %v %d", got, d, tail)
	}
	bad := slices.Clone(seg)
	bad[offs[1]+recHeaderLen+20] ^= 1
	if got, d, tail := scan(bad); !slices.Equal(got, []int{offs[0], offs[2], offs[3]}) || len(d) != 1 || d[0] != [2]int{offs[1], offs[2]} || tail != 0 {
		t.Errorf("damaged: %v %v %d", got, d, tail)
	}
	// A damaged length: the next record is found all the same.
	bad = slices.Clone(seg)
	bad[offs[2]+1] ^= 0x40
	if got, d, _ := scan(bad); !slices.Equal(got, []int{offs[0], offs[1], offs[3]}) || len(d) != 1 {
		t.Errorf("damaged length: %v %v", got, d)
	}
}

// TestRecordInBodyNotResynced: a body that holds the bytes of a record (of
// another salt: the salt never leaves the spool) is not taken for one when
// the record around it is torn.
func TestRecordInBodyNotResynced(t *testing.T) {
	inner := appendPutRecord(nil, 1234, NewID(time.Now()), []byte("forged"), []byte("{}"))
	seg := appendPutRecord(nil, testSalt, NewID(time.Now()), slices.Concat(inner, make([]byte, 1000)), []byte("{}"))
	n := 0
	_, tail := scanSegment(testSalt, seg[:len(seg)-500], func(int, record) { n++ })
	if n != 0 || tail != len(seg)-500 {
		t.Errorf("%d records found in a torn one, tail %d", n, tail)
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder: it must not
// panic, and what it accepts must encode back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, seed := range recordSeeds() {
		f.Add(seed.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, n, err := decodeRecord(testSalt, data)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with length %d", err, n)
			}
			return
		}
		if n < recHeaderLen || n > len(data) || !ValidID(r.id) {
			t.Fatalf("decoded %+v of length %d from %d bytes", r, n, len(data))
		}
		var again []byte
		switch r.kind {
		case recPut:
			again = appendPutRecord(nil, testSalt, r.id, r.body, r.state)
		case recTombstone:
			again = appendTombstone(nil, testSalt, r.id)
		default:
			t.Fatalf("decoded kind %q", r.kind)
		}
		if !bytes.Equal(again, data[:n]) {
			t.Fatalf("re-encoding differs:\n%q\n%q", again, data[:n])
		}
		// The scanner finds the record, and nothing else, at offset 0.
		found := 0
		scanSegment(testSalt, data[:n], func(off int, _ record) {
			if off != 0 {
				t.Fatalf("record at %d", off)
			}
			found++
		})
		if found != 1 {
			t.Fatalf("scanner found %d records", found)
		}
	})
}

type recordSeed struct {
	name  string
	data  []byte
	valid bool
}

// recordSeeds are the seeds of FuzzDecodeRecord, committed under
// testdata/fuzz/FuzzDecodeRecord (TestDecodeRecordCorpus checks that they
// are there and decode as they should).
func recordSeeds() []recordSeed {
	const id = "01KJN7D5S8ABCDEF"
	state := []byte(`{"v":1,"id":"01KJN7D5S8ABCDEF","from":"","rcpts":[{"addr":"a@b","state":"pending"}],"received":"2026-03-01T12:00:00Z","size":5}` + "\n")
	put := appendPutRecord(nil, testSalt, id, []byte("hello"), state)
	tomb := appendTombstone(nil, testSalt, id)
	flip := func(b []byte, i int) []byte { b = slices.Clone(b); b[i] ^= 1; return b }
	badKind := slices.Clone(tomb)
	badKind[recHeaderLen] = 'X'
	sealRecord(testSalt, badKind)
	badID := slices.Clone(tomb)
	copy(badID[recIDOff:], "01KJN7D5S8ABCDEI")
	sealRecord(testSalt, badID)
	longBody := slices.Clone(put)
	longBody[recBodyOff-4] = byte(len(put))
	sealRecord(testSalt, longBody)
	return []recordSeed{
		{"put", put, true},
		{"put-empty-body", appendPutRecord(nil, testSalt, id, nil, []byte("{}")), true},
		{"tombstone", tomb, true},
		{"put-then-tombstone", slices.Concat(put, tomb), true},
		{"empty", nil, false},
		{"zeros", make([]byte, 64), false},
		{"torn-header", put[:7], false},
		{"torn-payload", put[:len(put)-1], false},
		{"bad-header-crc", flip(put, 9), false},
		{"bad-payload-crc", flip(put, len(put)-3), false},
		{"bad-kind", badKind, false},
		{"bad-id", badID, false},
		{"body-past-end", longBody, false},
		{"other-salt", appendTombstone(nil, testSalt+1, id), false},
	}
}

// TestDecodeRecordCorpus checks the committed seed corpus of
// FuzzDecodeRecord against recordSeeds.
func TestDecodeRecordCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	for _, seed := range recordSeeds() {
		raw, err := os.ReadFile(filepath.Join(dir, seed.name))
		if err != nil {
			t.Errorf("%s: %v", seed.name, err)
			continue
		}
		_, arg, _ := strings.Cut(string(raw), "\n")
		arg = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(arg), "[]byte("), ")")
		data, err := strconv.Unquote(arg)
		if err != nil {
			t.Fatalf("%s: %v", seed.name, err)
		}
		if !bytes.Equal([]byte(data), seed.data) {
			t.Errorf("%s: the committed seed differs from recordSeeds", seed.name)
		}
		if _, _, err := decodeRecord(testSalt, []byte(data)); (err == nil) != seed.valid {
			t.Errorf("%s: decodeRecord error = %v, want valid=%v", seed.name, err, seed.valid)
		}
	}
}

// journalFiles lists the segment files of the spool in dir.
func journalFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// journalRecords returns the records of the spool's journal, in order.
func journalRecords(t testing.TB, dir string) []record {
	t.Helper()
	var out []record
	for _, name := range journalFiles(t, dir) {
		_, salt, ok := parseSegmentName(name)
		if !ok {
			t.Fatalf("journal file %q", name)
		}
		data, err := os.ReadFile(filepath.Join(dir, "journal", name))
		if err != nil {
			t.Fatal(err)
		}
		scanSegment(salt, data, func(_ int, r record) { out = append(out, r) })
	}
	return out
}

// openNoCheckpoint opens the spool in dir with checkpoints left to the test.
func openNoCheckpoint(t testing.TB, dir string, clk *fakeClock, log *logBuffer) *Spool {
	t.Helper()
	opts := Options{LeaseTime: 10 * time.Minute, CheckpointInterval: time.Hour}
	if clk != nil {
		opts.Now = clk.Now
	}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// logBuffer collects a spool's log, for tests that check what it said.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// materializeAll gives every resident message its files (without sync, and
// without removing any journal segment): a checkpoint cut short before its
// sync, after which the files decide.
func materializeAll(t testing.TB, s *Spool) {
	t.Helper()
	s.mu.Lock()
	var ids []string
	for id, e := range s.idx {
		if e.res != nil {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	if err := s.materialize(ids); err != nil {
		t.Fatal(err)
	}
}

// abandon stops s as a crash right after its last fdatasync would: no
// checkpoint, the journal and msg/ left as they are, the owner lock freed.
func abandon(t testing.TB, s *Spool) {
	t.Helper()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.ckptStop)
	<-s.ckptDone
	s.jnl.close()
	if s.jnl.cur != nil {
		s.jnl.cur.f.Close()
	}
	if s.fssync != nil {
		s.fssync.Close()
	}
	s.ownerLock.Close()
}

func TestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		ids = append(ids, put(t, s, env("a@x", "b@y"), strconv.Itoa(i)))
	}
	if n := len(journalRecords(t, dir)); n != 5 {
		t.Errorf("%d journal records after 5 Puts", n)
	}
	if err := s.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if f := journalFiles(t, dir); len(f) != 0 {
		t.Errorf("journal after a checkpoint: %q", f)
	}
	if s.jnl.isLive(ids[0]) {
		t.Error("a checkpointed message is still live in the journal")
	}
	// Nothing to do: no new segment.
	if err := s.checkpoint(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, put(t, s, env("a@x", "b@y"), "after"))
	if f := journalFiles(t, dir); len(f) != 1 || !strings.HasPrefix(f[0], "0000000000000002-") {
		t.Errorf("journal after another Put: %q", f)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if f := journalFiles(t, dir); len(f) != 0 {
		t.Errorf("journal after Close: %q", f)
	}
	s = openNoCheckpoint(t, dir, nil, nil)
	list, err := s.List(ctx)
	if err != nil || len(list) != len(ids) {
		t.Errorf("List after reopening: %d messages, %v", len(list), err)
	}
}

// TestCheckpointWhenFull: a segment past the size limit is checkpointed
// without waiting for the interval.
func TestCheckpointWhenFull(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	s.jnl.maxSegment = 1 // set before any Put: the committer reads it after
	id := put(t, s, env("a@x", "b@y"), "x")
	deadline := time.Now().Add(10 * time.Second)
	for s.jnl.isLive(id) {
		if time.Now().After(deadline) {
			t.Fatal("a full segment was not checkpointed")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPutLargeBody(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	s.inlineMax = 100
	ctx := context.Background()
	for _, size := range []int{100, 101, 100000} {
		body := strings.Repeat("y", size)
		id := put(t, s, env("a@x", "b@y"), body)
		if journaled := s.jnl.isLive(id); journaled != (size <= 100) {
			t.Errorf("%d bytes: journaled = %v", size, journaled)
		}
		if m := get(t, s, id); m.Size != int64(size) {
			t.Errorf("%d bytes: Size %d", size, m.Size)
		}
		rc, err := s.Body(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		if b.String() != body {
			t.Errorf("%d bytes: body of %d bytes read back", size, b.Len())
		}
	}
}

// TestPutCancelledWhileCommitting: a Put whose context ends while its
// record waits for the fdatasync returns at once; it is undone when the
// fdatasync returns.
func TestPutCancelledWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	setJournalSync(s, func(f *os.File) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return datasync(f)
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, env("a@x", "b@y"), strings.NewReader("body"))
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Put = %v, want context.Canceled", err)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.putting)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned Put was never undone")
		}
		time.Sleep(time.Millisecond)
	}
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("an abandoned Put left %q", got)
	}
	// The journal works on; the tombstone went with the next batch.
	next := put(t, s, env("a@x", "b@y"), "next")
	recs := journalRecords(t, dir)
	if len(recs) != 3 || recs[0].kind != recPut || recs[1].kind != recTombstone || recs[1].id != recs[0].id || recs[2].id != next {
		t.Errorf("journal of an abandoned Put: %+v", recs)
	}
}

// TestJournalWriteError: a batch that fails is reported to its Puts, and
// the next batch goes to a new segment.
func TestJournalWriteError(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	fail := true
	setJournalSync(s, func(f *os.File) error {
		if fail {
			fail = false
			return errors.New("EIO")
		}
		return datasync(f)
	})
	ctx := context.Background()
	if _, err := s.Put(ctx, env("a@x", "b@y"), strings.NewReader("lost")); err == nil {
		t.Fatal("Put succeeded without its fdatasync")
	}
	id := put(t, s, env("a@x", "b@y"), "kept")
	if f := journalFiles(t, dir); len(f) != 2 {
		t.Errorf("journal after a failed batch: %q", f)
	}
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("files of a resident message: %q", got)
	}
	abandon(t, s)
	s = openNoCheckpoint(t, dir, nil, nil)
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("after the crash: %+v %v", list, err)
	}
}

// TestRemovalWhileClosing: once the journal is closed (Close, before its
// last checkpoint), the removal of a resident message cannot be made
// durable, so it fails rather than return nil and come back after a crash.
func TestRemovalWhileClosing(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, clk, nil)
	ctx := context.Background()
	id := put(t, s, env("a@x", "b@y"), "hello")
	ls := lease(t, s, 1)
	s.jnl.close() // as Close does before its final checkpoint
	_, err := s.Update(ctx, ls[0], []Result{{Addr: "b@y", State: Delivered, Reply: "250 ok"}})
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Update removing a resident message while closing: %v, want ErrClosed", err)
	}
	abandon(t, s) // a crash before Close's checkpoint finished
	s = openNoCheckpoint(t, dir, clk, nil)
	get(t, s, id) // not removed: delivered again, never lost
}

// TestCheckpointAfterSyncFailure: after a checkpoint's sync failed, later
// checkpoints still give resident messages their files (memory stays
// bounded) but keep every segment for the next Open.
func TestCheckpointAfterSyncFailure(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	s.ckptMu.Lock()
	s.ckptErr = errors.New("simulated EIO")
	s.ckptMu.Unlock()
	id := put(t, s, env("a@x", "b@y"), "hello")
	if err := s.checkpoint(); err == nil {
		t.Error("checkpoint after a failed sync succeeded")
	}
	if s.residentOf(id) != nil {
		t.Error("still resident after a checkpoint: memory would grow with the queue")
	}
	if got := spoolFiles(t, dir); len(got) != 2 {
		t.Errorf("files: %q", got)
	}
	if f := journalFiles(t, dir); len(f) != 1 {
		t.Errorf("journal after a checkpoint that could not sync: %q, want the segment kept", f)
	}
	if b := bodyOf(t, s, id); b != "hello" {
		t.Errorf("body %q", b)
	}
}
