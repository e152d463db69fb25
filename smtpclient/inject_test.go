package smtpclient_test

// STARTTLS itself against scripted fake servers: response injection
// (C-INJ-01, C-TLS-10), unsolicited replies (C-INJ-02), nothing pipelined
// after STARTTLS (C-TLS-01, C-TLS-03, C-INJ-03), no STARTTLS inside TLS
// (C-TLS-09), only post-TLS capabilities (C-TLS-08), no TLS below 1.2
// (C-DOWN-01), an unusable client TLS configuration (C-TLS-02), and AUTH
// only over a verified TLS session (C-AUTH-01).

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpclient"
)

// trusted returns a certificate for mx.example and client options at
// level that trust it and name it.
func trusted(t *testing.T, level smtpclient.Level) (tls.Certificate, smtpclient.Options) {
	cert := selfSigned(t, []string{"mx.example", "127.0.0.1"})
	return cert, trusting(cert, level)
}

// trusting returns client options at level that trust cert and name
// mx.example.
func trusting(cert tls.Certificate, level smtpclient.Level) smtpclient.Options {
	opts := options(level)
	opts.ServerName = "mx.example"
	opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
	return opts
}

// C-INJ-01 / C-TLS-10: the server (or a man in the middle) puts replies
// behind its 220 to STARTTLS, in the same segment. The client must not read
// them as the replies of the TLS session: it aborts before its handshake,
// sends nothing more on that connection, and, at level May only, delivers
// on a new plaintext connection (without STARTTLS).
func TestResponseInjection(t *testing.T) {
	t.Parallel()
	cert, _ := trusted(t, smtpclient.Encrypt)
	inject := fake{
		ext: []string{"PIPELINING", "STARTTLS"},
		tls: serverTLS(cert),
		starttls: func(f *fconn) bool {
			f.mu.Lock()
			f.tlsAt = f.rec.len() - f.r.Buffered()
			f.mu.Unlock()
			f.send("220 2.0.0 Ready to start TLS\r\n250-fake.example\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n")
			_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			_, _ = io.Copy(io.Discard, f.r) // until the client closes
			return false
		},
	}
	for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt, smtpclient.Verify, smtpclient.Secure} {
		t.Run(level.String(), func(t *testing.T) {
			fs := newFake(t, inject)
			opts := trusting(cert, level)
			_, res, err := deliver(t, fs.Addr, opts)
			fs.wait()
			first := fs.conn(0)
			if all, clear := first.rec.bytes(), first.cleartext(); len(all) != len(clear) {
				t.Errorf("the client sent %q after the injected 220", all[len(clear):])
			}
			if cmds := first.commands(); !slices.Equal(cmds, []string{"EHLO client.example", "STARTTLS"}) {
				t.Errorf("commands on the attacked connection: %q", cmds)
			}
			if level != smtpclient.May {
				tlsError(t, err)
				if !errors.Is(err, smtpclient.ErrResponseInjection) {
					t.Errorf("error %v, want ErrResponseInjection", err)
				}
				if fs.count() != 1 {
					t.Errorf("%d connections, want 1", fs.count())
				}
				return
			}
			if err != nil || res.Accepted != 1 {
				t.Fatalf("may: %v", err)
			}
			if fs.count() != 2 {
				t.Fatalf("%d connections, want a plaintext retry", fs.count())
			}
			retry := fs.conn(1).commands()
			if slices.Contains(retry, "STARTTLS") || !slices.Contains(retry, "DATA") {
				t.Errorf("retry commands %q: want plaintext without STARTTLS", retry)
			}
		})
	}
}

