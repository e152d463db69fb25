package smtpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/petrel-mta/petrel/internal/wire"
	"github.com/petrel-mta/petrel/smtp"
)

// SMTP AUTH, RFC 4954, with the SASL mechanisms PLAIN (RFC 4616) and LOGIN
// (draft-murchison-sasl-login). AUTH is offered and accepted only once TLS
// is active (STARTTLS done, or implicit TLS), and only when the backend's
// Session implements AuthSession. There is no way to allow it in plaintext
// (requirements S-SUB-04, O-CFG-02).

// maxAuthLine bounds an AUTH command line and each SASL response line, CRLF
// not counted. RFC 4954 §4: "12288 octets is considered to be a sufficient
// line length limit for handling of deployed authentication mechanisms".
const maxAuthLine = 12288

// authMechanisms is the EHLO keyword's value (RFC 4954 §3).
const authMechanisms = "PLAIN LOGIN"

// Defaults for the AUTH failure limits (Options).
const (
	DefaultMaxAuthFailures   = 5
	DefaultAuthFailureWindow = 5 * time.Minute
	DefaultAuthFailureDelay  = time.Second
)

var (
	enh556 = smtp.EnhancedCode{Class: 5, Subject: 5, Detail: 6}
	enh578 = smtp.EnhancedCode{Class: 5, Subject: 7, Detail: 8}

	errAuthOK = &smtp.Error{Code: smtp.C235AuthOK, Enhanced: smtp.E270Security, Message: "Authentication successful"}
	// RFC 4954 §6: 538 for a mechanism that needs an encrypted
	// connection; here that is every mechanism.
	errAuthNeedTLS = &smtp.Error{Code: smtp.C538EncryptionRequired, Enhanced: smtp.E5711EncryptRequired,
		Message: "Encryption required for requested authentication mechanism"}
	errAuthNeedEHLO   = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "Send EHLO first"}
	errAuthAgain      = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "Already authenticated"}
	errAuthInTx       = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "AUTH not permitted during a mail transaction"}
	errAuthSyntax     = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax: AUTH mechanism [initial-response]"}
	errAuthMechanism  = &smtp.Error{Code: smtp.C504ParamNotImpl, Enhanced: smtp.E554InvalidArgs, Message: "Unrecognized authentication mechanism"}
	errAuthCancelled  = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E570Security, Message: "Authentication cancelled"}
	errAuthBase64     = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E552SyntaxError, Message: "Invalid base64 data"}
	errAuthMalformed  = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E552SyntaxError, Message: "Malformed authentication data"}
	errAuthLineLength = &smtp.Error{Code: smtp.C500SyntaxError, Enhanced: enh556, Message: "Authentication exchange line is too long"}
	errAuthInvalid    = &smtp.Error{Code: smtp.C535AuthInvalid, Enhanced: enh578, Message: "Authentication credentials invalid"}
	errAuthTooMany    = &smtp.Error{Code: smtp.C454TLSUnavailable, Enhanced: smtp.E470Security,
		Message: "Too many authentication failures, try again later"}
	errAuthTemporary = &smtp.Error{Code: smtp.C454TLSUnavailable, Enhanced: smtp.E470Security,
		Message: "Temporary authentication failure, try again later"}
)

// LOGIN's challenges: base64 of "Username:" and "Password:".
const (
	loginUsername = "VXNlcm5hbWU6"
	loginPassword = "UGFzc3dvcmQ6"
)

// authOffered reports whether AUTH is offered now: TLS is active and the
// Session can authenticate.
func (c *conn) authOffered() bool {
	_, ok := c.sess.(AuthSession)
	return ok && c.tlsState != nil
}

