package smtpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// Level is a TLS security level, with Postfix's meanings
// (smtp_tls_security_level).
type Level int

// Levels, weakest first.
const (
	// None: no TLS.
	None Level = iota
	// May: opportunistic TLS. STARTTLS when offered; plaintext when it is
	// not offered, is refused, or the handshake fails (the connection is
	// then made again without TLS, as Postfix does). The certificate is
	// not checked, only recorded. An active attacker can always force
	// plaintext: Fallback reports it. Over a unix socket, plaintext
	// without trying (see Options.Network).
	May
	// Encrypt: TLS required, certificate not checked. Never plaintext.
	Encrypt
	// Verify: TLS required; the certificate chain must be valid (PKIX)
	// for the server's name (RFC 6125 DNS-ID, RFC 7817): Options.ServerName,
	// or the host dialled (for MX delivery, a name from unauthenticated
	// DNS: Postfix's "verify").
	Verify
	// Secure: as Verify, with the name from configuration only
	// (Options.ServerName must be set).
	Secure
)

var levelNames = []string{"none", "may", "encrypt", "verify", "secure"}

func (l Level) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// ParseLevel parses a level name: none, may, encrypt, verify, secure.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if strings.EqualFold(s, n) {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("unknown TLS level %q (want one of %s)", s, strings.Join(levelNames, ", "))
}

// TLSInfo describes a TLS session: what the client got.
type TLSInfo struct {
	Version     uint16
	CipherSuite uint16
	// Group is the key-exchange group, e.g. X25519MLKEM768 (hybrid
	// post-quantum) or X25519.
	Group tls.CurveID
	// PeerCertificates is the chain the server sent, leaf first.
	PeerCertificates []*x509.Certificate
	// ServerName is the name verified against (and sent as SNI).
	ServerName string
	// Verified reports whether the chain is valid for ServerName (PKIX),
	// or, with Options.VerifyConnection, whether that hook accepted it.
	// VerifyError says why not.
	Verified    bool
	VerifyError error
	Implicit    bool
	Resumed     bool
}

// PostQuantum reports whether the key exchange was a hybrid post-quantum
// one.
func (t *TLSInfo) PostQuantum() bool {
	return t.Group == tls.X25519MLKEM768 || t.Group == tls.SecP256r1MLKEM768 || t.Group == tls.SecP384r1MLKEM1024
}

func (t *TLSInfo) String() string {
	v := "unverified"
	if t.Verified {
		v = "verified"
	}
	return fmt.Sprintf("%s %s %s %s", smtp.TLSVersionName(t.Version), tls.CipherSuiteName(t.CipherSuite), smtp.GroupName(t.Group), v)
}

// TLSError is a TLS failure under a level that requires TLS, or the reason
// a May session could not use it. It is temporary: delivery is deferred,
// never made in plaintext (requirements C-STRIP-01..04, C-TLS-04).
type TLSError struct {
	Reason string
	Err    error
	// retryPlain: at level May the connection may be made again without
	// TLS (the handshake failed or the session was tampered with).
	retryPlain bool
}

func (e *TLSError) Error() string {
	if e.Err != nil {
		return "smtpclient: TLS: " + e.Reason + ": " + e.Err.Error()
	}
	return "smtpclient: TLS: " + e.Reason
}

func (e *TLSError) Unwrap() error { return e.Err }

// ErrResponseInjection: the server (or a man in the middle) sent data after
// its 220 reply to STARTTLS, before the TLS handshake: the NO STARTTLS
// "response injection". The client aborts rather than read it as replies.
var ErrResponseInjection = errors.New("data after the 220 reply to STARTTLS (response injection)")

// startTLS runs STARTTLS (RFC 3207 §4) as the level demands.
func (c *Client) startTLS(ctx context.Context) error {
	level := c.opts.TLS
	if level == May && c.unix {
		// A unix socket does not leave the host: there is no network
		// for TLS to protect, and no name to check a certificate
		// against. Plaintext by design, not a fallback.
		return nil
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if level == May {
			c.fallback = "STARTTLS not offered"
			c.log.Info("STARTTLS not offered; continuing in plaintext (level may)", "server", c.peer())
			return nil
		}
		return &TLSError{Reason: "STARTTLS not offered by the server (stripped?); level " + level.String() + " requires TLS"}
	}
	// STARTTLS ends a pipelined group (RFC 3207 §4, RFC 2920 §3.1):
	// nothing is written after it before the 220.
	rep, err := c.cmd(ctx, c.opts.Timeouts.Command, "STARTTLS")
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) && rep.code == smtp.C220ServiceReady {
			// Bytes behind the 220: response injection (C-TLS-10).
			c.log.Warn("response injection after STARTTLS; aborting", "server", c.peer())
			return &TLSError{Reason: "aborted", Err: ErrResponseInjection, retryPlain: true}
		}
		return err
	}
	if rep.code != smtp.C220ServiceReady {
		if level == May {
			c.fallback = "STARTTLS refused: " + strings.TrimSpace(fmt.Sprint(rep.code, " ", rep.lines[0]))
			c.log.Info("STARTTLS refused; continuing in plaintext (level may)", "server", c.peer(), "reply", rep.code)
			return nil
		}
		return &TLSError{Reason: "STARTTLS refused", Err: rep.err("STARTTLS")}
	}
	if err := c.handshake(ctx); err != nil {
		return err
	}
	// RFC 3207 §4.2: forget everything learnt before TLS, EHLO (LHLO,
	// RFC 2033 §4.1) again.
	c.ext = nil
	return c.hello(ctx)
}

