package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/queue"
)

func runQueue(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"queue"}, args...), &out, &errb)
	r := cmdResult{code, out.String(), errb.String()}
	t.Logf("petrel queue %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	if code != 0 && (strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "petrel queue: ")) {
		t.Errorf("want one error line, got %q", r.stderr)
	}
	return r
}

// testQueue is a spool with three messages, as the daemon would leave it:
//
//	deferred: alice@example.org → bob@example.net deferred (451), carol@example.net delivered
//	failed:   <> → dave@example.com failed (550, reported), erin@example.com deferred
//	pending:  frank@example.org → gina@example.com, never attempted
type testQueue struct {
	data                      string // the --data directory
	dir                       string // data/queue
	deferred, failed, pending string // IDs
}

const (
	deferReply = "451 4.7.1 Try again later"
	failReply  = "550 5.1.1 No such user"
)

func message(from, to, subject, text string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\n" + text + "\r\n"
}

// newTestQueue makes the spool and returns it still open as its owner
// (the daemon).
func newTestQueue(t *testing.T) (*testQueue, *queue.Spool) {
	t.Helper()
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	tq := &testQueue{data: data, dir: filepath.Join(data, "queue")}
	s, err := queue.Open(tq.dir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	put := func(from string, body string, to ...string) string {
		env := queue.Envelope{From: from}
		for _, a := range to {
			env.Rcpts = append(env.Rcpts, queue.Recipient{Addr: a})
		}
		id, err := s.Put(ctx, env, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	tq.deferred = put("alice@example.org", message("alice@example.org", "bob@example.net", "hello", "the deferred body"),
		"bob@example.net", "carol@example.net")
	tq.failed = put("", message("MAILER-DAEMON", "dave@example.com", "bounce", "the failed body"),
		"dave@example.com", "erin@example.com")
	tq.pending = put("frank@example.org", message("frank@example.org", "gina@example.com", "pending", "the pending body"),
		"gina@example.com")

	leases, err := s.Lease(ctx, 10)
	if err != nil || len(leases) != 3 {
		t.Fatalf("Lease: %d leases, %v", len(leases), err)
	}
	results := map[string][]queue.Result{
		tq.deferred: {{Addr: "bob@example.net", State: queue.Deferred, Reply: deferReply, RemoteMTA: "mx.example.net"},
			{Addr: "carol@example.net", State: queue.Delivered, Reply: "250 2.0.0 Ok"}},
		tq.failed: {{Addr: "dave@example.com", State: queue.Failed, Reply: failReply},
			{Addr: "erin@example.com", State: queue.Deferred, Reply: deferReply}},
	}
	for _, l := range leases {
		res, ok := results[l.Message.ID]
		if !ok {
			s.Release(ctx, l)
			continue
		}
		if _, err := s.Update(ctx, l, res); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if ls, _ := s.Lease(ctx, 10); len(ls) != 1 || ls[0].Message.ID != tq.pending {
		t.Fatalf("due after setup: %+v", ls)
	} else {
		s.Release(ctx, ls[0])
	}
	return tq, s
}

func rcpt(t *testing.T, m queue.Message, addr string) queue.Recipient {
	t.Helper()
	for _, r := range m.Rcpts {
		if r.Addr == addr {
			return r
		}
	}
	t.Fatalf("no recipient %s in %+v", addr, m)
	return queue.Recipient{}
}

// TestQueueCommands drives every subcommand on a spool with the daemon
// stopped (the owner closed, reopened afterwards to check the effects) and
// with it running (the owner open all along).
func TestQueueCommands(t *testing.T) {
	for _, running := range []bool{false, true} {
		name := "daemon stopped"
		if running {
			name = "daemon running"
		}
		t.Run(name, func(t *testing.T) { testQueueCommands(t, running) })
	}
}

func testQueueCommands(t *testing.T, running bool) {
	ctx := context.Background()
	tq, owner := newTestQueue(t)
	if !running {
		owner.Close()
	}
	// daemon returns the owner, opening it again if it was stopped.
	daemon := func() *queue.Spool {
		if running {
			return owner
		}
		s, err := queue.Open(tq.dir, queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	stop := func(s *queue.Spool) {
		if !running {
			s.Close()
		}
	}
	due := func(s *queue.Spool) map[string][]string {
		ls, err := s.Lease(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, l := range ls {
			var addrs []string
			for _, r := range l.Due {
				addrs = append(addrs, r.Addr)
			}
			got[l.Message.ID] = addrs
			s.Release(ctx, l)
		}
		return got
	}
	data := []string{"--data", tq.data}

	// list: mailq's layout.
	r := runQueue(t, append([]string{"list"}, data...)...)
	r.want(t, 0)
	r.lines(t,
		"-Queue ID-------  --Size--  ----Arrival Time---  -Sender/Recipient-------",
		"    carol@example.net  delivered, 1 attempt (250 2.0.0 Ok)",
		"    dave@example.com  failed, 1 attempt ("+failReply+")",
		"    gina@example.com  pending, due now",
		"-- 1 Kbytes in 3 Requests.",
	)
	att, err := queue.Attach(tq.dir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := att.Get(ctx, tq.deferred)
	att.Close()
	if err != nil {
		t.Fatal(err)
	}
	r.lines(t,
		fmt.Sprintf("%s %9d  %s  alice@example.org", tq.deferred, m.Size, m.Received.Local().Format(timeLayout)),
		"    bob@example.net  deferred, 1 attempt, next "+rcpt(t, m, "bob@example.net").NextAttempt.Local().Format(timeLayout)+" ("+deferReply+")",
	)
	for _, id := range []string{tq.deferred, tq.failed, tq.pending} {
		if !strings.Contains(r.stdout, "\n"+id+" ") {
			t.Errorf("list lacks %s", id)
		}
	}
	if !strings.Contains(r.stdout, "  <>\n") {
		t.Errorf("list does not show the null sender as <>")
	}
	if strings.Index(r.stdout, tq.deferred) > strings.Index(r.stdout, tq.pending) {
		t.Errorf("list is not oldest first")
	}

	// list --json
	r = runQueue(t, append([]string{"list", "--json"}, data...)...)
	r.want(t, 0)
	var msgs []queue.Message
	if err := json.Unmarshal([]byte(r.stdout), &msgs); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	if len(msgs) != 3 || msgs[0].ID != tq.deferred || msgs[2].ID != tq.pending {
		t.Fatalf("list --json: %+v", msgs)
	}
	bob := rcpt(t, msgs[0], "bob@example.net")
	if bob.State != queue.Deferred || bob.LastReply != deferReply || bob.Attempts != 1 || !bob.NextAttempt.After(time.Now()) {
		t.Errorf("list --json: bob is %+v", bob)
	}
	if d := rcpt(t, msgs[1], "dave@example.com"); d.State != queue.Failed || d.LastReply != failReply || !d.Reported {
		t.Errorf("list --json: dave is %+v", d)
	}
	if !strings.Contains(r.stdout, `"state": "deferred"`) {
		t.Errorf("list --json does not name states")
	}

	// show: envelope, recipients, headers; --body: the whole message.
	r = runQueue(t, append([]string{"show", strings.ToLower(tq.deferred)}, data...)...)
	r.want(t, 0, "id:       "+tq.deferred, "from:     alice@example.org",
		"to:       bob@example.net  deferred, 1 attempt, next ",
		"          reply: "+deferReply+" (from mx.example.net)",
		"to:       carol@example.net  delivered, 1 attempt",
		"Subject: hello\r\n\r\n")
	if strings.Contains(r.stdout, "the deferred body") {
		t.Errorf("show prints the body without --body")
	}
	r = runQueue(t, "show", tq.deferred, "--body", "--data", tq.data)
	r.want(t, 0, "from:     alice@example.org", "Subject: hello\r\n\r\nthe deferred body\r\n")
	r = runQueue(t, "--json", "show", tq.failed, "--data", tq.data)
	r.want(t, 0)
	var shown struct {
		queue.Message
		Headers string `json:"headers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("show --json: %v", err)
	}
	if shown.ID != tq.failed || shown.From != "" || len(shown.Rcpts) != 2 || !strings.HasSuffix(shown.Headers, "Subject: bounce\r\n\r\n") {
		t.Errorf("show --json: %+v", shown)
	}

	// Unknown and malformed IDs.
	unknown := queue.NewID(time.Now())
	r = runQueue(t, "show", unknown, "--data", tq.data)
	r.want(t, 1)
	if want := "petrel queue: no message " + unknown + " in the queue at " + tq.dir + "; see petrel queue list --data " + tq.data + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	for _, cmd := range []string{"flush", "delete", "bounce"} {
		runQueue(t, cmd, unknown, "--data", tq.data).want(t, 1, "no message "+unknown+" in the queue at "+tq.dir)
	}
	runQueue(t, "delete", "XYZ", "--data", tq.data).want(t, 1, `"XYZ" is not a queue ID`)

	// flush ID: bob (deferred) is due now; nothing else is.
	runQueue(t, "flush", tq.deferred, "--data", tq.data).want(t, 0, "flushed "+tq.deferred+": 1 recipient due now")
	s := daemon()
	got := due(s)
	if !slices.Equal(got[tq.deferred], []string{"bob@example.net"}) || got[tq.failed] != nil {
		t.Errorf("due after flush %s: %v", tq.deferred, got)
	}
	stop(s)

	// flush: every message.
	runQueue(t, "flush", "--data", tq.data).want(t, 0, "flushed 3 messages (3 recipients) due now")
	s = daemon()
	got = due(s)
	if len(got) != 3 || !slices.Equal(got[tq.failed], []string{"erin@example.com"}) {
		t.Errorf("due after flush: %v", got)
	}
	stop(s)

	// bounce: erin becomes failed, to be reported; dave stays as he was.
	runQueue(t, "bounce", tq.failed, "--data", tq.data).want(t, 0,
		"bounced "+tq.failed+": 1 recipient marked failed; no notification: the sender is <>")
	runQueue(t, "bounce", tq.deferred, "--data", tq.data).want(t, 0,
		"bounced "+tq.deferred+": 1 recipient marked failed; the daemon sends alice@example.org a delivery status notification")
	runQueue(t, "bounce", tq.deferred, "--data", tq.data).want(t, 0, "nothing to bounce in "+tq.deferred)
	runQueue(t, "list", "--data", tq.data).want(t, 0,
		"    erin@example.com  failed, 1 attempt, to be reported (554 5.0.0 Returned to the sender by the postmaster)",
		"    bob@example.net  failed, 1 attempt, to be reported (554 5.0.0")
	s = daemon()
	m, err = s.Get(ctx, tq.failed)
	if err != nil {
		t.Fatal(err)
	}
	if e := rcpt(t, m, "erin@example.com"); e.State != queue.Failed || e.Reported || e.Expired {
		t.Errorf("erin after bounce: %+v", e)
	}
	ls, err := s.Lease(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	bounced := 0
	for _, l := range ls {
		if l.Message.ID == tq.deferred || l.Message.ID == tq.failed {
			failed, err := s.Update(ctx, l, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(failed) != 1 || !strings.HasPrefix(failed[0].LastReply, "554 5.0.0") {
				t.Errorf("failures of %s to report: %+v", l.Message.ID, failed)
			}
			bounced++
		}
		s.Release(ctx, l)
	}
	if bounced != 2 {
		t.Errorf("the daemon leased %d bounced messages, want 2", bounced)
	}
	stop(s)

	// delete: the message is gone, body and all.
	runQueue(t, "delete", tq.pending, "--data", tq.data).want(t, 0,
		"deleted "+tq.pending+" from frank@example.org (1 recipient not delivered); no report goes to the sender")
	runQueue(t, "show", tq.pending, "--data", tq.data).want(t, 1, "no message "+tq.pending)
	s = daemon()
	if _, err := s.Get(ctx, tq.pending); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Get after delete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tq.dir, "msg", tq.pending+".body")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("body after delete: %v", err)
	}
	if got := due(s); got[tq.pending] != nil {
		t.Errorf("deleted message still leased: %v", got)
	}
	stop(s)
}

func TestQueueEmpty(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	s, err := queue.Open(filepath.Join(data, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	runQueue(t, "list", "--data", data).want(t, 0, "Mail queue is empty")
	r := runQueue(t, "list", "--json", "--data", data)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("list --json of an empty queue: %q", r.stdout)
	}
	runQueue(t, "flush", "--data", data).want(t, 0, "nothing to flush")
}

func TestQueueUsage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	id := queue.NewID(time.Now())
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "give a command"},
		{[]string{"mailq"}, 2, `unknown command "mailq"`},
		{[]string{"show"}, 2, "show takes one ID (got 0)"},
		{[]string{"delete", id, id}, 2, "delete takes one ID (got 2)"},
		{[]string{"flush", id, id}, 2, "flush takes at most one ID"},
		{[]string{"list", id}, 2, "list takes no argument"},
		{[]string{"flush", "--json"}, 2, "--json is for list and show"},
		{[]string{"list", "--body"}, 2, "--body is for show"},
		{[]string{"show", id, "--body", "--json"}, 2, "--body and --json do not go together"},
		{[]string{"list", "--nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"list", "--data", ""}, 2, "--data must not be empty"},
		{[]string{"list", "--data", data}, 1, "no queue at " + filepath.Join(data, "queue") + " (no such file or directory); check --data: it must be the daemon's data directory"},
	} {
		runQueue(t, tc.args...).want(t, tc.code, tc.want)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"queue", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "petrel queue flush [ID]") {
		t.Errorf("petrel queue -h: %d %q", code, errb.String())
	}
}

// TestQueueControlCharacters: a remote server's reply and a message's
// headers reach the postmaster's terminal without escape sequences.
func TestQueueControlCharacters(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	s, err := queue.Open(filepath.Join(data, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Put(ctx, queue.Envelope{From: "a@example.org", Rcpts: []queue.Recipient{{Addr: "b@example.net"}}},
		strings.NewReader("Subject: \x1b]0;owned\x07 hi\r\n\r\nbody \x1b[2J\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, 1)
	if err != nil || len(ls) != 1 {
		t.Fatal(ls, err)
	}
	if _, err := s.Update(ctx, ls[0], []queue.Result{{Addr: "b@example.net", State: queue.Deferred,
		Reply: "451-4.3.0 first\r\n451 4.3.0 \x1b[2Jsecond\u009b\x9b", RemoteMTA: "mx\x1b.example.net"}}); err != nil {
		t.Fatal(err)
	}
	s.Complete(ctx, ls[0])

	r := runQueue(t, "list", "--data", data)
	r.want(t, 0, "(451-4.3.0 first 451 4.3.0 ?[2Jsecond?\uFFFD)")
	r2 := runQueue(t, "show", id, "--data", data)
	r2.want(t, 0, "reply: 451-4.3.0 first 451 4.3.0 ?[2Jsecond?\uFFFD (from mx?.example.net)", "Subject: ?]0;owned? hi\r\n")
	for _, out := range []string{r.stdout, r2.stdout} {
		if strings.ContainsAny(out, "\x1b\x07\u009b") || strings.Contains(out, "\x9b") {
			t.Errorf("control characters in %q", out)
		}
	}
	// --body is the message as it is, for saving or piping.
	runQueue(t, "show", id, "--body", "--data", data).want(t, 0, "body \x1b[2J\r\n")
}

// TestQueueUnreadable: a state file that does not decode is skipped by
// list, which says so on stderr, and the rest is listed.
func TestQueueUnreadable(t *testing.T) {
	tq, owner := newTestQueue(t)
	owner.Close()
	bad := queue.NewID(time.Now())
	msg := filepath.Join(tq.dir, "msg")
	if err := os.WriteFile(filepath.Join(msg, bad+".body"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(msg, bad+".json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"queue", "list", "--data", tq.data}, &out, &errb)
	t.Logf("→ %d\n%s%s", code, out.String(), errb.String())
	if code != 0 || !strings.Contains(out.String(), "in 3 Requests.") || !strings.Contains(errb.String(), bad) {
		t.Errorf("list with an unreadable message: %d %q %q", code, out.String(), errb.String())
	}
}
