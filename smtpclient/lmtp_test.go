package smtpclient_test

// LMTP (RFC 2033) against a scripted fake LMTP server over real sockets,
// TCP and unix: LHLO and no HELO (§4.1), one reply per accepted recipient
// after the end of the data, DATA (§4.2) or BDAT (§4.3), pipelined or not
// (§5), the connection lost among those replies, STARTTLS with LHLO again,
// the security levels over a unix socket, and the injection defences.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// fakeLMTP configures serveLMTP, a scripted LMTP server (RFC 2033).
type fakeLMTP struct {
	ext    []string    // LHLO keywords in plaintext
	tlsExt []string    // LHLO keywords inside TLS; nil: ext without STARTTLS
	tls    *tls.Config // for STARTTLS
	// greeting replaces "220 fake.example LMTP ready\r\n" (raw).
	greeting string
	// lhlo, when set, is the raw reply to LHLO in plaintext.
	lhlo string
	// afterLHLO is sent in a write of its own after the reply to the
	// first LHLO: a reply nobody asked for.
	afterLHLO string
	// rcpt returns the raw reply to RCPT for a mailbox; nil: lmtpRcpt.
	rcpt func(to string) string
	// final returns the raw reply to the end of the data for one
	// accepted recipient; nil: lmtpFinal.
	final func(to string) string
	// cut: after cutAfter replies to the end of the data, the server
	// closes the connection, or with hang stops answering (it waits for
	// the client to go).
	cut      bool
	cutAfter int
	hang     bool
	// extra is sent right behind the last reply to the end of the data,
	// in the same write: more replies than owed.
	extra string
	// data354 answers DATA with 354 even without a recipient (which RFC
	// 2033 §4.2 forbids).
	data354 bool
	// dataReply, when set, is the raw reply to DATA instead of 354.
	dataReply string
	// starttls, when set, replaces the STARTTLS handling, as in fake.
	starttls func(f *fconn) bool
	wlog     *writeLog
}

// lmtpRcpt refuses the mailboxes whose local part starts with "unknown",
// as Dovecot does (550 5.1.1).
func lmtpRcpt(to string) string {
	if strings.HasPrefix(to, "unknown") {
		return "550 5.1.1 <" + to + "> User doesn't exist: " + to + "\r\n"
	}
	return "250 2.1.5 OK\r\n"
}

// lmtpFinal delivers to every mailbox but "full*" (452, over quota),
// "disabled*" (550) and "multi*" (a two-line 250).
func lmtpFinal(to string) string {
	switch {
	case strings.HasPrefix(to, "full"):
		return "452 4.2.2 <" + to + "> Mailbox is full\r\n"
	case strings.HasPrefix(to, "disabled"):
		return "550 5.2.1 <" + to + "> Mailbox disabled\r\n"
	case strings.HasPrefix(to, "multi"):
		return "250-2.0.0 <" + to + "> first line\r\n250 2.0.0 second line\r\n"
	}
	return "250 2.0.0 <" + to + "> Saved\r\n"
}

// mailbox returns the address in "TO:<addr> ...".
func mailbox(arg string) string {
	_, a, _ := strings.Cut(arg, "<")
	a, _, _ = strings.Cut(a, ">")
	return a
}

// newFakeLMTP starts a fake LMTP server on network ("tcp" or "unix").
func newFakeLMTP(t *testing.T, network string, fl fakeLMTP) *fakeServer {
	return newFakeServerOn(t, network, func(f *fconn) { f.serveLMTP(fl) })
}

