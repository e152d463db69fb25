package smtpserver_test

// RFC 3207 (STARTTLS) to the letter, RFC 8314 implicit TLS, the TLS
// version and group policy (RFC 8996, RFC 8997, RFC 9325), and the TLS
// details of the Received header (RFC 3848, RFC 8314 §4.3). Each test names
// its section and requirement ID.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// engineStartTLS sends STARTTLS, expects 220 and runs the handshake with
// cfg.
func engineStartTLS(t testing.TB, c *smtptest.Client, cfg *tls.Config) *tls.ConnectionState {
	t.Helper()
	engineCmd(t, c, "STARTTLS", "220 2.0.0 ")
	cs, err := c.StartTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestSTARTTLSAdvertised: RFC 3207 §2 and §3 (S-TLS-01): the EHLO keyword
// is exactly "STARTTLS", with no parameters, listed whenever TLS is
// configured and not yet active; §4.2 (S-TLS-04): "A server MUST NOT return
// the STARTTLS extension in response to an EHLO command received after a
// TLS handshake has completed"; without a TLS config it is not listed and
// the command gets 502 (RFC 5321 §4.2.4 and §2.2.2: a server must not list
// a capability it answers with 502); RFC 8314 §3.3 (S-IMP-02): not listed
// on an implicit TLS listener.
func TestSTARTTLSAdvertised(t *testing.T) {
	dynamic := func(o *smtpserver.Options) {
		cfg := o.TLSConfig
		o.TLSConfig = nil
		o.GetTLSConfig = func(context.Context) (*tls.Config, error) { return cfg, nil }
	}
	tests := []struct {
		name     string
		mod      func(*smtpserver.Options)
		implicit bool // dial with TLS from the first byte
		starttls bool // do STARTTLS first
		listed   bool
		reply    string // the reply to STARTTLS after that EHLO
	}{
		{name: "TLSConfig, plaintext", listed: true, reply: "220 2.0.0 "},
		{name: "GetTLSConfig, plaintext", mod: dynamic, listed: true, reply: "220 2.0.0 "},
		{name: "TLSConfig, after STARTTLS", starttls: true, reply: "503 5.5.1 "},
		{name: "GetTLSConfig, after STARTTLS", mod: dynamic, starttls: true, reply: "503 5.5.1 "},
		{name: "no TLS config", mod: func(o *smtpserver.Options) { o.TLSConfig = nil }, reply: "502 5.5.1 "},
		{name: "implicit TLS", mod: func(o *smtpserver.Options) { o.ImplicitTLS = true }, implicit: true, reply: "503 5.5.1 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, clientTLS := startEngine(t, tt.mod)
			var c *smtptest.Client
			if tt.implicit {
				c = dialImplicit(t, srv.Addr, clientTLS)
			} else {
				c = dialEngine(t, srv.Addr)
			}
			if tt.starttls {
				exts := engineEHLO(t, c, "client.example")
				if !slices.Contains(exts, "STARTTLS") {
					t.Fatalf("plaintext EHLO %q lacks STARTTLS", exts)
				}
				engineStartTLS(t, c, clientTLS)
			}
			exts := engineEHLO(t, c, "client.example")
			var found []string
			for _, e := range exts {
				if strings.HasPrefix(strings.ToUpper(e), "STARTTLS") {
					found = append(found, e)
				}
			}
			switch {
			case tt.listed && !slices.Equal(found, []string{"STARTTLS"}):
				t.Errorf("EHLO lists %q, want exactly one line \"STARTTLS\"", found)
			case !tt.listed && len(found) > 0:
				t.Errorf("EHLO lists %q, want no STARTTLS", found)
			}
			rep := engineCmd(t, c, "STARTTLS", tt.reply)
			if rep.Code != 220 {
				// The session goes on after the refusal.
				engineCmd(t, c, "NOOP", "250 ")
			}
		})
	}
}