// C-INJ-02: replies the client did not ask for must make it abort with a
// ProtocolError, not shift its matching of replies to commands by one.
func TestUnsolicitedReply(t *testing.T) {
	t.Parallel()
	cert, _ := trusted(t, smtpclient.Encrypt)

	// Inside TLS, an extra reply ahead of the EHLO reply, in the same
	// record: the client sees it together with the EHLO reply.
	t.Run("before-EHLO-reply", func(t *testing.T) {
		t.Parallel()
		fs := newFake(t, fake{
			ext: []string{"STARTTLS"}, tls: serverTLS(cert),
			reply: func(f *fconn, cmd string) (string, bool) {
				if f.inTLS() && strings.HasPrefix(cmd, "EHLO") {
					return "250 2.0.0 unsolicited\r\n" + ehloReply([]string{"PIPELINING"}), true
				}
				return "", false
			},
		})
		opts := trusting(cert, smtpclient.Encrypt)
		_, err := smtpclient.Dial(ctxT(t), fs.Addr, opts)
		var pe *smtpclient.ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("Dial: %v, want a ProtocolError", err)
		}
		fs.wait()
		if fs.conn(0).hasCommand("MAIL") {
			t.Error("the client went on to MAIL")
		}
	})

	// The greeting followed by an extra reply in one segment: the client
	// would take the extra reply as the EHLO reply.
	t.Run("after-greeting", func(t *testing.T) {
		t.Parallel()
		fs := newFake(t, fake{greeting: "220 fake.example ESMTP\r\n250 2.0.0 unsolicited\r\n", ext: []string{"PIPELINING"}})
		c, err := smtpclient.Dial(ctxT(t), fs.Addr, options(smtpclient.None))
		var pe *smtpclient.ProtocolError
		switch {
		case err == nil:
			pipelining, _ := c.Extension("PIPELINING")
			c.Close()
			t.Errorf("readGreeting does not check for data after the 220 greeting (expectAlone), so an extra reply behind it is taken as the EHLO reply (PIPELINING offered, client saw it: %v)", pipelining)
		case !errors.As(err, &pe):
			t.Errorf("Dial: %v, want a ProtocolError", err)
		}
	})

	// Inside TLS, an extra reply sent right after the handshake, before the
	// client's EHLO arrives. The client reads it as its EHLO reply; the
	// real EHLO reply then arrives while it is idle, and must be noticed
	// before the next command, or every later reply is off by one.
	t.Run("before-EHLO", func(t *testing.T) {
		t.Parallel()
		ehloAnswered := make(chan struct{})
		fs := newFake(t, fake{
			ext: []string{"STARTTLS"}, tlsExt: []string{"PIPELINING"}, tls: serverTLS(cert),
			afterHandshake: func(f *fconn) bool {
				return f.send("250 2.0.0 unsolicited\r\n")
			},
			reply: func(f *fconn, cmd string) (string, bool) {
				if f.inTLS() && strings.HasPrefix(cmd, "EHLO") {
					f.send(ehloReply([]string{"PIPELINING"}))
					close(ehloAnswered)
					return "", true
				}
				return "", false
			},
		})
		opts := trusting(cert, smtpclient.Encrypt)
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		var pe *smtpclient.ProtocolError
		if errors.As(err, &pe) {
			return // caught at once
		}
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		select {
		case <-ehloAnswered:
		case <-time.After(ioTimeout):
			t.Fatal("the fake server never answered EHLO")
		}
		time.Sleep(50 * time.Millisecond) // let the TLS record reach the client's socket
		_, err = c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{"rcpt@example.org"}}, []byte(testMsg))
		if !errors.As(err, &pe) {
			t.Error("a reply that arrives while no command is outstanding is not detected; the client's reply matching shifts by one (got " + errString(err) + ")")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// C-TLS-01, C-TLS-03, C-INJ-03: after the 220 to STARTTLS the first byte
// the client sends is a TLS handshake record (0x16, the ClientHello), never
// a pipelined command; and EHLO is sent again inside TLS before MAIL.
func TestNothingAfterSTARTTLS(t *testing.T) {
	t.Parallel()
	cert, opts := trusted(t, smtpclient.Verify)
	fs := newFake(t, fake{ext: []string{"PIPELINING", "8BITMIME", "STARTTLS"}, tls: serverTLS(cert)})
	if _, _, err := deliver(t, fs.Addr, opts); err != nil {
		t.Fatal(err)
	}
	fs.wait()
	f := fs.conn(0)
	if len(f.afterTLS) != 1 || f.afterTLS[0] != 0x16 {
		t.Errorf("first byte after the 220: %q, want 0x16 (TLS handshake)", f.afterTLS)
	}
	want := []string{"EHLO client.example", "STARTTLS", "TLS: EHLO client.example", "TLS: MAIL FROM:<sender@example.org>",
		"TLS: RCPT TO:<rcpt@example.org>", "TLS: DATA", "TLS: QUIT"}
	if got := f.commands(); !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
}

// C-TLS-09: no STARTTLS on a TLS session, implicit (RFC 8314) or after
// STARTTLS, even when the server lists it again (RFC 3207 §4.2).
func TestNoSTARTTLSInsideTLS(t *testing.T) {
	t.Parallel()
	cert, _ := trusted(t, smtpclient.Encrypt)
	t.Run("implicit", func(t *testing.T) {
		fs := newFake(t, fake{implicit: true, tls: serverTLS(cert), ext: []string{"PIPELINING", "STARTTLS"}})
		opts := trusting(cert, smtpclient.Encrypt)
		opts.ImplicitTLS = true
		opts.TLSConfig.InsecureSkipVerify = true
		c, _, err := deliver(t, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !c.TLS().Implicit {
			t.Error("TLS info not implicit")
		}
		fs.wait()
		if fs.conn(0).hasCommand("STARTTLS") {
			t.Errorf("STARTTLS sent on an implicit TLS session: %q", fs.conn(0).commands())
		}
	})
	t.Run("after-STARTTLS", func(t *testing.T) {
		fs := newFake(t, fake{tls: serverTLS(cert), ext: []string{"STARTTLS"}, tlsExt: []string{"PIPELINING", "STARTTLS"}})
		opts := trusting(cert, smtpclient.Encrypt)
		if _, _, err := deliver(t, fs.Addr, opts); err != nil {
			t.Fatal(err)
		}
		fs.wait()
		n := 0
		for _, c := range fs.conn(0).commands() {
			if strings.HasSuffix(c, "STARTTLS") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d STARTTLS commands: %q", n, fs.conn(0).commands())
		}
	})
}

// C-TLS-08: the plaintext EHLO offers AUTH CRAM-MD5 and a small SIZE, the
// EHLO inside TLS AUTH PLAIN and a larger SIZE: the client decides on the
// post-TLS list only. And the reverse: PLAIN offered only in plaintext,
// CRAM-MD5 (unsupported) in TLS: no AUTH is sent at all.
func TestPostTLSCapabilitiesOnly(t *testing.T) {
	t.Parallel()
	cert, _ := trusted(t, smtpclient.Secure)
	t.Run("PLAIN-after-TLS", func(t *testing.T) {
		fs := newFake(t, fake{tls: serverTLS(cert),
			ext:    []string{"STARTTLS", "AUTH CRAM-MD5", "SIZE 100"},
			tlsExt: []string{"AUTH PLAIN", "SIZE 100000"}})
		opts := trusting(cert, smtpclient.Secure)
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, mechs := c.Extension("auth"); mechs != "PLAIN" {
			t.Errorf("AUTH mechanisms %q, want the post-TLS PLAIN", mechs)
		}
		if err := c.Auth(ctx, "alice", "s3cr3t"); err != nil {
			t.Fatalf("Auth: %v", err)
		}
		msg := testMsg + strings.Repeat("x", 500) + "\r\n"
		if _, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{"rcpt@example.org"}}, []byte(msg)); err != nil {
			t.Fatalf("SendMail over the pre-TLS SIZE: %v", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Error(err)
		}
		fs.wait()
		f := fs.conn(0)
		if !slices.Equal(f.credentials(), []string{"alice:s3cr3t"}) || !f.hasCommand("AUTH PLAIN ") {
			t.Errorf("credentials %q, commands %q: want AUTH PLAIN inside TLS", f.credentials(), f.commands())
		}
	})
	t.Run("PLAIN-before-TLS-only", func(t *testing.T) {
		fs := newFake(t, fake{tls: serverTLS(cert),
			ext:    []string{"STARTTLS", "AUTH PLAIN LOGIN"},
			tlsExt: []string{"AUTH CRAM-MD5"}})
		opts := trusting(cert, smtpclient.Secure)
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(ctx, "alice", "s3cr3t"); !errors.Is(err, smtpclient.ErrAuthNoMechanism) {
			t.Errorf("Auth: %v, want ErrAuthNoMechanism", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Error(err)
		}
		fs.wait()
		if fs.conn(0).hasCommand("AUTH") {
			t.Errorf("AUTH sent: %q", fs.conn(0).commands())
		}
	})
}

// C-AUTH-01 (RFC 4954 §4, RFC 8314 §5): credentials never go over an
// unverified connection, even encrypted: an active attacker with a
// certificate of its own would get them.
func TestAuthNeedsVerifiedTLS(t *testing.T) {
	t.Parallel()
	attacker := selfSigned(t, []string{"mx.example"})
	fs := newFake(t, fake{tls: serverTLS(attacker), ext: []string{"STARTTLS"}, tlsExt: []string{"AUTH PLAIN LOGIN"}})
	for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt} {
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, options(level))
		if err != nil {
			t.Fatal(err)
		}
		if c.TLS() == nil || c.TLS().Verified {
			t.Fatalf("TLS %v: want an unverified session", c.TLS())
		}
		err = c.Auth(ctx, "alice", "s3cr3t")
		_ = c.Quit(ctx)
		fs.wait()
		for i := range fs.count() {
			if fs.conn(i).hasCommand("AUTH") {
				t.Error("Auth sends credentials over a TLS session whose certificate was not verified (levels may/encrypt); C-AUTH-01 forbids it")
			}
		}
		if err == nil {
			t.Errorf("%v: Auth succeeded without sending AUTH?", level)
		}
	}
}

