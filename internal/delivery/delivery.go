// Package delivery delivers a leased message (internal/queue) to each of its
// due recipients: recipients in a local domain to a Local transport (a
// Maildir store; LMTP later), every other recipient over SMTP, to the MX
// hosts of its domain (RFC 5321 §5.1, null MX of RFC 7505, implicit MX) or to
// one smarthost, with the TLS security level of the policy (design.md).
//
// A [Deliverer] is safe for concurrent use by several delivery workers. It
// keeps a small cache of SMTP connections per next-hop address so that
// several messages to one host travel over one connection (one message at a
// time, RSET between transactions), and it bounds the deliveries in progress
// in total and per destination domain.
//
// Deliver returns one [queue.Result] per attempted recipient; recording them
// (queue.Update), and the DSNs for failures, are the delivery loop's job:
// [Loop] runs the recipe of the queue package's documentation with a
// Deliverer and internal/dsn.
package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
)

// Local is a local delivery transport: it stores msg in each of mailboxes
// (local parts, after alias mapping) and returns once the message is durable.
// *maildir.Store implements it; an LMTP client will too.
type Local interface {
	Deliver(ctx context.Context, mailboxes []string, msg io.Reader) (id string, size int64, err error)
}

// Dialer dials TCP connections to next hops (a test hook; nil uses a
// net.Dialer).
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// TLSPolicy chooses the TLS security level of remote deliveries.
type TLSPolicy struct {
	// Level is the level for MX delivery; nil means smtpclient.May
	// (opportunistic, Postfix's usual "may").
	Level *smtpclient.Level
	// Domains overrides Level per destination domain (lower case, no
	// trailing dot): "example.org" → smtpclient.Verify.
	Domains map[string]smtpclient.Level
	// ServerNames gives, per destination domain, the name to verify the
	// certificate against at levels verify and secure. Without one, verify
	// checks the MX host name (from unauthenticated DNS, as Postfix's
	// "verify") and secure the destination domain itself.
	ServerNames map[string]string
	// TLSConfig is the base TLS configuration (RootCAs for verify and
	// secure, a client certificate); nil uses the system roots.
	TLSConfig *tls.Config
}

// Smarthost relays every remote recipient to one host.
type Smarthost struct {
	// Addr is "host:port"; host may be a name (resolved with
	// Options.Resolver, A/AAAA only) or an address.
	Addr string
	// Level defaults to smtpclient.Verify.
	Level *smtpclient.Level
	// ServerName is the name to verify; default: the host of Addr.
	ServerName string
	// User and Password, when User is set, authenticate (AUTH PLAIN or
	// LOGIN), which smtpclient does only over verified TLS.
	User, Password string
}

// LMTP delivers the local recipients to a message store (Dovecot, Cyrus)
// by LMTP (RFC 2033) instead of to Options.Local. Each recipient gets its
// own reply after the data (§4.2): a 2xx delivers it, a 4xx defers it, a
// 5xx fails it, whatever happened to the others.
type LMTP struct {
	// Network is "unix" (Addr is the socket's path) or "tcp" (Addr is
	// "host:port"; not port 25, RFC 2033 §5).
	Network, Addr string
	// Level is the TLS level over TCP (smtpclient.None by default, as
	// Postfix's lmtp_tls_security_level); on a unix socket there is no TLS.
	Level smtpclient.Level
	// ServerName is the name to verify at levels verify and secure;
	// default: the host of Addr.
	ServerName string
}

