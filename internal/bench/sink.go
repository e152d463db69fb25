package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// SinkOptions configure a Sink.
type SinkOptions struct {
	// Hostname is the server's name in the greeting (default localhost).
	Hostname string
	// TLSConfig is the server's TLS configuration; nil makes a
	// self-signed ECDSA P-256 certificate in memory for Hostname,
	// localhost, 127.0.0.1 and ::1.
	TLSConfig *tls.Config
	// ImplicitTLS makes the listener speak TLS from the first byte
	// (RFC 8314); otherwise STARTTLS is offered.
	ImplicitTLS bool
	// TempFail and PermFail are the fractions (0..1, summing to at most
	// 1) of recipients refused at RCPT with "451 4.3.0" and "550 5.1.1".
	// Which ones is decided by Seed and the recipient's rank among all
	// RCPTs the sink answered (see Verdict), so a run of N recipients
	// gets the same numbers of refusals each time, whatever the
	// interleaving of connections.
	TempFail, PermFail float64
	Seed               uint64
	// MaxConns bounds the connections, in total and per client address
	// (default 20000: enough for petrel bench --idle 10000 from one
	// address).
	MaxConns int
	// MaxErrors is the server's error limit per session (default 1000,
	// so that refusals injected by TempFail and PermFail do not close
	// sessions).
	MaxErrors int
	// Until, when not zero, is a number of messages: once the sink has
	// accepted that many, the channel of Reached is closed and Stats
	// says when (to time a sender that delivers a known batch).
	Until uint64
	// Logger receives the server's logs; nil discards.
	Logger *slog.Logger
}

// Sink is a receiving SMTP server for benchmarks: Petrel's smtpserver, with
// its limits, STARTTLS or implicit TLS, and a backend that reads each
// message to its end, counts it and throws it away.
//
// It is NOT durable: a message is acknowledged with 250 and gone. It
// measures the protocol and TLS side of a sender, not storage, and must
// never receive mail anyone wants.
type Sink struct {
	srv     *smtpserver.Server
	st      sinkCounters
	o       SinkOptions
	reached chan struct{} // closed at the Until-th message; nil without Until
}

type sinkCounters struct {
	conns, sessions, closed, tlsSessions atomic.Uint64
	messages, bytes, rcpts               atomic.Uint64
	rcptSeq, temp, perm                  atomic.Uint64
	firstAt, reachedAt                   atomic.Int64 // Unix nanoseconds
}

// SinkStats are a Sink's counts so far.
type SinkStats struct {
	Connections uint64 `json:"connections"`  // connections served
	Open        int64  `json:"open"`         // connections open now
	TLSSessions uint64 `json:"tls_sessions"` // sessions in TLS (STARTTLS done, or implicit)
	Messages    uint64 `json:"messages"`     // accepted (250 at the end of the data)
	Bytes       uint64 `json:"bytes"`        // message octets read (transparency removed)
	Rcpts       uint64 `json:"rcpts"`        // recipients accepted
	TempFail    uint64 `json:"rcpt_tempfail"`
	PermFail    uint64 `json:"rcpt_permfail"`
	// FirstMessage is when the first message was accepted, and Reached
	// when the SinkOptions.Until-th was (zero: not yet, or no Until).
	FirstMessage time.Time `json:"first_message,omitzero"`
	Reached      time.Time `json:"reached,omitzero"`
}

// Errors a Sink refuses recipients with.
var (
	errSinkTemp = &smtp.Error{Code: smtp.C451LocalError, Enhanced: smtp.E430SystemOther, Message: "Temporary failure injected by petrel bench sink"}
	errSinkPerm = &smtp.Error{Code: smtp.C550MailboxUnavail, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 1, Detail: 1},
		Message: "Recipient refused by petrel bench sink (injected failure)"}
)

