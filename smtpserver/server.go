package smtpserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// Defaults for zero Options fields.
const (
	DefaultMaxMessageBytes  = 35 << 20
	DefaultMaxRecipients    = 1000
	DefaultMaxErrors        = 20
	DefaultMaxConns         = 1000
	DefaultMaxConnsPerIP    = 20
	DefaultMaxHandshakes    = 64
	DefaultCommandTimeout   = 5 * time.Minute // RFC 5321 §4.5.3.2.7
	DefaultDataTimeout      = 3 * time.Minute // RFC 5321 §4.5.3.2.5
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultMinDataRate      = 500 // octets/s, as Postfix's smtpd_min_data_rate
)

// Options configure a Server. Backend is required; zero values take the
// defaults above.
type Options struct {
	// Name labels the listener in logs ("mx", "submission", ...).
	Name string
	// Hostname is the server's name in the greeting and Received header.
	Hostname string
	// Backend makes sessions. Required.
	Backend Backend
	// Logger receives one line per connection event; nil discards.
	Logger *slog.Logger

	// TLSConfig enables STARTTLS (RFC 3207) when not nil, or TLS from the
	// first byte when ImplicitTLS is set (RFC 8314 §3.3). The server
	// raises MinVersion to TLS 1.2 if it is lower.
	TLSConfig *tls.Config
	// GetTLSConfig, when set, is called at each STARTTLS instead of using
	// TLSConfig; an error answers 454 4.7.0 (RFC 3207 §4: TLS not
	// available due to temporary reason).
	GetTLSConfig func(ctx context.Context) (*tls.Config, error)
	// ImplicitTLS: the listener speaks TLS from the first byte (port 465).
	ImplicitTLS bool
	// RequireTLS: every command but EHLO, HELO, STARTTLS, NOOP, RSET and
	// QUIT is answered 530 5.7.0 before TLS (RFC 3207 §4). Never set it on
	// a publicly referenced MX (RFC 3207 §4 MUST NOT).
	RequireTLS bool

	// MaxMessageBytes is the SIZE limit (RFC 1870).
	MaxMessageBytes int64
	// MaxRecipients per transaction; the next RCPT gets 452 4.5.3. At
	// least 100 (RFC 5321 §4.5.3.1.8).
	MaxRecipients int
	// MaxErrors: after this many error replies, 421 and close.
	MaxErrors int
	// MaxConns in total and MaxConnsPerIP from one client address; over
	// either, the connection gets 421 4.7.0 and is closed. Ignored when
	// ConnLimiter is set.
	MaxConns, MaxConnsPerIP int
	// ConnLimiter, when set, is shared with other Servers so that the
	// connection bounds hold across listeners.
	ConnLimiter *ConnLimiter
	// MaxHandshakes bounds TLS handshakes doing cryptographic work at
	// once, and MaxHandshakesPerIP the handshakes in progress from one
	// peer (an IPv4 address or IPv6 /64). Over a bound a handshake waits
	// (within HandshakeTimeout); it is never refused with 454, which would
	// push opportunistic senders to plaintext.
	MaxHandshakes, MaxHandshakesPerIP int

	// CommandTimeout bounds the wait for each whole command line (RFC
	// 5321 §4.5.3.2.7: at least 5 minutes). DataTimeout bounds each read
	// of message data. HandshakeTimeout bounds the TLS handshake.
	CommandTimeout, DataTimeout, HandshakeTimeout time.Duration
	// MinDataRate, in octets per second, bounds the whole of a message
	// transfer: DataTimeout plus one second per MinDataRate octets.
	MinDataRate int64

	// MaxAuthFailures failed AUTH attempts (a 535 or other 5xx from
	// AuthSession.Auth) from one client, an IPv4 address or an IPv6 /64,
	// within AuthFailureWindow make every further AUTH from it, on any
	// connection, "454 4.7.0 Too many authentication failures", without
	// asking the backend, until the oldest failure leaves the window.
	// Zero values take DefaultMaxAuthFailures (5) and
	// DefaultAuthFailureWindow (5 minutes). Ignored when AuthLimiter is
	// set.
	MaxAuthFailures   int
	AuthFailureWindow time.Duration
	// AuthLimiter, when set, is shared with other Servers so that failed
	// AUTH attempts count across listeners (587 and 465).
	AuthLimiter *AuthLimiter
	// AuthFailureDelay is waited before each failed AUTH attempt is
	// answered (zero: DefaultAuthFailureDelay, 1 s); negative means none
	// (for tests).
	AuthFailureDelay time.Duration

	// Now returns the time for Received headers and for counting failed
	// AUTH attempts; nil is time.Now.
	Now func() time.Time
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtpserver: server closed")

// Server is an SMTP server. Make one with New.
type Server struct {
	opts    Options
	log     *slog.Logger
	hs      *handshakeLimiter
	idBase  string
	idSeq   atomic.Uint64
	closing atomic.Bool

	limiter     *ConnLimiter
	authLimiter *AuthLimiter

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("smtpserver: Options.Backend is required")
	}
	if opts.ImplicitTLS && opts.TLSConfig == nil {
		return nil, errors.New("smtpserver: ImplicitTLS needs TLSConfig")
	}
	if opts.RequireTLS && opts.TLSConfig == nil && opts.GetTLSConfig == nil {
		return nil, errors.New("smtpserver: RequireTLS needs TLSConfig or GetTLSConfig")
	}
	if opts.MaxRecipients != 0 && opts.MaxRecipients < 100 {
		return nil, errors.New("smtpserver: MaxRecipients below the RFC 5321 §4.5.3.1.8 minimum of 100")
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	setDefault(&opts.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&opts.MaxRecipients, DefaultMaxRecipients)
	setDefault(&opts.MaxErrors, DefaultMaxErrors)
	setDefault(&opts.MaxHandshakes, DefaultMaxHandshakes)
	setDefault(&opts.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP)
	setDefault(&opts.CommandTimeout, DefaultCommandTimeout)
	setDefault(&opts.DataTimeout, DefaultDataTimeout)
	setDefault(&opts.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&opts.MinDataRate, DefaultMinDataRate)
	setDefault(&opts.AuthFailureDelay, DefaultAuthFailureDelay)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TLSConfig != nil {
		opts.TLSConfig = withHandshakeSlot(hardenTLS(opts.TLSConfig))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Name != "" {
		log = log.With("listener", opts.Name)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	limiter := opts.ConnLimiter
	if limiter == nil {
		limiter = NewConnLimiter(opts.MaxConns, opts.MaxConnsPerIP)
	}
	authLimiter := opts.AuthLimiter
	if authLimiter == nil {
		authLimiter = NewAuthLimiter(opts.MaxAuthFailures, opts.AuthFailureWindow)
	}
	return &Server{
		opts:        opts,
		limiter:     limiter,
		authLimiter: authLimiter,
		log:         log,
		hs:          newHandshakeLimiter(opts.MaxHandshakes, opts.MaxHandshakesPerIP),
		idBase:      hex.EncodeToString(rnd[:]),
		listeners:   make(map[net.Listener]struct{}),
		conns:       make(map[*conn]struct{}),
	}, nil
}

func setDefault[T int | int64 | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// hardenTLS returns a copy of cfg with TLS 1.2 as the floor (RFC 8996, RFC
// 8997), renegotiation off, and, where the caller left them unset, only
// ECDHE AEAD suites for TLS 1.2 and the hybrid post-quantum group first.
func hardenTLS(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if len(c.CipherSuites) == 0 {
		// TLS 1.2: forward secrecy and AEAD only (RFC 9325 §4.2,
		// requirement S-TLS-29). TLS 1.3 suites are not configurable.
		c.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	if len(c.CurvePreferences) == 0 {
		c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	}
	c.Renegotiation = tls.RenegotiateNever
	return c
}

// Serve accepts connections on l until Shutdown or Close, serving each in
// its own goroutine. It always returns a non-nil error; after Shutdown or
// Close it is ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept error; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.serve(context.Background(), nc, true)
	}
}

// isTemporary classifies accept errors that warrant a retry (too many open
// files, connection aborted) the way net/http does.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ServeConn serves one connection on the calling goroutine until it ends.
// Connection limits apply as for Serve. It is meant for tests and for
// callers that accept connections themselves.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	s.serve(ctx, nc, false)
}

func (s *Server) serve(ctx context.Context, nc net.Conn, async bool) {
	ip := peerIP(nc.RemoteAddr())
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if over := s.limiter.acquire(ip); over != "" {
		s.mu.Unlock()
		s.log.Warn("connection refused: limit reached", "peer", nc.RemoteAddr().String(), "limit", over)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			refuse(nc, s.opts.ImplicitTLS)
		}()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	run := func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			s.limiter.release(ip)
		}()
		c.serve(ctx)
	}
	if async {
		go run()
	} else {
		run()
	}
}

// refuse answers a connection over the limits with 421 4.7.0 and closes it.
// On an implicit-TLS listener nothing is sent in clear (RFC 8314 §3.3).
func refuse(nc net.Conn, implicitTLS bool) {
	if !implicitTLS {
		_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = nc.Write(smtp.AppendReply(nil, smtp.C421ServiceUnavailable, smtp.E470Security,
			"Too many connections, try again later"))
	}
	_ = nc.Close()
}

func peerIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func (s *Server) newID() string {
	return s.idBase + "-" + itoa36(s.idSeq.Add(1))
}

func itoa36(n uint64) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [13]byte
	i := len(b)
	for {
		i--
		b[i] = digits[n%36]
		n /= 36
		if n == 0 {
			return string(b[i:])
		}
	}
}

// Shutdown stops accepting, lets each connection finish the command it is
// in, answers its next command (or an idle wait) with "421 4.3.2 Service
// shutting down", and waits for all connections to end or ctx to be done;
// then it closes what is left and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.startShutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.raw.Close()
	}
}