// Options configure a Deliverer.
type Options struct {
	// LocalName is the EHLO name; default: the host name.
	LocalName string
	// LocalDomains are the domains delivered locally (case-insensitive).
	LocalDomains []string
	// Local stores local recipients' messages. Required when
	// LocalDomains is not empty, unless LMTP is set.
	Local Local
	// LMTP, when set, receives the local recipients instead of Local.
	// Recipients are given as whole addresses, as queued.
	LMTP *LMTP
	// Mailbox maps a local recipient address to its mailbox name; an
	// error fails the recipient permanently (550 5.1.1). Default: the
	// local part, lower-cased, without the part from RecipientDelimiter
	// on. (Aliases are expanded before messages are queued:
	// internal/relay.)
	Mailbox func(addr string) (string, error)
	// RecipientDelimiter, when set ("+"), makes alice+tag the mailbox
	// alice in the default Mailbox.
	RecipientDelimiter string

	// Resolver finds MX hosts and addresses; nil is net.DefaultResolver.
	Resolver dnsx.Resolver
	// TLS is the policy for MX delivery.
	TLS TLSPolicy
	// Smarthost, when set, receives every remote recipient instead of the
	// MX hosts.
	Smarthost *Smarthost

	// Port is the port of MX hosts, "25" by default (tests override it).
	Port string
	// Dialer dials next hops; nil uses a net.Dialer.
	Dialer Dialer
	// Timeouts bound each SMTP step (smtpclient's defaults: RFC 5321's).
	Timeouts smtpclient.Timeouts
	// AttemptTimeout, when positive, bounds each session with one host
	// (connect, TLS, the transaction).
	AttemptTimeout time.Duration

	// MaxConns bounds the deliveries in progress in total (default 100),
	// MaxPerDomain those to one destination domain (default 20), as
	// Postfix's default_process_limit and
	// default_destination_concurrency_limit: SMTP and LMTP deliveries,
	// which hold connections (local Maildir deliveries are bounded by the
	// delivery loop's workers).
	MaxConns, MaxPerDomain int
	// IdleTimeout is how long an idle connection is kept for the next
	// message (default 5 s); MaxMessagesPerConn how many messages one
	// connection carries (default 100). A negative IdleTimeout disables
	// connection reuse.
	IdleTimeout        time.Duration
	MaxMessagesPerConn int
	// MaxAddresses bounds the addresses (over all MX hosts) tried for one
	// domain in one delivery (default 10).
	MaxAddresses int

	// Logger receives one line per attempt; nil discards.
	Logger *slog.Logger
}

// Stats are counters since New.
type Stats struct {
	Attempts      uint64 // sessions tried (one per address)
	Delivered     uint64 // recipients delivered (local and remote)
	Deferred      uint64 // recipients deferred
	Failed        uint64 // recipients failed permanently
	TLSFallbacks  uint64 // sessions at level may that went plaintext
	TLSFailures   uint64 // sessions refused for lack of TLS under a required level
	ConnsOpened   uint64 // SMTP connections made
	ConnsReused   uint64 // transactions on a cached connection
	LocalMessages uint64 // Local.Deliver calls that succeeded
	// DirectMessages counts the messages DeliverNow delivered while
	// their client waited, without queueing them (among LocalMessages).
	DirectMessages uint64
}

type counters struct {
	attempts, delivered, deferred, failed, fallbacks, tlsFailures, opened, reused, local, direct atomic.Uint64
}

// Deliverer delivers messages. Make one with New; it is safe for concurrent
// use. Close it to close the cached connections.
type Deliverer struct {
	opts   Options
	local  map[string]bool
	log    *slog.Logger
	limits *limiter
	pool   *pool
	c      counters
}

