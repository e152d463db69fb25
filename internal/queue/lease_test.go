package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeliveryFlow takes one message with three recipients through a
// delivery, a deferral, a failure, a retry and its removal.
func TestDeliveryFlow(t *testing.T) {
	clk := newClock()
	s := openSpool(t, t.TempDir(), clk)
	ctx := context.Background()
	id := put(t, s, env("alice@example.org", "a@x", "b@y", "c@z"), "body")

	ls := lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id || len(ls[0].Due) != 3 {
		t.Fatalf("Lease = %+v, want the message with 3 due recipients", ls)
	}
	if more := lease(t, s, 10); len(more) != 0 {
		t.Fatalf("a leased message was leased again: %+v", more)
	}
	l := ls[0]
	clk.Advance(time.Second)
	t1 := clk.Now()
	failed, err := s.Update(ctx, l, []Result{
		{Addr: "a@x", State: Delivered, Reply: "250 2.0.0 OK", RemoteMTA: "mx.x"},
		{Addr: "b@y", State: Deferred, Reply: "451 4.7.1 later", RemoteMTA: "mx.y"},
		{Addr: "c@z", State: Failed, Reply: "550 5.1.1 no such user", RemoteMTA: "mx.z"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(failed); !slices.Equal(got, []string{"c@z"}) {
		t.Errorf("Update returned failed %q, want [c@z]", got)
	}
	m := get(t, s, id)
	a, b, c := rcpt(m, "a@x"), rcpt(m, "b@y"), rcpt(m, "c@z")
	if a.State != Delivered || a.Attempts != 1 || !a.LastAttempt.Equal(t1) || a.LastReply != "250 2.0.0 OK" || a.RemoteMTA != "mx.x" {
		t.Errorf("a = %+v", a)
	}
	if d := b.NextAttempt.Sub(t1); b.State != Deferred || b.Attempts != 1 || d < 300*time.Second || d >= 330*time.Second {
		t.Errorf("b = %+v (next in %v)", b, d)
	}
	if c.State != Failed || c.Reported || c.Expired || c.LastReply != "550 5.1.1 no such user" {
		t.Errorf("c = %+v", c)
	}

	if err := s.Complete(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, l); err != nil {
		t.Errorf("second Complete: %v", err)
	}
	if _, err := s.Update(ctx, l, nil); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Update after Complete: %v, want ErrLeaseLost", err)
	}
	if c := rcpt(get(t, s, id), "c@z"); !c.Reported {
		t.Errorf("c not reported after Complete: %+v", c)
	}
	if ls := lease(t, s, 10); len(ls) != 0 {
		t.Fatalf("leased before b is due: %+v", ls[0])
	}

	clk.Set(b.NextAttempt)
	ls = lease(t, s, 10)
	if len(ls) != 1 || len(ls[0].Due) != 1 || ls[0].Due[0].Addr != "b@y" {
		t.Fatalf("Lease at b's next attempt = %+v, want b only", ls)
	}
	failed, err = s.Update(ctx, ls[0], []Result{{Addr: "b@y", State: Delivered, Reply: "250 ok"}})
	if err != nil || len(failed) != 0 {
		t.Fatalf("Update = %v, %v", failed, err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("a message with every recipient done is still there: %v", err)
	}
	if err := s.Complete(ctx, ls[0]); err != nil {
		t.Errorf("Complete of a removed message: %v", err)
	}
	if err := s.Release(ctx, ls[0]); err != nil {
		t.Errorf("Release after Complete: %v", err)
	}
}

// TestExpiry defers one recipient until the message outlives its lifetime.
func TestExpiry(t *testing.T) {
	for _, from := range []string{"alice@example.org", ""} {
		clk := newClock()
		dir := t.TempDir()
		sch := DefaultSchedule()
		sch.BounceLifetime = 24 * time.Hour
		s, err := Open(dir, Options{Now: clk.Now, Schedule: sch})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		id := put(t, s, env(from, "a@x"), "body")
		start := clk.Now()
		var failed []Recipient
		attempts := 0
		for len(failed) == 0 {
			ls := lease(t, s, 1)
			if len(ls) != 1 {
				t.Fatalf("attempt %d: nothing due", attempts+1)
			}
			attempts++
			failed, err = s.Update(ctx, ls[0], []Result{{Addr: "a@x", State: Deferred, Reply: "451 4.4.1 no answer"}})
			if err != nil {
				t.Fatal(err)
			}
			if len(failed) == 0 {
				if err := s.Complete(ctx, ls[0]); err != nil {
					t.Fatal(err)
				}
				clk.Set(rcpt(get(t, s, id), "a@x").NextAttempt)
			} else if err := s.Complete(ctx, ls[0]); err != nil {
				t.Fatal(err)
			}
			if attempts > 1000 {
				t.Fatal("never expires")
			}
		}
		lifetime := sch.Lifetime(from)
		if age := clk.Now().Sub(start); age != lifetime {
			t.Errorf("from %q: expired at age %v, want exactly the lifetime %v (last attempt at its end)", from, age, lifetime)
		}
		r := failed[0]
		if r.State != Failed || !r.Expired || r.LastReply != "451 4.4.1 no answer" || r.Attempts != attempts {
			t.Errorf("from %q: expired recipient = %+v after %d attempts", from, r, attempts)
		}
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("from %q: expired and reported message still queued: %v", from, err)
		}
		t.Logf("from %q: expired after %d attempts", from, attempts)
		s.Close()
	}
}

// TestUnreportedFailureSurvivesCrash: a failure returned by Update but not
// completed is returned again after a restart.
func TestUnreportedFailureSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	ctx := context.Background()
	s := openSpool(t, dir, clk)
	id := put(t, s, env("alice@example.org", "a@x", "b@y"), "body")
	l := lease(t, s, 1)[0]
	if _, err := s.Update(ctx, l, []Result{{Addr: "a@x", State: Failed, Reply: "550 no"}}); err != nil {
		t.Fatal(err)
	}
	s.Close() // the "crash": no Complete

	s = openSpool(t, dir, clk)
	ls := lease(t, s, 10)
	if len(ls) != 1 || ls[0].Message.ID != id {
		t.Fatalf("Lease after restart = %+v", ls)
	}
	if got := addrs(ls[0].Due); !slices.Equal(got, []string{"b@y"}) {
		t.Errorf("Due = %q, want [b@y]", got)
	}
	failed, err := s.Update(ctx, ls[0], []Result{{Addr: "b@y", State: Delivered}})
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(failed); !slices.Equal(got, []string{"a@x"}) {
		t.Errorf("failed = %q, want [a@x]", got)
	}
	if err := s.Complete(ctx, ls[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("message still there after its failure was reported: %v", err)
	}
}

func TestLeaseExclusive(t *testing.T) {
	s := openSpool(t, t.TempDir(), newClock())
	const n = 300
	want := map[string]bool{}
	for i := range n {
		want[put(t, s, env("a@x", fmt.Sprintf("r%d@y", i)), "x")] = true
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ls, err := s.Lease(context.Background(), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					got[l.Message.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != n {
		t.Errorf("leased %d messages, want %d", len(got), n)
	}
	for id, c := range got {
		if c != 1 || !want[id] {
			t.Errorf("%s leased %d times", id, c)
		}
	}
}

func TestLeaseExpiry(t *testing.T) {
	clk := newClock()
	s := openSpool(t, t.TempDir(), clk) // LeaseTime 10 minutes
	ctx := context.Background()
	put(t, s, env("a@x", "b@y"), "x")
	l1 := lease(t, s, 1)[0]

	// Expired but not leased again: the holder may still update.
	clk.Advance(11 * time.Minute)
	if _, err := s.Update(ctx, l1, nil); err != nil {
		t.Fatalf("Update on an expired lease nobody took: %v", err)
	}
	if !l1.Expires.Equal(clk.Now().Add(10 * time.Minute)) {
		t.Errorf("Update did not renew the lease: expires %v", l1.Expires)
	}
	if ls := lease(t, s, 1); len(ls) != 0 {
		t.Fatal("a renewed lease was taken")
	}

	// Expired and leased again: the first holder has lost it.
	clk.Advance(10 * time.Minute)
	ls := lease(t, s, 1)
	if len(ls) != 1 {
		t.Fatal("an expired lease was not given again")
	}
	if _, err := s.Update(ctx, l1, []Result{{Addr: "b@y", State: Delivered}}); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Update on a lost lease: %v, want ErrLeaseLost", err)
	}
	if err := s.Complete(ctx, l1); err != nil {
		t.Errorf("Complete on a lost lease: %v", err)
	}
	if ls2 := lease(t, s, 1); len(ls2) != 0 {
		t.Error("Complete of a lost lease released the new holder's lease")
	}
	if _, err := s.Update(ctx, ls[0], []Result{{Addr: "b@y", State: Delivered}}); err != nil {
		t.Errorf("Update by the new holder: %v", err)
	}
}

func TestRelease(t *testing.T) {
	s := openSpool(t, t.TempDir(), newClock())
	ctx := context.Background()
	id := put(t, s, env("a@x", "b@y"), "x")
	l := lease(t, s, 1)[0]
	<-s.Notify()
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Notify():
	default:
		t.Error("Release of due work did not notify")
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	ls := lease(t, s, 1)
	if len(ls) != 1 || ls[0].Message.ID != id {
		t.Fatal("a released message is not leased again")
	}
	if _, err := s.Update(ctx, l, nil); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Update on a released lease: %v", err)
	}
}

func TestUpdateErrors(t *testing.T) {
	s := openSpool(t, t.TempDir(), newClock())
	ctx := context.Background()
	id := put(t, s, env("a@x", "b@y"), "x")
	l := lease(t, s, 1)[0]
	before := get(t, s, id)
	for _, res := range [][]Result{
		{{Addr: "nobody@y", State: Delivered}},
		{{Addr: "b@y", State: Delivered}, {Addr: "b@y", State: Pending}},
	} {
		if _, err := s.Update(ctx, l, res); err == nil {
			t.Errorf("Update(%+v) succeeded", res)
		}
	}
	if after := get(t, s, id); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused Update changed the state:\n%+v\n%+v", before, after)
	}
	a, _ := Attach(s.dir, Options{})
	if _, err := a.Lease(ctx, 1); !errors.Is(err, ErrNotOwner) {
		t.Errorf("attached Lease: %v", err)
	}
	if _, err := a.Update(ctx, l, nil); !errors.Is(err, ErrNotOwner) {
		t.Errorf("attached Update: %v", err)
	}
	if _, err := a.Put(ctx, env("a@x", "b@y"), strings.NewReader("")); !errors.Is(err, ErrNotOwner) {
		t.Errorf("attached Put: %v", err)
	}
	s.Close()
	if _, err := s.Update(ctx, l, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
}

// TestDeliveredBeatsBounce: a postmaster's bounce racing a delivery in
// progress; the delivery result wins for the recipient it names.
func TestDeliveredBeatsBounce(t *testing.T) {
	s := openSpool(t, t.TempDir(), newClock())
	ctx := context.Background()
	id := put(t, s, env("alice@example.org", "a@x", "b@y"), "x")
	l := lease(t, s, 1)[0]
	if err := s.Bounce(ctx, id); err != nil {
		t.Fatal(err)
	}
	failed, err := s.Update(ctx, l, []Result{
		{Addr: "a@x", State: Delivered, Reply: "250 ok"},
		{Addr: "b@y", State: Deferred, Reply: "451 later"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(failed); !slices.Equal(got, []string{"b@y"}) {
		t.Errorf("failed = %q, want [b@y] (bounced, deferral ignored)", got)
	}
	m := get(t, s, id)
	if rcpt(m, "a@x").State != Delivered || rcpt(m, "b@y").LastReply != bounceReply {
		t.Errorf("state = %+v", m.Rcpts)
	}
}