// TestSTARTTLSUnavailable: RFC 3207 §4 (S-TLS-21): when TLS is temporarily
// impossible, "454 TLS not available due to temporary reason", enhanced
// 4.7.0, never 220 followed by a broken handshake; the session goes on in
// plaintext.
func TestSTARTTLSUnavailable(t *testing.T) {
	tests := []struct {
		name string
		get  func(context.Context) (*tls.Config, error)
	}{
		{"error", func(context.Context) (*tls.Config, error) { return nil, errors.New("key unreadable") }},
		{"nil config", func(context.Context) (*tls.Config, error) { return nil, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, func(o *smtpserver.Options) {
				o.TLSConfig = nil
				o.GetTLSConfig = tt.get
			})
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			rep := engineCmd(t, c, "STARTTLS", "454 4.7.0 ")
			if strings.Contains(rep.String(), "unreadable") {
				t.Errorf("reply %q discloses the error text", rep)
			}
			engineCmd(t, c, "NOOP", "250 ")
			if r := engineSend(t, c, "a@client.example", "b@mx.example.test", "Subject: x\r\n\r\n"); r.Code != 250 {
				t.Fatalf("plaintext transaction after 454: %v", r)
			}
			if msgs := backend.Messages(); len(msgs) != 1 || msgs[0].TLS {
				t.Fatalf("messages: %+v", msgs)
			}
		})
	}
}

// TestSTARTTLSResetsState: RFC 3207 §4.2 (S-TLS-06, S-TLS-07, S-TLS-26):
// "Upon completion of the TLS handshake, the SMTP protocol is reset to the
// initial state [...] The server MUST discard any knowledge obtained from
// the client, such as the argument to the EHLO command". The plaintext
// EHLO name and open transaction are gone; the Received header names only
// the EHLO given inside TLS (S-RCV-03); the backend got a new Session and
// the plaintext one was closed.
func TestSTARTTLSResetsState(t *testing.T) {
	srv, backend, clientTLS := startEngine(t, nil)
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "attacker.example")
	engineCmd(t, c, "MAIL FROM:<mallory@attacker.example>", "250 ")
	engineStartTLS(t, c, clientTLS)

	// The transaction opened in plaintext is gone.
	engineCmd(t, c, "RCPT TO:<bob@mx.example.test>", "503 5.5.1 ")
	engineEHLO(t, c, "real.example")
	engineCmd(t, c, "RCPT TO:<bob@mx.example.test>", "503 5.5.1 ")
	if made, closed := backend.Sessions(); made != 2 || closed != 1 {
		t.Fatalf("backend sessions after STARTTLS: %d made, %d closed; want 2 made, the first closed", made, closed)
	}

	if r := engineSend(t, c, "alice@real.example", "bob@mx.example.test", "Subject: after TLS\r\n\r\nhi\r\n"); r.Code != 250 {
		t.Fatalf("transaction inside TLS: %v", r)
	}
	engineCmd(t, c, "QUIT", "221 ")
	engineExpectClose(t, c)

	msgs := backend.Messages()
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From.String() != "alice@real.example" || !m.TLS || m.Hello != "real.example" {
		t.Errorf("stored message: from %s, TLS %v, hello %q", m.From, m.TLS, m.Hello)
	}
	if !strings.HasPrefix(m.Received, "Received: from real.example ") {
		t.Errorf("Received does not name real.example:\n%s", m.Received)
	}
	if strings.Contains(m.Received, "attacker") {
		t.Errorf("Received names the plaintext EHLO (RFC 3207 §4.2):\n%s", m.Received)
	}
	if made, closed := backend.Sessions(); made != 2 || closed != 2 {
		t.Errorf("backend sessions at the end: %d made, %d closed; want 2 and 2", made, closed)
	}
}

