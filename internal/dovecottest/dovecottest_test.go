package dovecottest_test

import (
	"bytes"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dovecottest"
)

// reply is one LMTP reply: its code and its text (lines joined by "\n").
type reply struct {
	code int
	msg  string
}

// client is a raw LMTP client on net/textproto, for the server's own tests.
type client struct {
	t *testing.T
	*textproto.Conn
}

// dial connects to s and reads its greeting.
func dial(t *testing.T, s *dovecottest.Server) (*client, reply) {
	t.Helper()
	nc, err := net.DialTimeout(s.Network, s.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t, textproto.NewConn(nc)}
	t.Cleanup(func() { c.Close() })
	return c, c.read()
}

// read reads one reply, of any code.
func (c *client) read() reply {
	c.t.Helper()
	code, msg, err := c.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading a reply: %v", err)
	}
	return reply{code, msg}
}

// cmd sends a command line and reads its reply.
func (c *client) cmd(line string) reply {
	c.t.Helper()
	if err := c.PrintfLine("%s", line); err != nil {
		c.t.Fatal(err)
	}
	return c.read()
}

// transaction runs MAIL, one RCPT per address and, if any was accepted,
// DATA with msg (CRLF lines). It returns the RCPT replies and the replies
// after the end of data: in LMTP one per accepted recipient, in RCPT order
// (RFC 2033 §4.2), instead of SMTP's single reply.
func (c *client) transaction(from string, rcpts []string, msg string) (rcptReplies, dataReplies []reply) {
	c.t.Helper()
	if r := c.cmd("MAIL FROM:<" + from + ">"); r.code != 250 {
		c.t.Fatalf("MAIL: %v", r)
	}
	accepted := 0
	for _, rcpt := range rcpts {
		r := c.cmd("RCPT TO:<" + rcpt + ">")
		rcptReplies = append(rcptReplies, r)
		if r.code == 250 {
			accepted++
		}
	}
	if accepted == 0 {
		return rcptReplies, nil
	}
	if r := c.cmd("DATA"); r.code != 354 {
		c.t.Fatalf("DATA: %v", r)
	}
	// DotWriter stuffs leading dots and ends with "\r\n.\r\n" (RFC 5321
	// §4.5.2, which RFC 2033 §4.2 keeps).
	w := c.DotWriter()
	if _, err := w.Write([]byte(msg)); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	for range accepted {
		dataReplies = append(dataReplies, c.read())
	}
	return rcptReplies, dataReplies
}

// lhlo greets with LHLO (RFC 2033 §4.1: LMTP's EHLO) and returns the reply.
func (c *client) lhlo() reply {
	c.t.Helper()
	r := c.cmd("LHLO client.example")
	if r.code != 250 {
		c.t.Fatalf("LHLO: %v", r)
	}
	return r
}

const testMessage = "From: Sender <sender@example.org>\r\n" +
	"To: alice@lmtp.test, bob@lmtp.test\r\n" +
	"Subject: dovecottest\r\n" +
	"Message-ID: <dovecottest-1@example.org>\r\n" +
	"\r\n" +
	"Hello over LMTP.\r\n" +
	".A line that starts with a dot (stuffed on the wire).\r\n" +
	"\r\n" +
	"Bye.\r\n"

// checkStored checks that stored is msg with LF line ends below a block of
// headers Dovecot adds: Return-Path, Received (folded) and, for a single
// recipient, Delivered-To. It returns Dovecot's header block.
func checkStored(t *testing.T, stored []byte, msg string) string {
	t.Helper()
	want := strings.ReplaceAll(msg, "\r\n", "\n")
	if !bytes.HasSuffix(stored, []byte(want)) {
		t.Fatalf("stored message does not end with the message sent:\n%s", stored)
	}
	added := string(stored[:len(stored)-len(want)])
	for _, line := range strings.SplitAfter(added, "\n") {
		if line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		switch {
		case strings.HasPrefix(line, "\t"), strings.HasPrefix(line, " "):
		case name == "Return-Path", name == "Received", name == "Delivered-To":
		default:
			t.Errorf("unexpected header line added by Dovecot: %q", line)
		}
	}
	if !strings.HasPrefix(added, "Return-Path: <sender@example.org>\n") {
		t.Errorf("stored message does not start with Return-Path:\n%s", stored)
	}
	if !strings.Contains(added, "by "+dovecottest.Hostname+" with LMTP") {
		t.Errorf("no Received header by %s with LMTP:\n%s", dovecottest.Hostname, stored)
	}
	return added
}

