package delivery_test

// End-to-end retry and bounce tests on a fake clock: a durable queue.Spool
// whose Options.Now is the clock, a delivery.Loop with a real Deliverer, a
// real SMTP next hop on loopback found by MX through dnsxtest (C-SMTP-03),
// and the local sender's Maildir, where the DSNs land. The next hop answers
// RCPT from a script, one reply per attempt, so that the tests can follow a
// recipient through 4xx (retry) and 5xx (bounce), C-SMTP-02 (RFC 5321
// §4.5.4.1).
//
// The loop polls every 10 ms of real time; the queue decides what is due by
// the fake clock. After each change (a Put, a move of the clock) a test waits
// for the loop to settle: every lease it took has ended and a Lease begun
// after that found nothing due. "Nothing happened" is then a fact about the
// queue at the current fake time, not a guess about how long to sleep.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/dsn"
	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtptest"
)

// retryStart is the fake time at which every test begins; far from the
// wall clock, so that a time taken from the wall clock shows.
var retryStart = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

// retryHeader is the header section of retryMsg, as a DSN returns it
// (text/rfc822-headers, RFC 6522 §4: without the empty line that ends it).
const retryHeader = "From: <sender@local.test>\r\nTo: <bob@dest.test>\r\nSubject: retry test\r\nMessage-ID: <retry.1@local.test>\r\n"

const retryMsg = retryHeader + "\r\nSee you later.\r\n"

// postfixBackoff is the delay after the n-th failed attempt (index n-1)
// as the Schedule documents it, without jitter: Postfix's
// minimal_backoff_time of 300 s, doubled after each attempt up to
// maximal_backoff_time, 4000 s. Written out by hand, not computed with
// Schedule.Backoff.
var postfixBackoff = []time.Duration{300 * time.Second, 600 * time.Second, 1200 * time.Second,
	2400 * time.Second, 4000 * time.Second, 4000 * time.Second}

// postfixSchedule is DefaultSchedule's backoff without jitter, so that
// NextAttempt is exact, with the given lifetimes.
func postfixSchedule(lifetime, bounceLifetime time.Duration) queue.Schedule {
	return queue.Schedule{MinBackoff: 300 * time.Second, MaxBackoff: 4000 * time.Second,
		MaxLifetime: lifetime, BounceLifetime: bounceLifetime}
}

// fakeClock is the queue's clock. The time moves only when a test sets it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// nextHop scripts the next hop's reply to RCPT per recipient (by local
// part) and attempt, and counts the RCPT commands it receives.
type nextHop struct {
	mu     sync.Mutex
	script map[string][]*smtp.Error // nil accepts; the last entry repeats
	seen   map[string]int
}

func (h *nextHop) rcpt(to smtp.Path) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.seen[to.Local]
	h.seen[to.Local]++
	s := h.script[to.Local]
	if len(s) == 0 {
		return nil
	}
	if e := s[min(n, len(s)-1)]; e != nil {
		return e
	}
	return nil
}

// attempts returns how many times the next hop has seen RCPT for local.
func (h *nextHop) attempts(local string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[local]
}

// greylisted is the temporary reply of attempt n (each attempt's text
// differs, so that "the last reply" can be told apart).
func greylisted(n int) *smtp.Error {
	return &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{Class: 4, Subject: 7, Detail: 1},
		Message: fmt.Sprintf("Greylisted, attempt %d", n)}
}

// greylistedText is greylisted(n) as the queue must record it.
func greylistedText(n int) string { return fmt.Sprintf("451 4.7.1 Greylisted, attempt %d", n) }

var noSuchUser = &smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user here"}

const noSuchUserText = "550 5.1.1 No such user here"