// serveLMTP serves one LMTP session as fl says, recording it in f.
func (f *fconn) serveLMTP(fl fakeLMTP) {
	f.wlog = fl.wlog
	if fl.rcpt == nil {
		fl.rcpt = lmtpRcpt
	}
	if fl.final == nil {
		fl.final = lmtpFinal
	}
	greeting := fl.greeting
	if greeting == "" {
		greeting = "220 fake.example LMTP ready\r\n"
	}
	if !f.send(greeting) {
		return
	}
	var rcpts []string // accepted in this transaction, in order
	lhlos := 0
	for {
		line, ok := f.command()
		if !ok {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		var r string
		switch strings.ToUpper(verb) {
		case "LHLO":
			kws := fl.ext
			if f.inTLS() {
				kws = fl.tlsExt
				if kws == nil {
					for _, k := range fl.ext {
						if k != "STARTTLS" {
							kws = append(kws, k)
						}
					}
				}
			}
			r = ehloReply(kws)
			if fl.lhlo != "" && !f.inTLS() {
				r = fl.lhlo
			}
			if lhlos++; lhlos == 1 && fl.afterLHLO != "" {
				if !f.send(r) {
					return
				}
				time.Sleep(20 * time.Millisecond)
				r = fl.afterLHLO
			}
		case "EHLO", "HELO":
			// RFC 2033 §4.1: no positive completion; 500 recommended.
			r = "500 5.5.1 This is LMTP: say LHLO\r\n"
		case "STARTTLS":
			if fl.starttls != nil {
				if !fl.starttls(f) {
					return
				}
				continue
			}
			if f.inTLS() || fl.tls == nil {
				r = "503 5.5.1 TLS already active\r\n"
				break
			}
			if !f.send("220 2.0.0 Ready to start TLS\r\n") || !f.startTLS(fl.tls) {
				return
			}
			rcpts = nil
			continue
		case "AUTH":
			cred, ok := f.auth(arg)
			if !ok {
				return
			}
			f.mu.Lock()
			f.creds = append(f.creds, cred)
			f.mu.Unlock()
			r = "235 2.7.0 Logged in\r\n"
		case "MAIL":
			rcpts = nil
			r = "250 2.1.0 OK\r\n"
		case "RCPT":
			to := mailbox(arg)
			r = fl.rcpt(to)
			if strings.HasPrefix(r, "2") {
				rcpts = append(rcpts, to)
			}
		case "DATA":
			if len(rcpts) == 0 && !fl.data354 {
				r = "503 5.5.1 No valid recipients\r\n" // RFC 2033 §4.2
				break
			}
			if fl.dataReply != "" {
				r = fl.dataReply
				break
			}
			if !f.send("354 OK\r\n") {
				return
			}
			d, ok := f.readData()
			f.mu.Lock()
			f.data = append(f.data, d)
			f.mu.Unlock()
			if !ok || !f.endOfData(fl, rcpts) {
				return
			}
			rcpts = nil
			continue
		case "BDAT":
			size, last, _ := strings.Cut(arg, " ")
			n, err := strconv.Atoi(size)
			if err != nil || n < 0 || n > 1<<20 {
				f.send("501 5.5.4 bad BDAT\r\n")
				return
			}
			chunk := make([]byte, n)
			_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := io.ReadFull(f.r, chunk); err != nil {
				return
			}
			f.mu.Lock()
			f.bdat = append(f.bdat, chunk)
			f.mu.Unlock()
			if !strings.EqualFold(last, "LAST") {
				r = "250 2.0.0 chunk OK\r\n"
				break
			}
			// RFC 2033 §4.3: one reply per accepted recipient, so
			// none without one.
			if !f.endOfData(fl, rcpts) {
				return
			}
			rcpts = nil
			continue
		case "RSET":
			rcpts = nil
			r = "250 2.0.0 OK\r\n"
		case "NOOP":
			r = "250 2.0.0 OK\r\n"
		case "QUIT":
			f.send("221 2.0.0 Bye\r\n")
			return
		default:
			r = "500 5.5.1 Unknown command\r\n"
		}
		if !f.send(r) {
			return
		}
	}
}

// endOfData sends the replies to the end of the data, one per accepted
// recipient in RCPT order (RFC 2033 §4.2), in one write, as fl says. It
// returns whether to go on serving.
func (f *fconn) endOfData(fl fakeLMTP, rcpts []string) bool {
	var b strings.Builder
	for i, to := range rcpts {
		if fl.cut && i == fl.cutAfter {
			if b.Len() > 0 && !f.send(b.String()) {
				return false
			}
			if fl.hang {
				// Wait for the client to give up and close.
				_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
				_, _ = io.Copy(io.Discard, f.r)
			}
			return false
		}
		b.WriteString(fl.final(to))
	}
	b.WriteString(fl.extra)
	return b.Len() == 0 || f.send(b.String())
}

// lmtpOptions are client options for LMTP at level, over network.
func lmtpOptions(level smtpclient.Level, network string) smtpclient.Options {
	o := options(level)
	o.LMTP = true
	o.Network = network
	return o
}

// rcptWant is what one recipient's result should be: code 0 for
// delivered, else the refusal's code and command.
type rcptWant struct {
	code  int
	cmd   string // "RCPT", or "" for the data verb (DATA or BDAT)
	reply string // RcptResult.Reply
}

// checkRcpts compares res.Rcpts with want, and Accepted with the number
// delivered.
func checkRcpts(t *testing.T, res *smtpclient.Result, to []string, dataVerb string, want []rcptWant) {
	t.Helper()
	if len(res.Rcpts) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(res.Rcpts), len(want), res.Rcpts)
	}
	delivered := 0
	for i, w := range want {
		r := res.Rcpts[i]
		if r.To != to[i] {
			t.Errorf("result %d is for %q, want %q", i, r.To, to[i])
		}
		if r.Reply != w.reply {
			t.Errorf("%s: Reply %q, want %q", r.To, r.Reply, w.reply)
		}
		if w.code == 0 {
			delivered++
			if r.Err != nil {
				t.Errorf("%s: %v, want delivered", r.To, r.Err)
			}
			continue
		}
		re := replyError(t, r.Err)
		cmd := w.cmd
		if cmd == "" {
			cmd = dataVerb
		}
		if re.Command != cmd || re.Reply.Code != w.code {
			t.Errorf("%s: %v, want %s: %d", r.To, r.Err, cmd, w.code)
		}
		if smtpclient.Temporary(r.Err) != (w.code/100 == 4) {
			t.Errorf("%s: Temporary(%v) = %v", r.To, r.Err, smtpclient.Temporary(r.Err))
		}
	}
	if res.Accepted != delivered {
		t.Errorf("Accepted %d, want %d", res.Accepted, delivered)
	}
}