// TestSTARTTLSHandshakeFailure: RFC 3207 §4 (S-TLS-03, S-TLS-08): after
// the 220 the server speaks TLS or nothing: when the handshake fails the
// connection is closed with no further plaintext (a read gets EOF, zero
// octets), and no TLS session reaches the backend.
func TestSTARTTLSHandshakeFailure(t *testing.T) {
	tests := []struct {
		name    string
		garbage string
	}{
		{"plaintext command", "EHLO client.example\r\n"},
		{"plaintext MAIL", "MAIL FROM:<a@client.example>\r\n"},
		{"binary", "\x00\x01\x02\x03\xff\xfe\r\n"},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, nil)
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "STARTTLS", "220 2.0.0 ")
			if err := c.Write(tt.garbage); err != nil {
				t.Fatal(err)
			}
			engineExpectClose(t, c)
			if made, _ := backend.Sessions(); made != 1 {
				t.Errorf("%d sessions made, want 1 (no TLS session)", made)
			}
		})
	}
}

// TestTLSHandshakeTimeout: S-DOS-03 (POLICY: a shorter TLS-handshake
// timeout): a client that sends nothing after STARTTLS's 220, or nothing at
// all on an implicit TLS listener, is disconnected after HandshakeTimeout,
// with no plaintext.
func TestTLSHandshakeTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name     string
		implicit bool
	}{
		{"STARTTLS", false},
		{"implicit TLS", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, _ := startEngine(t, func(o *smtpserver.Options) {
				o.HandshakeTimeout = timeout
				o.ImplicitTLS = tt.implicit
			})
			var c *smtptest.Client
			if tt.implicit {
				var err error
				if c, err = smtptest.Dial(srv.Addr); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			} else {
				c = dialEngine(t, srv.Addr)
				engineCmd(t, c, "STARTTLS", "220 2.0.0 ")
			}
			start := time.Now()
			engineExpectClose(t, c)
			if d := time.Since(start); d < timeout-50*time.Millisecond || d > 4*time.Second {
				t.Fatalf("closed after %v, want about %v", d, timeout)
			}
		})
	}
}