// watchedQueue is the Spool as the Loop sees it, with a record of what
// the Loop does with it: its Lease calls and what they returned, the ends
// of leases (Complete, Release), the failures Update returned and the
// messages it Put (DSNs).
type watchedQueue struct {
	*queue.Spool

	mu     sync.Mutex
	calls  int // Lease calls begun, numbered from 1
	idleAt int // the number of the latest Lease call that returned nothing
	endAt  int // calls when the latest lease ended
	out    int // leases handed out
	ended  int // leases ended
	due    map[string][][]string
	failed map[string][][]queue.Recipient
	puts   []put
}

type put struct {
	env  queue.Envelope
	body []byte
}

var _ queue.Notifier = (*watchedQueue)(nil)

func (w *watchedQueue) Lease(ctx context.Context, limit int) ([]*queue.Lease, error) {
	w.mu.Lock()
	w.calls++
	n := w.calls
	w.mu.Unlock()
	ls, err := w.Spool.Lease(ctx, limit)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out += len(ls)
	if err == nil && len(ls) == 0 {
		w.idleAt = max(w.idleAt, n)
	}
	for _, l := range ls {
		var addrs []string
		for _, r := range l.Due {
			addrs = append(addrs, r.Addr)
		}
		w.due[l.Message.ID] = append(w.due[l.Message.ID], addrs)
	}
	return ls, err
}

func (w *watchedQueue) Update(ctx context.Context, l *queue.Lease, results []queue.Result) ([]queue.Recipient, error) {
	failed, err := w.Spool.Update(ctx, l, results)
	if len(failed) > 0 {
		w.mu.Lock()
		w.failed[l.Message.ID] = append(w.failed[l.Message.ID], failed)
		w.mu.Unlock()
	}
	return failed, err
}

func (w *watchedQueue) Complete(ctx context.Context, l *queue.Lease) error {
	err := w.Spool.Complete(ctx, l)
	w.end()
	return err
}

func (w *watchedQueue) Release(ctx context.Context, l *queue.Lease) error {
	err := w.Spool.Release(ctx, l)
	w.end()
	return err
}

func (w *watchedQueue) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended++
	w.endAt = w.calls
}

func (w *watchedQueue) Put(ctx context.Context, env queue.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	id, err := w.Spool.Put(ctx, env, bytes.NewReader(b))
	if err == nil {
		w.mu.Lock()
		w.puts = append(w.puts, put{env, b})
		w.mu.Unlock()
	}
	return id, err
}

// settledAfter reports whether the loop is idle: every lease ended, and a
// Lease call numbered above mark and begun after the last end found
// nothing due.
func (w *watchedQueue) settledAfter(mark int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out == w.ended && w.idleAt > mark && w.idleAt > w.endAt
}

func (w *watchedQueue) leaseCalls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

// dueOf returns the Due recipients of each lease of message id so far.
func (w *watchedQueue) dueOf(id string) [][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.due[id])
}

// failedOf returns the failures Update returned for message id so far.
func (w *watchedQueue) failedOf(id string) [][]queue.Recipient {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.failed[id])
}

// putsByLoop returns the messages the loop queued (DSNs).
func (w *watchedQueue) putsByLoop() []put {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.puts)
}

// rig is one running queue, loop, next hop and local store.
type rig struct {
	clock *fakeClock
	q     *watchedQueue
	hop   *nextHop
	be    *smtptest.Backend
	store *maildir.Store
	log   *logBuf
}

// newRig starts the loop on a fresh spool opened with sch and the fake
// clock at retryStart. local.test is the local domain (the senders' mailboxes);
// dest.test is remote, its MX the scripted next hop.
func newRig(t *testing.T, sch queue.Schedule, script map[string][]*smtp.Error) *rig {
	t.Helper()
	hop := &nextHop{script: script, seen: map[string]int{}}
	_, be, port := server(t, false, func(b *smtptest.Backend) { b.RejectRcpt = hop.rcpt })
	dns := dnsxtest.NewServer(t, mxRecords...)
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newDeliverer(t, port, dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
	})
	clock := &fakeClock{now: retryStart}
	sp, err := queue.Open(filepath.Join(t.TempDir(), "spool"), queue.Options{Now: clock.Now, Schedule: sch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	q := &watchedQueue{Spool: sp, due: map[string][][]string{}, failed: map[string][][]queue.Recipient{}}
	loop := &delivery.Loop{Queue: q, Deliverer: e.d, ReportingMTA: "mx.local.test", Now: clock.Now,
		Poll: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(e.log, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	// Registered last, so it runs first: the loop stops before the spool,
	// the Deliverer and the servers are closed.
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Loop.Run: %v", err)
		}
	})
	return &rig{clock: clock, q: q, hop: hop, be: be, store: store, log: e.log}
}