// NewSink checks opts and makes a Sink.
func NewSink(opts SinkOptions) (*Sink, error) {
	if opts.TempFail < 0 || opts.PermFail < 0 || opts.TempFail+opts.PermFail > 1 {
		return nil, errors.New("--tempfail and --permfail are fractions from 0 to 1, together at most 1")
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if !smtp.IsDomain(opts.Hostname, false) {
		return nil, errors.New("--hostname must be a domain name")
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 20000
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 1000
	}
	if opts.TLSConfig == nil {
		now := time.Now()
		cert, err := smtptest.Certificate([]string{opts.Hostname, "localhost", "127.0.0.1", "::1"}, now.Add(-time.Hour), now.AddDate(1, 0, 0))
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	k := &Sink{o: opts}
	if opts.Until > 0 {
		k.reached = make(chan struct{})
	}
	srv, err := smtpserver.New(smtpserver.Options{
		Name:          "sink",
		Hostname:      opts.Hostname,
		Backend:       smtpserver.BackendFunc(k.newSession),
		Logger:        opts.Logger,
		TLSConfig:     opts.TLSConfig,
		ImplicitTLS:   opts.ImplicitTLS,
		MaxConns:      opts.MaxConns,
		MaxConnsPerIP: opts.MaxConns,
		MaxErrors:     opts.MaxErrors,
	})
	if err != nil {
		return nil, err
	}
	k.srv = srv
	return k, nil
}

// Serve accepts connections on l until Shutdown or Close; see
// smtpserver.Server.Serve.
func (k *Sink) Serve(l net.Listener) error { return k.srv.Serve(l) }

// Shutdown stops the sink gracefully; see smtpserver.Server.Shutdown.
func (k *Sink) Shutdown(ctx context.Context) error { return k.srv.Shutdown(ctx) }

// Close stops the sink at once.
func (k *Sink) Close() error { return k.srv.Close() }

// Reached returns a channel that is closed once SinkOptions.Until messages
// have been accepted; without Until, a nil channel (never ready).
func (k *Sink) Reached() <-chan struct{} { return k.reached }

// Stats returns the counts so far.
func (k *Sink) Stats() SinkStats {
	return SinkStats{
		Connections: k.st.conns.Load(),
		Open:        int64(k.st.sessions.Load()) - int64(k.st.closed.Load()),
		TLSSessions: k.st.tlsSessions.Load(),
		Messages:    k.st.messages.Load(),
		Bytes:       k.st.bytes.Load(),
		Rcpts:       k.st.rcpts.Load(),
		TempFail:    k.st.temp.Load(),
		PermFail:    k.st.perm.Load(),

		FirstMessage: unixNano(k.st.firstAt.Load()),
		Reached:      unixNano(k.st.reachedAt.Load()),
	}
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Verdict decides the n-th recipient (from 0) a sink answers: 0 accept,
// 4 for 451, 5 for 550. It is a pure function of seed and n (a splitmix64
// hash), so tests can predict a sink's refusals.
func Verdict(seed, n uint64, tempFail, permFail float64) int {
	if tempFail <= 0 && permFail <= 0 {
		return 0
	}
	z := seed + (n+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	f := float64(z>>11) / (1 << 53)
	switch {
	case f < tempFail:
		return 4
	case f < tempFail+permFail:
		return 5
	}
	return 0
}

// newSession is the Backend: called at connect and again after STARTTLS
// (when the previous Session has been closed).
func (k *Sink) newSession(_ context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	k.st.sessions.Add(1)
	if c.TLS() != nil {
		k.st.tlsSessions.Add(1)
	}
	if c.TLS() == nil || k.o.ImplicitTLS {
		k.st.conns.Add(1) // the first session of the connection
	}
	return &sinkSession{k: k}, nil
}

type sinkSession struct {
	k      *Sink
	rcpts  int
	closed bool
}

func (s *sinkSession) Mail(context.Context, smtp.Path, *smtpserver.MailOptions) error { return nil }

func (s *sinkSession) Rcpt(context.Context, smtp.Path, *smtpserver.RcptOptions) error {
	st := &s.k.st
	n := st.rcptSeq.Add(1) - 1
	switch Verdict(s.k.o.Seed, n, s.k.o.TempFail, s.k.o.PermFail) {
	case 4:
		st.temp.Add(1)
		return errSinkTemp
	case 5:
		st.perm.Add(1)
		return errSinkPerm
	}
	s.rcpts++
	return nil
}

// Data reads the message to its end and throws it away: NOT durable.
func (s *sinkSession) Data(_ context.Context, r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	st := &s.k.st
	st.bytes.Add(uint64(n))
	st.rcpts.Add(uint64(s.rcpts))
	m := st.messages.Add(1)
	if m == 1 || m == s.k.o.Until {
		now := time.Now().UnixNano()
		if m == 1 {
			st.firstAt.Store(now)
		}
		if m == s.k.o.Until {
			st.firstAt.CompareAndSwap(0, now) // message 1 not stored yet
			st.reachedAt.Store(now)
			close(s.k.reached)
		}
	}
	return nil
}

func (s *sinkSession) Reset(context.Context) { s.rcpts = 0 }

func (s *sinkSession) Close() error {
	if !s.closed {
		s.closed = true
		s.k.st.closed.Add(1)
	}
	return nil
}