// New returns a Deliverer.
func New(opts Options) (*Deliverer, error) {
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Port == "" {
		opts.Port = "25"
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 100
	}
	if opts.MaxPerDomain <= 0 {
		opts.MaxPerDomain = 20
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 5 * time.Second
	}
	if opts.MaxMessagesPerConn <= 0 {
		opts.MaxMessagesPerConn = 100
	}
	if opts.MaxAddresses <= 0 {
		opts.MaxAddresses = 10
	}
	if opts.Mailbox == nil {
		delim := opts.RecipientDelimiter
		opts.Mailbox = func(addr string) (string, error) {
			mb, err := defaultMailbox(addr)
			if err == nil && delim != "" {
				if i := strings.Index(mb, delim); i > 0 {
					mb = mb[:i]
				}
			}
			return mb, err
		}
	}
	if len(opts.LocalDomains) > 0 && opts.Local == nil && opts.LMTP == nil {
		return nil, errors.New("delivery: LocalDomains without a Local transport or LMTP")
	}
	if l := opts.LMTP; l != nil {
		switch l.Network {
		case "unix":
		case "tcp":
			if _, _, err := net.SplitHostPort(l.Addr); err != nil {
				return nil, fmt.Errorf("delivery: LMTP address %q: want HOST:PORT", l.Addr)
			}
		default:
			return nil, fmt.Errorf("delivery: LMTP network %q: want unix or tcp", l.Network)
		}
	}
	if sh := opts.Smarthost; sh != nil {
		if _, _, err := net.SplitHostPort(sh.Addr); err != nil {
			return nil, fmt.Errorf("delivery: smarthost %q: want HOST:PORT", sh.Addr)
		}
	}
	d := &Deliverer{
		opts:   opts,
		local:  map[string]bool{},
		log:    opts.Logger,
		limits: newLimiter(opts.MaxConns, opts.MaxPerDomain),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.pool = newPool(opts.IdleTimeout, opts.MaxMessagesPerConn, d.log)
	for _, dom := range opts.LocalDomains {
		d.local[normDomain(dom)] = true
	}
	return d, nil
}

// Close closes the idle cached connections (with QUIT) and stops caching.
// Deliveries in progress finish.
func (d *Deliverer) Close() error {
	d.pool.close()
	return nil
}

// Stats returns the counters.
func (d *Deliverer) Stats() Stats {
	return Stats{
		Attempts: d.c.attempts.Load(), Delivered: d.c.delivered.Load(), Deferred: d.c.deferred.Load(),
		Failed: d.c.failed.Load(), TLSFallbacks: d.c.fallbacks.Load(), TLSFailures: d.c.tlsFailures.Load(),
		ConnsOpened: d.c.opened.Load(), ConnsReused: d.c.reused.Load(), LocalMessages: d.c.local.Load(),
		DirectMessages: d.c.direct.Load(),
	}
}

func normDomain(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

func defaultMailbox(addr string) (string, error) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		i = len(addr) // <Postmaster>, RFC 5321 §4.1.1.3
	}
	if i == 0 {
		return "", errors.New("no local part")
	}
	return strings.ToLower(addr[:i]), nil
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return normDomain(addr[i+1:])
}

// Deliver attempts every due recipient of msg, those Pending or Deferred
// (the delivery loop passes the lease's Message with Rcpts set to
// Lease.Due), and returns one Result per attempted recipient, in no
// particular order. body opens the message; it is called at most once.
// Recipients are grouped by destination domain, and the domains are
// delivered concurrently within the Deliverer's limits. When ctx ends, the
// recipients not yet done are Deferred.
func (d *Deliverer) Deliver(ctx context.Context, msg queue.Message, body func() (io.ReadCloser, error)) []queue.Result {
	groups := map[string][]queue.Recipient{}
	var order []string
	for _, r := range msg.Rcpts {
		if r.State != queue.Pending && r.State != queue.Deferred {
			continue
		}
		key := domainOf(r.Addr)
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], r)
	}
	b := &lazyBody{open: body}
	results := make([][]queue.Result, len(order))
	var wg sync.WaitGroup
	for i, dom := range order {
		wg.Go(func() {
			results[i] = d.deliverDomain(ctx, msg, dom, groups[dom], b)
		})
	}
	wg.Wait()
	var out []queue.Result
	for _, rs := range results {
		for _, r := range rs {
			switch r.State {
			case queue.Delivered:
				d.c.delivered.Add(1)
			case queue.Failed:
				d.c.failed.Add(1)
			default:
				d.c.deferred.Add(1)
			}
		}
		out = append(out, rs...)
	}
	return out
}

