package spooler_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/internal/spooler"
)

// fakeDeliverer answers by local part: ok… delivered, later… deferred,
// bad… failed; it records what it was given.
type fakeDeliverer struct {
	mu   sync.Mutex
	seen []queue.Message
	body map[string]string
}

func (f *fakeDeliverer) Deliver(_ context.Context, msg queue.Message, body func() (io.ReadCloser, error)) []queue.Result {
	rc, err := body()
	var b []byte
	if err == nil {
		b, _ = io.ReadAll(rc)
		rc.Close()
	}
	f.mu.Lock()
	f.seen = append(f.seen, msg)
	if f.body == nil {
		f.body = map[string]string{}
	}
	f.body[msg.ID] = string(b)
	f.mu.Unlock()
	var res []queue.Result
	for _, r := range msg.Rcpts {
		switch {
		case strings.HasPrefix(r.Addr, "later"):
			res = append(res, queue.Result{Addr: r.Addr, State: queue.Deferred, Reply: "451 4.3.0 Try later", RemoteMTA: "mx.example.net"})
		case strings.HasPrefix(r.Addr, "bad"):
			res = append(res, queue.Result{Addr: r.Addr, State: queue.Failed, Reply: "550 5.1.1 No such user", RemoteMTA: "mx.example.net"})
		default:
			res = append(res, queue.Result{Addr: r.Addr, State: queue.Delivered, Reply: "250 2.0.0 Ok"})
		}
	}
	return res
}

func (f *fakeDeliverer) messages() []queue.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]queue.Message(nil), f.seen...)
}

func start(t *testing.T) (*queue.Spool, *fakeDeliverer) {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDeliverer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := spooler.New(spooler.Options{Queue: q, Deliverer: d, Hostname: "mx.test", Poll: 10 * time.Millisecond})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = q.Close() })
	return q, d
}

func put(t *testing.T, q *queue.Spool, from string, rcpts ...queue.Recipient) string {
	t.Helper()
	id, err := q.Put(context.Background(), queue.Envelope{From: from, Rcpts: rcpts},
		strings.NewReader("From: <"+from+">\r\nSubject: test\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFailedRecipientsReported: one delivered, one deferred (kept, retried
// later), one failed: the sender gets one RFC 3464 report, from <>, naming
// the failed recipient with the remote reply, and it is delivered too.
func TestFailedRecipientsReported(t *testing.T) {
	q, d := start(t)
	id := put(t, q, "sender@example.org",
		queue.Recipient{Addr: "ok@example.net"}, queue.Recipient{Addr: "later@example.net"}, queue.Recipient{Addr: "bad@example.net"})
	var report queue.Message
	waitFor(t, "the report to be delivered", func() bool {
		for _, m := range d.messages() {
			if m.From == "" && len(m.Rcpts) == 1 && m.Rcpts[0].Addr == "sender@example.org" {
				report = m
				return true
			}
		}
		return false
	})
	d.mu.Lock()
	body := d.body[report.ID]
	d.mu.Unlock()
	for _, want := range []string{"multipart/report", "Final-Recipient: rfc822; bad@example.net", "Action: failed",
		"Status: 5.1.1", "550 5.1.1 No such user", "Subject: test"} {
		if !strings.Contains(body, want) {
			t.Errorf("report lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "Final-Recipient: rfc822; later@") || strings.Contains(body, "Final-Recipient: rfc822; ok@") {
		t.Errorf("report names a recipient that did not fail:\n%s", body)
	}
	waitFor(t, "the original to keep only its deferred recipient", func() bool {
		m, err := q.Get(context.Background(), id)
		if err != nil {
			return false
		}
		for _, r := range m.Rcpts {
			if r.Addr == "later@example.net" && r.State != queue.Deferred {
				return false
			}
			if r.Addr == "bad@example.net" && !r.Reported {
				return false
			}
		}
		return true
	})
}

// TestNoReportToNullSender: a failure of a message from <> (a bounce) is
// never reported (RFC 5321 §4.5.5); nor one whose NOTIFY is NEVER (RFC 3461).
func TestNoReportToNullSender(t *testing.T) {
	q, d := start(t)
	put(t, q, "", queue.Recipient{Addr: "bad@example.net"})
	put(t, q, "sender@example.org", queue.Recipient{Addr: "bad2@example.net", Notify: "NEVER"})
	waitFor(t, "both messages to be attempted and removed", func() bool {
		ms, err := q.List(context.Background())
		return err == nil && len(ms) == 0 && len(d.messages()) >= 2
	})
	time.Sleep(100 * time.Millisecond) // a report, if any, would be delivered by now
	for _, m := range d.messages() {
		if m.From == "" && len(m.Rcpts) == 1 && !strings.HasPrefix(m.Rcpts[0].Addr, "bad") {
			t.Errorf("a report was sent: %+v", m)
		}
	}
	if n := len(d.messages()); n != 2 {
		t.Errorf("%d deliveries, want 2 (no reports)", n)
	}
}
