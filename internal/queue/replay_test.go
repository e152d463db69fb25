package queue

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The tests below simulate what a power loss does to a spool whose last
// checkpoint is behind its journal: the files Put wrote without fsync are
// gone, empty or cut, while the journal's fdatasynced records and the
// files written with fsync (state changes) survive. Open must restore
// every message whose Put returned from the journal.

// loseFile simulates the loss of an unsynced file: how is "gone", "empty"
// or "cut" (half its bytes).
func loseFile(t *testing.T, path, how string) {
	t.Helper()
	var err error
	switch how {
	case "gone":
		err = os.Remove(path)
	case "empty":
		err = os.Truncate(path, 0)
	case "cut":
		var fi os.FileInfo
		if fi, err = os.Stat(path); err == nil {
			err = os.Truncate(path, fi.Size()/2)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// bodyOf reads the body of message id.
func bodyOf(t *testing.T, s *Spool, id string) string {
	t.Helper()
	rc, err := s.Body(context.Background(), id)
	if err != nil {
		t.Fatalf("body of %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReplayAfterPowerLoss: messages whose files were lost come back from
// the journal, whole; a state written since by Update (fsynced) is kept; a
// removal whose unlinks were lost is finished; nothing is set aside.
func TestReplayAfterPowerLoss(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, clk, nil)
	ctx := context.Background()
	bodies := map[string]string{}
	var ids []string
	for i := range 8 {
		body := strings.Repeat(string(rune('a'+i)), 1000*i)
		id := put(t, s, env("a@x", "b@y", "c@y"), body)
		ids = append(ids, id)
		bodies[id] = body
	}
	// A checkpoint wrote their files, then the power went before its
	// sync (the journal still has every record).
	materializeAll(t, s)
	// ids[0] is updated (its state file fsynced, its body not), ids[1]
	// delivered and removed.
	for _, l := range lease(t, s, 10) {
		switch l.Message.ID {
		case ids[0]:
			if _, err := s.Update(ctx, l, []Result{{Addr: "b@y", State: Deferred, Reply: "451 later"}}); err != nil {
				t.Fatal(err)
			}
		case ids[1]:
			if _, err := s.Update(ctx, l, []Result{{Addr: "b@y", State: Delivered}, {Addr: "c@y", State: Delivered}}); err != nil {
				t.Fatal(err)
			}
		}
		s.Release(ctx, l)
	}
	updated := get(t, s, ids[0])
	removedState := state(t, Message{ID: ids[1], From: "a@x", Rcpts: []Recipient{{Addr: "b@y"}}, Received: clk.Now(), Size: int64(len(bodies[ids[1]]))})
	abandon(t, s)

	loseFile(t, filepath.Join(dir, "msg", ids[0]+".body"), "empty")
	// The unlinks of the removal did not survive.
	os.WriteFile(filepath.Join(dir, "msg", ids[1]+".json"), []byte(removedState), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", ids[1]+".body"), []byte(bodies[ids[1]]), 0o600)
	loseFile(t, filepath.Join(dir, "msg", ids[2]+".body"), "gone")
	loseFile(t, filepath.Join(dir, "msg", ids[2]+".json"), "gone")
	loseFile(t, filepath.Join(dir, "msg", ids[3]+".body"), "cut")
	loseFile(t, filepath.Join(dir, "msg", ids[4]+".json"), "empty")
	loseFile(t, filepath.Join(dir, "msg", ids[5]+".json"), "gone")
	loseFile(t, filepath.Join(dir, "msg", ids[6]+".body"), "gone")
	// ids[7] survived whole.

	log := new(logBuffer)
	s = openNoCheckpoint(t, dir, clk, log)
	if f := journalFiles(t, dir); len(f) != 0 {
		t.Errorf("journal after the replay: %q", f)
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt")); err == nil {
		t.Error("messages set aside as corrupt")
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.ID)
		if bodyOf(t, s, m.ID) != bodies[m.ID] || m.Size != int64(len(bodies[m.ID])) {
			t.Errorf("%s: body not restored", m.ID)
		}
	}
	want := slices.Concat(ids[:1], ids[2:])
	if !sameIDs(got, want) {
		t.Errorf("messages after the replay:\n got %q\nwant %q", got, want)
	}
	if m := get(t, s, ids[0]); rcpt(m, "b@y").State != Deferred || rcpt(m, "b@y").Attempts != 1 || !m.Received.Equal(updated.Received) {
		t.Errorf("the Update's state was not kept: %+v", m)
	}
	if got := spoolFiles(t, dir); len(got) != 2*len(want) {
		t.Errorf("files after the replay: %q", got)
	}
	if !strings.Contains(log.String(), "journal replayed") {
		t.Errorf("log: %s", log)
	}
}

// sameIDs reports whether a and b hold the same IDs, in any order.
func sameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func state(t *testing.T, m Message) string {
	t.Helper()
	b, err := encodeState(&m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReplayTornTail: the journal ends in the middle of the last record (a
// batch whose fdatasync never returned). The records before it are
// replayed; the torn one is a Put that did not return: its message is gone.
func TestReplayTornTail(t *testing.T) {
	for _, garbage := range []string{"", "zeros"} {
		dir := t.TempDir()
		s := openNoCheckpoint(t, dir, nil, nil)
		var ids []string
		for i := range 5 {
			ids = append(ids, put(t, s, env("a@x", "b@y"), strings.Repeat("m", 100+i)))
		}
		abandon(t, s)
		// Resident: the journal is all there is.
		if got := spoolFiles(t, dir); len(got) != 0 {
			t.Errorf("files of resident messages: %q", got)
		}
		seg := filepath.Join(dir, "journal", journalFiles(t, dir)[0])
		fi, err := os.Stat(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(seg, fi.Size()-30); err != nil {
			t.Fatal(err)
		}
		if garbage == "zeros" {
			// The size reached the disk, the last bytes did not.
			if err := os.Truncate(seg, fi.Size()+4096); err != nil {
				t.Fatal(err)
			}
		}

		log := new(logBuffer)
		s = openNoCheckpoint(t, dir, nil, log)
		list, err := s.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range list {
			got = append(got, m.ID)
		}
		if !sameIDs(got, ids[:4]) {
			t.Errorf("%s: messages after a torn tail: %q, want %q", garbage, got, ids[:4])
		}
		if !strings.Contains(log.String(), "unfinished write at its end ignored") || strings.Contains(log.String(), "level=ERROR") {
			t.Errorf("%s: log:\n%s", garbage, log)
		}
	}
}

// TestReplayDamagedRecord: a byte flipped in the middle of the journal (no
// crash does that; a disk might). The checksum catches it, the records
// after it are replayed, and the error is logged. The message of the
// damaged record survives if its files were durable, and is lost if not.
func TestReplayDamagedRecord(t *testing.T) {
	for _, durable := range []bool{true, false} {
		dir := t.TempDir()
		s := openNoCheckpoint(t, dir, nil, nil)
		var ids []string
		for i := range 3 {
			ids = append(ids, put(t, s, env("a@x", "b@y"), strings.Repeat("d", 500+i)))
		}
		if durable {
			// A checkpoint wrote and synced the files, and the
			// crash came before it deleted the segment.
			materializeAll(t, s)
			if err := s.syncMsgFiles(nil); err != nil {
				t.Fatal(err)
			}
		}
		abandon(t, s)
		seg := filepath.Join(dir, "journal", journalFiles(t, dir)[0])
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		var offs []int
		scanSegment(s.jnl.salt, data, func(off int, _ record) { offs = append(offs, off) })
		data[offs[1]+recBodyOff+100] ^= 0x20 // in the body of the middle record
		if err := os.WriteFile(seg, data, 0o600); err != nil {
			t.Fatal(err)
		}

		log := new(logBuffer)
		s = openNoCheckpoint(t, dir, nil, log)
		list, err := s.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range list {
			got = append(got, m.ID)
			if b := bodyOf(t, s, m.ID); b != strings.Repeat("d", len(b)) || int64(len(b)) != m.Size {
				t.Errorf("durable=%v: %s has a damaged body", durable, m.ID)
			}
		}
		want := slices.Clone(ids)
		if !durable {
			want = []string{ids[0], ids[2]}
		}
		if !sameIDs(got, want) {
			t.Errorf("durable=%v: messages %q, want %q", durable, got, want)
		}
		if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "damaged bytes skipped") {
			t.Errorf("durable=%v: the damage was not logged as an error:\n%s", durable, log)
		}
		if _, err := os.Stat(filepath.Join(dir, "corrupt")); err == nil {
			t.Errorf("durable=%v: messages set aside", durable)
		}
	}
}

// TestReplayTombstones: a message removed after its Put is not brought
// back by the replay, also when an attached process removed it (the owner
// writes its tombstone when it reads the hint); an ID that is still in the
// journal is refused by Put.
func TestReplayTombstones(t *testing.T) {
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, nil, nil)
	ctx := context.Background()
	kept := put(t, s, env("a@x", "b@y"), "kept")
	deleted := put(t, s, env("a@x", "b@y"), "deleted by the owner")
	attached := put(t, s, env("a@x", "b@y"), "deleted by petrel queue")
	if err := s.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	e := env("a@x", "b@y")
	e.ID = deleted
	if _, err := s.Put(ctx, e, strings.NewReader("again")); err == nil {
		t.Error("Put reused the ID of a message still in the journal")
	}
	a, err := Attach(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The message is resident: the attached Delete waits for its files.
	a.awaitMax = 50 * time.Millisecond
	if err := a.Delete(ctx, attached); err == nil || !strings.Contains(err.Error(), "no checkpoint wrote it") {
		t.Errorf("attached Delete of a resident message without a checkpoint: %v", err)
	}
	a.awaitMax = time.Minute
	deleted2 := make(chan error, 1)
	go func() { deleted2 <- a.Delete(ctx, attached) }()
	// A checkpoint that wrote its files but had not deleted the segment.
	materializeAll(t, s)
	if err := <-deleted2; err != nil {
		t.Fatal(err)
	}
	a.Close()
	lease(t, s, 10) // reads the hint
	put(t, s, env("a@x", "b@y"), "a batch after the tombstone")
	var tombs []string
	for _, r := range journalRecords(t, dir) {
		if r.kind == recTombstone {
			tombs = append(tombs, r.id)
		}
	}
	if !slices.Equal(tombs, []string{deleted, attached}) {
		t.Errorf("tombstones %q, want %q", tombs, []string{deleted, attached})
	}
	abandon(t, s)
	s = openNoCheckpoint(t, dir, nil, nil)
	for _, id := range []string{deleted, attached} {
		if _, err := s.Get(ctx, id); err == nil {
			t.Errorf("%s came back", id)
		}
	}
	get(t, s, kept)
}

// TestReplayResidentStates: the state changes of resident messages are
// journal records (a state record for an Update or Complete that keeps the
// message, a tombstone for one that removes it), and the replay brings each
// message back with its last state. A state file that a checkpoint wrote
// and a later Update replaced (durably, through the files) wins over the
// state records journaled before the checkpoint.
func TestReplayResidentStates(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openNoCheckpoint(t, dir, clk, nil)
	ctx := context.Background()
	deferred := put(t, s, env("a@x", "b@y"), "deferred")
	delivered := put(t, s, env("a@x", "b@y"), "delivered")
	bounced := put(t, s, env("a@x", "b@y", "c@y"), "half bounced")
	later := put(t, s, env("a@x", "b@y"), "deferred twice")
	for _, l := range lease(t, s, 10) {
		var res []Result
		switch l.Message.ID {
		case deferred, later:
			res = []Result{{Addr: "b@y", State: Deferred, Reply: "451 4.3.0 later"}}
		case delivered:
			res = []Result{{Addr: "b@y", State: Delivered, Reply: "250 ok"}}
		case bounced:
			res = []Result{{Addr: "b@y", State: Failed, Reply: "550 5.1.1 no"}, {Addr: "c@y", State: Deferred, Reply: "451 later"}}
		}
		if _, err := s.Update(ctx, l, res); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if got := spoolFiles(t, dir); len(got) != 0 {
		t.Errorf("state changes of resident messages wrote files: %q", got)
	}
	kinds := map[byte]int{}
	for _, r := range journalRecords(t, dir) {
		kinds[r.kind]++
	}
	// Updates: deferred, later, bounced; Complete: bounced (Reported).
	if kinds[recPut] != 4 || kinds[recState] != 4 || kinds[recTombstone] != 1 {
		t.Errorf("journal records by kind: %v, want 4 P, 4 S, 1 T", kinds)
	}

	// later: a checkpoint gives it its files, then an Update goes through
	// them.
	if err := s.materialize([]string{later}); err != nil {
		t.Fatal(err)
	}
	if got := spoolFiles(t, dir); len(got) != 2 {
		t.Errorf("files after later's materialization: %q", got)
	}
	clk.Advance(time.Hour)
	ls := lease(t, s, 10)
	for _, l := range ls {
		if l.Message.ID != later {
			s.Release(ctx, l)
			continue
		}
		if _, err := s.Update(ctx, l, []Result{{Addr: "b@y", State: Deferred, Reply: "451 4.3.0 still later"}}); err != nil {
			t.Fatal(err)
		}
		s.Complete(ctx, l)
	}
	abandon(t, s)

	s = openNoCheckpoint(t, dir, clk, nil)
	if _, err := s.Get(ctx, delivered); !errors.Is(err, ErrNotFound) {
		t.Errorf("the delivered message came back: %v", err)
	}
	if m := get(t, s, deferred); rcpt(m, "b@y").State != Deferred || rcpt(m, "b@y").Attempts != 1 {
		t.Errorf("deferred: %+v", m.Rcpts)
	}
	if m := get(t, s, bounced); rcpt(m, "b@y").State != Failed || !rcpt(m, "b@y").Reported || rcpt(m, "c@y").State != Deferred {
		t.Errorf("bounced: %+v", m.Rcpts)
	}
	if m := get(t, s, later); rcpt(m, "b@y").Attempts != 2 || rcpt(m, "b@y").LastReply != "451 4.3.0 still later" {
		t.Errorf("later: the journal's older state won over the state file: %+v", m.Rcpts)
	}
	for _, id := range []string{deferred, bounced, later} {
		if b := bodyOf(t, s, id); b == "" {
			t.Errorf("%s: body lost", id)
		}
	}
}