// DeliverNow delivers msg (its recipients as Put would store them) to
// local Maildirs at once, while the SMTP client waits for its final reply,
// when every recipient is a local Maildir recipient whose mailbox is
// known: a message written durably to its Maildirs needs no queue copy,
// so each body is written to disk once, not twice (queue, then Maildir).
// It reports false, having delivered nothing, when the message is not such
// a message or the delivery failed; the caller then queues it as usual
// (the delivery loop retries, bounces, and so on). The Maildir store
// fsyncs before it returns, so true means durable.
func (d *Deliverer) DeliverNow(ctx context.Context, msg queue.Message, data []byte) bool {
	if d.opts.Local == nil || d.opts.LMTP != nil || len(msg.Rcpts) == 0 {
		return false
	}
	for _, r := range msg.Rcpts {
		dom := domainOf(r.Addr)
		if !d.local[dom] {
			return false // remote, or <Postmaster> without a domain: the queue's path
		}
		if _, err := d.opts.Mailbox(r.Addr); err != nil {
			return false // the queue's path fails it with a DSN
		}
	}
	res := d.deliverLocal(ctx, msg, msg.Rcpts, data)
	for _, r := range res {
		if r.State != queue.Delivered {
			d.c.deferred.Add(uint64(len(res)))
			return false
		}
	}
	d.c.delivered.Add(uint64(len(res)))
	d.c.direct.Add(1)
	return true
}

// lazyBody reads the message once, when first needed.
type lazyBody struct {
	open func() (io.ReadCloser, error)
	once sync.Once
	data []byte
	err  error
}

func (b *lazyBody) get() ([]byte, error) {
	b.once.Do(func() {
		rc, err := b.open()
		if err != nil {
			b.err = err
			return
		}
		defer rc.Close()
		if mem, ok := rc.(interface{ Bytes() []byte }); ok {
			b.data = mem.Bytes() // the queue's copy in memory; never changed
			return
		}
		b.data, b.err = io.ReadAll(rc)
	})
	return b.data, b.err
}

func all(rcpts []queue.Recipient, state queue.State, reply, mta string) []queue.Result {
	out := make([]queue.Result, len(rcpts))
	for i, r := range rcpts {
		out[i] = queue.Result{Addr: r.Addr, State: state, Reply: reply, RemoteMTA: mta}
	}
	return out
}

func (d *Deliverer) deliverDomain(ctx context.Context, msg queue.Message, dom string, rcpts []queue.Recipient, b *lazyBody) []queue.Result {
	limitKey := dom
	switch {
	case d.opts.Smarthost != nil && !d.local[dom]:
		limitKey = "smarthost " + d.opts.Smarthost.Addr // one destination
	case d.opts.LMTP != nil && (d.local[dom] || dom == ""):
		limitKey = "lmtp " + d.opts.LMTP.Addr
	}
	// Local Maildir deliveries open no connection: the delivery loop's
	// workers bound them, and the Maildir store batches them.
	maildirLocal := (d.local[dom] || (dom == "" && d.opts.Local != nil)) && d.opts.LMTP == nil
	if !maildirLocal {
		release, err := d.limits.acquire(ctx, limitKey)
		if err != nil {
			return all(rcpts, queue.Deferred, "451 4.4.5 Delivery not attempted: "+err.Error(), "")
		}
		defer release()
	}
	data, err := b.get()
	if err != nil {
		d.log.Error("cannot read queued message", "id", msg.ID, "err", err)
		return all(rcpts, queue.Deferred, "451 4.3.0 Cannot read the queued message", "")
	}
	if d.local[dom] || (dom == "" && (d.opts.Local != nil || d.opts.LMTP != nil)) {
		// A recipient without a domain is <Postmaster> (RFC 5321
		// §4.1.1.3): local.
		if d.opts.LMTP != nil {
			return d.deliverLMTP(ctx, msg, rcpts, data)
		}
		return d.deliverLocal(ctx, msg, rcpts, data)
	}
	if dom == "" {
		return all(rcpts, queue.Failed, "550 5.1.3 No local delivery for an address without a domain", "")
	}
	return d.deliverRemote(ctx, msg, dom, rcpts, data)
}

