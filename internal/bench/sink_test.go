package bench

import (
	"context"
	"testing"
	"time"
)

// With Until, Reached is closed at the Until-th message, and Stats says
// when the first and that message arrived; without it, Reached never is.
func TestSinkUntil(t *testing.T) {
	k, addr := startSink(t, SinkOptions{Until: 25})
	select {
	case <-k.Reached():
		t.Fatal("Reached before any message")
	default:
	}
	before := time.Now()
	rep := runBench(t, Options{Server: addr, Security: StartTLS, Conns: 4, MsgsPerConn: 5, Total: 20})
	wantClean(t, rep, 20)
	select {
	case <-k.Reached():
		t.Fatal("Reached after 20 of 25 messages")
	default:
	}
	st := k.Stats()
	if st.FirstMessage.Before(before) || st.FirstMessage.After(time.Now()) || !st.Reached.IsZero() {
		t.Errorf("after 20 messages: first %v (run from %v), reached %v; want a first, no reached", st.FirstMessage, before, st.Reached)
	}
	rep = runBench(t, Options{Server: addr, Security: StartTLS, Conns: 2, MsgsPerConn: 5, Total: 10})
	wantClean(t, rep, 10)
	select {
	case <-k.Reached():
	case <-time.After(10 * time.Second):
		t.Fatal("Reached not closed after 30 messages with Until 25")
	}
	st = k.Stats()
	if st.Messages != 30 || st.Reached.IsZero() || st.Reached.Before(st.FirstMessage) || time.Since(st.Reached) > time.Minute {
		t.Errorf("stats %+v: want 30 messages, the 25th reached after the first", st)
	}

	plain, addr2 := startSink(t, SinkOptions{})
	if plain.Reached() != nil {
		t.Error("Reached without Until is not nil")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := Run(ctx, Options{Server: addr2, Total: 3}); err != nil {
		t.Fatal(err)
	}
	if st := plain.Stats(); st.Messages != 3 || st.FirstMessage.IsZero() || !st.Reached.IsZero() {
		t.Errorf("stats without Until: %+v", st)
	}
}
