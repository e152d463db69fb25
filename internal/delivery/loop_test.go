package delivery_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtptest"
)

// The loop delivers a queued message, records the results, bounces the
// refused recipient to the (local) sender, delivers that DSN locally, and
// leaves the queue empty.
func TestLoop(t *testing.T) {
	_, be, port := server(t, false, func(b *smtptest.Backend) {
		b.RejectRcpt = func(to smtp.Path) error {
			if to.Local == "nobody" {
				return &smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user"}
			}
			return nil
		}
	})
	dns := dnsxtest.NewServer(t, mxRecords...)
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newDeliverer(t, port, dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
	})
	q, err := queue.Open(filepath.Join(t.TempDir(), "spool"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	ctx := ctxT(t)
	id, err := q.Put(ctx, queue.Envelope{From: "sender@local.test", Rcpts: []queue.Recipient{
		{Addr: "alice@dest.test"}, {Addr: "nobody@dest.test"}, {Addr: "quiet@dest.test"},
	}}, strings.NewReader(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	// A second message whose refused recipient asked for no report.
	if _, err := q.Put(ctx, queue.Envelope{From: "sender@local.test", Rcpts: []queue.Recipient{
		{Addr: "nobody@dest.test", Notify: "NEVER"},
	}}, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	loop := &delivery.Loop{Queue: q, Deliverer: e.d, ReportingMTA: "mx.local.test", Poll: 20 * time.Millisecond}
	go func() { done <- loop.Run(lctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msgs, _ := q.List(ctx)
		names, _ := store.List("sender")
		if len(msgs) == 0 && len(names) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %+v, sender mailbox %v\n%s", msgs, names, e.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run: %v", err)
	}
	names, _ := store.List("sender")
	if len(names) != 1 {
		t.Fatalf("sender got %d reports, want 1", len(names))
	}
	dir, _ := store.Dir("sender")
	report, err := os.ReadFile(filepath.Join(dir, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Final-Recipient: rfc822; nobody@dest.test", "550 5.1.1 No such user", id} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Count(string(report), "Final-Recipient") != 1 {
		t.Errorf("report about other recipients:\n%s", report)
	}
	if n := len(be.Messages()); n != 1 {
		t.Errorf("remote got %d messages", n)
	}
}

// A loop whose workers are all busy leases again as soon as one finishes,
// not at the next poll: with one worker and an hour's poll, a burst of
// messages queued before the loop starts is delivered at once.
func TestLoopRefillsWhenAWorkerFinishes(t *testing.T) {
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := delivery.New(delivery.Options{LocalDomains: []string{"local.test"}, Local: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	q, err := queue.Open(filepath.Join(t.TempDir(), "spool"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	ctx := ctxT(t)
	const n = 6
	for range n {
		if _, err := q.Put(ctx, queue.Envelope{From: "a@local.test", Rcpts: []queue.Recipient{{Addr: "box@local.test"}}},
			strings.NewReader(testMsg)); err != nil {
			t.Fatal(err)
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loop := &delivery.Loop{Queue: q, Deliverer: d, ReportingMTA: "mx.local.test", Workers: 1, Poll: time.Hour}
	go func() { _ = loop.Run(lctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		names, _ := store.List("box")
		if len(names) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered: the loop waits for its poll", len(names), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
