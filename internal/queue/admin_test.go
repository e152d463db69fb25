package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestFlushBounceDelete(t *testing.T) {
	clk := newClock()
	s := openSpool(t, t.TempDir(), clk)
	ctx := context.Background()
	id1 := put(t, s, env("alice@example.org", "a@x", "b@y"), "one")
	id2 := put(t, s, env("alice@example.org", "c@z"), "two")
	for _, l := range lease(t, s, 10) {
		var res []Result
		for _, r := range l.Due {
			res = append(res, Result{Addr: r.Addr, State: Deferred, Reply: "421 busy"})
		}
		if _, err := s.Update(ctx, l, res); err != nil {
			t.Fatal(err)
		}
		s.Complete(ctx, l)
	}
	if len(lease(t, s, 10)) != 0 {
		t.Fatal("deferred messages due at once")
	}

	if err := s.Flush(ctx, id1); err != nil {
		t.Fatal(err)
	}
	ls := lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id1 || len(ls[0].Due) != 2 {
		t.Fatalf("after Flush(id1): %+v", ls)
	}
	s.Release(ctx, ls[0])
	if ls := lease(t, s, 10); len(ls) != 0 {
		t.Fatalf("a flush lasts beyond one lease: %+v", ls)
	}
	if err := s.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	ls = lease(t, s, 10)
	if len(ls) != 2 {
		t.Fatalf("after Flush(\"\"): %d leases", len(ls))
	}
	for _, l := range ls {
		s.Release(ctx, l)
	}
	if err := s.Flush(ctx, NewID(clk.Now())); !errors.Is(err, ErrNotFound) {
		t.Errorf("Flush of an unknown ID: %v", err)
	}

	if err := s.Bounce(ctx, id1); err != nil {
		t.Fatal(err)
	}
	ls = lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id1 || len(ls[0].Due) != 0 {
		t.Fatalf("after Bounce: %+v", ls)
	}
	failed, err := s.Update(ctx, ls[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(failed); !slices.Equal(got, []string{"a@x", "b@y"}) || failed[0].LastReply != bounceReply || failed[0].Expired {
		t.Errorf("failed after Bounce = %+v", failed)
	}
	if err := s.Complete(ctx, ls[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id1); !errors.Is(err, ErrNotFound) {
		t.Errorf("bounced and reported message still there: %v", err)
	}

	if err := s.Delete(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, id2); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := s.Body(ctx, id2); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body after Delete: %v", err)
	}
	s.Flush(ctx, "")
	if ls := lease(t, s, 10); len(ls) != 0 {
		t.Errorf("leases after everything was removed: %+v", ls)
	}
	if got := spoolFiles(t, s.dir); len(got) != 0 {
		t.Errorf("files left: %q", got)
	}
}

// TestAttach drives a running owner from an attached handle, as `petrel
// queue` does.
func TestAttach(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	if _, err := Attach(dir, Options{}); err == nil {
		t.Error("Attach to an empty directory succeeded")
	}
	s := openSpool(t, dir, clk)
	ctx := context.Background()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrBusy) {
		t.Errorf("second Open: %v, want ErrBusy", err)
	}
	a, err := Attach(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	id1 := put(t, s, env("alice@example.org", "a@x"), "one")
	id2 := put(t, s, env("alice@example.org", "b@y"), "two")
	id3 := put(t, s, env("alice@example.org", "c@z"), "three")
	for _, l := range lease(t, s, 10) {
		s.Update(ctx, l, []Result{{Addr: l.Due[0].Addr, State: Deferred, Reply: "451 later"}})
		s.Complete(ctx, l)
	}
	// Resident in the owner's memory: the attached process reads them,
	// and their state changes, from the journal.
	if list, err := a.List(ctx); err != nil || len(list) != 3 {
		t.Fatalf("attached List of resident messages = %d messages, %v", len(list), err)
	}
	if m := get(t, a, id2); rcpt(m, "b@y").State != Deferred || rcpt(m, "b@y").LastReply != "451 later" {
		t.Errorf("attached Get of a resident message: %+v", m)
	}
	if b := bodyOf(t, a, id3); b != "three" {
		t.Errorf("attached Body of a resident message: %q", b)
	}
	if err := s.checkpoint(); err != nil {
		t.Fatal(err)
	}
	list, err := a.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("attached List = %d messages, %v", len(list), err)
	}
	if m := get(t, a, id1); rcpt(m, "a@x").State != Deferred {
		t.Errorf("attached Get: %+v", m)
	}

	if err := a.Flush(ctx, id1); err != nil {
		t.Fatal(err)
	}
	ls := lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id1 {
		t.Fatalf("owner Lease after attached Flush: %+v", ls)
	}
	s.Release(ctx, ls[0])

	if err := a.Bounce(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, id3); err != nil {
		t.Fatal(err)
	}
	ls = lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id2 || len(ls[0].Due) != 0 {
		t.Fatalf("owner Lease after attached Bounce and Delete: %+v", ls)
	}
	failed, _ := s.Update(ctx, ls[0], nil)
	if len(failed) != 1 || failed[0].Addr != "b@y" {
		t.Errorf("failed = %+v", failed)
	}
	s.Complete(ctx, ls[0])
	s.mu.Lock()
	_, has3 := s.idx[id3]
	s.mu.Unlock()
	if has3 {
		t.Error("the owner's index still has the deleted message")
	}
	if err := a.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if ls := lease(t, s, 10); len(ls) != 1 || ls[0].Message.ID != id1 {
		t.Errorf("owner Lease after attached Flush(\"\"): %+v", ls)
	}
	if err := a.Flush(ctx, id3); !errors.Is(err, ErrNotFound) {
		t.Errorf("attached Flush of a deleted message: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "notify")); len(entries) != 0 {
		t.Errorf("hints left: %v", entries)
	}
}

// TestAttachedWhileOwnerBusy runs the owner's delivery loop and an attached
// process's bounces and deletes at the same time (for -race and for
// consistency of the files).
func TestAttachedWhileOwnerBusy(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openSpool(t, dir, clk)
	a, err := Attach(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for i := range 60 {
		ids = append(ids, put(t, s, env("a@x", fmt.Sprintf("r%d@y", i), fmt.Sprintf("s%d@z", i)), "x"))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i, id := range ids {
			var err error
			switch i % 3 {
			case 0:
				err = a.Bounce(ctx, id)
			case 1:
				err = a.Delete(ctx, id)
			default:
				err = a.Flush(ctx, id)
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			ls, err := s.Lease(ctx, 4)
			if err != nil {
				t.Error(err)
				return
			}
			for _, l := range ls {
				var res []Result
				for i, r := range l.Due {
					st := []State{Delivered, Deferred, Failed}[i%3]
					res = append(res, Result{Addr: r.Addr, State: st, Reply: st.String()})
				}
				_, err := s.Update(ctx, l, res)
				if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
					t.Error(err)
				}
				if err := s.Complete(ctx, l); err != nil {
					t.Error(err)
				}
			}
			clk.Advance(time.Hour)
		}
	}()
	wg.Wait()
	s.Close()
	s = openSpool(t, dir, clk)
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if finished(&m) {
			t.Errorf("finished message %s left in the queue", m.ID)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt")); err == nil {
		t.Error("corrupt messages found")
	}
}