// TestTLSVersions: RFC 8996 and RFC 8997 (S-TLS-09/12/13): TLS 1.0 and
// 1.1 are refused, even when the configured tls.Config allows them (the
// server raises MinVersion to 1.2, for TLSConfig and for GetTLSConfig's);
// TLS 1.2 works (RFC 9325 §3.1.1 MUST); TLS 1.3 is negotiated when the
// client offers it (S-TLS-10, RFC 9325 §3.1.1 SHOULD prefer).
func TestTLSVersions(t *testing.T) {
	servers := []struct {
		name string
		mod  func(*smtpserver.Options)
	}{
		{"default config", nil},
		{"config allowing TLS 1.0", func(o *smtpserver.Options) { o.TLSConfig.MinVersion = tls.VersionTLS10 }},
		// With CBC suites that TLS 1.0 could use, only the version
		// floor refuses it.
		{"config allowing TLS 1.0 with CBC suites", func(o *smtpserver.Options) {
			o.TLSConfig.MinVersion = tls.VersionTLS10
			o.TLSConfig.CipherSuites = []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			}
		}},
		{"GetTLSConfig allowing TLS 1.0", func(o *smtpserver.Options) {
			cfg := o.TLSConfig
			cfg.MinVersion = tls.VersionTLS10
			o.TLSConfig = nil
			o.GetTLSConfig = func(context.Context) (*tls.Config, error) { return cfg, nil }
		}},
	}
	clients := []struct {
		name     string
		min, max uint16
		want     uint16 // 0: refused
	}{
		{"TLS 1.0 only", tls.VersionTLS10, tls.VersionTLS10, 0},
		{"TLS 1.1 only", tls.VersionTLS11, tls.VersionTLS11, 0},
		{"TLS 1.0 to 1.1", tls.VersionTLS10, tls.VersionTLS11, 0},
		{"TLS 1.2 only", tls.VersionTLS12, tls.VersionTLS12, tls.VersionTLS12},
		{"TLS 1.0 to 1.3", tls.VersionTLS10, tls.VersionTLS13, tls.VersionTLS13},
		{"Go default", 0, 0, tls.VersionTLS13},
	}
	for _, s := range servers {
		for _, cl := range clients {
			t.Run(s.name+"/"+cl.name, func(t *testing.T) {
				t.Parallel()
				srv, _, clientTLS := startEngine(t, s.mod)
				cfg := clientTLS.Clone()
				cfg.MinVersion, cfg.MaxVersion = cl.min, cl.max
				c := dialEngine(t, srv.Addr)
				engineCmd(t, c, "STARTTLS", "220 2.0.0 ")
				cs, err := c.StartTLS(cfg)
				if cl.want == 0 {
					if err == nil {
						t.Fatalf("handshake succeeded with %s", tls.VersionName(cs.Version))
					}
					// The server closes; nothing comes in plaintext.
					if err := c.ExpectClose(); err != nil {
						t.Fatal(err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if cs.Version != cl.want {
					t.Fatalf("negotiated %s, want %s", tls.VersionName(cs.Version), tls.VersionName(cl.want))
				}
				engineEHLO(t, c, "client.example")
				engineCmd(t, c, "QUIT", "221 ")
			})
		}
	}
}

// TestTLSKeyExchangeGroup: the server prefers the hybrid post-quantum group
// X25519MLKEM768 (then X25519, P-256) when its config leaves the groups
// unset: a default Go client gets X25519MLKEM768, a client limited to X25519
// gets X25519, and TLS 1.2 (no ML-KEM) gets X25519.
func TestTLSKeyExchangeGroup(t *testing.T) {
	tests := []struct {
		name   string
		curves []tls.CurveID
		max    uint16
		want   tls.CurveID
	}{
		{"Go default", nil, 0, tls.X25519MLKEM768},
		{"client prefers X25519", []tls.CurveID{tls.X25519, tls.X25519MLKEM768}, 0, tls.X25519MLKEM768},
		{"X25519 only", []tls.CurveID{tls.X25519}, 0, tls.X25519},
		{"P-256 only", []tls.CurveID{tls.CurveP256}, 0, tls.CurveP256},
		{"TLS 1.2", nil, tls.VersionTLS12, tls.X25519},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, clientTLS := startEngine(t, nil)
			cfg := clientTLS.Clone()
			cfg.CurvePreferences, cfg.MaxVersion = tt.curves, tt.max
			c := dialEngine(t, srv.Addr)
			cs := engineStartTLS(t, c, cfg)
			if cs.CurveID != tt.want {
				t.Fatalf("group %v, want %v", cs.CurveID, tt.want)
			}
		})
	}
}

// dialImplicit connects with TLS from the first byte and reads the
// greeting inside TLS.
func dialImplicit(t testing.TB, addr string, cfg *tls.Config) *smtptest.Client {
	t.Helper()
	c, err := smtptest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.StartTLS(cfg); err != nil {
		t.Fatal(err)
	}
	engineCmd(t, c, "", "220 "+engineHostname+" ")
	return c
}

// TestImplicitTLS: RFC 8314 §3.3 (S-IMP-01/02): on an implicit TLS
// listener "a TLS handshake begins immediately", the greeting comes inside
// TLS, EHLO lists no STARTTLS and STARTTLS is refused (RFC 3207 §4.2), and
// mail is received with "with ESMTPS".
func TestImplicitTLS(t *testing.T) {
	srv, backend, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.ImplicitTLS = true })
	smtptest.RunTranscript(t, srv.Addr, clientTLS, `
# RFC 8314 §3.3: TLS first, then SMTP inside it.
!starttls
S: 220 mx.example.test ESMTP Petrel
C: EHLO client.example
S: 250-mx.example.test greets client.example
S: 250-PIPELINING
S: 250-SIZE 10485760
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250 CHUNKING
C: STARTTLS
S: 503 5.5.1 TLS already active
C: MAIL FROM:<alice@client.example>
S: 250 2.1.0 *
C: RCPT TO:<bob@mx.example.test>
S: 250 2.1.5 *
C: DATA
S: 354 *
C: Subject: implicit
C:
C: .
S: 250 2.0.0 *
C: QUIT
S: 221 2.0.0 *
!eof
`)
	msgs := backend.Messages()
	if len(msgs) != 1 || !msgs[0].TLS || !strings.Contains(msgs[0].Received, " with ESMTPS ") {
		t.Fatalf("messages: %+v", msgs)
	}
}

