package queue

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRecovery lays out by hand what a crash can leave, and what it cannot,
// and checks what Open makes of it.
func TestRecovery(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openSpool(t, dir, clk)
	ctx := context.Background()
	keepID := put(t, s, env("a@x", "k@y"), "keep")
	failID := put(t, s, env("a@x", "f@y"), "fail")
	l := lease(t, s, 10)
	for _, l := range l {
		if l.Message.ID == failID {
			s.Update(ctx, l, []Result{{Addr: "f@y", State: Failed, Reply: "550 no"}})
		}
	}
	newer := get(t, s, keepID)
	s.Close()

	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	state := func(m Message) string {
		t.Helper()
		b, err := encodeState(&m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	now := clk.Now()
	noBody := NewID(now)
	noState := NewID(now)
	garbage := NewID(now)
	short := NewID(now)
	done := NewID(now)
	msg := func(id string, size int64, rs ...Recipient) Message {
		return Message{ID: id, From: "a@x", Rcpts: rs, Received: now, Size: size}
	}
	// An Update that crashed before its rename: a new state in tmp/, whole
	// or partial, the old one in msg/.
	newer.Rcpts[0].State = Delivered
	write("tmp/"+keepID+".99.1.json", state(newer))
	write("tmp/"+keepID+".99.2.json", state(newer)[:20])
	// A Put that crashed before or after some of its links.
	write("tmp/"+noBody+".99.3.body", "partial bo")
	write("msg/"+noBody+".json", state(msg(noBody, 4, Recipient{Addr: "b@y"})))
	write("msg/"+noState+".body", "body")
	// What no crash makes: a state file that does not decode, a body of
	// the wrong size.
	write("msg/"+garbage+".json", `{"v":1,"id":"`+garbage+`","rcpts":[{"addr":`)
	write("msg/"+garbage+".body", "body")
	write("msg/"+short+".json", state(msg(short, 100, Recipient{Addr: "b@y"})))
	write("msg/"+short+".body", "body")
	// A removal that crashed after the last Complete's state write.
	write("msg/"+done+".json", state(msg(done, 4, Recipient{Addr: "b@y", State: Failed, Reported: true})))
	write("msg/"+done+".body", "body")
	write("msg/README", "not ours")

	s = openSpool(t, dir, clk)
	got := spoolFiles(t, dir)
	want := []string{
		"corrupt/" + garbage + ".body", "corrupt/" + garbage + ".json",
		"corrupt/" + short + ".body", "corrupt/" + short + ".json",
		"msg/" + failID + ".body", "msg/" + failID + ".json",
		"msg/" + keepID + ".body", "msg/" + keepID + ".json",
		"msg/README",
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("files after recovery:\n got %q\nwant %q", got, want)
	}
	if r := rcpt(get(t, s, keepID), "k@y"); r.State != Pending {
		t.Errorf("the unfinished Update was applied: %+v", r)
	}
	ls := lease(t, s, 10)
	if len(ls) != 2 {
		t.Fatalf("%d leases after recovery, want 2 (pending and unreported failure)", len(ls))
	}
	for _, l := range ls {
		failed, err := s.Update(ctx, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		if (l.Message.ID == failID) != (len(failed) == 1) {
			t.Errorf("%s: failed = %+v", l.Message.ID, failed)
		}
	}
}
