package smtpserver

import (
	"context"
	"strings"

	"github.com/petrel-mta/petrel/smtp"
)

var (
	errNeedHello   = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "Send EHLO or HELO first"}
	errNestedMail  = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "Nested MAIL command"}
	errNeedMail    = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "Need MAIL command first"}
	errMailSyntax  = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax: MAIL FROM:<address> [parameters]"}
	errRcptSyntax  = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax: RCPT TO:<address> [parameters]"}
	errTooManyRcpt = &smtp.Error{Code: smtp.C452InsufficientStore, Enhanced: smtp.E453TooManyRcpts, Message: "Too many recipients"}
	errSizeTooBig  = &smtp.Error{Code: smtp.C552StorageExceeded, Enhanced: smtp.E534MsgTooBig, Message: "Message size exceeds fixed maximum message size"}
)

// cutPrefixFold removes a case-insensitive prefix ("FROM:", "TO:") and one
// optional space after it (tolerated, as by Postfix, though RFC 5321 has
// none).
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	s = s[len(prefix):]
	return strings.TrimPrefix(s, " "), true
}

// handleMAIL: RFC 5321 §4.1.1.2 and §4.1.4, with SIZE (RFC 1870 §6), BODY
// (RFC 6152) and SMTPUTF8 (RFC 6531 §3.4).
func (c *conn) handleMAIL(ctx context.Context, arg string) error {
	if c.helo == "" {
		return errNeedHello
	}
	if c.tx != nil {
		return errNestedMail
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		return errMailSyntax
	}
	from, rest, err := smtp.ParseReversePath(rest, true)
	if err != nil {
		return err
	}
	params, err := smtp.ParseParams(rest, true)
	if err != nil {
		return err
	}
	var opts MailOptions
	for _, p := range params {
		if !c.esmtp {
			return smtp.Errorf(smtp.C555ParamsUnknown, smtp.E554InvalidArgs, "Parameters need EHLO")
		}
		switch strings.ToUpper(p.Keyword) {
		case "SIZE":
			n, ok := smtp.ParseSize(p.Value)
			if !ok {
				if isDigits(p.Value) && len(p.Value) <= 20 {
					return errSizeTooBig // 20 digits, beyond int64
				}
				return smtp.Errorf(smtp.C501ArgSyntaxError, smtp.E554InvalidArgs, "Syntax: SIZE=number")
			}
			if n > c.s.opts.MaxMessageBytes {
				return errSizeTooBig // RFC 1870 §6.1
			}
			opts.Size = n
		case "BODY":
			switch strings.ToUpper(p.Value) {
			case "7BIT":
				opts.Body = Body7Bit
			case "8BITMIME":
				opts.Body = Body8BitMIME
			default:
				return smtp.Errorf(smtp.C555ParamsUnknown, smtp.E554InvalidArgs, "Unsupported BODY type")
			}
		case "SMTPUTF8":
			if p.HasValue {
				return smtp.Errorf(smtp.C501ArgSyntaxError, smtp.E554InvalidArgs, "SMTPUTF8 takes no value")
			}
			opts.UTF8 = true
		default:
			return smtp.Errorf(smtp.C555ParamsUnknown, smtp.E554InvalidArgs, "Unsupported parameter %s", sanitize(p.Keyword))
		}
	}
	if !from.ASCII() && !opts.UTF8 {
		return smtp.ErrPathNonASCII // RFC 6531 §3.5
	}
	if err := c.sess.Mail(ctx, from, &opts); err != nil {
		return err
	}
	c.tx = &transaction{from: from, opts: opts}
	return c.ok(smtp.C250OK, smtp.E210OtherAddress, "Sender OK")
}

// handleRCPT: RFC 5321 §4.1.1.3; too many recipients is 452 4.5.3
// (§4.5.3.1.10).
func (c *conn) handleRCPT(ctx context.Context, arg string) error {
	if c.tx == nil {
		return errNeedMail // §3.3: MUST be 503
	}
	if c.bdat != nil {
		return errBDATInProgress
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		return errRcptSyntax
	}
	to, rest, err := smtp.ParseForwardPath(rest, c.tx.opts.UTF8)
	if err != nil {
		return err
	}
	params, err := smtp.ParseParams(rest, c.tx.opts.UTF8)
	if err != nil {
		return err
	}
	if len(params) > 0 {
		return smtp.Errorf(smtp.C555ParamsUnknown, smtp.E554InvalidArgs, "Unsupported parameter %s", sanitize(params[0].Keyword))
	}
	if len(c.tx.rcpts) >= c.s.opts.MaxRecipients {
		return errTooManyRcpt
	}
	if err := c.sess.Rcpt(ctx, to, &RcptOptions{}); err != nil {
		return err
	}
	c.tx.rcpts = append(c.tx.rcpts, to)
	return c.ok(smtp.C250OK, smtp.E215DestValid, "Recipient OK")
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// sanitize bounds client text echoed in a reply.
func sanitize(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return s
}