// TestImplicitTLSPlaintextClient: RFC 8314 §3.3 (S-IMP-03): no plaintext
// SMTP on an implicit TLS listener: a plaintext client gets no 220, nor any
// other plaintext reply, whether it waits or talks first.
func TestImplicitTLSPlaintextClient(t *testing.T) {
	tests := []struct {
		name  string
		first string // what the client sends first; "" waits
	}{
		{"waits for a greeting", ""},
		{"sends EHLO", "EHLO client.example\r\n"},
		{"sends QUIT", "QUIT\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, func(o *smtpserver.Options) {
				o.ImplicitTLS = true
				o.HandshakeTimeout = 300 * time.Millisecond
			})
			c, err := smtptest.Dial(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tt.first != "" {
				if err := c.Write(tt.first); err != nil {
					t.Fatal(err)
				}
			}
			engineExpectClose(t, c)
			if made, _ := backend.Sessions(); made != 0 {
				t.Errorf("%d sessions made before any TLS", made)
			}
		})
	}
}

// TestConnectionLimitImplicitTLS: RFC 8314 §3.3: over the connection limit
// an implicit TLS listener closes without the plaintext 421 (S-DOS-01 with
// S-IMP-03).
func TestConnectionLimitImplicitTLS(t *testing.T) {
	srv, _, clientTLS := startEngine(t, func(o *smtpserver.Options) {
		o.ImplicitTLS = true
		o.MaxConnsPerIP = 1
	})
	dialImplicit(t, srv.Addr, clientTLS)
	c, err := smtptest.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	engineExpectClose(t, c)
}

// TestReceivedHeader: RFC 5321 §4.4 and RFC 3848 (S-RCV-01): the "with"
// protocol is SMTP after HELO, ESMTP after EHLO, ESMTPS after EHLO inside
// TLS (STARTTLS or implicit); RFC 8314 §4.3 (S-RCV-02, S-TLS-27): over TLS
// the header carries the TLS version, cipher suite and key-exchange group,
// and the "tls" clause with the cipher suite.
func TestReceivedHeader(t *testing.T) {
	tests := []struct {
		name     string
		implicit bool
		starttls bool
		hello    string
		maxTLS   uint16
		utf8     bool // MAIL with SMTPUTF8
		with     string
	}{
		{name: "plaintext EHLO", hello: "EHLO", with: "ESMTP"},
		{name: "plaintext HELO", hello: "HELO", with: "SMTP"},
		{name: "STARTTLS EHLO", starttls: true, hello: "EHLO", with: "ESMTPS"},
		{name: "STARTTLS TLS 1.2", starttls: true, hello: "EHLO", maxTLS: tls.VersionTLS12, with: "ESMTPS"},
		{name: "implicit TLS", implicit: true, hello: "EHLO", with: "ESMTPS"},
		// RFC 6531 §3.7.3 (S-UTF8-04): UTF8SMTP, UTF8SMTPS.
		{name: "plaintext SMTPUTF8", hello: "EHLO", utf8: true, with: "UTF8SMTP"},
		{name: "STARTTLS SMTPUTF8", starttls: true, hello: "EHLO", utf8: true, with: "UTF8SMTPS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.ImplicitTLS = tt.implicit })
			cfg := clientTLS.Clone()
			cfg.MaxVersion = tt.maxTLS
			var c *smtptest.Client
			var cs *tls.ConnectionState
			if tt.implicit {
				c, err := smtptest.Dial(srv.Addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				if cs, err = c.StartTLS(cfg); err != nil {
					t.Fatal(err)
				}
				engineCmd(t, c, "", "220 ")
				runReceived(t, c, tt.hello, tt.utf8)
			} else {
				c = dialEngine(t, srv.Addr)
				if tt.starttls {
					cs = engineStartTLS(t, c, cfg)
				}
				runReceived(t, c, tt.hello, tt.utf8)
			}
			msgs := backend.Messages()
			if len(msgs) != 1 {
				t.Fatalf("stored %d messages, want 1", len(msgs))
			}
			h := msgs[0].Received
			if !strings.HasPrefix(h, "Received: from client.example ([127.0.0.1])\r\n\tby "+engineHostname+" (Petrel) with "+tt.with+" id test") {
				t.Errorf("Received header:\n%s", h)
			}
			if body, ok := strings.CutSuffix(h, "\r\n"); !ok || strings.ContainsAny(strings.ReplaceAll(body, "\r\n\t", " "), "\r\n") {
				t.Errorf("Received header is not a folded field ending in CRLF: %q", h)
			}
			if cs == nil {
				if strings.Contains(h, "TLS") || strings.Contains(h, "\ttls ") {
					t.Errorf("plaintext Received mentions TLS:\n%s", h)
				}
				return
			}
			cipher := tls.CipherSuiteName(cs.CipherSuite)
			version := strings.ReplaceAll(tls.VersionName(cs.Version), " ", "v") // "TLSv1.3"
			for _, want := range []string{
				"\r\n\t(" + version + " " + cipher + " " + cs.CurveID.String() + ")\r\n",
				"\r\n\ttls " + cipher + ";\r\n",
				"\r\n\tfor <bob@mx.example.test>\r\n",
			} {
				if !strings.Contains(h, want) {
					t.Errorf("Received header lacks %q:\n%s", want, h)
				}
			}
		})
	}
}

