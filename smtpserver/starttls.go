package smtpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

var (
	errTLSActive      = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "TLS already active"}
	errTLSNotOffered  = &smtp.Error{Code: smtp.C502NotImplemented, Enhanced: smtp.E551InvalidCommand, Message: "STARTTLS not available"}
	errTLSParams      = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax error (no parameters allowed)"}
	errTLSUnavailable = &smtp.Error{Code: smtp.C454TLSUnavailable, Enhanced: smtp.E470Security, Message: "TLS not available due to temporary reason"}
)

// tlsOffered reports whether STARTTLS is configured at all.
func (c *conn) tlsOffered() bool {
	return c.s.opts.TLSConfig != nil || c.s.opts.GetTLSConfig != nil
}

// handleSTARTTLS implements RFC 3207 §4 and §4.2.
func (c *conn) handleSTARTTLS(ctx context.Context, arg string) error {
	if c.bdat != nil {
		// The handshake must not run beside BDAT's Data goroutine; and
		// a refused STARTTLS must not lose acknowledged chunks.
		return errBDATInProgress
	}
	if c.tlsState != nil {
		return errTLSActive // §4.2: a TLS session is already active
	}
	if !c.tlsOffered() {
		return errTLSNotOffered
	}
	if arg != "" {
		return errTLSParams // §4: "STARTTLS" with no parameters
	}
	cfg := c.s.opts.TLSConfig
	if c.s.opts.GetTLSConfig != nil {
		var err error
		cfg, err = c.s.opts.GetTLSConfig(ctx)
		if err != nil || cfg == nil {
			c.log.Warn("STARTTLS: TLS unavailable", "err", err)
			return errTLSUnavailable
		}
		cfg = withHandshakeSlot(hardenTLS(cfg))
	}
	c.writeReplyLines(smtp.C220ServiceReady, smtp.E200Undefined, "Ready to start TLS")
	err := c.flush()
	if err == nil && c.r.Buffered() > 0 {
		// Plaintext sent after STARTTLS and before the handshake: the
		// CVE-2011-0411 command injection. Never execute it.
		c.log.Warn("STARTTLS: plaintext pipelined after STARTTLS (command injection attempt); closing",
			"octets", c.r.Buffered())
		c.closeWhy = "plaintext after STARTTLS"
		return errClose
	}
	if err != nil {
		return c.readFailed(err)
	}
	if !c.handshake(ctx, cfg, false) {
		return errClose
	}
	// §4.2: back to the state after the 220 greeting, knowing nothing.
	return c.resetSession(ctx)
}

// handshake runs the TLS server handshake on the connection within
// HandshakeTimeout and switches the reader and writer to TLS. On failure it
// logs and returns false: the connection is then closed without any
// further plaintext. Concurrent handshakes are bounded per peer and in
// total (handshakeLimiter); over a bound the handshake waits.
func (c *conn) handshake(ctx context.Context, cfg *tls.Config, implicit bool) bool {
	hctx, cancel := context.WithTimeout(ctx, c.s.opts.HandshakeTimeout)
	defer cancel()
	release, ok := c.s.hs.acquirePeer(hctx, peerIP(c.raw.RemoteAddr()))
	if !ok {
		c.log.Warn("TLS handshake not started: this peer has too many handshakes in progress", "implicit", implicit)
		c.closeWhy = "TLS handshake limit"
		return false
	}
	defer release()
	// The global slot is taken when the ClientHello has arrived, so a peer
	// that sends nothing holds none (withHandshakeSlot's hook, which finds
	// this state in the handshake's context: no per-connection copy of
	// the configuration).
	hs := &handshakeState{limiter: c.s.hs, ctx: hctx}
	hctx = context.WithValue(hctx, handshakeStateKey{}, hs)
	defer func() {
		if hs.haveSlot {
			c.s.hs.releaseCrypto()
		}
	}()
	tc := tls.Server(c.raw, cfg)
	_ = c.raw.SetDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	// The handshake runs on a goroutine of its own that ends with it, so
	// that the stack its cryptography grows (ML-KEM's most) goes with it
	// rather than staying with the session's goroutine for the life of an
	// idle connection (Go shrinks a goroutine's stack only at garbage
	// collections, by half each time).
	errc := make(chan error, 1)
	go func() { errc <- tc.HandshakeContext(hctx) }()
	err := <-errc
	_ = c.raw.SetDeadline(time.Time{})
	if err != nil {
		reason := err.Error()
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			reason = "timeout"
		}
		c.log.Warn("TLS handshake failed", "err", reason, "implicit", implicit)
		c.closeWhy = "TLS handshake failed"
		return false
	}
	st := tc.ConnectionState()
	c.tlsState = &st
	c.nc = tc
	c.r.Reset(netReader{c})
	c.w.Reset(tc)
	c.log.Info("tls", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite),
		"group", st.CurveID.String(), "resumed", st.DidResume, "sni", st.ServerName, "implicit", implicit)
	return true
}

// handshakeState is one handshake's claim on the global crypto slots.
type handshakeState struct {
	limiter  *handshakeLimiter
	ctx      context.Context
	haveSlot bool
}

type handshakeStateKey struct{}

// withHandshakeSlot sets cfg's GetConfigForClient (cfg is the caller's own
// copy) to take a global crypto slot when the ClientHello has arrived,
// before any crypto is done, for the handshake whose context holds a
// *handshakeState; then it defers to the previous hook, if any.
func withHandshakeSlot(cfg *tls.Config) *tls.Config {
	inner := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if st, ok := hello.Context().Value(handshakeStateKey{}).(*handshakeState); ok && !st.haveSlot {
			if !st.limiter.acquireCrypto(st.ctx) {
				return nil, errors.New("too many concurrent TLS handshakes")
			}
			st.haveSlot = true
		}
		if inner != nil {
			return inner(hello)
		}
		return nil, nil
	}
	return cfg
}
