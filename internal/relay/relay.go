// Package relay is the daemon's smtpserver.Backend: it decides which
// recipients a session may use (local domains only; Petrel is never an open
// relay, RFC 5321 §3.6 / RFC 2505), adds the Received header (RFC 5321 §4.4)
// and stores each message durably before the server answers 250.
//
// For now local recipients are delivered straight to Maildir (one Maildir per
// local part of a local domain); the durable queue and remote delivery come
// with the MTA issue. TLS alone never authorises relaying (RFC 3207 §4).
package relay

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
)

// Store keeps a message for a set of local mailboxes. Deliver must return
// nil only when the message is durable.
type Store interface {
	Deliver(ctx context.Context, mailboxes []string, msg io.Reader) (id string, size int64, err error)
}

// Options configure a Backend.
type Options struct {
	// Domains are the local domains, lowercase, without trailing dot.
	Domains []string
	// Store keeps accepted messages.
	Store Store
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
	store         Store
	log           *slog.Logger
	users         Verifier
	authListeners map[string]bool
}

// New returns a Backend.
func New(opts Options) *Backend {
	b := &Backend{domains: make(map[string]bool), store: opts.Store, log: opts.Log, users: opts.Users,
		authListeners: make(map[string]bool)}
	for _, l := range opts.AuthListeners {
		b.authListeners[l] = true
	}
	for _, d := range opts.Domains {
		b.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
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
	b         *Backend
	c         *smtpserver.Conn
	from      smtp.Path
	mailboxes []string
}

func (s *session) Mail(_ context.Context, from smtp.Path, _ *smtpserver.MailOptions) error {
	s.from = from
	s.mailboxes = s.mailboxes[:0]
	return nil
}

func (s *session) Rcpt(_ context.Context, to smtp.Path, _ *smtpserver.RcptOptions) error {
	mb, ok := s.b.Local(to)
	if !ok {
		s.c.Logger().Info("recipient refused: relay access denied", "from", s.from.String(), "to", to.String())
		return ErrRelayDenied
	}
	s.mailboxes = append(s.mailboxes, mb)
	return nil
}

func (s *session) Data(ctx context.Context, r io.Reader) error {
	id := NewID(time.Now())
	msg := io.MultiReader(strings.NewReader(s.c.Received(id)), r)
	_, size, err := s.b.store.Deliver(ctx, s.mailboxes, msg)
	if err != nil {
		var se *smtp.Error
		if errors.As(err, &se) || ctx.Err() != nil || errors.Is(err, io.ErrUnexpectedEOF) {
			return err // the client's fault or gone: the server replies or closes
		}
		s.c.Logger().Error("message not stored", "id", id, "err", err)
		return errStorage
	}
	attrs := []any{"id", id, "from", s.from.String(), "rcpts", rcptList(s.c.Recipients()), "size", size}
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

func (s *session) Reset(context.Context) { s.mailboxes = s.mailboxes[:0] }

func (s *session) Close() error { return nil }

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// NewID returns a message ID: 40 bits of time (milliseconds) and 40 random
// bits, in Crockford's base32, 16 characters, sortable by time.
func NewID(now time.Time) string {
	var b [10]byte
	ms := uint64(now.UnixMilli())
	for i := 4; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[5:])
	return idEncoding.EncodeToString(b[:])
}