// addrs makes addresses at lmtp.test.
func addrs(locals ...string) []string {
	var out []string
	for _, l := range locals {
		out = append(out, l+"@lmtp.test")
	}
	return out
}

// RFC 2033 §4.2 and §4.3: after the end of the data, one reply per
// recipient that RCPT accepted, in RCPT order, none for a refused RCPT,
// one per RCPT even for the same mailbox twice; with DATA or BDAT,
// pipelined (§5) or not. Each recipient's outcome is its own (4xx
// temporary, 5xx permanent); SendMail's error is nil as soon as one is
// delivered, else the first refusal of the phase that failed; and the
// connection then carries another message, in step.
func TestLMTPPerRecipient(t *testing.T) {
	t.Parallel()
	const saved = "2.0.0 <%s@lmtp.test> Saved"
	ok := func(local string) rcptWant { return rcptWant{reply: fmt.Sprintf(saved, local)} }
	for _, tc := range []struct {
		name    string
		to      []string
		want    []rcptWant
		wantErr rcptWant // code 0: no error
		sent    bool     // the message was sent
	}{
		{"mixed", addrs("alice", "unknown1", "full", "disabled", "multi"), []rcptWant{
			ok("alice"),
			{code: 550, cmd: "RCPT"},
			{code: 452, reply: "4.2.2 <full@lmtp.test> Mailbox is full"},
			{code: 550, reply: "5.2.1 <disabled@lmtp.test> Mailbox disabled"},
			{reply: "2.0.0 <multi@lmtp.test> first line\n2.0.0 second line"},
		}, rcptWant{}, true},
		{"refused-first", addrs("unknown1", "full", "bob"), []rcptWant{
			{code: 550, cmd: "RCPT"},
			{code: 452, reply: "4.2.2 <full@lmtp.test> Mailbox is full"},
			ok("bob"),
		}, rcptWant{}, true},
		{"same-mailbox-twice", addrs("alice", "alice"), []rcptWant{ok("alice"), ok("alice")}, rcptWant{}, true},
		{"all-refused-at-end-of-data", addrs("unknown1", "full", "disabled"), []rcptWant{
			{code: 550, cmd: "RCPT"},
			{code: 452, reply: "4.2.2 <full@lmtp.test> Mailbox is full"},
			{code: 550, reply: "5.2.1 <disabled@lmtp.test> Mailbox disabled"},
		}, rcptWant{code: 452}, true},
		{"all-refused-at-RCPT", addrs("unknown1", "unknown2"), []rcptWant{
			{code: 550, cmd: "RCPT"}, {code: 550, cmd: "RCPT"},
		}, rcptWant{code: 550, cmd: "RCPT"}, false},
	} {
		for _, chunking := range []bool{false, true} {
			for _, pipelining := range []bool{true, false} {
				verb := map[bool]string{false: "DATA", true: "BDAT"}[chunking]
				name := fmt.Sprintf("%s/%s/pipelining=%v", tc.name, verb, pipelining)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					ext := []string{"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 100000"}
					if chunking {
						ext = append(ext, "CHUNKING")
					}
					fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: ext})
					opts := lmtpOptions(smtpclient.None, "")
					opts.NoPipelining = !pipelining
					ctx := ctxT(t)
					c, err := smtpclient.Dial(ctx, fs.Addr, opts)
					if err != nil {
						t.Fatal(err)
					}
					if !c.LMTP() {
						t.Error("LMTP() false")
					}
					res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: tc.to}, []byte(testMsg))
					if tc.wantErr.code == 0 {
						if err != nil {
							t.Fatalf("SendMail: %v", err)
						}
						if res.Reply != res.Rcpts[slices.IndexFunc(res.Rcpts, func(r smtpclient.RcptResult) bool { return r.Err == nil })].Reply {
							t.Errorf("Result.Reply %q, want the first delivered recipient's", res.Reply)
						}
					} else {
						re := replyError(t, err)
						cmd := tc.wantErr.cmd
						if cmd == "" {
							cmd = verb
						}
						if re.Command != cmd || re.Reply.Code != tc.wantErr.code {
							t.Errorf("SendMail: %v, want %s: %d", err, cmd, tc.wantErr.code)
						}
						if res.Reply != "" {
							t.Errorf("Result.Reply %q with nothing delivered", res.Reply)
						}
					}
					checkRcpts(t, res, tc.to, verb, tc.want)
					// In step: another message on the same connection.
					res, err = c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: addrs("carol")}, []byte(testMsg))
					if err != nil || res.Accepted != 1 || res.Rcpts[0].Reply != fmt.Sprintf(saved, "carol") {
						t.Errorf("second message: %v, %+v", err, res)
					}
					if err := c.Quit(ctx); err != nil {
						t.Error(err)
					}
					fs.wait()
					f := fs.conn(0)
					cmds := f.commands()
					if cmds[0] != "LHLO client.example" || f.hasCommand("EHLO") || f.hasCommand("HELO") {
						t.Errorf("commands %q: want LHLO and never EHLO or HELO (RFC 2033 §4.1)", cmds)
					}
					data, bdat := f.payloads()
					n := len(data) + len(bdat)
					if want := map[bool]int{true: 2, false: 1}[tc.sent]; n != want {
						t.Errorf("%d messages sent, want %d", n, want)
					}
					if tc.sent && chunking && string(bdat[0]) != testMsg {
						t.Errorf("BDAT chunk %q", bdat[0])
					}
					if tc.sent && !chunking && string(data[0]) != testMsg+".\r\n" {
						t.Errorf("DATA %q", data[0])
					}
				})
			}
		}
	}
}

