package queue

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecodeState feeds arbitrary state files to the decoder: it must not
// panic, and what it accepts must encode to a state file that decodes to
// the same thing, and passes the invariants the spool relies on.
func FuzzDecodeState(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := Message{
		ID:   "01KJN7D5S8ABCDEF",
		From: "alice@example.org",
		Rcpts: []Recipient{
			{Addr: "bob@example.net", ORCPT: "rfc822;bob@example.net", Notify: "FAILURE"},
			{Addr: "carol@example.com", State: Deferred, Attempts: 2, NextAttempt: now.Add(time.Hour), LastAttempt: now, LastReply: "451 4.7.1 later", RemoteMTA: "mx.example.com"},
			{Addr: "dave@example.com", State: Failed, Expired: true, Reported: true},
			{Addr: "erin@example.com", State: Delivered, Attempts: 1},
		},
		Received: now,
		Size:     1234,
		Attrs:    map[string]string{AttrAuthUser: "alice"},
	}
	b, err := encodeState(&m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"v":1,"id":"01KJN7D5S8ABCDEF","from":"","rcpts":[{"addr":"a@b","state":"pending"}],"received":"2026-03-01T12:00:00Z","size":0}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeState(data)
		if err != nil {
			return
		}
		if err := checkMessage(&m); err != nil {
			t.Fatalf("decoded a message that fails the checks: %v", err)
		}
		b1, err := encodeState(&m)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", data, err)
		}
		m2, err := decodeState(b1)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", b1, err)
		}
		b2, err := encodeState(&m2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("round trip differs:\n%s\n%s", b1, b2)
		}
		// The state machine must cope with whatever was accepted.
		due, ok := dueAt(&m)
		_ = dueRcpts(&m, due, false)
		if ok == finished(&m) {
			t.Fatalf("dueAt says work=%v, finished says %v", ok, finished(&m))
		}
		_ = applyResults(&m, []Result{{Addr: m.Rcpts[0].Addr, State: Deferred}}, due, DefaultSchedule())
		if err := checkMessage(&m); err != nil {
			t.Fatalf("applyResults broke the invariants: %v", err)
		}
	})
}