func (d *Deliverer) deliverLocal(ctx context.Context, msg queue.Message, rcpts []queue.Recipient, data []byte) []queue.Result {
	var out []queue.Result
	var boxes []string
	var ok []queue.Recipient
	for _, r := range rcpts {
		mb, err := d.opts.Mailbox(r.Addr)
		if err != nil {
			reply := "550 5.1.1 Mailbox unavailable: " + err.Error()
			d.log.Info("local delivery", "id", msg.ID, "rcpt", r.Addr, "result", "failed", "reply", reply)
			out = append(out, queue.Result{Addr: r.Addr, State: queue.Failed, Reply: reply})
			continue
		}
		boxes = append(boxes, mb)
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return out
	}
	var id string
	var size int64
	var err error
	if bl, ok := d.opts.Local.(interface {
		DeliverBytes(ctx context.Context, mailboxes []string, data []byte) (string, int64, error)
	}); ok {
		// Batched with the concurrent deliveries (maildir.Store).
		id, size, err = bl.DeliverBytes(ctx, boxes, data)
	} else {
		id, size, err = d.opts.Local.Deliver(ctx, boxes, bytes.NewReader(data))
	}
	if err != nil {
		reply := "451 4.3.0 Local delivery failed"
		d.log.Warn("local delivery", "id", msg.ID, "rcpts", addrs(ok), "mailboxes", boxes, "result", "deferred", "err", err)
		return append(out, all(ok, queue.Deferred, reply, "")...)
	}
	d.c.local.Add(1)
	reply := fmt.Sprintf("250 2.0.0 Delivered to mailbox as %s (%d octets)", id, size)
	d.log.Info("local delivery", "id", msg.ID, "rcpts", addrs(ok), "mailboxes", boxes, "result", "delivered", "reply", reply)
	return append(out, all(ok, queue.Delivered, reply, "")...)
}

// deliverLMTP hands the local recipients to the LMTP server: one session
// (or a cached one), one transaction, one reply per recipient.
func (d *Deliverer) deliverLMTP(ctx context.Context, msg queue.Message, rcpts []queue.Recipient, data []byte) []queue.Result {
	l := d.opts.LMTP
	rt := route{level: l.Level, serverName: l.ServerName, lmtp: true, network: l.Network}
	host := "lmtp:" + l.Addr
	if l.Network == "tcp" {
		host, _, _ = net.SplitHostPort(l.Addr)
	} else {
		rt.level = smtpclient.None
	}
	done, rest, reply := d.attempt(ctx, msg, rt, host, l.Addr, rcpts, data)
	if len(rest) > 0 {
		if reply == "" {
			reply = "451 4.4.1 No answer from the LMTP server " + l.Addr
		}
		done = append(done, all(rest, queue.Deferred, reply, host)...)
	}
	return done
}

func addrs(rcpts []queue.Recipient) []string {
	out := make([]string, len(rcpts))
	for i, r := range rcpts {
		out[i] = r.Addr
	}
	return out
}

// route is the way to a destination: hosts in order, the port, the level.
type route struct {
	hosts      []dnsx.Host
	port       string
	level      smtpclient.Level
	serverName string // fixed reference identity, "" for the MX host name
	user, pass string
	lmtp       bool   // speak LMTP (RFC 2033)
	network    string // "unix" for an LMTP socket, "" for TCP
}

func (d *Deliverer) route(ctx context.Context, dom string) (route, error) {
	if sh := d.opts.Smarthost; sh != nil {
		host, port, _ := net.SplitHostPort(sh.Addr)
		rt := route{hosts: []dnsx.Host{{Name: host}}, port: port, level: smtpclient.Verify,
			serverName: sh.ServerName, user: sh.User, pass: sh.Password}
		if sh.Level != nil {
			rt.level = *sh.Level
		}
		if rt.serverName == "" && net.ParseIP(host) == nil {
			rt.serverName = host
		}
		return rt, nil
	}
	rt := route{port: d.opts.Port, level: smtpclient.May}
	if d.opts.TLS.Level != nil {
		rt.level = *d.opts.TLS.Level
	}
	if l, ok := d.opts.TLS.Domains[dom]; ok {
		rt.level = l
	}
	rt.serverName = d.opts.TLS.ServerNames[dom]
	if rt.serverName == "" && rt.level == smtpclient.Secure {
		rt.serverName = dom
	}
	hosts, err := dnsx.MailHosts(ctx, d.opts.Resolver, dom)
	if err != nil {
		return rt, err
	}
	rt.hosts = shuffleEqual(hosts)
	return rt, nil
}