// RFC 2033 §4.1: LMTP has no HELO; a refused LHLO fails Dial with the
// reply (4xx temporary, 5xx permanent) and nothing else is tried. Petrel's
// own SMTP server, which does not know LHLO, is refused the same way.
func TestLMTPLHLORefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, reply string
		code        int
	}{
		{"500", "500 5.5.1 Unknown command\r\n", 500},
		{"502", "502 5.5.1 Not implemented\r\n", 502},
		{"421", "421 4.3.2 Shutting down\r\n", 421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeLMTP(t, "tcp", fakeLMTP{lhlo: tc.reply})
			_, err := smtpclient.Dial(ctxT(t), fs.Addr, lmtpOptions(smtpclient.May, ""))
			re := replyError(t, err)
			if re.Command != "LHLO" || re.Reply.Code != tc.code || smtpclient.Temporary(err) != (tc.code/100 == 4) {
				t.Errorf("Dial: %v (temporary %v)", err, smtpclient.Temporary(err))
			}
			fs.wait()
			if cmds := fs.conn(0).commands(); !slices.Equal(cmds, []string{"LHLO client.example"}) {
				t.Errorf("commands %q, want LHLO alone", cmds)
			}
		})
	}
	t.Run("SMTP-server", func(t *testing.T) {
		t.Parallel()
		p := startPetrel(t, smtpserver.Options{})
		_, err := smtpclient.Dial(ctxT(t), p.Addr, lmtpOptions(smtpclient.None, ""))
		if re := replyError(t, err); re.Command != "LHLO" || re.Reply.Code/100 != 5 {
			t.Errorf("Dial: %v", err)
		}
		if len(p.backend.Messages()) != 0 {
			t.Error("a message delivered")
		}
	})
}

