package smtpclient_test

// STARTTLS stripping and tampering by a man in the middle (requirements
// §5.2 "NO STARTTLS", §5.7, C-STRIP-01..04, C-TLS-04, C-TLS-08, C-TLS-10):
// a TCP proxy between the client and Petrel's server rewrites the
// plaintext part of the session. At level May the client may end up in
// plaintext, and says so (Fallback, a log line); at Encrypt, Verify and
// Secure it must never send a MAIL in the clear, and fails with a
// temporary TLSError (the message is deferred).

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
)

var mandatoryLevels = []smtpclient.Level{smtpclient.Encrypt, smtpclient.Verify, smtpclient.Secure}

// mitmCase is one attack.
type mitmCase struct {
	name string
	m    mitm
	// retry: at May the client reconnects in plaintext (the TLS
	// handshake failed or was tampered with), as Postfix does; otherwise
	// it goes on in plaintext on the same connection.
	retry bool
	// fallback is a substring of Fallback() at May.
	fallback string
	// logMsg is the client's log message at May.
	logMsg string
	// check, when set, checks the TLSError at mandatory levels.
	check func(t *testing.T, err error)
	// silent: the client must send nothing at all after STARTTLS (it
	// aborts before its handshake).
	silent bool
}

var mitmCases = []mitmCase{
	{
		name:     "strip-STARTTLS", // (a) C-STRIP-01
		m:        mitm{stripSTARTTLS: true},
		fallback: "STARTTLS not offered",
		logMsg:   "STARTTLS not offered; continuing in plaintext (level may)",
	},
	{
		name:     "STARTTLS-454", // (b) C-STRIP-02, C-TLS-04
		m:        mitm{refuseSTARTTLS: "454 4.7.0 TLS not available due to temporary reason"},
		fallback: "STARTTLS refused: 454",
		logMsg:   "STARTTLS refused; continuing in plaintext (level may)",
		check: func(t *testing.T, err error) {
			var se *smtp.Error
			if !errors.As(err, &se) || se.Code != 454 {
				t.Errorf("error %v: want the 454 in it", err)
			}
		},
	},
	{
		name:     "inject-after-220", // (c) C-TLS-10, C-INJ-01
		m:        mitm{inject: "250-mitm.example\r\n250 AUTH PLAIN\r\n"},
		retry:    true,
		silent:   true,
		fallback: "response injection",
		logMsg:   "response injection after STARTTLS; aborting",
		check: func(t *testing.T, err error) {
			if !errors.Is(err, smtpclient.ErrResponseInjection) {
				t.Errorf("error %v: want ErrResponseInjection", err)
			}
		},
	},
	{
		name:     "close-after-220", // (d) C-STRIP-03
		m:        mitm{closeAfter220: true},
		retry:    true,
		fallback: "handshake failed",
		logMsg:   "TLS failed at level may; retrying in plaintext",
	},
}

func TestMITMStripping(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example", "127.0.0.1"})
	for _, mc := range mitmCases {
		t.Run(mc.name, func(t *testing.T) {
			t.Parallel()
			t.Run("may", func(t *testing.T) {
				p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
				px := newProxy(t, p.Addr, mc.m)
				opts := options(smtpclient.May)
				logs := newLogRecords()
				opts.Logger = slog.New(logs)
				c, res, err := deliver(t, px.Addr, opts)
				if err != nil {
					t.Fatal(err)
				}
				if res.Accepted != 1 {
					t.Errorf("result %+v", res)
				}
				checkDelivered(t, p, false)
				if c.TLS() != nil || c.Level() != smtpclient.May || !strings.Contains(c.Fallback(), mc.fallback) {
					t.Errorf("TLS %v, Level %v, Fallback %q: want plaintext with a fallback reason containing %q",
						c.TLS(), c.Level(), c.Fallback(), mc.fallback)
				}
				if len(logs.find(mc.logMsg)) == 0 {
					t.Errorf("client did not log %q", mc.logMsg)
				}
				conns := px.connections()
				want := 1
				if mc.retry {
					want = 2
				}
				if len(conns) != want {
					t.Fatalf("%d connections through the proxy, want %d", len(conns), want)
				}
				if mc.retry {
					// The tampered connection carried no transaction, and
					// the client sent nothing after STARTTLS on it (it
					// aborted, or its handshake failed).
					noMailInClear(t, conns[0].cleartext())
					if bytes.Contains(conns[1].cleartext(), []byte("STARTTLS")) {
						t.Errorf("the plaintext retry sent STARTTLS again")
					}
				}
				if !bytes.Contains(px.cleartext(), []byte("MAIL FROM:<sender@example.org>")) {
					t.Errorf("expected the plaintext MAIL of level may in the proxy's record")
				}
			})
			for _, level := range mandatoryLevels {
				t.Run(level.String(), func(t *testing.T) {
					p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
					px := newProxy(t, p.Addr, mc.m)
					opts := options(level)
					opts.ServerName = "mx.example"
					opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
					_, _, err := deliver(t, px.Addr, opts)
					te := tlsError(t, err)
					if mc.check != nil {
						mc.check(t, err)
					}
					noMailInClear(t, px.cleartext())
					conns := px.connections()
					if len(conns) != 1 {
						t.Fatalf("%d connections: a mandatory level must not retry", len(conns))
					}
					if all, clear := conns[0].client.bytes(), conns[0].cleartext(); mc.silent && len(all) != len(clear) {
						t.Errorf("the client sent %q after STARTTLS; it should have aborted", all[len(clear):])
					}
					if len(p.backend.Messages()) != 0 {
						t.Errorf("message delivered despite %v", te)
					}
				})
			}
		})
	}
}

