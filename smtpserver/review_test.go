package smtpserver_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// reviewServer starts a server with the in-memory backend and TLS.
func reviewServer(t *testing.T, opts smtpserver.Options) (addr string, be *smtptest.Backend, clientTLS func() *smtptest.Client) {
	t.Helper()
	serverTLS, cTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	be = &smtptest.Backend{}
	opts.Backend = be
	opts.TLSConfig = serverTLS
	srv, err := smtptest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	dial := func() *smtptest.Client {
		c, err := smtptest.Dial(srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if r, err := c.ReadReply(); err != nil || r.Code != 220 {
			t.Fatalf("greeting %v %v", r, err)
		}
		_ = cTLS
		return c
	}
	return srv.Addr, be, dial
}

func mustCmd(t *testing.T, c *smtptest.Client, line string, code int) *smtptest.Reply {
	t.Helper()
	r, err := c.Cmd(line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if r.Code != code {
		t.Fatalf("%s: got %s, want %d", line, r, code)
	}
	return r
}

// TestIdlePeersDoNotStarveHandshakes: peers that say STARTTLS and then
// nothing hold no global handshake slot, so another client's STARTTLS is
// not refused with 454 (which would push an opportunistic sender to
// plaintext, RFC 3207 §4 / S-TLS-21, S-DOS-05).
func TestIdlePeersDoNotStarveHandshakes(t *testing.T) {
	_, _, dial := reviewServer(t, smtpserver.Options{MaxHandshakes: 2})
	for range 6 {
		idle := dial()
		mustCmd(t, idle, "EHLO idle.example", 250)
		mustCmd(t, idle, "STARTTLS", 220)
	}
	_, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS.InsecureSkipVerify = true
	c := dial()
	mustCmd(t, c, "EHLO victim.example", 250)
	mustCmd(t, c, "STARTTLS", 220)
	if _, err := c.StartTLS(clientTLS); err != nil {
		t.Fatalf("handshake while idle peers wait: %v", err)
	}
	mustCmd(t, c, "EHLO victim.example", 250)
}

// TestRefusedCommandEndsBDATTransaction: a command that ends a BDAT
// transfer ends its transaction even when it is refused, so the next BDAT
// LAST never stores a message without the chunks already acknowledged
// (RFC 3030 §2).
func TestRefusedCommandEndsBDATTransaction(t *testing.T) {
	for _, mid := range []string{"EHLO bad..name", "RSET now", "HELO"} {
		t.Run(mid, func(t *testing.T) {
			_, be, dial := reviewServer(t, smtpserver.Options{})
			c := dial()
			mustCmd(t, c, "EHLO client.example", 250)
			mustCmd(t, c, "MAIL FROM:<a@example.org>", 250)
			mustCmd(t, c, "RCPT TO:<b@example.org>", 250)
			mustCmd(t, c, "BDAT 6\r\nAAAA", 250) // Cmd adds the chunk's final CRLF
			mustCmd(t, c, mid, 501)
			mustCmd(t, c, "BDAT 6 LAST\r\nBBBB", 503)
			if n := len(be.Messages()); n != 0 {
				t.Errorf("stored %d messages", n)
			}
		})
	}
}

// TestTooManyRecipientsIsFlowControl: 452 4.5.3 does not count toward the
// error limit (RFC 5321 §4.5.3.1.10: the client retries the rest later).
func TestTooManyRecipientsIsFlowControl(t *testing.T) {
	_, be, dial := reviewServer(t, smtpserver.Options{MaxRecipients: 100, MaxErrors: 5})
	c := dial()
	mustCmd(t, c, "EHLO client.example", 250)
	var b strings.Builder
	b.WriteString("MAIL FROM:<a@example.org>\r\n")
	for i := range 125 {
		fmt.Fprintf(&b, "RCPT TO:<r%d@example.org>\r\n", i)
	}
	if err := c.Write(b.String()); err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	for range 126 {
		r, err := c.ReadReply()
		if err != nil {
			t.Fatalf("after %v: %v", codes, err)
		}
		codes[r.Code]++
	}
	if codes[250] != 101 || codes[452] != 25 {
		t.Fatalf("replies %v", codes)
	}
	mustCmd(t, c, "DATA", 354)
	mustCmd(t, c, "Subject: x\r\n\r\nx\r\n.", 250)
	if n := len(be.Messages()[0].To); n != 100 {
		t.Errorf("message for %d recipients", n)
	}
}

// TestErrorCountResetsOnDelivery: the error limit counts errors without
// delivering mail (as Postfix's smtpd_hard_error_limit), so a long relay
// session with an occasional refusal is not cut off.
func TestErrorCountResetsOnDelivery(t *testing.T) {
	_, be, dial := reviewServer(t, smtpserver.Options{MaxErrors: 3})
	c := dial()
	mustCmd(t, c, "EHLO client.example", 250)
	for i := range 8 {
		mustCmd(t, c, "MAIL FROM:<bad", 501)
		mustCmd(t, c, "MAIL FROM:<a@example.org>", 250)
		mustCmd(t, c, "RCPT TO:<b@example.org>", 250)
		mustCmd(t, c, "DATA", 354)
		mustCmd(t, c, fmt.Sprintf("Subject: %d\r\n\r\nx\r\n.", i), 250)
	}
	if n := len(be.Messages()); n != 8 {
		t.Errorf("stored %d messages", n)
	}
}

// TestEHLOInternationalName: U-labels are kept in A-label form; control
// and bidirectional-override characters are refused (RFC 6531 §3.7.1,
// header safety of the Received field).
func TestEHLOInternationalName(t *testing.T) {
	_, be, dial := reviewServer(t, smtpserver.Options{})
	c := dial()
	mustCmd(t, c, "EHLO gmail.com\u202e\u0085moc.evil", 501)
	r := mustCmd(t, c, "EHLO bücher.example", 250)
	if !strings.Contains(r.Lines[0], "greets xn--bcher-kva.example") {
		t.Errorf("EHLO reply %q", r.Lines[0])
	}
	mustCmd(t, c, "MAIL FROM:<a@example.org>", 250)
	mustCmd(t, c, "RCPT TO:<b@example.org>", 250)
	mustCmd(t, c, "DATA", 354)
	mustCmd(t, c, "Subject: x\r\n\r\nx\r\n.", 250)
	if rcv := be.Messages()[0].Received; !strings.HasPrefix(rcv, "Received: from xn--bcher-kva.example ") {
		t.Errorf("Received %q", rcv)
	}
}