// An LMTP session over TCP and over a unix socket: every recipient gets its
// own reply after DATA and its own copy of the message, unknown users are
// refused at RCPT, and a second transaction in the session works.
func TestDeliver(t *testing.T) {
	t.Parallel()
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := dovecottest.Start(t, dovecottest.Config{Unix: unix})
			if s.Network != name {
				t.Errorf("Network = %q, want %q", s.Network, name)
			}
			if unix && s.Addr != filepath.Join(s.Dir, "lmtp") {
				t.Errorf("Addr = %q, want the socket in Dir", s.Addr)
			}

			c, greeting := dial(t, s)
			// RFC 2033 §4: the greeting, as in SMTP.
			if greeting.code != 220 || !strings.HasPrefix(greeting.msg, dovecottest.Hostname+" ") {
				t.Errorf("greeting %v", greeting)
			}
			if r := c.lhlo(); !strings.Contains(r.msg, "ENHANCEDSTATUSCODES") || !strings.Contains(r.msg, "PIPELINING") {
				t.Errorf("LHLO reply lacks ENHANCEDSTATUSCODES or PIPELINING: %v", r)
			}

			rcpts := []string{"alice@lmtp.test", "bob@lmtp.test", "unknown@lmtp.test"}
			rr, dr := c.transaction("sender@example.org", rcpts, testMessage)
			if rr[0].code != 250 || rr[1].code != 250 {
				t.Errorf("RCPT alice, bob: %v, %v; want 250", rr[0], rr[1])
			}
			// An unknown user: 550 with 5.1.1 (RFC 3463 bad destination
			// mailbox address), at RCPT, as in SMTP.
			if rr[2].code != 550 || !strings.HasPrefix(rr[2].msg, "5.1.1 ") {
				t.Errorf("RCPT unknown: %v, want 550 5.1.1", rr[2])
			}
			// RFC 2033 §4.2: one reply per successful RCPT, in the same
			// order; Dovecot names the recipient in each.
			if len(dr) != 2 {
				t.Fatalf("%d replies after DATA, want 2: %v", len(dr), dr)
			}
			for i, rcpt := range rcpts[:2] {
				if dr[i].code != 250 || !strings.HasPrefix(dr[i].msg, "2.0.0 <"+rcpt+">") {
					t.Errorf("reply %d after DATA: %v, want 250 2.0.0 <%s>", i, dr[i], rcpt)
				}
			}
			for _, user := range []string{"alice", "bob"} {
				msgs := s.Messages(t, user)
				if len(msgs) != 1 {
					t.Fatalf("%s has %d messages, want 1", user, len(msgs))
				}
				if added := checkStored(t, msgs[0], testMessage); strings.Contains(added, "Delivered-To:") {
					t.Errorf("Delivered-To with two recipients:\n%s", added)
				}
			}

			// A second transaction in the same session (RFC 2033 §4.2:
			// after the replies the client may start another), to one
			// recipient given in upper case and with a +detail.
			msg2 := "Subject: second\r\n\r\nTwo.\r\n"
			rr, dr = c.transaction("sender@example.org", []string{"Bob+Tag@LMTP.test"}, msg2)
			if rr[0].code != 250 || len(dr) != 1 || dr[0].code != 250 {
				t.Fatalf("second transaction: RCPT %v, after DATA %v", rr, dr)
			}
			msgs := s.WaitMessages(t, "bob", 2, 5*time.Second)
			if len(msgs) != 2 {
				t.Fatalf("bob has %d messages, want 2", len(msgs))
			}
			// Oldest first; with a single recipient Dovecot adds
			// Delivered-To (lmtp_hdr_delivery_address = final: the
			// address as given, detail and case included).
			checkStored(t, msgs[0], testMessage)
			if added := checkStored(t, msgs[1], msg2); !strings.Contains(strings.ToLower(added), "delivered-to: bob+tag@lmtp.test\n") {
				t.Errorf("no Delivered-To for the single recipient:\n%s", added)
			}
			if n := len(s.Messages(t, "alice")); n != 1 {
				t.Errorf("alice has %d messages, want still 1", n)
			}
			if r := c.cmd("QUIT"); r.code != 221 {
				t.Errorf("QUIT: %v", r)
			}
			s.WaitLog(t, "saved mail to INBOX", 10*time.Second)
		})
	}
}

