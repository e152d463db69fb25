package smtpserver

import (
	"context"
	"io"

	"github.com/petrel-mta/petrel/smtp"
)

// Backend makes a Session for each connection. NewSession is called when a
// client connects, before the greeting, and again after every successful
// STARTTLS handshake (RFC 3207 §4.2): the Session from before TLS has been
// closed by then, so nothing a backend learnt in plaintext survives into the
// TLS session.
//
// A returned *smtp.Error is sent to the client (use 421 or 554) and the
// connection is closed; any other error is logged and answered with a
// generic 421.
type Backend interface {
	NewSession(ctx context.Context, c *Conn) (Session, error)
}

// BackendFunc adapts a function to the Backend interface.
type BackendFunc func(ctx context.Context, c *Conn) (Session, error)

// NewSession calls f.
func (f BackendFunc) NewSession(ctx context.Context, c *Conn) (Session, error) { return f(ctx, c) }

// Session is one SMTP session on one connection (or its TLS part). Its
// methods are called one at a time, so a Session needs no locking of its
// own, and may call the methods of its Conn. They run on the connection's
// goroutine, except Data for a BDAT transfer, which runs on a goroutine of
// its own while the connection reads the chunks; during it the connection
// answers only commands that change no state the Conn reports (NOOP, HELP,
// VRFY, refusals), and waits for Data to return before any other.
//
// A method that refuses returns an *smtp.Error, which becomes the reply
// exactly. Any other error is logged with the connection ID and answered with
// "451 4.3.0", so internal error text never reaches the peer.
type Session interface {
	// Mail starts a transaction (MAIL FROM). from is the null path for <>.
	Mail(ctx context.Context, from smtp.Path, opts *MailOptions) error
	// Rcpt adds a recipient (RCPT TO).
	Rcpt(ctx context.Context, to smtp.Path, opts *RcptOptions) error
	// Data receives the message (DATA or BDAT). r returns the message
	// octets, transparency removed, and then io.EOF. When the client's
	// data breaks a rule (bare CR or LF, a line over 1000 octets, the size
	// limit), r returns that error instead of io.EOF: Data must then
	// abandon the message and return an error. Data must return nil only
	// once the message is durably stored (fsync): that nil is the 250.
	Data(ctx context.Context, r io.Reader) error
	// Reset abandons the current transaction (RSET, EHLO, or the end of a
	// transaction, successful or not).
	Reset(ctx context.Context)
	// Close ends the session: at disconnect and before STARTTLS's new
	// Session is made.
	Close() error
}

// AuthSession is a Session that can authenticate clients: SMTP AUTH (RFC
// 4954) is advertised and accepted only when the Session implements it,
// and only once TLS is active (STARTTLS done, or implicit TLS). Before TLS
// AUTH is not advertised and is answered "538 5.7.11 Encryption required for
// requested authentication mechanism" (or "530 5.7.0" on a RequireTLS
// listener); no option allows it in plaintext.
//
// The server runs the SASL exchange (PLAIN, RFC 4616, and LOGIN) itself and
// calls Auth once per attempt with the decoded credentials. mech is "PLAIN"
// or "LOGIN"; identity is the PLAIN authorization identity (authzid), ""
// for LOGIN or when the client sent none; the server has already refused
// one that differs from username, so it is "" or equal to username.
// username is the authentication identity (authcid): non-empty UTF-8
// without control characters. password is non-empty; the server clears it
// when Auth returns, so Auth must not keep it. Auth should compare in
// constant time, or with a slow hash (bcrypt, argon2id), and behave alike
// for unknown users and wrong passwords.
//
// A nil result authenticates the client as username (Conn.AuthUser) for the
// rest of the session: "235 2.7.0 Authentication successful". A returned
// *smtp.Error becomes the reply exactly; a 5xx one (use 535 5.7.8
// "Authentication credentials invalid", or 534 5.7.9) counts as a failed
// attempt for the per-client limit (Options.MaxAuthFailures) and is delayed
// by Options.AuthFailureDelay. Any other error is logged and answered "454
// 4.7.0" (a temporary failure, RFC 4954 §6), which is not counted.
//
// Auth is called from the connection's goroutine, like the Session's other
// methods. The server never logs the password or the base64 exchange; it
// logs the user name and the outcome.
type AuthSession interface {
	Session
	Auth(ctx context.Context, mech, identity, username string, password []byte) error
}

// BodyType is the MAIL BODY parameter (RFC 6152).
type BodyType string

// Body types Petrel accepts.
const (
	Body7Bit     BodyType = "7BIT"
	Body8BitMIME BodyType = "8BITMIME"
)

// MailOptions are the MAIL FROM parameters the server understood.
type MailOptions struct {
	// Size is the declared SIZE (RFC 1870), 0 when absent. The server has
	// already refused a declared size above its limit.
	Size int64
	// Body is the BODY parameter (RFC 6152), empty when absent.
	Body BodyType
	// UTF8 is set by the SMTPUTF8 parameter (RFC 6531 §3.4).
	UTF8 bool
}

// RcptOptions are the RCPT TO parameters the server understood. There are
// none yet; the type exists so that DSN (RFC 3461) can add them.
type RcptOptions struct{}