// shuffleEqual shuffles hosts of equal preference (RFC 5321 §5.1); the
// resolver may have done so already, a fake one not.
func shuffleEqual(hosts []dnsx.Host) []dnsx.Host {
	for i := 0; i < len(hosts); {
		j := i + 1
		for j < len(hosts) && hosts[j].Preference == hosts[i].Preference {
			j++
		}
		g := hosts[i:j]
		rand.Shuffle(len(g), func(a, b int) { g[a], g[b] = g[b], g[a] })
		i = j
	}
	return hosts
}

func (d *Deliverer) deliverRemote(ctx context.Context, msg queue.Message, dom string, rcpts []queue.Recipient, data []byte) []queue.Result {
	rt, err := d.route(ctx, dom)
	if err != nil {
		var state queue.State
		var reply string
		switch {
		case errors.Is(err, dnsx.ErrNullMX):
			state, reply = queue.Failed, "556 5.1.10 Recipient address has null MX"
		case errors.Is(err, dnsx.ErrNoHost):
			state, reply = queue.Failed, "550 5.1.2 Host or domain name not found: "+dom
		default:
			state, reply = queue.Deferred, "451 4.4.3 Name service error for "+dom+": "+err.Error()
		}
		d.log.Info("delivery attempt", "id", msg.ID, "rcpts", addrs(rcpts), "domain", dom,
			"result", state.String(), "reply", reply)
		return all(rcpts, state, reply, "")
	}

	var out []queue.Result
	pending := rcpts
	lastReply, lastMTA := "451 4.4.1 No answer from any host of "+dom, ""
	tried := 0
hosts:
	for _, h := range rt.hosts {
		ips, err := d.addresses(ctx, h.Name)
		if err != nil {
			lastReply, lastMTA = "451 4.4.3 Cannot find the address of "+h.Name+": "+err.Error(), ""
			d.log.Info("delivery attempt", "id", msg.ID, "rcpts", addrs(pending), "mx", h.Name,
				"result", "deferred", "reply", lastReply)
			continue
		}
		for _, ip := range ips {
			if tried >= d.opts.MaxAddresses || ctx.Err() != nil {
				break hosts
			}
			tried++
			done, rest, reply := d.attempt(ctx, msg, rt, h.Name, net.JoinHostPort(ip, rt.port), pending, data)
			out = append(out, done...)
			pending = rest
			if reply != "" {
				lastReply, lastMTA = reply, h.Name
			}
			if len(pending) == 0 {
				break hosts
			}
		}
	}
	if len(pending) > 0 {
		out = append(out, all(pending, queue.Deferred, lastReply, lastMTA)...)
	}
	return out
}

func (d *Deliverer) addresses(ctx context.Context, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}, nil
	}
	ias, err := d.opts.Resolver.LookupIPAddr(ctx, host+".")
	if err != nil {
		return nil, err
	}
	if len(ias) == 0 {
		return nil, errors.New("no addresses")
	}
	out := make([]string, len(ias))
	for i, a := range ias {
		out[i] = a.IP.String()
	}
	return out, nil
}