// runReceived greets with verb and sends one message, with the SMTPUTF8
// parameter when utf8 is set.
func runReceived(t *testing.T, c *smtptest.Client, verb string, utf8 bool) {
	t.Helper()
	engineCmd(t, c, verb+" client.example", "250")
	mail := "MAIL FROM:<alice@client.example>"
	if utf8 {
		mail += " SMTPUTF8"
	}
	engineCmd(t, c, mail, "250 ")
	engineCmd(t, c, "RCPT TO:<bob@mx.example.test>", "250 ")
	engineCmd(t, c, "DATA", "354 ")
	if err := c.Write("Subject: trace\r\n\r\n.\r\n"); err != nil {
		t.Fatal(err)
	}
	engineCmd(t, c, "", "250 ")
	engineCmd(t, c, "QUIT", "221 ")
}

// TestRequireTLSTransaction: RFC 3207 §4 (S-SUB-01): on a listener that
// requires TLS, mail is refused with 530 5.7.0 before STARTTLS and a full
// transaction works after it, with the state of the plaintext part gone.
func TestRequireTLSTransaction(t *testing.T) {
	srv, backend, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.RequireTLS = true })
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "MAIL FROM:<alice@client.example>", "530 5.7.0 ")
	engineStartTLS(t, c, clientTLS)
	engineEHLO(t, c, "client.example")
	if r := engineSend(t, c, "alice@client.example", "bob@mx.example.test", "Subject: submitted\r\n\r\nhello\r\n"); r.Code != 250 {
		t.Fatalf("transaction after STARTTLS: %v", r)
	}
	engineCmd(t, c, "QUIT", "221 ")
	engineExpectClose(t, c)
	msgs := backend.Messages()
	if len(msgs) != 1 || !msgs[0].TLS || string(msgs[0].Data) != "Subject: submitted\r\n\r\nhello\r\n" {
		t.Fatalf("messages: %+v", msgs)
	}
}

