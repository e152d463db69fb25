package smtpclient_test

// LMTP against a real, independent server: a throw-away Dovecot LMTP
// (internal/dovecottest), over TCP and over its unix socket. Skipped
// without Dovecot or root, unless PETREL_INTEROP_REQUIRED=1.

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dovecottest"
	"github.com/petrel-mta/petrel/smtpclient"
)

// dovecotMsg is the message sent in a Dovecot test, named by tag.
func dovecotMsg(tag string) string {
	return "From: <sender@example.org>\r\nTo: <alice@" + dovecottest.Domain + ">\r\nSubject: " + tag +
		"\r\n\r\n.leading dot\r\nbody of " + tag + "\r\n"
}

// stored checks that a message Dovecot stored is msg, byte for byte
// (with the LF line ends Dovecot stores), under Dovecot's own headers.
func stored(t *testing.T, got []byte, msg string) {
	t.Helper()
	want := strings.ReplaceAll(msg, "\r\n", "\n")
	if !bytes.HasSuffix(got, []byte("\n"+want)) || !bytes.HasPrefix(got, []byte("Return-Path: <sender@example.org>\n")) {
		t.Errorf("stored message\n%s\nwant Dovecot's headers, then\n%s", got, want)
	}
}

// sendLMTP dials srv and sends msg to the local parts given, with DATA or
// BDAT, and quits; it returns SendMail's result and error.
func sendLMTP(t *testing.T, srv *dovecottest.Server, chunking bool, msg string, locals ...string) (*smtpclient.Result, error) {
	t.Helper()
	opts := lmtpOptions(smtpclient.None, srv.Network)
	opts.NoChunking = !chunking
	var trace strings.Builder
	opts.Trace = &trace
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, srv.Addr, opts)
	if err != nil {
		t.Fatalf("Dial %s %s: %v", srv.Network, srv.Addr, err)
	}
	if ok, _ := c.Extension("CHUNKING"); !ok && chunking {
		t.Fatal("Dovecot offers no CHUNKING")
	}
	var to []string
	for _, l := range locals {
		to = append(to, l+"@"+dovecottest.Domain)
	}
	res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(msg))
	if qerr := c.Quit(ctx); qerr != nil {
		t.Errorf("QUIT: %v", qerr)
	}
	verb := map[bool]string{false: "C: DATA\n", true: "C: BDAT "}[chunking]
	if !strings.Contains(trace.String(), verb) || !strings.HasPrefix(strings.SplitN(trace.String(), "\n", 3)[1], "C: LHLO ") {
		t.Errorf("trace without LHLO or %q:\n%s", verb, trace.String())
	}
	if testing.Verbose() {
		t.Logf("%s session:\n%s", srv.Network, trace.String())
	}
	return res, err
}

// savedReply matches Dovecot's reply to the end of the data for a
// delivered recipient: "250 2.0.0 <addr> <session id> Saved".
func savedReply(t *testing.T, r smtpclient.RcptResult) {
	t.Helper()
	if r.Err != nil || !strings.HasPrefix(r.Reply, "2.0.0 <"+r.To+"> ") || !strings.HasSuffix(r.Reply, " Saved") {
		t.Errorf("%s: %v, reply %q: want delivered, \"2.0.0 <%s> ... Saved\"", r.To, r.Err, r.Reply, r.To)
	}
}