// The connection lost among the replies to the end of the data (closed,
// or silent past Timeouts.DataEnd): the recipients answered keep their
// outcome, those not answered fail with a temporary error of their own,
// SendMail's error follows the SMTP convention (nil when one was
// delivered), no reply is waited for longer than DataEnd, and the
// connection is closed.
func TestLMTPConnectionLost(t *testing.T) {
	t.Parallel()
	to := addrs("alice", "unknown1", "bob", "carol")
	for _, chunking := range []bool{false, true} {
		for _, tc := range []struct {
			name     string
			cutAfter int
			hang     bool
		}{
			{"closed-after-1", 1, false},
			{"closed-after-0", 0, false},
			{"silent-after-1", 1, true},
			{"silent-after-2", 2, true},
		} {
			verb := map[bool]string{false: "DATA", true: "BDAT"}[chunking]
			t.Run(verb+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ext := []string{"PIPELINING", "ENHANCEDSTATUSCODES"}
				if chunking {
					ext = append(ext, "CHUNKING")
				}
				fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: ext, cut: true, cutAfter: tc.cutAfter, hang: tc.hang})
				opts := lmtpOptions(smtpclient.None, "")
				opts.Timeouts.DataEnd = 300 * time.Millisecond
				recs := newLogRecords()
				opts.Logger = slog.New(recs)
				ctx := ctxT(t)
				c, err := smtpclient.Dial(ctx, fs.Addr, opts)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(testMsg))
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("SendMail took %v with DataEnd 300ms", d)
				}
				if len(res.Rcpts) != 4 {
					t.Fatalf("results %+v", res.Rcpts)
				}
				if re := replyError(t, res.Rcpts[1].Err); re.Command != "RCPT" {
					t.Errorf("unknown1: %v", res.Rcpts[1].Err)
				}
				answered := 0
				for _, i := range []int{0, 2, 3} {
					r := res.Rcpts[i]
					if answered < tc.cutAfter {
						answered++
						if r.Err != nil || r.Reply == "" {
							t.Errorf("%s, answered before the cut: %v %q", r.To, r.Err, r.Reply)
						}
						continue
					}
					var ne *smtpclient.NetError
					if !errors.As(r.Err, &ne) || !smtpclient.Temporary(r.Err) || r.Reply != "" {
						t.Errorf("%s, not answered: %v (%T) %q, want a temporary NetError", r.To, r.Err, r.Err, r.Reply)
					}
					if tc.hang && !errors.Is(r.Err, os.ErrDeadlineExceeded) {
						t.Errorf("%s: %v, want a timeout", r.To, r.Err)
					}
				}
				if res.Accepted != tc.cutAfter {
					t.Errorf("Accepted %d, want %d", res.Accepted, tc.cutAfter)
				}
				if tc.cutAfter > 0 && err != nil {
					t.Errorf("SendMail: %v, want nil: a recipient was delivered", err)
				}
				if tc.cutAfter == 0 && (err == nil || !errors.Is(err, res.Rcpts[0].Err)) {
					t.Errorf("SendMail: %v, want the first accepted recipient's error", err)
				}
				recs.waitFor(t, "LMTP replies to the end of the data broken off or in excess; closing the connection")
				var ne *smtpclient.NetError
				if err := c.Noop(ctx); !errors.As(err, &ne) {
					t.Errorf("NOOP after the connection was lost: %v, want a NetError", err)
				}
			})
		}
	}
}

// Defences against unsolicited replies (C-INJ-02) in LMTP mode: more
// replies to the end of the data than recipients accepted (the client
// keeps the outcomes it read in order, logs, and closes the connection,
// which is out of step); a reply behind the greeting; and a 354 to DATA
// although every RCPT was refused (RFC 2033 §4.2 wants 503): the client
// sends no end of data, whose replies it could not count, and closes.
func TestLMTPUnsolicitedReplies(t *testing.T) {
	t.Parallel()
	t.Run("excess-after-end-of-data", func(t *testing.T) {
		t.Parallel()
		fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: []string{"PIPELINING"}, extra: "250 2.0.0 <mallory@lmtp.test> Saved\r\n"})
		opts := lmtpOptions(smtpclient.None, "")
		recs := newLogRecords()
		opts.Logger = slog.New(recs)
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		to := addrs("alice", "full")
		res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		checkRcpts(t, res, to, "DATA", []rcptWant{{reply: "2.0.0 <alice@lmtp.test> Saved"}, {code: 452, reply: "4.2.2 <full@lmtp.test> Mailbox is full"}})
		if recs := recs.find("LMTP replies to the end of the data broken off or in excess; closing the connection"); len(recs) != 1 {
			t.Errorf("log %v", recs)
		}
		var ne *smtpclient.NetError
		if err := c.Noop(ctx); !errors.As(err, &ne) {
			t.Errorf("NOOP: %v, want a NetError (closed)", err)
		}
		fs.wait()
		if fs.conn(0).hasCommand("NOOP") {
			t.Error("the client went on after the excess reply")
		}
	})
	t.Run("behind-the-greeting", func(t *testing.T) {
		t.Parallel()
		fs := newFakeLMTP(t, "tcp", fakeLMTP{greeting: "220 fake.example LMTP\r\n250 2.0.0 unsolicited\r\n"})
		_, err := smtpclient.Dial(ctxT(t), fs.Addr, lmtpOptions(smtpclient.None, ""))
		var pe *smtpclient.ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("Dial: %v, want a ProtocolError", err)
		}
	})
	t.Run("354-without-recipients", func(t *testing.T) {
		t.Parallel()
		fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: []string{"PIPELINING"}, data354: true})
		opts := lmtpOptions(smtpclient.None, "")
		recs := newLogRecords()
		opts.Logger = slog.New(recs)
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: addrs("unknown1", "unknown2")}, []byte(testMsg))
		if re := replyError(t, err); re.Command != "RCPT" || res.Accepted != 0 {
			t.Errorf("SendMail: %v, %+v", err, res)
		}
		recs.waitFor(t, "LMTP server answered DATA with 354 without a recipient; closing the connection")
		fs.wait()
		data, _ := fs.conn(0).payloads()
		if len(data) != 1 || len(data[0]) != 0 {
			t.Errorf("the client sent %q after the 354", data)
		}
	})
}