// TestRequireTLSValidation: RFC 3207 §4: RequireTLS without any TLS config
// could never accept mail, so New refuses it.
func TestRequireTLSValidation(t *testing.T) {
	_, err := smtpserver.New(smtpserver.Options{Backend: &smtptest.Backend{}, RequireTLS: true})
	if err == nil {
		t.Fatal("New accepted RequireTLS without a TLS config")
	}
	_, err = smtpserver.New(smtpserver.Options{Backend: &smtptest.Backend{}, ImplicitTLS: true})
	if err == nil {
		t.Fatal("New accepted ImplicitTLS without TLSConfig")
	}
}

// TestTLS12CipherSuites: RFC 9325 §4.1 and §4.2, RFC 7465 (S-TLS-14,
// S-TLS-15, S-TLS-29): over TLS 1.2 only ECDHE with AEAD suites are
// negotiated; a client offering only CBC or RC4 suites is refused and gets
// no plaintext.
func TestTLS12CipherSuites(t *testing.T) {
	tests := []struct {
		name   string
		suites []uint16
		ok     bool
	}{
		{"AES-128-GCM", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"AES-256-GCM", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"ChaCha20-Poly1305", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"CBC-SHA", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}, false},
		{"CBC-SHA256", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}, false},
		{"RC4", []uint16{tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, clientTLS := startEngine(t, nil)
			cfg := clientTLS.Clone()
			cfg.MaxVersion = tls.VersionTLS12
			cfg.CipherSuites = tt.suites
			c := dialEngine(t, srv.Addr)
			engineCmd(t, c, "STARTTLS", "220 2.0.0 ")
			cs, err := c.StartTLS(cfg)
			if !tt.ok {
				if err == nil {
					t.Fatalf("negotiated %s", tls.CipherSuiteName(cs.CipherSuite))
				}
				engineExpectClose(t, c)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cs.CipherSuite != tt.suites[0] {
				t.Fatalf("negotiated %s", tls.CipherSuiteName(cs.CipherSuite))
			}
			engineCmd(t, c, "NOOP", "250 ")
		})
	}
}

// probeBackend makes Sessions whose Data looks at the connection's TLS
// state and Received header before reading the message, as a backend that
// writes the trace header first does (Conn's methods may be called from
// Session methods).
type probeBackend struct{ smtptest.Backend }

func (b *probeBackend) NewSession(ctx context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	s, err := b.Backend.NewSession(ctx, c)
	return &probeSession{Session: s, c: c}, err
}

type probeSession struct {
	smtpserver.Session
	c *smtpserver.Conn
}

func (s *probeSession) Data(ctx context.Context, r io.Reader) error {
	_ = s.c.TLS()
	_ = s.c.Received("probe")
	return s.Session.Data(ctx, r)
}

