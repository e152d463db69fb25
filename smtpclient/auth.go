package smtpclient

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"

	"github.com/petrel-mta/petrel/smtp"
)

// ErrAuthNotTLS: credentials are sent only over TLS with a verified
// certificate (RFC 4954 §4, RFC 8314 §5; requirement C-AUTH-01).
var ErrAuthNotTLS = errors.New("smtpclient: refusing to send credentials without verified TLS (use level verify or secure)")

// ErrAuthNoMechanism: the server (in its EHLO inside TLS) offers neither
// PLAIN nor LOGIN. It is permanent for that server (RFC 4954 §6's 504).
var ErrAuthNoMechanism = &smtp.Error{Code: smtp.C504ParamNotImpl, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 7, Detail: 4},
	Message: "The server offers no supported AUTH mechanism (PLAIN, LOGIN)"}

// Auth authenticates with PLAIN (RFC 4616), or LOGIN when PLAIN is not
// offered, using only the mechanisms listed in the EHLO reply received
// inside TLS. It refuses to run on a plaintext connection unless
// AllowInsecureAuth is set and the server is on a loopback address or a
// unix socket.
func (c *Client) Auth(ctx context.Context, user, pass string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Only to a server whose certificate was verified: an unverified TLS
	// peer may be the man in the middle (C-AUTH-01, RFC 8314 §5).
	if (c.tls == nil || !c.tls.Verified) && !(c.opts.AllowInsecureAuth && (c.unix || isLoopback(c.raw.RemoteAddr()))) {
		return ErrAuthNotTLS
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return ErrAuthNoMechanism
	}
	has := func(m string) bool {
		for f := range strings.FieldsSeq(mechs) {
			if strings.EqualFold(f, m) {
				return true
			}
		}
		return false
	}
	switch {
	case has("PLAIN"):
		resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		c.trace("C:", "AUTH PLAIN [redacted]")
		if err := c.writeRaw("AUTH PLAIN " + resp); err != nil {
			return err
		}
		return c.authResult(ctx)
	case has("LOGIN"):
		rep, err := c.cmd(ctx, c.opts.Timeouts.Command, "AUTH LOGIN")
		if err != nil {
			return err
		}
		for _, secret := range []string{user, pass} {
			if rep.code != smtp.C334AuthChallenge {
				return rep.err("AUTH")
			}
			if err := c.writeSecret(base64.StdEncoding.EncodeToString([]byte(secret))); err != nil {
				return err
			}
			if err := c.flush(ctx); err != nil {
				return err
			}
			if rep, err = c.readReply(ctx, c.opts.Timeouts.Command); err != nil {
				return err
			}
		}
		if rep.code != smtp.C235AuthOK {
			return rep.err("AUTH")
		}
		return nil
	}
	return ErrAuthNoMechanism
}

func (c *Client) authResult(ctx context.Context) error {
	stop := c.interrupt(ctx)
	defer stop()
	if err := c.flush(ctx); err != nil {
		return err
	}
	rep, err := c.readReply(ctx, c.opts.Timeouts.Command)
	if err != nil {
		return err
	}
	if rep.code != smtp.C235AuthOK {
		return rep.err("AUTH")
	}
	return nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
