// Package relay is the daemon's smtpserver.Backend: it decides which
// recipients a session may use, adds the Received header (RFC 5321 §4.4) and
// puts each message in the durable queue before the server answers 250.
//
// Petrel is never an open relay (RFC 5321 §3.6, RFC 2505): a recipient in a
// local domain is always accepted; any other only from a client that
// authenticated (SMTP AUTH, on the submission listeners). TLS alone never
// authorises relaying (RFC 3207 §4), and there are no trusted networks, not
// even loopback: a local proxy must not turn Petrel into an open relay.
package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
)

// Queue keeps accepted messages; Put must return nil only when the message
// is durable (internal/queue's contract).
type Queue interface {
	Put(ctx context.Context, env queue.Envelope, body io.Reader) (id string, err error)
}

// Options configure a Backend.
type Options struct {
	// Domains are the local domains, lowercase, without trailing dot.
	Domains []string
	// Queue keeps accepted messages.
	Queue Queue
	// Log gets one line per accepted or failed message.
	Log *slog.Logger
	// Users checks AUTH credentials; nil offers no AUTH.
	Users Verifier
	// AuthListeners names the listeners (smtpserver.Options.Name) whose
	// sessions offer AUTH: submission and submissions, never the MX.
	AuthListeners []string
}

// Verifier checks a user's password (internal/users.DB is one).
type Verifier interface {
	Verify(ctx context.Context, name string, password []byte) bool
}

// Backend implements smtpserver.Backend.
type Backend struct {
	domains       map[string]bool
	primary       string // the first local domain, for <Postmaster>
	queue         Queue
	log           *slog.Logger
	users         Verifier
	authListeners map[string]bool
}

// New returns a Backend.
func New(opts Options) *Backend {
	b := &Backend{domains: make(map[string]bool), queue: opts.Queue, log: opts.Log, users: opts.Users,
		authListeners: make(map[string]bool)}
	for _, l := range opts.AuthListeners {
		b.authListeners[l] = true
	}
	for _, d := range opts.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		b.domains[d] = true
		if b.primary == "" {
			b.primary = d
		}
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// Replies of the relay policy.
var (
	ErrRelayDenied = &smtp.Error{Code: smtp.C554TransactionFailed, Enhanced: smtp.E571DeliveryNotAuth, Message: "Relay access denied"}
	errStorage     = &smtp.Error{Code: smtp.C452InsufficientStore, Enhanced: smtp.E431SystemFull, Message: "Insufficient system storage, try again later"}
)

// NewSession implements smtpserver.Backend.
func (b *Backend) NewSession(_ context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	s := &session{b: b, c: c}
	if b.users != nil && b.authListeners[c.Listener()] {
		return &authSession{s}, nil
	}
	return s, nil
}

var errAuthInvalid = &smtp.Error{Code: smtp.C535AuthInvalid, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 7, Detail: 8},
	Message: "Authentication credentials invalid"}

// authSession is a session on a listener that offers AUTH (the server
// offers it only inside TLS). Relaying for authenticated users arrives
// with remote delivery; today they send to the local domains like anyone.
type authSession struct{ *session }

func (s *authSession) Auth(ctx context.Context, mech, _, username string, password []byte) error {
	if !s.b.users.Verify(ctx, username, password) {
		return errAuthInvalid
	}
	return nil
}

// Local reports the mailbox a recipient is delivered to, or false when it
// is not in a local domain. <Postmaster> without a domain is always local
// (RFC 5321 §4.1.1.3). Address literals are never local: a relay test
// favourite, and Petrel does not deliver by IP address.
func (b *Backend) Local(to smtp.Path) (mailbox string, ok bool) {
	if to.IsPostmaster() {
		return "postmaster", true
	}
	if to.IsLiteral() || !b.domains[strings.ToLower(to.Domain)] {
		return "", false
	}
	return strings.ToLower(to.Local), true
}

type session struct {
	b     *Backend
	c     *smtpserver.Conn
	from  smtp.Path
	opts  smtpserver.MailOptions
	rcpts []queue.Recipient
}

func (s *session) Mail(_ context.Context, from smtp.Path, opts *smtpserver.MailOptions) error {
	s.from = from
	s.opts = *opts
	s.rcpts = s.rcpts[:0]
	return nil
}

func (s *session) Rcpt(_ context.Context, to smtp.Path, _ *smtpserver.RcptOptions) error {
	addr := to.String()
	if _, local := s.b.Local(to); local {
		if to.IsPostmaster() {
			addr = "postmaster@" + s.b.primary
		}
	} else if s.c.AuthUser() == "" || to.IsLiteral() {
		s.c.Logger().Info("recipient refused: relay access denied", "from", s.from.String(), "to", addr)
		return ErrRelayDenied
	}
	s.rcpts = append(s.rcpts, queue.Recipient{Addr: addr})
	return nil
}

func (s *session) Data(ctx context.Context, r io.Reader) error {
	id := queue.NewID(time.Now())
	msg := io.MultiReader(strings.NewReader(s.c.Received(id)), r)
	env := queue.Envelope{ID: id, From: s.from.String(), Rcpts: s.rcpts, Attrs: s.attrs()}
	size := &countingReader{r: msg}
	_, err := s.b.queue.Put(ctx, env, size)
	if err != nil {
		var se *smtp.Error
		if errors.As(err, &se) || ctx.Err() != nil || errors.Is(err, io.ErrUnexpectedEOF) {
			return err // the client's fault or gone: the server replies or closes
		}
		s.c.Logger().Error("message not stored", "id", id, "err", err)
		return errStorage
	}
	attrs := []any{"id", id, "from", s.from.String(), "rcpts", rcptList(s.c.Recipients()), "size", size.n}
	if st := s.c.TLS(); st != nil {
		attrs = append(attrs, "tls", true)
	}
	s.c.Logger().Info("message accepted", attrs...)
	return &smtp.Error{Code: smtp.C250OK, Enhanced: smtp.E200Undefined, Message: "OK: queued as " + id}
}

func rcptList(ps []smtp.Path) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

func (s *session) Reset(context.Context) { s.rcpts = s.rcpts[:0] }

// attrs records how the message was received, for delivery.
func (s *session) attrs() map[string]string {
	a := map[string]string{}
	if u := s.c.AuthUser(); u != "" {
		a[queue.AttrAuthUser] = u
	}
	if host, _, err := net.SplitHostPort(s.c.RemoteAddr().String()); err == nil {
		a[queue.AttrClientIP] = host
	}
	if s.opts.UTF8 {
		a[queue.AttrSMTPUTF8] = "yes"
	}
	if s.opts.Body != "" {
		a[queue.AttrBody] = string(s.opts.Body)
	}
	return a
}

// countingReader counts the octets read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (s *session) Close() error { return nil }