// DATA itself refused (451) after RCPT accepted some recipients: no end of
// data, so no per-recipient replies; each accepted recipient's outcome is
// DATA's refusal (temporary here), SendMail returns it, and after RSET the
// connection carries another message.
func TestLMTPDataRefused(t *testing.T) {
	t.Parallel()
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			t.Parallel()
			fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: []string{"PIPELINING"}, dataReply: "451 4.3.0 Try again later\r\n"})
			opts := lmtpOptions(smtpclient.None, "")
			opts.NoPipelining = !pipelining
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, fs.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			to := addrs("alice", "unknown1", "bob")
			res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(testMsg))
			if re := replyError(t, err); re.Command != "DATA" || re.Reply.Code != 451 || !smtpclient.Temporary(err) {
				t.Errorf("SendMail: %v", err)
			}
			checkRcpts(t, res, to, "DATA", []rcptWant{{code: 451}, {code: 550, cmd: "RCPT"}, {code: 451}})
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
			fs.wait()
			cmds := fs.conn(0).commands()
			if i := slices.Index(cmds, "DATA"); i < 0 || cmds[i+1] != "RSET" {
				t.Errorf("commands %q: want RSET after the refused DATA", cmds)
			}
		})
	}
}

// LMTP refuses TCP port 25 (RFC 2033 §5) before connecting; an unknown
// Network is refused too.
func TestLMTPOptions(t *testing.T) {
	t.Parallel()
	wl := &writeLog{}
	for _, tc := range []struct {
		addr, network string
		want          string
	}{
		{"127.0.0.1:25", "", "port 25"},
		{"[::1]:smtp", "tcp6", "port 25"},
		{"127.0.0.1:24", "udp", "Network"},
	} {
		opts := lmtpOptions(smtpclient.None, tc.network)
		opts.Dialer = wl.dialer()
		_, err := smtpclient.Dial(ctxT(t), tc.addr, opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: %v, want an error about %s", tc.addr, tc.network, err, tc.want)
		}
	}
	if w := wl.all(); len(w) != 0 {
		t.Errorf("the client connected: %q", w)
	}
}

// STARTTLS over TCP in LMTP (RFC 3207 §4.2 with RFC 2033 §4.1): LHLO,
// STARTTLS alone, the TLS handshake as the first bytes after the 220,
// LHLO again inside TLS, and the transaction on the post-TLS keywords
// only (here CHUNKING: BDAT), at every level that uses TLS, with
// smtptest's certificate for localhost.
func TestLMTPSTARTTLS(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt, smtpclient.Verify, smtpclient.Secure} {
		t.Run(level.String(), func(t *testing.T) {
			t.Parallel()
			fs := newFakeLMTP(t, "tcp", fakeLMTP{
				ext:    []string{"PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS", "SIZE 10"},
				tlsExt: []string{"PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "SIZE 100000"},
				tls:    serverTLS,
			})
			opts := lmtpOptions(level, "")
			opts.ServerName = "localhost"
			opts.TLSConfig = clientTLS
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, fs.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			if info := c.TLS(); info == nil || !info.Verified || c.Fallback() != "" {
				t.Errorf("TLS %v, fallback %q", info, c.Fallback())
			}
			to := addrs("alice", "unknown1", "full")
			res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(testMsg))
			if err != nil {
				t.Fatal(err)
			}
			checkRcpts(t, res, to, "BDAT", []rcptWant{{reply: "2.0.0 <alice@lmtp.test> Saved"}, {code: 550, cmd: "RCPT"},
				{code: 452, reply: "4.2.2 <full@lmtp.test> Mailbox is full"}})
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
			fs.wait()
			f := fs.conn(0)
			want := []string{"LHLO client.example", "STARTTLS", "TLS: LHLO client.example",
				fmt.Sprintf("TLS: MAIL FROM:<sender@example.org> SIZE=%d", len(testMsg)),
				"TLS: RCPT TO:<alice@lmtp.test>", "TLS: RCPT TO:<unknown1@lmtp.test>", "TLS: RCPT TO:<full@lmtp.test>",
				fmt.Sprintf("TLS: BDAT %d LAST", len(testMsg)), "TLS: QUIT"}
			if got := f.commands(); !slices.Equal(got, want) {
				t.Errorf("commands\n%q, want\n%q", got, want)
			}
			if len(f.afterTLS) != 1 || f.afterTLS[0] != 0x16 {
				t.Errorf("first byte after the 220: %q, want a TLS handshake record", f.afterTLS)
			}
			noMailInClear(t, f.cleartext())
		})
	}
}