// attempt runs one session with one address: it returns the results that
// are final (delivered, failed), the recipients to try at the next host,
// and the reply that explains why they are left.
func (d *Deliverer) attempt(ctx context.Context, msg queue.Message, rt route, host, addr string,
	rcpts []queue.Recipient, data []byte) (done []queue.Result, rest []queue.Recipient, reply string) {
	d.c.attempts.Add(1)
	if d.opts.AttemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.opts.AttemptTimeout)
		defer cancel()
	}
	log := d.log.With("id", msg.ID, "rcpts", addrs(rcpts), "mx", host, "addr", addr, "level", rt.level.String())
	key := connKey{addr: addr, host: host, level: rt.level, serverName: rt.serverName, user: rt.user, lmtp: rt.lmtp}

	c, reused, err := d.conn(ctx, key, rt, log, true)
	if err != nil {
		reply = errReply(err)
		var te *smtpclient.TLSError
		if errors.As(err, &te) {
			d.c.tlsFailures.Add(1)
		}
		log.Warn("delivery attempt", "result", "deferred", "reply", reply, "err", err)
		return nil, rcpts, reply
	}
	env := smtpclient.Envelope{From: msg.From, Ret: msg.Attrs[queue.AttrDSNRet], EnvID: msg.Attrs[queue.AttrDSNEnvID]}
	notify := ""
	for i, r := range rcpts {
		env.To = append(env.To, r.Addr)
		if i == 0 {
			notify = r.Notify
		} else if r.Notify != notify {
			notify = ""
		}
	}
	if notify != "" {
		env.Notify = strings.Split(notify, ",")
	}
	res, err := c.SendMail(ctx, env, data)
	if err != nil && reused && len(res.Rcpts) == 0 && isConnErr(err) {
		// The cached connection died under us before any reply: try
		// once more on a new one.
		d.closeConn(c)
		log.Info("cached connection failed; reconnecting", "err", err)
		c, reused, err = d.conn(ctx, key, rt, log, false)
		if err != nil {
			reply = errReply(err)
			log.Warn("delivery attempt", "result", "deferred", "reply", reply, "err", err)
			return nil, rcpts, reply
		}
		res, err = c.SendMail(ctx, env, data)
	}
	tlsDesc := tlsAttrs(c)
	if err != nil && isConnErr(err) {
		d.closeConn(c)
	} else {
		d.pool.put(key, c)
	}
	if err == nil {
		reply = oneLine("250 " + res.Reply)
	}
	for i, r := range rcpts {
		var rerr error
		if i < len(res.Rcpts) {
			rerr = res.Rcpts[i].Err
		}
		switch {
		case rerr != nil:
			rr := errReply(rerr)
			if smtpclient.Temporary(rerr) {
				rest = append(rest, r)
			} else {
				done = append(done, queue.Result{Addr: r.Addr, State: queue.Failed, Reply: rr, RemoteMTA: host})
			}
			log.Info("delivery attempt", append(tlsDesc, "rcpt", r.Addr, "result", resultName(rerr), "reply", rr, "reused", reused)...)
		case err != nil:
			// The transaction failed as a whole (MAIL, DATA, the
			// connection): every recipient shares the error.
			rr := errReply(err)
			if smtpclient.Temporary(err) {
				rest = append(rest, r)
			} else {
				done = append(done, queue.Result{Addr: r.Addr, State: queue.Failed, Reply: rr, RemoteMTA: host})
			}
			log.Info("delivery attempt", append(tlsDesc, "rcpt", r.Addr, "result", resultName(err), "reply", rr, "reused", reused)...)
		default:
			rr := reply
			if i < len(res.Rcpts) && res.Rcpts[i].Reply != "" {
				// Its own reply: LMTP's per-recipient one (RFC 2033 §4.2).
				rr = oneLine("250 " + res.Rcpts[i].Reply)
			}
			done = append(done, queue.Result{Addr: r.Addr, State: queue.Delivered, Reply: rr, RemoteMTA: host})
			log.Info("delivery attempt", append(tlsDesc, "rcpt", r.Addr, "result", "delivered", "reply", rr, "reused", reused)...)
		}
	}
	if len(rest) > 0 {
		// The reply that leaves them for later: theirs, or the
		// transaction's.
		reply = ""
		for _, rr := range res.Rcpts {
			if rr.Err != nil && smtpclient.Temporary(rr.Err) {
				reply = errReply(rr.Err)
				break
			}
		}
		if reply == "" && err != nil {
			reply = errReply(err)
		}
	}
	return done, rest, reply
}

