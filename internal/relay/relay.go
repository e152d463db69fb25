// Package relay is the daemon's smtpserver.Backend: it decides which
// recipients a session may use, adds the Received header (RFC 5321 §4.4) and
// makes each message durable before the server answers 250: in the queue,
// or, for a message that Options.Direct delivers at once (all recipients
// local Maildir mailboxes), in its mailboxes.
//
// Petrel is never an open relay (RFC 5321 §3.6, RFC 2505): a recipient in a
// local domain is accepted when it exists (see [Local]); any other only from
// a client that authenticated (SMTP AUTH, on the submission listeners) or,
// on the MX listener, from a configured trusted network. TLS alone never
// authorises relaying (RFC 3207 §4), and there are no trusted networks by
// default, not even loopback: a local proxy must not turn Petrel into an
// open relay. The submission listeners require AUTH before MAIL from
// everyone (RFC 6409 §4.3), trusted networks included.
//
// Local recipients are resolved when the message is accepted: aliases and
// catch-alls are expanded then (as Postfix's cleanup does with
// virtual_alias_maps), so the queue holds the final recipients, each with
// the original recipient as its ORCPT for DSNs (RFC 3461 §4.2).
package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
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
	// AuthListeners names the submission listeners
	// (smtpserver.Options.Name): their sessions offer AUTH and must
	// authenticate before MAIL (RFC 6409 §4.3). Never the MX.
	AuthListeners []string
	// Trusted are the client networks that may relay without AUTH on the
	// other listeners (Postfix's mynetworks); none by default.
	Trusted []netip.Prefix
	// Local says which local recipients exist and how they are rewritten.
	Local Local
	// Direct, when set, is offered each message of at most DirectMax
	// octets before the queue: when it delivers the message durably to
	// every recipient while the client waits (local Maildirs), the
	// message is never queued, and its body is written to disk once
	// instead of twice. Nil queues every message.
	Direct Direct
}

// Direct delivers a message at once, or reports false having delivered
// nothing (internal/delivery.Deliverer is one).
type Direct interface {
	DeliverNow(ctx context.Context, msg queue.Message, data []byte) bool
}

// DirectMax is the largest message (Received header included) offered to
// Options.Direct; larger ones stream into the queue, as the queue streams
// bodies over 1 MiB to files.
const DirectMax = 1 << 20

// Local is the local recipient table.
type Local struct {
	// AcceptAny accepts every local part (each is its own mailbox); else
	// only the known ones: Users, Mailboxes, aliases, postmaster.
	AcceptAny bool
	// Users are the users of the users file; a user name is a local part
	// ("alice") or a whole address ("alice@example.org").
	Users Directory
	// Mailboxes are local parts that exist without being users.
	Mailboxes []string
	// Aliases map a local part (any local domain), an address of a local
	// domain or "@domain" (its catch-all) to one or more targets; a target
	// without "@" is a local part in the recipient's domain. Keys are
	// compared in lower case.
	Aliases map[string][]string
	// CatchAll receives the local parts that match nothing else, in every
	// local domain ("" refuses them).
	CatchAll string
	// Delimiter, when set ("+"), makes alice+tag the mailbox alice.
	Delimiter string
}

// Directory tells whether a user exists (internal/users.DB is one).
type Directory interface {
	Exists(name string) bool
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
	trusted       []netip.Prefix
	local         Local
	mailboxes     map[string]bool
	aliases       map[string][]string
	direct        Direct
	bufs          sync.Pool // *[]byte for messages offered to direct
}

// New returns a Backend.
func New(opts Options) *Backend {
	b := &Backend{domains: make(map[string]bool), queue: opts.Queue, log: opts.Log, users: opts.Users,
		authListeners: make(map[string]bool), trusted: opts.Trusted, local: opts.Local,
		mailboxes: make(map[string]bool), aliases: make(map[string][]string), direct: opts.Direct}
	for _, m := range opts.Local.Mailboxes {
		b.mailboxes[strings.ToLower(m)] = true
	}
	for k, v := range opts.Local.Aliases {
		b.aliases[strings.ToLower(k)] = v
	}
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
	s := &session{b: b, c: c, submission: b.authListeners[c.Listener()]}
	if !s.submission {
		s.trusted = b.isTrusted(c.RemoteAddr())
	}
	if b.users != nil && s.submission {
		return &authSession{s}, nil
	}
	return s, nil
}

var errAuthInvalid = &smtp.Error{Code: smtp.C535AuthInvalid, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 7, Detail: 8},
	Message: "Authentication credentials invalid"}