// C-INJ-01 / C-TLS-10 in LMTP: replies injected behind the 220 to
// STARTTLS. At a mandatory level the client aborts on that connection; at
// May it delivers on a new plaintext one, with LHLO again.
func TestLMTPResponseInjection(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	inject := fakeLMTP{
		ext: []string{"PIPELINING", "STARTTLS"},
		tls: serverTLS,
		starttls: func(f *fconn) bool {
			f.mu.Lock()
			f.tlsAt = f.rec.len() - f.r.Buffered()
			f.mu.Unlock()
			f.send("220 2.0.0 Ready to start TLS\r\n250-fake.example\r\n250 PIPELINING\r\n")
			_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			_, _ = io.Copy(io.Discard, f.r)
			return false
		},
	}
	for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt} {
		t.Run(level.String(), func(t *testing.T) {
			t.Parallel()
			fs := newFakeLMTP(t, "tcp", inject)
			opts := lmtpOptions(level, "")
			opts.TLSConfig = clientTLS
			_, res, err := deliver(t, fs.Addr, opts)
			fs.wait()
			first := fs.conn(0)
			if all, clear := first.rec.bytes(), first.cleartext(); len(all) != len(clear) {
				t.Errorf("the client sent %q after the injected 220", all[len(clear):])
			}
			if level == smtpclient.Encrypt {
				tlsError(t, err)
				if !errors.Is(err, smtpclient.ErrResponseInjection) || fs.count() != 1 {
					t.Errorf("error %v, %d connections", err, fs.count())
				}
				return
			}
			if err != nil || res.Accepted != 1 || fs.count() != 2 {
				t.Fatalf("may: %v, %d connections", err, fs.count())
			}
			retry := fs.conn(1).commands()
			if retry[0] != "LHLO client.example" || slices.Contains(retry, "STARTTLS") {
				t.Errorf("retry commands %q", retry)
			}
		})
	}
}

// Over a unix socket (Options.Network "unix", as Postfix's
// lmtp:unix:...): at None and May no STARTTLS (plaintext, and no
// fallback reported) even when offered; the mandatory levels still want
// TLS, and fail when it is not offered; Encrypt without ServerName has no
// name to verify; Verify needs ServerName, and with it verifies.
func TestLMTPUnixLevels(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	withTLS := fakeLMTP{ext: []string{"PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS"}, tls: serverTLS}
	noTLS := fakeLMTP{ext: []string{"PIPELINING", "ENHANCEDSTATUSCODES"}}
	for _, tc := range []struct {
		name       string
		fl         fakeLMTP
		level      smtpclient.Level
		serverName string
		wantTLS    bool
		verified   bool
		dialErr    func(t *testing.T, err error)
	}{
		{name: "none", fl: withTLS, level: smtpclient.None},
		{name: "may", fl: withTLS, level: smtpclient.May},
		{name: "may-not-offered", fl: noTLS, level: smtpclient.May},
		{name: "encrypt", fl: withTLS, level: smtpclient.Encrypt, wantTLS: true},
		{name: "encrypt-not-offered", fl: noTLS, level: smtpclient.Encrypt, dialErr: func(t *testing.T, err error) { tlsError(t, err) }},
		{name: "verify", fl: withTLS, level: smtpclient.Verify, serverName: "localhost", wantTLS: true, verified: true},
		{name: "secure", fl: withTLS, level: smtpclient.Secure, serverName: "localhost", wantTLS: true, verified: true},
		{name: "verify-without-name", fl: withTLS, level: smtpclient.Verify, dialErr: func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "ServerName") {
				t.Errorf("Dial: %v, want an error about ServerName", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeLMTP(t, "unix", tc.fl)
			opts := lmtpOptions(tc.level, "unix")
			opts.ServerName = tc.serverName
			opts.TLSConfig = clientTLS
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, fs.Addr, opts)
			if tc.dialErr != nil {
				tc.dialErr(t, err)
				fs.wait()
				if fs.count() > 0 {
					noMailInClear(t, fs.conn(0).cleartext())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.RemoteAddr().(*net.UnixAddr); !ok {
				t.Errorf("RemoteAddr %v", c.RemoteAddr())
			}
			if c.Fallback() != "" {
				t.Errorf("Fallback %q over a unix socket", c.Fallback())
			}
			info := c.TLS()
			if (info != nil) != tc.wantTLS {
				t.Fatalf("TLS %v, want TLS: %v", info, tc.wantTLS)
			}
			if info != nil && (info.Verified != tc.verified || info.ServerName != tc.serverName) {
				t.Errorf("TLS %+v, want verified %v for %q", info, tc.verified, tc.serverName)
			}
			to := addrs("alice", "unknown1", "disabled")
			res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: to}, []byte(testMsg))
			if err != nil {
				t.Fatal(err)
			}
			checkRcpts(t, res, to, "DATA", []rcptWant{{reply: "2.0.0 <alice@lmtp.test> Saved"}, {code: 550, cmd: "RCPT"},
				{code: 550, reply: "5.2.1 <disabled@lmtp.test> Mailbox disabled"}})
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
			fs.wait()
			if got := fs.conn(0).hasCommand("STARTTLS"); got != tc.wantTLS {
				t.Errorf("STARTTLS sent: %v, want %v", got, tc.wantTLS)
			}
		})
	}
}