func resultName(err error) string {
	if smtpclient.Temporary(err) {
		return "deferred"
	}
	return "failed"
}

// isConnErr reports whether err leaves the connection unusable.
func isConnErr(err error) bool {
	var ne *smtpclient.NetError
	var pe *smtpclient.ProtocolError
	return errors.As(err, &ne) || errors.As(err, &pe) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}

// errReply phrases err as a reply for Recipient.LastReply: the server's
// reply when there is one, else a 4xx of our own.
func errReply(err error) string {
	var se *smtp.Error
	if errors.As(err, &se) {
		return oneLine(se.Error())
	}
	var te *smtpclient.TLSError
	if errors.As(err, &te) {
		return oneLine("454 4.7.0 TLS failed: " + strings.TrimPrefix(err.Error(), "smtpclient: "))
	}
	var ne *smtpclient.NetError
	if errors.As(err, &ne) {
		return oneLine("451 4.4.1 " + err.Error())
	}
	if smtpclient.Temporary(err) {
		return oneLine("451 4.4.2 " + err.Error())
	}
	return oneLine("554 5.0.0 " + err.Error())
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", "; ")
}

// tlsAttrs describes the session's TLS for the log.
func tlsAttrs(c *smtpclient.Client) []any {
	t := c.TLS()
	if t == nil {
		reason := c.Fallback()
		if reason == "" {
			reason = "level " + c.Level().String()
		}
		return []any{"tls", "none", "plaintext_reason", reason}
	}
	verified := "unverified"
	if t.Verified {
		verified = "verified:" + t.ServerName
	}
	return []any{"tls", tls.VersionName(t.Version), "cipher", tls.CipherSuiteName(t.CipherSuite),
		"group", t.Group.String(), "cert", verified}
}

// conn returns a connection for key: a cached one (after RSET), when
// cached is set, or a new one.
func (d *Deliverer) conn(ctx context.Context, key connKey, rt route, log *slog.Logger, cached bool) (*smtpclient.Client, bool, error) {
	if cached {
		for {
			c := d.pool.get(key)
			if c == nil {
				break
			}
			if err := c.Reset(ctx); err != nil {
				log.Info("cached connection unusable", "err", err)
				d.closeConn(c)
				continue
			}
			d.c.reused.Add(1)
			return c, true, nil
		}
	}
	opts := smtpclient.Options{
		LocalName: d.opts.LocalName,
		TLS:       rt.level,
		TLSConfig: d.opts.TLS.TLSConfig,
		Timeouts:  d.opts.Timeouts,
		Logger:    log,
		LMTP:      rt.lmtp,
		Network:   rt.network,
	}
	if d.opts.Dialer != nil {
		opts.Dialer = d.opts.Dialer
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		opts.Trace = traceLog{log}
	}
	if rt.level >= smtpclient.Verify {
		opts.ServerName = rt.serverName
		if opts.ServerName == "" {
			opts.ServerName = key.host
		}
	}
	d.c.opened.Add(1)
	c, err := smtpclient.Dial(ctx, key.addr, opts)
	if err != nil {
		return nil, false, err
	}
	if c.Fallback() != "" {
		d.c.fallbacks.Add(1)
		log.Warn("TLS not used at level may: delivering in plaintext", "reason", c.Fallback())
	}
	if rt.user != "" {
		if err := c.Auth(ctx, rt.user, rt.pass); err != nil {
			_ = c.Close()
			return nil, false, err
		}
	}
	return c, false, nil
}

// traceLog writes smtpclient's protocol trace ("C: ..." and "S: ..."
// lines, AUTH redacted) to the log at level debug, one record per line.
type traceLog struct{ log *slog.Logger }

func (t traceLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		t.log.Debug(strings.ToValidUTF8(line, "\uFFFD"))
	}
	return len(p), nil
}

func (d *Deliverer) closeConn(c *smtpclient.Client) {
	d.pool.forget(c)
	_ = c.Close()
}