// TestSTARTTLSDuringBDAT: RFC 3207 §4.2 with RFC 3030 §2: STARTTLS while
// a BDAT transfer is open must end the transfer (its Session.Data) before
// the handshake changes the connection's TLS state, or be refused; the
// data after TLS is a fresh session either way. With a 0-octet first chunk
// nothing synchronises Data's goroutine with the handshake, so Data reading
// Conn.TLS races with the handshake setting it (go test -race).
func TestSTARTTLSDuringBDAT(t *testing.T) {
	backend := &probeBackend{}
	srv, _, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.Backend = backend })
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
	engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
	engineCmd(t, c, "BDAT 0", "250 ")
	rep := engineCmd(t, c, "STARTTLS", "")
	if rep.Code == 220 {
		if _, err := c.StartTLS(clientTLS); err != nil {
			t.Fatal(err)
		}
		// §4.2: the BDAT transaction is gone.
		engineEHLO(t, c, "client.example")
		engineCmd(t, c, "BDAT 0 LAST", "503 ")
	} else if rep.Code != 503 {
		t.Fatalf("STARTTLS during BDAT: got %v, want 220 or 503", rep)
	}
	engineCmd(t, c, "QUIT", "221 ")
	engineExpectClose(t, c)
	if n := len(backend.Messages()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestSTARTTLSRefusedDuringBDAT: RFC 3030 §2 with RFC 3207 §4: a STARTTLS
// that is refused (503 inside TLS, 501 with a parameter, 502 without TLS,
// 454 when TLS is unavailable) leaves the session as it was. A BDAT
// transfer in progress must then either go on (the message is every chunk)
// or be refused as a whole; it must never lose the chunks already
// acknowledged with 250 and store the rest as the message.
func TestSTARTTLSRefusedDuringBDAT(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*smtpserver.Options)
		implicit bool
		cmd      string
		want     string
	}{
		{"inside TLS", func(o *smtpserver.Options) { o.ImplicitTLS = true }, true, "STARTTLS", "503 "},
		{"with a parameter", nil, false, "STARTTLS now", "501 "},
		{"no TLS configured", func(o *smtpserver.Options) { o.TLSConfig = nil }, false, "STARTTLS", "502 "},
		{"TLS unavailable", func(o *smtpserver.Options) {
			o.TLSConfig = nil
			o.GetTLSConfig = func(context.Context) (*tls.Config, error) { return nil, errors.New("no key") }
		}, false, "STARTTLS", "454 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, clientTLS := startEngine(t, tt.mod)
			var c *smtptest.Client
			if tt.implicit {
				c = dialImplicit(t, srv.Addr, clientTLS)
			} else {
				c = dialEngine(t, srv.Addr)
			}
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
			engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
			if err := c.Write("BDAT 7\r\nfirst\r\n"); err != nil {
				t.Fatal(err)
			}
			engineCmd(t, c, "", "250 ")
			// Refused: the reason given (the code shown in the table,
			// or 503 for the BDAT in progress) does not matter.
			if r := engineCmd(t, c, tt.cmd, ""); r.Code < 400 {
				t.Fatalf("%q during BDAT: got %v, want a refusal", tt.cmd, r)
			}
			if err := c.Write("BDAT 8 LAST\r\nsecond\r\n"); err != nil {
				t.Fatal(err)
			}
			rep := engineCmd(t, c, "", "")
			engineCmd(t, c, "QUIT", "221 ")
			msgs := backend.Messages()
			switch {
			case rep.Code == 250 && len(msgs) == 1 && string(msgs[0].Data) == "first\r\nsecond\r\n":
			case rep.Code >= 400 && len(msgs) == 0:
			default:
				var stored []string
				for _, m := range msgs {
					stored = append(stored, string(m.Data))
				}
				t.Fatalf("after %q: last chunk got %q, stored %q; want the whole message or none", tt.cmd, rep, stored)
			}
		})
	}
}

// TestTLSResumption: one session-ticket key set per server, so a client
// with a session cache resumes its TLS session on the next connection (an
// abbreviated handshake: the cheap reconnect of issue 5), for STARTTLS and
// implicit TLS alike; the handshake limiter's slot is still taken and
// released for it.
func TestTLSResumption(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		srv, _, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.ImplicitTLS = implicit })
		cfg := clientTLS.Clone()
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		var resumed []bool
		for range 3 {
			var cs *tls.ConnectionState
			if implicit {
				tc, err := tls.Dial("tcp", srv.Addr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				c := smtptest.NewClient(tc)
				if rep, err := c.ReadReply(); err != nil || rep.Code != 220 {
					t.Fatalf("greeting %v %v", rep, err)
				}
				st := tc.ConnectionState()
				cs = &st
				engineCmd(t, c, "QUIT", "221 ")
				_ = c.Close()
			} else {
				c := dialEngine(t, srv.Addr)
				engineEHLO(t, c, "client.example")
				cs = engineStartTLS(t, c, cfg)
				engineEHLO(t, c, "client.example")
				engineCmd(t, c, "QUIT", "221 ")
				_ = c.Close()
			}
			resumed = append(resumed, cs.DidResume)
		}
		if resumed[0] || !resumed[1] || !resumed[2] {
			t.Errorf("implicit=%v: resumed %v, want [false true true]", implicit, resumed)
		}
	}
}