// Over a unix socket: a reply sent while no command is outstanding is
// caught (the receive-queue check works on unix sockets too, C-INJ-02);
// and AllowInsecureAuth allows AUTH in plaintext there, a unix socket
// being as local as a loopback address.
func TestLMTPUnixSession(t *testing.T) {
	t.Parallel()
	t.Run("unsolicited-while-idle", func(t *testing.T) {
		t.Parallel()
		fs := newFakeLMTP(t, "unix", fakeLMTP{ext: []string{"PIPELINING"}, afterLHLO: "250 2.0.0 unsolicited\r\n"})
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, lmtpOptions(smtpclient.None, "unix"))
		var pe *smtpclient.ProtocolError
		if errors.As(err, &pe) {
			return // caught at once
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the fake sends after 20ms
		_, err = c.SendMail(ctx, env1, []byte(testMsg))
		if !errors.As(err, &pe) {
			t.Errorf("SendMail: %v, want a ProtocolError for the reply sent while idle", err)
		}
		c.Close()
		fs.wait()
		if fs.conn(0).hasCommand("MAIL") {
			t.Error("MAIL sent after an unsolicited reply")
		}
	})
	t.Run("insecure-auth", func(t *testing.T) {
		t.Parallel()
		fs := newFakeLMTP(t, "unix", fakeLMTP{ext: []string{"PIPELINING", "AUTH PLAIN"}})
		opts := lmtpOptions(smtpclient.None, "unix")
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(ctx, "alice", "s3cr3t"); !errors.Is(err, smtpclient.ErrAuthNotTLS) {
			t.Errorf("Auth without AllowInsecureAuth: %v", err)
		}
		_ = c.Quit(ctx)
		opts.AllowInsecureAuth = true
		c, err = smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(ctx, "alice", "s3cr3t"); err != nil {
			t.Errorf("Auth with AllowInsecureAuth over a unix socket: %v", err)
		}
		_ = c.Quit(ctx)
		fs.wait()
		if got := fs.conn(1).credentials(); !slices.Equal(got, []string{"alice:s3cr3t"}) {
			t.Errorf("credentials %q", got)
		}
	})
}

// The LMTP dialogue as the client traces it, against golden transcripts in
// testdata/ (set PETREL_UPDATE_GOLDEN=1 to rewrite them): pipelined DATA
// and BDAT with mixed per-recipient replies (RFC 2033 §4.2, §4.3).
func TestLMTPTranscript(t *testing.T) {
	t.Parallel()
	for _, chunking := range []bool{false, true} {
		name := map[bool]string{false: "lmtp-data", true: "lmtp-bdat"}[chunking]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ext := []string{"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"}
			if chunking {
				ext = append(ext, "CHUNKING")
			}
			fs := newFakeLMTP(t, "tcp", fakeLMTP{ext: ext})
			var trace bytes.Buffer
			opts := lmtpOptions(smtpclient.None, "")
			opts.Trace = &trace
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, fs.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: addrs("alice", "unknown1", "full", "bob")},
				[]byte("Subject: golden\r\n\r\n.dot\r\n")); err != nil {
				t.Fatal(err)
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".golden"), trace.Bytes())
		})
	}
}

// golden compares got with the file, or rewrites the file when
// PETREL_UPDATE_GOLDEN=1.
func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if os.Getenv("PETREL_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (PETREL_UPDATE_GOLDEN=1 writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("transcript differs from %s (-want +got):\n-%s\n+%s", file,
			strings.ReplaceAll(string(want), "\n", "\n-"), strings.ReplaceAll(string(got), "\n", "\n+"))
	}
}