// A message too big for alice's quota is refused for her alone, after DATA
// (RFC 2033 §4.2: each recipient's reply stands for itself): 552 5.2.2
// (RFC 3463: mailbox full), while bob gets his copy.
func TestQuotaBytes(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, dovecottest.Config{Quotas: map[string]dovecottest.Quota{"alice": {Bytes: 1000}}})
	c, _ := dial(t, s)
	c.lhlo()
	big := testMessage + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 20)
	rr, dr := c.transaction("sender@example.org", []string{"alice@lmtp.test", "bob@lmtp.test"}, big)
	if rr[0].code != 250 || rr[1].code != 250 {
		t.Fatalf("RCPT: %v", rr)
	}
	if len(dr) != 2 {
		t.Fatalf("replies after DATA: %v", dr)
	}
	if dr[0].code != 552 || !strings.HasPrefix(dr[0].msg, "5.2.2 <alice@lmtp.test>") {
		t.Errorf("alice after DATA: %v, want 552 5.2.2", dr[0])
	}
	if dr[1].code != 250 {
		t.Errorf("bob after DATA: %v, want 250", dr[1])
	}
	if n := len(s.Messages(t, "alice")); n != 0 {
		t.Errorf("alice has %d messages, want 0", n)
	}
	checkStored(t, s.WaitMessages(t, "bob", 1, 5*time.Second)[0], big)

	// A small message still fits.
	rr, dr = c.transaction("sender@example.org", []string{"alice@lmtp.test"}, "Subject: small\r\n\r\nx\r\n")
	if rr[0].code != 250 || len(dr) != 1 || dr[0].code != 250 {
		t.Errorf("small message to alice: RCPT %v, after DATA %v", rr, dr)
	}
}

// With a message-count quota and QuotaTempfail, a full mailbox is refused
// at RCPT with 452 4.2.2 (RFC 5321 §4.2.2 and RFC 3463: temporary, mailbox
// full), and the transaction goes on for the others.
func TestQuotaMessagesTempfail(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, dovecottest.Config{
		Users:         []string{"alice", "bob", "carol"},
		Quotas:        map[string]dovecottest.Quota{"alice": {Bytes: 100000, Messages: 1}},
		QuotaTempfail: true,
	})
	c, _ := dial(t, s)
	c.lhlo()
	rcpts := []string{"alice@lmtp.test", "carol@lmtp.test"}
	if rr, dr := c.transaction("sender@example.org", rcpts, testMessage); len(dr) != 2 || dr[0].code != 250 || dr[1].code != 250 {
		t.Fatalf("first message: RCPT %v, after DATA %v", rr, dr)
	}
	rr, dr := c.transaction("sender@example.org", rcpts, testMessage)
	if rr[0].code != 452 || !strings.HasPrefix(rr[0].msg, "4.2.2 <alice@lmtp.test>") {
		t.Errorf("RCPT alice when full: %v, want 452 4.2.2", rr[0])
	}
	if rr[1].code != 250 || len(dr) != 1 || dr[0].code != 250 {
		t.Errorf("carol: RCPT %v, after DATA %v", rr[1], dr)
	}
	if n := len(s.Messages(t, "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
	if n := len(s.Messages(t, "carol")); n != 2 {
		t.Errorf("carol has %d messages, want 2", n)
	}
}

// Stop leaves no process of the server behind (every process title carries
// the instance name, the base name of Dir) and nothing listening.
func TestStop(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, dovecottest.Config{})
	name := filepath.Base(s.Dir)
	if len(processesNamed(name)) == 0 {
		t.Fatalf("no process with %q in its command line", name)
	}
	s.Stop(t)
	if pids := processesNamed(name); len(pids) > 0 {
		t.Errorf("processes left after Stop: %v", pids)
	}
	if c, err := net.DialTimeout(s.Network, s.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", s.Addr)
	}
	s.Stop(t) // again: nothing
}

// processesNamed lists the processes whose command line contains name.
func processesNamed(name string) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(name)) {
			pids = append(pids, e.Name()+" "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return pids
}