// handshake runs the TLS client handshake on the raw connection and then
// decides, as RFC 3207 §4.1 asks, whether the session is good enough for
// the level; if not, it sends QUIT inside TLS and fails.
func (c *Client) handshake(ctx context.Context) error {
	level := c.opts.TLS
	if c.opts.ImplicitTLS && level < Encrypt {
		level = Encrypt
	}
	name := c.opts.ServerName
	if name == "" && !c.unix {
		// A socket's path is no name to verify, nor to send as SNI.
		name = c.host
	}
	var cfg *tls.Config
	if c.opts.TLSConfig != nil {
		cfg = c.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12 // RFC 8996, C-DOWN-01
	}
	roots := cfg.RootCAs
	// Verification is done after the handshake, below, so that it is
	// recorded at every level and a failure can be answered with QUIT.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = nil
	cfg.VerifyPeerCertificate = nil
	if !isIPLiteral(name) {
		cfg.ServerName = name
	} else {
		cfg.ServerName = ""
	}
	if c.qa != nil {
		c.qa.Arm(true)
	}
	tc := tls.Client(c.conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.opts.Timeouts.TLSHandshake)
	defer cancel()
	_ = c.raw.SetDeadline(time.Now().Add(c.opts.Timeouts.TLSHandshake))
	err := tc.HandshakeContext(hctx)
	_ = c.raw.SetDeadline(time.Time{})
	if err != nil {
		if c.qa != nil {
			c.qa.Arm(false)
		}
		return &TLSError{Reason: "handshake failed", Err: err, retryPlain: true}
	}
	st := tc.ConnectionState()
	info := &TLSInfo{
		Version: st.Version, CipherSuite: st.CipherSuite, Group: st.CurveID,
		PeerCertificates: st.PeerCertificates, ServerName: name,
		Implicit: c.opts.ImplicitTLS, Resumed: st.DidResume,
	}
	switch {
	case level >= Verify && c.opts.VerifyConnection != nil:
		info.VerifyError = c.opts.VerifyConnection(st)
	case name == "":
		// Over a unix socket without ServerName: a valid chain alone
		// proves nothing about whom it was issued to.
		info.VerifyError = errNoServerName
	default:
		info.VerifyError = verifyPKIX(st, roots, name, time.Now())
	}
	info.Verified = info.VerifyError == nil
	c.conn = tc
	c.tls = info
	c.r.Reset(tc)
	c.w.Reset(tc)
	if level >= Verify && !info.Verified {
		// RFC 3207 §4.1: the security is insufficient; "SHOULD issue an
		// SMTP QUIT command immediately after the TLS negotiation".
		if c.opts.ImplicitTLS {
			// The server's greeting comes first: not QUIT's reply.
			_ = c.readGreeting(ctx)
		}
		_, _ = c.cmd(ctx, 5*time.Second, "QUIT")
		c.Close()
		return &TLSError{Reason: "certificate not verified for " + name + " (level " + level.String() + ")", Err: info.VerifyError}
	}
	return nil
}

// errNoServerName: there is no name to verify the certificate against.
var errNoServerName = errors.New("no server name to verify the certificate against (set Options.ServerName)")

// verifyPKIX checks the chain against roots (nil: the system's) and the
// name (RFC 6125 DNS-ID as crypto/x509 implements it: SAN dNSName only, a
// wildcard only as the whole left-most label; or an IP address SAN).
func verifyPKIX(st tls.ConnectionState, roots *x509.CertPool, name string, now time.Time) error {
	if len(st.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       name,
		CurrentTime:   now,
	})
	return err
}

func isIPLiteral(s string) bool {
	return strings.Count(s, ":") >= 2 || (strings.Trim(s, "0123456789.") == "" && strings.Count(s, ".") == 3)
}
