package smtpserver

import (
	"crypto/tls"
	"net"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// Received returns the trace header field the server adds at the top of
// the message (RFC 5321 §4.4), ending in CRLF and folded:
//
//	Received: from client.example ([192.0.2.1])
//		by mx.example (Petrel) with ESMTPS id 0a1b2c3d
//		(TLSv1.3 TLS_AES_128_GCM_SHA256 X25519MLKEM768)
//		for <rcpt@example.org>
//		tls TLS_AES_128_GCM_SHA256;
//		Sat, 28 Nov 2026 13:00:00 +0000
//
// The from clause is the client's EHLO name and its address literal (no
// reverse DNS lookup is made). The with clause is the RFC 3848 protocol type: SMTP, ESMTP, ESMTPS or
// ESMTPSA (TLS plus AUTH: Conn.AuthUser is not empty; AUTH is never
// accepted without TLS, so ESMTPA does not occur), and UTF8SMTP* when
// SMTPUTF8 was used (RFC 6531 §3.7.3). The authenticated user name is never
// written (requirement S-RCV-04).
// The tls clause is RFC 8314 §4.3's, with the cipher suite; the comment
// before it adds the TLS version and the key-exchange group, so a reader can
// tell a post-quantum (X25519MLKEM768) session from a classical one. The
// "for" clause names the recipient only when there is exactly one, so that
// one recipient's copy does not disclose the others. Call it from
// Session.Data.
func (p *Conn) Received(id string) string {
	c := p.c
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	helo := c.helo
	if helo == "" {
		helo = "unknown"
	}
	b.WriteString(helo)
	b.WriteString(" (")
	host, _, err := net.SplitHostPort(c.raw.RemoteAddr().String())
	if err != nil {
		host = c.raw.RemoteAddr().String()
	}
	if strings.Contains(host, ":") {
		b.WriteString("[IPv6:" + host + "]")
	} else {
		b.WriteString("[" + host + "]")
	}
	b.WriteString(")\r\n\tby ")
	b.WriteString(c.s.opts.Hostname)
	b.WriteString(" (Petrel) with ")
	b.WriteString(p.protocol())
	if id != "" {
		b.WriteString(" id ")
		b.WriteString(id)
	}
	if st := c.tlsState; st != nil {
		b.WriteString("\r\n\t(")
		b.WriteString(smtp.TLSVersionName(st.Version))
		b.WriteString(" ")
		b.WriteString(tls.CipherSuiteName(st.CipherSuite))
		if st.CurveID != 0 {
			b.WriteString(" ")
			b.WriteString(smtp.GroupName(st.CurveID))
		}
		b.WriteString(")")
	}
	if c.tx != nil && len(c.tx.rcpts) == 1 {
		b.WriteString("\r\n\tfor ")
		b.WriteString(c.tx.rcpts[0].Bracketed())
	}
	if st := c.tlsState; st != nil {
		b.WriteString("\r\n\ttls ")
		b.WriteString(tls.CipherSuiteName(st.CipherSuite))
	}
	b.WriteString(";\r\n\t")
	b.WriteString(c.s.opts.Now().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// protocol is the RFC 3848 / RFC 6531 "with" value.
func (p *Conn) protocol() string {
	c := p.c
	proto := "SMTP"
	if c.esmtp {
		proto = "ESMTP"
		if c.tx != nil && c.tx.opts.UTF8 {
			proto = "UTF8SMTP"
		}
		if c.tlsState != nil {
			proto += "S"
		}
		if c.authUser != "" {
			proto += "A"
		}
	}
	return proto
}