// handleAUTH: RFC 4954 §4.
func (c *conn) handleAUTH(ctx context.Context, arg string) error {
	as, ok := c.sess.(AuthSession)
	if !ok {
		return notImplemented(c, ctx, arg)
	}
	switch {
	case c.tlsState == nil:
		// S-SUB-05: never a 334 or a 235 in plaintext, and the
		// backend never sees credentials sent in clear.
		c.log.Warn("AUTH refused before TLS")
		return errAuthNeedTLS
	case !c.esmtp:
		return errAuthNeedEHLO
	case c.authUser != "":
		return errAuthAgain // §4: "MUST reject any further AUTH commands with a 503"
	case c.tx != nil || c.bdat != nil:
		return errAuthInTx // §4: "not permitted during a mail transaction"
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if mech == "" {
		return errAuthSyntax
	}
	mech = strings.ToUpper(mech)
	if mech != "PLAIN" && mech != "LOGIN" {
		return errAuthMechanism
	}
	key := authKey(peerIP(c.raw.RemoteAddr()))
	if c.s.authLimiter.blocked(key, c.s.opts.Now()) {
		c.log.Warn("AUTH refused: too many failures from this client", "mech", mech)
		return errAuthTooMany
	}

	var identity, username string
	var password []byte
	defer func() { clear(password) }()
	switch mech {
	case "PLAIN":
		msg, err := c.saslResponse(ir, hasIR, "")
		if err != nil {
			return err
		}
		defer clear(msg)
		// RFC 4616 §2: [authzid] NUL authcid NUL passwd.
		if bytes.Count(msg, []byte{0}) != 2 {
			return errAuthMalformed
		}
		parts := bytes.SplitN(msg, []byte{0}, 3)
		identity, username = string(parts[0]), string(parts[1])
		password = bytes.Clone(parts[2])
	case "LOGIN":
		u, err := c.saslResponse(ir, hasIR, loginUsername)
		if err != nil {
			return err
		}
		username = string(u)
		if !validName(username, false) {
			return errAuthMalformed // before asking for the password
		}
		if password, err = c.saslResponse("", false, loginPassword); err != nil {
			return err
		}
	}
	if !validName(identity, true) || !validName(username, false) || len(password) == 0 || bytes.IndexByte(password, 0) >= 0 {
		return errAuthMalformed
	}
	log := c.log.With("mech", mech, "user", logName(username))
	if identity != "" && identity != username {
		// §5.5: the authorization identity must be the user's own
		// (no administrative mapping exists).
		log.Warn("AUTH failed: authorization identity differs from the user name", "authzid", logName(identity))
		return c.authFailed(ctx, key, errAuthInvalid)
	}
	if c.s.authLimiter.blocked(key, c.s.opts.Now()) {
		// Failures on other connections while this one was in the
		// exchange.
		log.Warn("AUTH refused: too many failures from this client")
		return errAuthTooMany
	}
	err := as.Auth(ctx, mech, identity, username, password)
	if err == nil {
		c.authUser = username
		log.Info("AUTH succeeded")
		return c.ok(errAuthOK.Code, errAuthOK.Enhanced, errAuthOK.Message)
	}
	var se *smtp.Error
	switch {
	case errors.As(err, &se) && se.Code >= 500:
		log.Warn("AUTH failed", "reply", se.Error())
		return c.authFailed(ctx, key, se)
	case errors.As(err, &se) && se.Code >= 400:
		log.Warn("AUTH temporary failure", "reply", se.Error())
		return se
	default:
		log.Error("AUTH backend error", "err", err)
		return errAuthTemporary
	}
}

// authFailed records a failed attempt against the client, waits
// AuthFailureDelay (so guessing is slow even within the limit) and returns
// reply.
func (c *conn) authFailed(ctx context.Context, key netip.Prefix, reply error) error {
	c.s.authLimiter.fail(key, c.s.opts.Now())
	if d := c.s.opts.AuthFailureDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return reply
}

// saslResponse returns the decoded client response: the initial response
// ir when the client sent one ("=" is the empty one, RFC 4954 §4),
// otherwise the response to the challenge (base64 already, "" for the
// empty challenge "334 "). "*" cancels the exchange (§4: 501).
func (c *conn) saslResponse(ir string, hasIR bool, challenge string) ([]byte, error) {
	line := ir
	if !hasIR {
		c.writeReplyLines(smtp.C334AuthChallenge, smtp.NoEnhancedCode, challenge)
		var err error
		if line, err = c.readAuthLine(); err != nil {
			return nil, err
		}
		if line == "*" {
			return nil, errAuthCancelled
		}
	} else if line == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, errAuthBase64
	}
	return b, nil
}