// Dovecot as the LMTP server, over TCP and over a unix socket, with DATA
// and with BDAT (RFC 2033 §4.2, §4.3): alice and bob are delivered, each
// with a reply of their own; an unknown user is refused at RCPT with 550
// 5.1.1 and owed no reply after the data (so the replies stay in step);
// the messages arrive byte for byte in alice's and bob's Maildirs.
func TestLMTPDovecot(t *testing.T) {
	t.Parallel()
	for _, unix := range []bool{false, true} {
		network := map[bool]string{false: "tcp", true: "unix"}[unix]
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			srv := dovecottest.Start(t, dovecottest.Config{Users: []string{"alice", "bob"}, Unix: unix})
			if srv.Network != network {
				t.Fatalf("server on %q, want %q", srv.Network, network)
			}
			var sent []string
			for _, chunking := range []bool{false, true} {
				tag := network + " " + map[bool]string{false: "DATA", true: "BDAT"}[chunking]
				msg := dovecotMsg(tag)
				sent = append(sent, msg)
				res, err := sendLMTP(t, srv, chunking, msg, "alice", "nobody", "bob")
				if err != nil {
					t.Fatalf("%s: %v", tag, err)
				}
				if res.Accepted != 2 || len(res.Rcpts) != 3 || res.Reply != res.Rcpts[0].Reply {
					t.Fatalf("%s: %+v", tag, res)
				}
				savedReply(t, res.Rcpts[0])
				savedReply(t, res.Rcpts[2])
				re := replyError(t, res.Rcpts[1].Err)
				if re.Command != "RCPT" || re.Reply.Code != 550 || re.Reply.Enhanced.String() != "5.1.1" ||
					smtpclient.Temporary(res.Rcpts[1].Err) || res.Rcpts[1].Reply != "" {
					t.Errorf("%s: unknown user: %v, reply %q", tag, res.Rcpts[1].Err, res.Rcpts[1].Reply)
				}
			}
			for _, user := range []string{"alice", "bob"} {
				msgs := srv.WaitMessages(t, user, len(sent), 10*time.Second)
				if len(msgs) != len(sent) {
					t.Fatalf("%s has %d messages, want %d", user, len(msgs), len(sent))
				}
				for i, m := range msgs {
					stored(t, m, sent[i])
				}
			}
		})
	}
}

// Dovecot refuses a recipient over quota after the data, for that
// recipient alone (RFC 2033 §4.2: per-recipient replies): 552 5.2.2,
// permanent, or 452 4.2.2, temporary, with quota_full_tempfail. The other
// recipient is delivered and SendMail succeeds; with only the recipient
// over quota SendMail fails with its reply.
func TestLMTPDovecotQuota(t *testing.T) {
	t.Parallel()
	for _, tempfail := range []bool{false, true} {
		code := map[bool]int{false: 552, true: 452}[tempfail]
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			srv := dovecottest.Start(t, dovecottest.Config{Users: []string{"alice", "carol"}, Unix: true,
				Quotas: map[string]dovecottest.Quota{"carol": {Bytes: 200}}, QuotaTempfail: tempfail})
			for _, chunking := range []bool{false, true} {
				verb := map[bool]string{false: "DATA", true: "BDAT"}[chunking]
				msg := dovecotMsg("quota " + verb + strings.Repeat(" padding", 20))
				res, err := sendLMTP(t, srv, chunking, msg, "carol", "alice")
				if err != nil || res.Accepted != 1 || len(res.Rcpts) != 2 {
					t.Fatalf("%s: %v, %+v", verb, err, res)
				}
				savedReply(t, res.Rcpts[1])
				re := replyError(t, res.Rcpts[0].Err)
				if re.Command != verb || re.Reply.Code != code || smtpclient.Temporary(res.Rcpts[0].Err) != tempfail ||
					!strings.Contains(res.Rcpts[0].Reply, "Quota exceeded") {
					t.Errorf("%s: carol: %v, reply %q; want %s: %d", verb, res.Rcpts[0].Err, res.Rcpts[0].Reply, verb, code)
				}
				res, err = sendLMTP(t, srv, chunking, msg, "carol")
				if re := replyError(t, err); re.Reply.Code != code || res.Accepted != 0 || err != res.Rcpts[0].Err {
					t.Errorf("%s: carol alone: %v, %+v", verb, err, res)
				}
			}
			if n := len(srv.WaitMessages(t, "alice", 2, 10*time.Second)); n != 2 {
				t.Errorf("alice has %d messages, want 2", n)
			}
			if n := len(srv.Messages(t, "carol")); n != 0 {
				t.Errorf("carol, over quota, has %d messages", n)
			}
		})
	}
}