func (b *Backend) isTrusted(a net.Addr) bool {
	if len(b.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range b.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// authSession is a session on a submission listener: it offers AUTH (the
// server offers it only inside TLS).
type authSession struct{ *session }

func (s *authSession) Auth(ctx context.Context, mech, _, username string, password []byte) error {
	if !s.b.users.Verify(ctx, username, password) {
		return errAuthInvalid
	}
	return nil
}

// Replies to local recipients.
var (
	errAuthRequired = &smtp.Error{Code: smtp.C530AuthRequired, Enhanced: smtp.E570Security,
		Message: "Authentication required"}
	errAliasLoop = &smtp.Error{Code: smtp.C550MailboxUnavail, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 4, Detail: 6},
		Message: "Alias expansion loop or too deep"}
)

func errUnknown(addr string) error {
	return &smtp.Error{Code: smtp.C550MailboxUnavail, Enhanced: smtp.E511BadMailbox,
		Message: "<" + addr + ">: Recipient address rejected: User unknown in local recipient table"}
}

// maxAliasDepth bounds nested alias expansion.
const maxAliasDepth = 10

// IsLocal reports whether a recipient is in a local domain. <Postmaster>
// without a domain is always local (RFC 5321 §4.1.1.3). Address literals
// are never local: a relay test favourite, and Petrel does not deliver by
// IP address.
func (b *Backend) IsLocal(to smtp.Path) bool {
	return to.IsPostmaster() || (!to.IsLiteral() && b.domains[strings.ToLower(to.Domain)])
}

// Resolve returns the addresses a local recipient is delivered to, after
// aliases and catch-alls: itself when it is a known mailbox, or the
// expansion of its alias (which may hold remote addresses); an
// *smtp.Error (550 5.1.1) when it does not exist. <Postmaster> is
// postmaster of the first local domain.
func (b *Backend) Resolve(to smtp.Path) ([]string, error) {
	if to.IsPostmaster() && to.Domain == "" {
		return b.resolve("postmaster", b.primary, "postmaster@"+b.primary, 0, map[string]bool{})
	}
	return b.resolve(to.Local, strings.ToLower(to.Domain), to.String(), 0, map[string]bool{})
}

// resolve resolves local@dom, which is addr as it is to be queued.
func (b *Backend) resolve(local, dom, addr string, depth int, seen map[string]bool) ([]string, error) {
	key := strings.ToLower(local + "@" + dom)
	if depth > maxAliasDepth || seen[key] {
		return nil, errAliasLoop
	}
	seen[key] = true
	defer delete(seen, key) // a sibling may reach the same target
	lower := strings.ToLower(local)
	base := lower
	if d := b.local.Delimiter; d != "" {
		if i := strings.Index(lower, d); i > 0 {
			base = lower[:i]
		}
	}
	for _, k := range []string{lower + "@" + dom, lower, base + "@" + dom, base} {
		if targets, ok := b.aliases[k]; ok {
			return b.expand(targets, dom, depth, seen)
		}
	}
	if b.known(base, dom) {
		return []string{addr}, nil
	}
	if targets, ok := b.aliases["@"+dom]; ok {
		return b.expand(targets, dom, depth, seen)
	}
	if b.local.CatchAll != "" {
		return b.expand([]string{b.local.CatchAll}, dom, depth, seen)
	}
	return nil, errUnknown(addr)
}

// known reports whether the mailbox base exists (without alias lookup).
func (b *Backend) known(base, dom string) bool {
	if b.local.AcceptAny || base == "postmaster" || b.mailboxes[base] {
		return true
	}
	u := b.local.Users
	return u != nil && (u.Exists(base) || u.Exists(base+"@"+dom))
}

func (b *Backend) expand(targets []string, dom string, depth int, seen map[string]bool) ([]string, error) {
	var out []string
	for _, t := range targets {
		local, tdom, ok := strings.Cut(t, "@")
		if !ok {
			tdom = dom
		}
		tdom = strings.ToLower(strings.TrimSuffix(tdom, "."))
		addr := smtp.Path{Local: local, Domain: tdom}.String()
		if !b.domains[tdom] {
			out = append(out, addr) // forwarding
			continue
		}
		if seen[strings.ToLower(local+"@"+tdom)] {
			// alice → [alice, archive]: the alias names its own
			// mailbox, which therefore exists.
			out = append(out, addr)
			continue
		}
		r, err := b.resolve(local, tdom, addr, depth+1, seen)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

type session struct {
	b          *Backend
	c          *smtpserver.Conn
	submission bool // a submission listener: AUTH before MAIL
	trusted    bool // from a trusted network (never on submission)
	from       smtp.Path
	opts       smtpserver.MailOptions
	rcpts      []queue.Recipient
	seen       map[string]bool // rcpts' addresses, lower-cased
}

func (s *session) Mail(_ context.Context, from smtp.Path, opts *smtpserver.MailOptions) error {
	if s.submission && s.c.AuthUser() == "" {
		// RFC 6409 §4.3 (S-SUB-11): the MSA refuses MAIL until the
		// client has authenticated, whatever the recipients.
		return errAuthRequired
	}
	s.from = from
	s.opts = *opts
	s.clearRcpts()
	return nil
}

func (s *session) Rcpt(_ context.Context, to smtp.Path, _ *smtpserver.RcptOptions) error {
	if !s.b.IsLocal(to) {
		if (s.c.AuthUser() == "" && !s.trusted) || to.IsLiteral() {
			s.c.Logger().Info("recipient refused: relay access denied", "from", s.from.String(), "to", to.String())
			return ErrRelayDenied
		}
		s.add(queue.Recipient{Addr: to.String()})
		return nil
	}
	targets, err := s.b.Resolve(to)
	if err != nil {
		s.c.Logger().Info("recipient refused", "from", s.from.String(), "to", to.String(), "reply", err.Error())
		return err
	}
	orig := to.String()
	if to.IsPostmaster() && to.Domain == "" {
		orig = "postmaster@" + s.b.primary
	}
	for _, t := range targets {
		r := queue.Recipient{Addr: t}
		if t != orig {
			r.ORCPT = "rfc822;" + orig
		}
		s.add(r)
	}
	return nil
}

// add adds r to the transaction unless it is there already (two aliases
// naming one mailbox deliver once).
func (s *session) add(r queue.Recipient) {
	key := strings.ToLower(r.Addr)
	if s.seen[key] {
		return
	}
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	s.seen[key] = true
	s.rcpts = append(s.rcpts, r)
}

func (s *session) clearRcpts() {
	s.rcpts = s.rcpts[:0]
	clear(s.seen)
}

func (s *session) Data(ctx context.Context, r io.Reader) error {
	id := queue.NewID(time.Now())
	received := s.c.Received(id)
	env := queue.Envelope{ID: id, From: s.from.String(), Rcpts: s.rcpts, Attrs: s.attrs()}
	var msg io.Reader = io.MultiReader(strings.NewReader(received), r)
	if s.b.direct != nil && s.allLocal() {
		bp := s.b.getBuf()
		defer s.b.bufs.Put(bp)
		data, whole, err := readUpTo(append((*bp)[:0], received...), r, DirectMax)
		*bp = data[:0]
		if err != nil {
			return s.notStored(ctx, id, err)
		}
		if whole && s.b.direct.DeliverNow(ctx, queue.Message{ID: id, From: env.From, Rcpts: env.Rcpts,
			Received: time.Now(), Size: int64(len(data)), Attrs: env.Attrs}, data) {
			return s.accepted(id, int64(len(data)), "delivered")
		}
		msg = io.MultiReader(bytes.NewReader(data), r) // r is at its end unless !whole
	}
	size := &countingReader{r: msg}
	if _, err := s.b.queue.Put(ctx, env, size); err != nil {
		return s.notStored(ctx, id, err)
	}
	return s.accepted(id, size.n, "queue")
}

// allLocal reports whether every recipient of the transaction is in a
// local domain: only such a message may be delivered at once, so no other
// is read into a buffer first.
func (s *session) allLocal() bool {
	for _, r := range s.rcpts {
		_, dom, _ := strings.Cut(r.Addr, "@")
		if !s.b.domains[strings.ToLower(strings.TrimSuffix(dom, "."))] {
			return false
		}
	}
	return len(s.rcpts) > 0
}

// accepted logs the message and returns the 250 reply; how says where it
// is now: "queue", or "delivered" (Options.Direct).
func (s *session) accepted(id string, size int64, how string) error {
	attrs := []any{"id", id, "from", s.from.String(), "rcpts", rcptList(s.c.Recipients()), "size", size, "stored", how}
	if st := s.c.TLS(); st != nil {
		attrs = append(attrs, "tls", true)
	}
	s.c.Logger().Info("message accepted", attrs...)
	text := "OK: queued as " + id
	if how == "delivered" {
		text = "OK: delivered as " + id
	}
	return &smtp.Error{Code: smtp.C250OK, Enhanced: smtp.E200Undefined, Message: text}
}

// notStored turns a failure to read or store the message into the reply.
func (s *session) notStored(ctx context.Context, id string, err error) error {
	var se *smtp.Error
	if errors.As(err, &se) || ctx.Err() != nil || errors.Is(err, io.ErrUnexpectedEOF) {
		return err // the client's fault or gone: the server replies or closes
	}
	s.c.Logger().Error("message not stored", "id", id, "err", err)
	return errStorage
}

// getBuf returns a buffer for a message offered to Direct.
func (b *Backend) getBuf() *[]byte {
	if bp, ok := b.bufs.Get().(*[]byte); ok {
		return bp
	}
	buf := make([]byte, 0, 64<<10)
	return &buf
}

// readUpTo appends r's data to buf until EOF (whole) or until buf holds
// more than limit octets (not whole: the rest is still in r).
func readUpTo(buf []byte, r io.Reader, limit int) (data []byte, whole bool, err error) {
	for len(buf) <= limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(limit+1-len(buf), max(cap(buf), 4096)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
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

func (s *session) Reset(context.Context) { s.clearRcpts() }

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
