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