// readAuthLine sends the challenge and reads one response line within
// CommandTimeout. Errors end the exchange: a line too long or with a bare
// CR or LF is answered, a read error or shutdown ends the connection.
func (c *conn) readAuthLine() (string, error) {
	if err := c.flush(); err != nil {
		return "", c.readFailed(err)
	}
	line, err := c.readLine(maxAuthLine + 2)
	switch {
	case err == nil:
		return line, nil
	case errors.Is(err, wire.ErrLineTooLong):
		return "", errAuthLineLength
	case errors.Is(err, wire.ErrBareLF), errors.Is(err, wire.ErrBareCR):
		return "", errCmdBareNewline
	case errors.Is(err, errShuttingDown):
		c.closeWhy = "shutdown"
		return "", &closeReply{reply: errShuttingDown}
	default:
		return "", c.readFailed(err)
	}
}

// validName checks a SASL identity: UTF-8 without control characters
// (RFC 4616 §2: UTF8SAFE, after SASLprep), not empty unless it may be.
func validName(s string, mayBeEmpty bool) bool {
	if s == "" {
		return mayBeEmpty
	}
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// logName bounds a client-chosen name written to the log.
func logName(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	s = s[:limit]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// authKey is what failures are counted by: an IPv4 address or an IPv6 /64
// (a host usually has a whole /64). Connections that are not TCP share the
// zero key.
func authKey(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	return peerPrefix(ip.Unmap())
}

// AuthLimiter counts failed AUTH attempts per client (an IPv4 address or an
// IPv6 /64) over a sliding window; a client with MaxAuthFailures failures
// in the window gets "454 4.7.0" to every AUTH, without the backend being
// asked, until the oldest of them leaves the window. A successful AUTH does
// not clear the count: a client with one valid account must not reset its
// guessing budget for the others. One limiter may be shared by several
// Servers (Options.AuthLimiter), so that the submission ports (587, 465)
// count together. It is safe for concurrent use.
type AuthLimiter struct {
	max    int
	window time.Duration

	mu        sync.Mutex
	fails     map[netip.Prefix][]time.Time
	lastSweep time.Time
}

// authLimiterMaxClients bounds the clients an AuthLimiter remembers; over
// it an arbitrary one is forgotten.
const authLimiterMaxClients = 1 << 16

// NewAuthLimiter returns a limiter allowing maxFailures failed attempts
// per client within window. Zero values take DefaultMaxAuthFailures and
// DefaultAuthFailureWindow.
func NewAuthLimiter(maxFailures int, window time.Duration) *AuthLimiter {
	setDefault(&maxFailures, DefaultMaxAuthFailures)
	setDefault(&window, DefaultAuthFailureWindow)
	return &AuthLimiter{max: maxFailures, window: window, fails: make(map[netip.Prefix][]time.Time)}
}

// recent drops the failures of key that left the window at now and
// returns those left. l.mu is held.
func (l *AuthLimiter) recent(key netip.Prefix, now time.Time) []time.Time {
	ts := l.fails[key]
	i := 0
	for i < len(ts) && !ts[i].After(now.Add(-l.window)) {
		i++
	}
	if i == 0 {
		return ts
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, key)
		return nil
	}
	l.fails[key] = ts
	return ts
}

// blocked reports whether key has used up its failures at now.
func (l *AuthLimiter) blocked(key netip.Prefix, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recent(key, now)) >= l.max
}

// fail records a failed attempt by key at now.
func (l *AuthLimiter) fail(key netip.Prefix, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > l.window {
		// Forget clients whose failures all left the window, at most
		// once per window so the cost stays linear.
		l.lastSweep = now
		for k := range l.fails {
			l.recent(k, now)
		}
	}
	ts := l.recent(key, now)
	if ts == nil && len(l.fails) >= authLimiterMaxClients {
		for k := range l.fails {
			delete(l.fails, k)
			break
		}
	}
	if len(ts) >= l.max {
		ts = ts[1:] // only the last max failures matter
	}
	l.fails[key] = append(ts, now)
}