// put queues retryMsg from from to rcpts, as the server would (not through
// the watched Put, which records the loop's own messages).
func (r *rig) put(t *testing.T, from string, rcpts ...string) string {
	t.Helper()
	env := queue.Envelope{From: from}
	for _, a := range rcpts {
		env.Rcpts = append(env.Rcpts, queue.Recipient{Addr: a})
	}
	id, err := r.q.Spool.Put(ctxT(t), env, strings.NewReader(retryMsg))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// settle waits until the loop has done everything due at the current fake
// time (see watchedQueue.settledAfter).
func (r *rig) settle(t *testing.T) {
	t.Helper()
	mark := r.q.leaseCalls()
	deadline := time.Now().Add(20 * time.Second)
	for !r.q.settledAfter(mark) {
		if time.Now().After(deadline) {
			t.Fatalf("the loop did not settle at %v\n%s", r.clock.Now(), r.log.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// set moves the fake clock to at and waits for the loop to settle.
func (r *rig) set(t *testing.T, at time.Time) {
	t.Helper()
	r.clock.Set(at)
	r.settle(t)
}

// recipient returns recipient addr of queued message id.
func (r *rig) recipient(t *testing.T, id, addr string) queue.Recipient {
	t.Helper()
	m, err := r.q.Get(ctxT(t), id)
	if err != nil {
		t.Fatalf("message %s: %v\n%s", id, err, r.log.String())
	}
	for _, rc := range m.Rcpts {
		if rc.Addr == addr {
			return rc
		}
	}
	t.Fatalf("message %s has no recipient %s: %+v", id, addr, m.Rcpts)
	return queue.Recipient{}
}

// gone checks that message id has left the queue, and that the queue is
// empty (the DSNs, if any, delivered to the local mailboxes too).
func (r *rig) gone(t *testing.T, id string) {
	t.Helper()
	if m, err := r.q.Get(ctxT(t), id); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("message %s still queued: %+v (%v)", id, m, err)
	}
	if msgs, err := r.q.List(ctxT(t)); err != nil || len(msgs) != 0 {
		t.Errorf("queue not empty: %+v (%v)", msgs, err)
	}
}

// mailbox returns the messages in a local mailbox.
func (r *rig) mailbox(t *testing.T, name string) [][]byte {
	t.Helper()
	names, err := r.store.List(name)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := r.store.Dir(name)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestRetrySchedule follows one recipient of a message through the retry
// schedule of the queue (C-SMTP-02, RFC 5321 §4.5.4.1: 4xx is retried, 5xx
// bounced, and a message is given up after the queue lifetime) until it is
// delivered or failed, checking at each attempt the recorded state, that
// nothing is attempted a nanosecond before NextAttempt, and that exactly one
// attempt is made at NextAttempt.
func TestRetrySchedule(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name  string
		sched queue.Schedule
		from  string
		// script is the next hop's reply to RCPT at each attempt, the
		// last one final; nil accepts.
		script []*smtp.Error
		// at are the times of the attempts after the message's arrival,
		// worked out by hand from the Schedule's documentation: each
		// NextAttempt is the attempt's time plus postfixBackoff, but no
		// later than the end of the lifetime, when a last attempt is
		// made. Nil when jitter makes them random.
		at      []time.Duration
		expired bool // the recipient fails as expired (else: the last reply decides)
		// status is the Status of the DSN (RFC 3464 §2.3.4), any of
		// these; no DSN when empty.
		status []string
	}{
		{
			// Scenario 1: greylisted three times, then accepted.
			name:   "451 three times then 250",
			sched:  postfixSchedule(5*day, 5*day),
			from:   "sender@local.test",
			script: []*smtp.Error{greylisted(1), greylisted(2), greylisted(3), nil},
			at:     []time.Duration{0, 300 * time.Second, 900 * time.Second, 2100 * time.Second},
		},
		{
			// Scenario 1 with DefaultSchedule: the same backoff with 10%
			// jitter (NextAttempt in [b, 1.1 b) after the attempt).
			name:   "451 three times then 250, default schedule",
			sched:  queue.DefaultSchedule(),
			from:   "sender@local.test",
			script: []*smtp.Error{greylisted(1), greylisted(2), greylisted(3), nil},
		},
		{
			// Scenario 2: always 451 until the lifetime, 2 h, ends. The
			// fifth delay (4000 s after 4500 s) would overshoot it: the
			// sixth and last attempt is at its end, and the recipient
			// then expires.
			name:    "451 until the lifetime ends",
			sched:   postfixSchedule(2*time.Hour, 5*day),
			from:    "sender@local.test",
			script:  []*smtp.Error{greylisted(1), greylisted(2), greylisted(3), greylisted(4), greylisted(5), greylisted(6)},
			at:      []time.Duration{0, 300 * time.Second, 900 * time.Second, 2100 * time.Second, 4500 * time.Second, 2 * time.Hour},
			expired: true,
			// RFC 3463 §3.5 X.4.7 "delivery time expired"
			// (queue.Recipient.Expired), the last reply as the
			// Diagnostic-Code.
			status: []string{"4.4.7"},
		},
		{
			// Scenario 3: a 5xx at the second attempt bounces at once,
			// days before the lifetime ends.
			name:   "451 then 550",
			sched:  postfixSchedule(5*day, 5*day),
			from:   "sender@local.test",
			script: []*smtp.Error{greylisted(1), noSuchUser},
			at:     []time.Duration{0, 300 * time.Second},
			status: []string{"5.1.1"},
		},
		{
			// Scenario 4: a message with the null reverse-path (a DSN
			// itself) that fails is never answered with a DSN (RFC 5321
			// §4.5.5 and §6.1), and is removed.
			name:   "null reverse-path, 550",
			sched:  postfixSchedule(5*day, 5*day),
			from:   "",
			script: []*smtp.Error{noSuchUser},
			at:     []time.Duration{0},
		},
		{
			// Scenario 4, by expiry: the bounce lifetime (1 h, shorter
			// than the 2 h of other mail) applies to <>.
			name:    "null reverse-path, 451 until the bounce lifetime ends",
			sched:   postfixSchedule(2*time.Hour, time.Hour),
			from:    "",
			script:  []*smtp.Error{greylisted(1), greylisted(2), greylisted(3), greylisted(4), greylisted(5)},
			at:      []time.Duration{0, 300 * time.Second, 900 * time.Second, 2100 * time.Second, time.Hour},
			expired: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const rcpt = "bob@dest.test"
			r := newRig(t, tc.sched, map[string][]*smtp.Error{"bob": tc.script})
			id := r.put(t, tc.from, rcpt)
			lifetime := tc.sched.MaxLifetime
			if tc.from == "" {
				lifetime = tc.sched.BounceLifetime
			}
			end := retryStart.Add(lifetime)
			r.settle(t)

			n := len(tc.script)
			for k := 1; ; k++ {
				now := r.clock.Now()
				if tc.at != nil && !now.Equal(retryStart.Add(tc.at[k-1])) {
					t.Fatalf("attempt %d at %v, want arrival + %v", k, now, tc.at[k-1])
				}
				if got := r.hop.attempts("bob"); got != k {
					t.Fatalf("at %v the next hop saw %d attempts, want %d\n%s", now, got, k, r.log.String())
				}
				if got := r.q.dueOf(id); len(got) != k {
					t.Fatalf("at %v the message was leased %d times, want %d: %v", now, len(got), k, got)
				}
				if k == n {
					break
				}
				rc := r.recipient(t, id, rcpt)
				if rc.State != queue.Deferred || rc.Attempts != k || !rc.LastAttempt.Equal(now) ||
					rc.LastReply != greylistedText(k) || rc.RemoteMTA != "mx.dest.test" {
					t.Fatalf("after attempt %d at %v: %+v, want deferred with %q", k, now, rc, greylistedText(k))
				}
				// NextAttempt is the backoff after the attempt, plus up to
				// Jitter of it, but not after the end of the lifetime.
				b := postfixBackoff[k-1]
				lo := now.Add(b)
				hi := now.Add(b + time.Duration(float64(b)*tc.sched.Jitter))
				if lo.After(end) {
					lo = end
				}
				if hi.After(end) {
					hi = end
				}
				if rc.NextAttempt.Before(lo) || rc.NextAttempt.After(hi) {
					t.Fatalf("after attempt %d at %v: next attempt %v, want in [%v, %v]", k, now, rc.NextAttempt, lo, hi)
				}
				if tc.at != nil && !rc.NextAttempt.Equal(retryStart.Add(tc.at[k])) {
					t.Fatalf("after attempt %d: next attempt %v, want arrival + %v", k, rc.NextAttempt, tc.at[k])
				}
				// Just before it is due, nothing happens.
				r.set(t, rc.NextAttempt.Add(-time.Nanosecond))
				if got, leases := r.hop.attempts("bob"), len(r.q.dueOf(id)); got != k || leases != k {
					t.Fatalf("a nanosecond before the next attempt: %d attempts, %d leases, want %d", got, leases, k)
				}
				if got := r.recipient(t, id, rcpt); !got.NextAttempt.Equal(rc.NextAttempt) || got.Attempts != k {
					t.Fatalf("state changed before the next attempt: %+v", got)
				}
				// When it is due, exactly one attempt (checked at the top).
				r.set(t, rc.NextAttempt)
			}
			last := r.clock.Now()
			r.gone(t, id)
			dsns := r.q.putsByLoop()
			final := tc.script[n-1]

			if final == nil {
				// Delivered: once, with the message as queued, and no
				// failure to report.
				msgs := r.be.Messages()
				if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0].String() != rcpt || string(msgs[0].Data) != retryMsg {
					t.Errorf("next hop received %+v, want the message once, for %s", msgs, rcpt)
				}
				if f := r.q.failedOf(id); len(f) != 0 {
					t.Errorf("failures reported: %+v", f)
				}
				if len(dsns) != 0 || len(r.mailbox(t, "sender")) != 0 {
					t.Errorf("a DSN for a delivered message: %+v", dsns)
				}
				return
			}

			// Failed: reported once by Update, with the last reply.
			if msgs := r.be.Messages(); len(msgs) != 0 {
				t.Errorf("next hop received %+v", msgs)
			}
			lastReply := noSuchUserText
			if tc.expired {
				lastReply = greylistedText(n)
			}
			failed := r.q.failedOf(id)
			if len(failed) != 1 || len(failed[0]) != 1 {
				t.Fatalf("failures returned by Update: %+v, want %s once", failed, rcpt)
			}
			if f := failed[0][0]; f.Addr != rcpt || f.State != queue.Failed || f.Expired != tc.expired ||
				f.Attempts != n || f.LastReply != lastReply || !f.LastAttempt.Equal(last) || f.RemoteMTA != "mx.dest.test" {
				t.Errorf("failed recipient %+v, want failed (expired %v) after %d attempts, last at %v with %q",
					f, tc.expired, n, last, lastReply)
			}
			if !tc.expired && !last.Before(end) {
				t.Errorf("bounced at %v, not before the end of the lifetime %v", last, end)
			}

			if len(tc.status) == 0 {
				if len(dsns) != 0 {
					t.Errorf("DSN queued for a message from <%s>: %+v", tc.from, dsns)
				}
				return
			}
			// Exactly one DSN, from <> (RFC 5321 §4.5.5) to the sender,
			// delivered to the sender's mailbox.
			if len(dsns) != 1 || dsns[0].env.From != "" || len(dsns[0].env.Rcpts) != 1 || dsns[0].env.Rcpts[0].Addr != tc.from {
				t.Fatalf("DSNs queued: %+v, want one from <> to %s", dsns, tc.from)
			}
			box := r.mailbox(t, "sender")
			if len(box) != 1 || !bytes.Equal(box[0], dsns[0].body) {
				t.Fatalf("sender's mailbox has %d messages, want the DSN", len(box))
			}
			checkDSN(t, box[0], dsnWant{queueID: id, arrival: retryStart, to: tc.from,
				rcpts: []dsnRcpt{{addr: rcpt, status: tc.status, reply: lastReply, last: last}}})
		})
	}
}

// TestRetryMixedRecipients is scenario 5: of two recipients at one next
// hop, one is delivered at the first attempt and never tried again; the
// other is deferred, then refused with 550, and the DSN names only it
// (RFC 3464 §2.3: a per-recipient group for each recipient reported on).
func TestRetryMixedRecipients(t *testing.T) {
	t.Parallel()
	r := newRig(t, postfixSchedule(5*24*time.Hour, 5*24*time.Hour), map[string][]*smtp.Error{
		"alice": {nil},
		"bob":   {greylisted(1), noSuchUser},
	})
	id := r.put(t, "sender@local.test", "alice@dest.test", "bob@dest.test")
	r.settle(t)

	alice := r.recipient(t, id, "alice@dest.test")
	if alice.State != queue.Delivered || alice.Attempts != 1 || !strings.HasPrefix(alice.LastReply, "250 ") {
		t.Errorf("alice after the first attempt: %+v", alice)
	}
	bob := r.recipient(t, id, "bob@dest.test")
	if bob.State != queue.Deferred || bob.Attempts != 1 || bob.LastReply != greylistedText(1) ||
		!bob.NextAttempt.Equal(retryStart.Add(postfixBackoff[0])) {
		t.Errorf("bob after the first attempt: %+v", bob)
	}
	msgs := r.be.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0].String() != "alice@dest.test" {
		t.Fatalf("next hop received %+v, want one message for alice", msgs)
	}

	r.set(t, bob.NextAttempt.Add(-time.Nanosecond))
	if a, b := r.hop.attempts("alice"), r.hop.attempts("bob"); a != 1 || b != 1 {
		t.Fatalf("before bob's next attempt: alice %d, bob %d RCPTs, want 1, 1", a, b)
	}
	r.set(t, bob.NextAttempt)
	if a, b := r.hop.attempts("alice"), r.hop.attempts("bob"); a != 1 || b != 2 {
		t.Errorf("after bob's second attempt: alice %d, bob %d RCPTs, want 1, 2", a, b)
	}
	due := r.q.dueOf(id)
	if len(due) != 2 || !slices.Equal(due[1], []string{"bob@dest.test"}) {
		t.Errorf("leases of the message were due for %v, want [[alice bob] [bob]]", due)
	}
	if n := len(r.be.Messages()); n != 1 {
		t.Errorf("next hop received %d messages, want 1", n)
	}
	r.gone(t, id)

	failed := r.q.failedOf(id)
	if len(failed) != 1 || len(failed[0]) != 1 || failed[0][0].Addr != "bob@dest.test" {
		t.Fatalf("failures returned by Update: %+v, want bob once", failed)
	}
	dsns := r.q.putsByLoop()
	box := r.mailbox(t, "sender")
	if len(dsns) != 1 || len(box) != 1 {
		t.Fatalf("%d DSNs queued, %d in the sender's mailbox, want 1 and 1", len(dsns), len(box))
	}
	status := checkDSN(t, box[0], dsnWant{queueID: id, arrival: retryStart, to: "sender@local.test",
		rcpts: []dsnRcpt{{addr: "bob@dest.test", status: []string{"5.1.1"}, reply: noSuchUserText,
			last: retryStart.Add(postfixBackoff[0])}}})
	if strings.Contains(status, "alice") {
		t.Errorf("the delivery status names alice:\n%s", status)
	}
}

// dsnWant is what a DSN must say.
type dsnWant struct {
	queueID string
	arrival time.Time
	to      string // the original sender
	rcpts   []dsnRcpt
}

type dsnRcpt struct {
	addr   string
	status []string // any of these
	reply  string   // the Diagnostic-Code, as an SMTP reply
	last   time.Time
}

// checkDSN checks a report of failure (RFC 3464, RFC 6522): a
// multipart/report of report-type delivery-status with an explanation, the
// delivery status (one group of fields per recipient, Action failed) and
// the original header section. It returns the delivery-status part.
func checkDSN(t *testing.T, raw []byte, want dsnWant) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN: %v\n%s", err, raw)
	}
	for k, v := range map[string]string{
		"From":           "Mail Delivery System <MAILER-DAEMON@mx.local.test>",
		"To":             "<" + want.to + ">",
		"Subject":        dsn.SubjectFailed,
		"Auto-Submitted": "auto-replied", // RFC 3834 §5
	} {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("DSN %s: %q, want %q", k, got, v)
		}
	}
	// The DSN's Date comes from the loop's clock, like its other dates.
	if d, err := msg.Header.Date(); err != nil || d.Before(retryStart) || d.After(retryStart.Add(10*24*time.Hour)) {
		t.Errorf("DSN Date %q (%v): not from the fake clock", msg.Header.Get("Date"), err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %q (%v), want multipart/report; report-type=delivery-status", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	var bodies []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v\n%s", err, raw)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		bodies = append(bodies, string(b))
	}
	if !slices.Equal(types, []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}) {
		t.Fatalf("DSN parts %v\n%s", types, raw)
	}
	if bodies[2] != retryHeader {
		t.Errorf("returned header section %q, want %q", bodies[2], retryHeader)
	}

	// RFC 3464 §2.1: the per-message fields, then one group per
	// recipient, each after an empty line.
	tr := textproto.NewReader(bufio.NewReader(strings.NewReader(bodies[1] + "\r\n")))
	var groups []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			groups = append(groups, h)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("delivery status: %v\n%s", err, bodies[1])
		}
	}
	if len(groups) != 1+len(want.rcpts) {
		t.Fatalf("delivery status has %d groups, want 1 + %d recipients:\n%s", len(groups), len(want.rcpts), bodies[1])
	}
	check := func(h textproto.MIMEHeader, field, v string) {
		t.Helper()
		if got := h.Values(field); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %q, want %q", field, got, v)
		}
	}
	check(groups[0], "Reporting-MTA", "dns; mx.local.test")
	check(groups[0], "X-Petrel-Queue-ID", want.queueID)
	check(groups[0], "Arrival-Date", want.arrival.Format(time.RFC1123Z))
	for i, w := range want.rcpts {
		g := groups[1+i]
		check(g, "Final-Recipient", "rfc822; "+w.addr)
		check(g, "Action", "failed")
		check(g, "Remote-MTA", "dns; mx.dest.test")
		check(g, "Diagnostic-Code", "smtp; "+w.reply)
		check(g, "Last-Attempt-Date", w.last.Format(time.RFC1123Z))
		if got := g.Get("Status"); !slices.Contains(w.status, got) {
			t.Errorf("Status %q, want one of %q", got, w.status)
		}
	}
	return bodies[1]
}
