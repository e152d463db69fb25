package smtpserver

import (
	"context"
	"strconv"
	"strings"

	"golang.org/x/net/idna"

	"github.com/petrel-mta/petrel/smtp"
)

var errHeloSyntax = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs,
	Message: "Syntax: EHLO domain-or-address-literal"}

// hello checks an EHLO/HELO argument and returns the form to keep: an RFC
// 5321 §4.1.1.1 Domain or address-literal, and, as Postfix does, host names
// with underscores (common on Windows hosts). A domain with U-labels (RFC
// 6531) is kept in its A-label (xn--) form, so the reply and the Received
// header stay ASCII; anything that does not convert is refused, so no
// control or bidirectional-override character gets through. A name that
// does not resolve is never refused (§4.1.4).
func hello(s string) (string, bool) {
	if smtp.IsAddressLiteral(s) {
		// General literals may hold characters that would change the
		// meaning of the Received header (comments, the date's ";").
		return s, !strings.ContainsAny(s, `()";<>\`)
	}
	if len(s) == 0 || len(s) > smtp.MaxDomainLen {
		return "", false
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c >= 0x80:
			ascii = false
		default:
			return "", false
		}
	}
	if !ascii {
		a, err := idna.Lookup.ToASCII(s)
		if err != nil || a == s {
			return "", false
		}
		s = a
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") || len(s) > smtp.MaxDomainLen {
		return "", false
	}
	return s, true
}

// handleEHLO: RFC 5321 §4.1.1.1, and §4.1.4: a later EHLO resets the state
// "exactly as if a RSET command had been issued".
func (c *conn) handleEHLO(ctx context.Context, arg string) error {
	name, ok := hello(arg)
	if !ok {
		return errHeloSyntax
	}
	c.rset(ctx)
	c.helo, c.esmtp = name, true
	lines := make([]string, 0, 10)
	lines = append(lines,
		c.s.opts.Hostname+" greets "+name,
		"PIPELINING",
		"SIZE "+strconv.FormatInt(c.s.opts.MaxMessageBytes, 10),
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"SMTPUTF8",
		"CHUNKING",
	)
	// RFC 4954 §4 with RFC 3207 §4.2: AUTH only under TLS (S-SUB-04).
	if c.authOffered() {
		lines = append(lines, "AUTH "+authMechanisms)
	}
	// RFC 3207 §4.2: never advertised once TLS is active.
	if c.tlsState == nil && c.tlsOffered() {
		lines = append(lines, "STARTTLS")
	}
	c.writeReplyLines(smtp.C250OK, smtp.NoEnhancedCode, lines...)
	return nil
}

func (c *conn) handleHELO(ctx context.Context, arg string) error {
	name, ok := hello(arg)
	if !ok {
		return &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax: HELO domain"}
	}
	c.rset(ctx)
	c.helo, c.esmtp = name, false
	c.writeReplyLines(smtp.C250OK, smtp.NoEnhancedCode, c.s.opts.Hostname)
	return nil
}

func (c *conn) handleNOOP(context.Context, string) error {
	return c.ok(smtp.C250OK, smtp.E200Undefined, "OK") // §4.1.1.9: parameters ignored
}

// handleRSET: RFC 5321 §4.1.1.5.
func (c *conn) handleRSET(ctx context.Context, arg string) error {
	if arg != "" {
		return smtp.Errorf(smtp.C501ArgSyntaxError, smtp.E554InvalidArgs, "Syntax: RSET (no parameters)")
	}
	c.rset(ctx)
	return c.ok(smtp.C250OK, smtp.E200Undefined, "OK")
}

// handleQUIT: RFC 5321 §4.1.1.10: 221, then close.
func (c *conn) handleQUIT(context.Context, string) error {
	c.closeWhy = "QUIT"
	return &closeReply{reply: &smtp.Error{Code: smtp.C221Closing, Enhanced: smtp.E200Undefined, Message: "Bye"}}
}

// handleVRFY: RFC 5321 §3.5.3: 252 when the server will not verify.
func (c *conn) handleVRFY(_ context.Context, arg string) error {
	if arg == "" {
		return smtp.Errorf(smtp.C501ArgSyntaxError, smtp.E554InvalidArgs, "Syntax: VRFY address")
	}
	return c.ok(smtp.C252CannotVerify, smtp.E200Undefined, "Cannot VRFY user, but will accept message and attempt delivery")
}

func (c *conn) handleHELP(context.Context, string) error {
	c.writeReplyLines(smtp.C214Help, smtp.E200Undefined,
		"Petrel SMTP server. Commands:",
		"EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
		"See RFC 5321.")
	return nil
}
