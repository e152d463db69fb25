package smtpserver

// White-box tests of AUTH state: S-AUTH-01 (the identity does not survive
// the RFC 3207 §4.2 reset) and the failure limiter's keys and window.

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

type nopSession struct{}

func (nopSession) Mail(context.Context, smtp.Path, *MailOptions) error { return nil }
func (nopSession) Rcpt(context.Context, smtp.Path, *RcptOptions) error { return nil }
func (nopSession) Data(context.Context, io.Reader) error               { return nil }
func (nopSession) Reset(context.Context)                               {}
func (nopSession) Close() error                                        { return nil }
func (nopSession) Auth(context.Context, string, string, string, []byte) error {
	return nil
}

// TestResetSessionForgetsAuth: S-AUTH-01 (RFC 3207 §4.2: the server "MUST
// discard any knowledge obtained from the client"): the TLS reset clears
// the authenticated identity with the Session, so Conn.AuthUser is empty
// and Received no longer says ESMTPSA. (AUTH before TLS is refused, so
// through the protocol the reset never meets an identity; this checks the
// reset itself.)
func TestResetSessionForgetsAuth(t *testing.T) {
	s, err := New(Options{Backend: BackendFunc(func(context.Context, *Conn) (Session, error) { return nopSession{}, nil })})
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(s, a)
	ctx := context.Background()
	if err := c.newSession(ctx); err != nil {
		t.Fatal(err)
	}
	c.tlsState = &tls.ConnectionState{Version: tls.VersionTLS13}
	c.helo, c.esmtp = "client.example", true
	c.authUser = "alice"
	if got := c.public.protocol(); got != "ESMTPSA" {
		t.Fatalf("protocol %q, want ESMTPSA", got)
	}
	if !c.authOffered() {
		t.Fatal("AUTH not offered under TLS with an AuthSession")
	}
	if err := c.resetSession(ctx); err != nil {
		t.Fatal(err)
	}
	if u := c.public.AuthUser(); u != "" {
		t.Fatalf("S-AUTH-01: AuthUser %q after the TLS reset", u)
	}
	c.esmtp = true
	if got := c.public.protocol(); got != "ESMTPS" {
		t.Fatalf("protocol %q after the reset, want ESMTPS", got)
	}
}

// TestAuthLimiter: failures count per IPv4 address and per IPv6 /64 over a
// sliding window.
func TestAuthLimiter(t *testing.T) {
	l := NewAuthLimiter(2, time.Minute)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key := func(s string) netip.Prefix { return authKey(netip.MustParseAddr(s)) }

	l.fail(key("192.0.2.1"), t0)
	if l.blocked(key("192.0.2.1"), t0) {
		t.Fatal("blocked after one failure of two")
	}
	l.fail(key("192.0.2.1"), t0.Add(10*time.Second))
	if !l.blocked(key("192.0.2.1"), t0.Add(10*time.Second)) {
		t.Fatal("not blocked after two failures")
	}
	if l.blocked(key("192.0.2.2"), t0) {
		t.Fatal("another IPv4 address is blocked")
	}
	if l.blocked(key("::ffff:192.0.2.2"), t0) {
		t.Fatal("another (mapped) IPv4 address is blocked")
	}
	// Sliding: the first failure leaves the window after a minute.
	if !l.blocked(key("192.0.2.1"), t0.Add(time.Minute-time.Second)) {
		t.Fatal("unblocked while both failures are in the window")
	}
	if l.blocked(key("192.0.2.1"), t0.Add(time.Minute+time.Second)) {
		t.Fatal("still blocked after the first failure left the window")
	}

	// IPv6: one /64 is one client.
	l.fail(key("2001:db8:1:2::1"), t0)
	l.fail(key("2001:db8:1:2:ffff::9"), t0)
	if !l.blocked(key("2001:db8:1:2::abcd"), t0) {
		t.Fatal("IPv6 /64 not counted together")
	}
	if l.blocked(key("2001:db8:1:3::1"), t0) {
		t.Fatal("another /64 is blocked")
	}

	// Only the last failures are kept, and old clients are forgotten.
	for i := range 100 {
		l.fail(key("198.51.100.7"), t0.Add(time.Duration(i)*time.Millisecond))
	}
	l.mu.Lock()
	n := len(l.fails[key("198.51.100.7")])
	l.mu.Unlock()
	if n > 2 {
		t.Fatalf("%d failures kept, want at most 2", n)
	}
	l.fail(key("203.0.113.1"), t0.Add(time.Hour))
	l.mu.Lock()
	clients := len(l.fails)
	l.mu.Unlock()
	if clients != 1 {
		t.Fatalf("%d clients remembered after the window, want 1", clients)
	}
}

// TestAuthLimiterBounded: the limiter remembers at most
// authLimiterMaxClients clients.
func TestAuthLimiterBounded(t *testing.T) {
	l := NewAuthLimiter(5, time.Hour)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range authLimiterMaxClients + 100 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(authKey(ip), t0)
	}
	if n := len(l.fails); n > authLimiterMaxClients {
		t.Fatalf("%d clients remembered", n)
	}
}