// C-DOWN-01 (RFC 8996, RFC 8997): the client offers TLS 1.2 and 1.3 only;
// against a server limited to TLS 1.1 the handshake fails, and Encrypt never
// falls back (one connection, no MAIL in the clear). May, as Postfix,
// retries in plaintext and says why.
func TestNoTLSBelow12(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	var (
		mu       sync.Mutex
		versions [][]uint16
	)
	old := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			versions = append(versions, hello.SupportedVersions)
			mu.Unlock()
			return nil, nil
		},
	}
	for _, level := range []smtpclient.Level{smtpclient.Encrypt, smtpclient.May} {
		t.Run(level.String(), func(t *testing.T) {
			fs := newFake(t, fake{ext: []string{"STARTTLS"}, tls: old})
			_, res, err := deliver(t, fs.Addr, options(level))
			fs.wait()
			if level == smtpclient.Encrypt {
				te := tlsError(t, err)
				if !strings.Contains(te.Error(), "handshake") {
					t.Errorf("error %v", te)
				}
				if fs.count() != 1 {
					t.Errorf("%d connections: Encrypt must not retry", fs.count())
				}
				noMailInClear(t, fs.conn(0).cleartext())
				return
			}
			if err != nil || res.Accepted != 1 || fs.count() != 2 {
				t.Errorf("may: %v, %d connections; want a plaintext retry", err, fs.count())
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(versions) == 0 {
		t.Fatal("no ClientHello seen")
	}
	for _, vs := range versions {
		if slices.Min(vs) < tls.VersionTLS12 {
			t.Errorf("client offered versions %x, want none below TLS 1.2", vs)
		}
	}
}

// C-TLS-02: after the 220, the client cannot start TLS (its own TLS
// configuration allows no version it may use). It must close, not go on
// with MAIL in plaintext on that connection; at May it reconnects in
// plaintext (a new connection, as Postfix does).
func TestClientCannotStartTLS(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	for _, level := range []smtpclient.Level{smtpclient.Encrypt, smtpclient.May} {
		t.Run(level.String(), func(t *testing.T) {
			fs := newFake(t, fake{ext: []string{"STARTTLS", "PIPELINING"}, tls: serverTLS(cert)})
			opts := options(level)
			opts.TLSConfig = &tls.Config{MaxVersion: tls.VersionTLS11}
			_, _, err := deliver(t, fs.Addr, opts)
			fs.wait()
			first := fs.conn(0)
			noMailInClear(t, first.cleartext())
			if all, clear := first.rec.bytes(), first.cleartext(); len(all) != len(clear) && all[len(clear)] != 0x16 {
				t.Errorf("after the 220 the client sent %q", all[len(clear):])
			}
			if level == smtpclient.Encrypt {
				tlsError(t, err)
				if fs.count() != 1 {
					t.Errorf("%d connections", fs.count())
				}
				return
			}
			if err != nil || fs.count() != 2 || !fs.conn(1).hasCommand("MAIL") {
				t.Errorf("may: %v, %d connections", err, fs.count())
			}
		})
	}
}

// The bytes of a session never hold credentials in the clear when AUTH runs
// inside TLS: checked on the wire (the recorded client bytes).
func TestAuthCredentialsEncrypted(t *testing.T) {
	t.Parallel()
	cert, opts := trusted(t, smtpclient.Secure)
	fs := newFake(t, fake{tls: serverTLS(cert), ext: []string{"STARTTLS"}, tlsExt: []string{"AUTH LOGIN PLAIN"}})
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, fs.Addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(ctx, "alice", "s3cr3t"); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit(ctx)
	fs.wait()
	wire := fs.conn(0).rec.bytes()
	for _, s := range []string{"AUTH", "alice", "YWxpY2U", "s3cr3t", "czNjcjN0", "AGFsaWNlAHMzY3IzdA"} {
		if bytes.Contains(wire, []byte(s)) {
			t.Errorf("%q on the wire", s)
		}
	}
	if !slices.Equal(fs.conn(0).credentials(), []string{"alice:s3cr3t"}) {
		t.Errorf("credentials %q", fs.conn(0).credentials())
	}
}
