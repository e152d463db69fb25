package queue

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDecodeStateCorpus decodes the committed fuzz seeds and checks which
// are accepted.
func TestDecodeStateCorpus(t *testing.T) {
	valid := map[string]bool{"full": true, "minimal": true, "null-sender-utf8": true}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeState")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, arg, _ := strings.Cut(string(raw), "\n")
		arg = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(arg), "[]byte("), ")")
		data, err := strconv.Unquote(arg)
		if err != nil {
			t.Fatalf("%s: %v", ent.Name(), err)
		}
		_, err = decodeState([]byte(data))
		if (err == nil) != valid[ent.Name()] {
			t.Errorf("%s: decodeState error = %v, want valid=%v", ent.Name(), err, valid[ent.Name()])
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	m := Message{
		ID: NewID(now), From: "a@x", Received: now, Size: 3,
		Rcpts: []Recipient{{Addr: "b@y", State: Deferred, Attempts: 3, NextAttempt: now.Add(time.Hour), LastAttempt: now, LastReply: "451 later"}},
	}
	b, err := encodeState(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Received.Equal(now) || !got.Rcpts[0].NextAttempt.Equal(m.Rcpts[0].NextAttempt) || got.Rcpts[0].LastReply != "451 later" {
		t.Errorf("round trip: %+v", got)
	}
}

func TestValidID(t *testing.T) {
	now := time.Now()
	prev := ""
	for i := range 1000 {
		id := NewID(now.Add(time.Duration(i) * time.Millisecond))
		if !ValidID(id) {
			t.Fatalf("NewID gave %q, not valid", id)
		}
		if id[:8] < prev {
			t.Fatalf("IDs do not sort by time: %q after %q", id, prev)
		}
		prev = id[:8]
	}
	for _, bad := range []string{"", "short", "0123456789ABCDEFG", "0123456789ABCDEI", "0123456789abcdef", "01234567/9ABCDEF", "0123456789ABCDE."} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}