// A STARTTLS refused with a permanent-looking 5xx by the man in the middle
// must still defer the message at a mandatory level (C-STRIP-02: "454/5xx/
// garbage → same"), not bounce it: the TLSError is documented as
// temporary, and an attacker must not be able to make mail bounce.
func TestMITMRefusesSTARTTLSWith5xx(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
	for _, reply := range []string{"502 5.5.1 Command not implemented", "554 5.7.0 no TLS for you"} {
		px := newProxy(t, p.Addr, mitm{refuseSTARTTLS: reply})
		opts := options(smtpclient.Encrypt)
		_, _, err := deliver(t, px.Addr, opts)
		var te *smtpclient.TLSError
		if !errors.As(err, &te) {
			t.Fatalf("%s: error %v, want a TLSError", reply, err)
		}
		noMailInClear(t, px.cleartext())
		if !smtpclient.Temporary(err) {
			t.Error("smtpclient.Temporary is false for a TLSError that wraps a 5xx STARTTLS reply, so a MITM can make mandatory-TLS mail bounce")
		}
	}
}

// (e) The man in the middle offers AUTH PLAIN and a tiny SIZE in the
// plaintext EHLO. After STARTTLS the client knows only the EHLO inside TLS
// (RFC 3207 §4.2, C-TLS-08, C-TLS-11): Petrel offers no AUTH and a SIZE of
// 35 MiB there, so a message larger than the forged SIZE goes through, and
// Auth finds no mechanism (and sends nothing).
func TestMITMTamperedEHLO(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt, smtpclient.Secure} {
		t.Run(level.String(), func(t *testing.T) {
			p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
			px := newProxy(t, p.Addr, mitm{addEHLO: []string{"AUTH PLAIN LOGIN", "SIZE 10"}})
			opts := options(level)
			opts.ServerName = "mx.example"
			opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
			var trace strings.Builder
			opts.Trace = &trace
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, px.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !strings.Contains(trace.String(), "S: 250-AUTH PLAIN LOGIN") {
				t.Fatalf("the proxy did not tamper with the plaintext EHLO:\n%s", trace.String())
			}
			if ok, _ := c.Extension("AUTH"); ok {
				t.Error("AUTH from the plaintext EHLO survived STARTTLS")
			}
			if _, size := c.Extension("SIZE"); size != strconv.Itoa(smtpserver.DefaultMaxMessageBytes) {
				t.Errorf("SIZE %q, want the post-TLS %d", size, smtpserver.DefaultMaxMessageBytes)
			}
			if err := c.Auth(ctx, "user", "secret"); !errors.Is(err, smtpclient.ErrAuthNoMechanism) {
				t.Errorf("Auth: %v, want ErrAuthNoMechanism", err)
			}
			res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{"rcpt@example.org"}}, []byte(testMsg))
			if err != nil || res.Accepted != 1 {
				t.Fatalf("a %d-octet message with a forged SIZE 10: %v", len(testMsg), err)
			}
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
			checkDelivered(t, p, true)
			if all := px.connections()[0].client.bytes(); bytes.Contains(all, []byte("AUTH")) {
				t.Error("the client sent AUTH")
			}
		})
	}
}

// C-STRIP-04, C-AUTH-01: STARTTLS stripped under May and AUTH PLAIN offered
// in plaintext: the session goes on in plaintext, but Auth refuses
// (ErrAuthNotTLS) and no credentials cross the wire.
func TestMITMStrippedAuth(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
	px := newProxy(t, p.Addr, mitm{stripSTARTTLS: true, addEHLO: []string{"AUTH PLAIN LOGIN"}})
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, px.Addr, options(smtpclient.May))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS() != nil || c.Fallback() == "" {
		t.Fatalf("TLS %v, Fallback %q: want stripped", c.TLS(), c.Fallback())
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Fatalf("AUTH %v %q: the proxy did not offer AUTH", ok, mechs)
	}
	if err := c.Auth(ctx, "user", "secret"); !errors.Is(err, smtpclient.ErrAuthNotTLS) {
		t.Errorf("Auth: %v, want ErrAuthNotTLS", err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Error(err)
	}
	clear := px.cleartext()
	for _, s := range []string{"AUTH", "c2VjcmV0", "AHVzZXIAc2VjcmV0", "dXNlcg=="} {
		if bytes.Contains(clear, []byte(s)) {
			t.Errorf("the client sent %q in the clear:\n%q", s, clear)
		}
	}
}
