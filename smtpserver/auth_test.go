package smtpserver_test

// SMTP AUTH (RFC 4954) over real sockets and real TLS: requirements
// S-SUB-04..10/13, S-AUTH-01, S-INJ-06, the failure limit (S-SUB-08,
// requirements §5.5) and the Received header (S-RCV-01, S-RCV-04,
// S-UTF8-04). The main dialogues are also golden transcripts
// (testdata/transcripts/auth_*.txt).

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// The test account. The user name is one that appears nowhere else in a
// session, so that a Received header naming it is caught (S-RCV-04).
const (
	authUser     = "alice.private"
	authPassword = "correct horse battery"
)

// b64 is base64 of s, as on the wire.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// plainIR is a SASL PLAIN message (RFC 4616 §2), base64.
func plainIR(authzid, user, pass string) string { return b64(authzid + "\x00" + user + "\x00" + pass) }

// fakeClock is an Options.Now that tests move forward.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startAuth starts the test server with a backend that knows authUser,
// no delay after a failure, and mod's changes.
func startAuth(t testing.TB, mod func(*smtpserver.Options)) (*smtptest.Server, *smtptest.Backend, *tls.Config) {
	t.Helper()
	return startEngine(t, func(o *smtpserver.Options) {
		o.Backend.(*smtptest.Backend).Users = map[string]string{authUser: authPassword}
		o.AuthFailureDelay = -1
		if mod != nil {
			mod(o)
		}
	})
}

// authTLS dials srv, greets, runs STARTTLS and greets again; it returns the
// client and the post-TLS EHLO keywords.
func authTLS(t testing.TB, srv *smtptest.Server, clientTLS *tls.Config) (*smtptest.Client, []string) {
	t.Helper()
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineStartTLS(t, c, clientTLS)
	return c, engineEHLO(t, c, "client.example")
}

// authAttempts is how many times the backend's Auth was called.
func authAttempts(be *smtptest.Backend) int { return len(be.AuthAttempts()) }

// authOK authenticates c with PLAIN and an initial response.
func authOK(t testing.TB, c *smtptest.Client) {
	t.Helper()
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, authPassword), "235 2.7.0 Authentication successful")
}

// TestAuthAdvertised: S-SUB-04 (RFC 4954 §4: no plaintext password
// mechanism before TLS, POLICY: no AUTH at all) and S-SUB-06/13 (after TLS
// AUTH is advertised, RFC 4954 §3: "AUTH" and the mechanisms; RFC 3207
// §4.2 / S-TLS-24: the post-TLS list may differ). Also: no AUTH without a
// backend that can authenticate, and on an implicit-TLS listener from the
// first EHLO (RFC 8314 §3.3).
func TestAuthAdvertised(t *testing.T) {
	t.Parallel()
	hasAuth := func(kw []string) bool {
		return slices.ContainsFunc(kw, func(k string) bool { return strings.HasPrefix(strings.ToUpper(k), "AUTH") })
	}
	t.Run("STARTTLS", func(t *testing.T) {
		t.Parallel()
		srv, _, ct := startAuth(t, nil)
		c := dialEngine(t, srv.Addr)
		if kw := engineEHLO(t, c, "client.example"); hasAuth(kw) {
			t.Fatalf("S-SUB-04: AUTH advertised before TLS: %q", kw)
		}
		engineStartTLS(t, c, ct)
		kw := engineEHLO(t, c, "client.example")
		if !slices.Contains(kw, "AUTH PLAIN LOGIN") {
			t.Fatalf("S-SUB-06: post-TLS EHLO lacks AUTH PLAIN LOGIN: %q", kw)
		}
	})
	t.Run("RequireTLS", func(t *testing.T) {
		t.Parallel()
		srv, _, ct := startAuth(t, func(o *smtpserver.Options) { o.RequireTLS = true })
		c := dialEngine(t, srv.Addr)
		if kw := engineEHLO(t, c, "client.example"); hasAuth(kw) {
			t.Fatalf("S-SUB-04: AUTH advertised before TLS: %q", kw)
		}
		engineStartTLS(t, c, ct)
		if kw := engineEHLO(t, c, "client.example"); !slices.Contains(kw, "AUTH PLAIN LOGIN") {
			t.Fatalf("post-TLS EHLO lacks AUTH PLAIN LOGIN: %q", kw)
		}
	})
	t.Run("implicit TLS", func(t *testing.T) {
		t.Parallel()
		srv, _, ct := startAuth(t, func(o *smtpserver.Options) { o.ImplicitTLS = true })
		c, err := smtptest.Dial(srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.StartTLS(ct); err != nil {
			t.Fatal(err)
		}
		engineCmd(t, c, "", "220 ")
		if kw := engineEHLO(t, c, "client.example"); !slices.Contains(kw, "AUTH PLAIN LOGIN") {
			t.Fatalf("EHLO over implicit TLS lacks AUTH PLAIN LOGIN: %q", kw)
		}
		authOK(t, c)
	})
	t.Run("backend without AuthSession", func(t *testing.T) {
		t.Parallel()
		srv, _, clientTLS := startEngine(t, nil)
		c := dialEngine(t, srv.Addr)
		engineEHLO(t, c, "client.example")
		engineStartTLS(t, c, clientTLS)
		if kw := engineEHLO(t, c, "client.example"); hasAuth(kw) {
			t.Fatalf("AUTH advertised without a backend that authenticates: %q", kw)
		}
		// RFC 5321 §4.2.4: recognised, not implemented.
		engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, authPassword), "502 5.5.1 ")
	})
}

// TestAuthBeforeTLS: S-SUB-05 (RFC 4954 §4, §6): AUTH before TLS is
// refused even with valid credentials, with 538 5.7.11 "Encryption required
// for requested authentication mechanism" (or, on a RequireTLS listener,
// RFC 3207 §4's 530 5.7.0); never 334 or 235, and the backend never sees
// the credentials. The session goes on (and can authenticate after
// STARTTLS, S-AUTH-01: nothing of the refused attempt remains).
func TestAuthBeforeTLS(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		require bool
		want    string
	}{
		{"STARTTLS offered", false, "538 5.7.11 Encryption required for requested authentication mechanism"},
		{"RequireTLS", true, "530 5.7.0 Must issue a STARTTLS command first"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, be, ct := startAuth(t, func(o *smtpserver.Options) { o.RequireTLS = tt.require })
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			for _, cmd := range []string{
				"AUTH PLAIN " + plainIR("", authUser, authPassword),
				"AUTH PLAIN",
				"AUTH LOGIN",
				"AUTH LOGIN " + b64(authUser),
				"AUTH PLAIN =",
				"AUTH CRAM-MD5",
			} {
				engineCmd(t, c, cmd, tt.want)
			}
			if n := authAttempts(be); n != 0 {
				t.Fatalf("the backend was asked %d times before TLS", n)
			}
			engineStartTLS(t, c, ct)
			engineEHLO(t, c, "client.example")
			authOK(t, c)
		})
	}
}

// TestAuthMechanisms: S-SUB-06/13 (RFC 4954 §4): PLAIN with an initial
// response, PLAIN after an empty "334 " challenge, LOGIN with its base64
// challenges, with or without an initial response; each ends in "235 2.7.0"
// and the session is then authenticated (Conn.AuthUser, used by the
// backend in the transaction that follows).
func TestAuthMechanisms(t *testing.T) {
	t.Parallel()
	// step: what the client sends, and the reply line it then gets.
	type step struct{ send, want string }
	for _, tt := range []struct {
		name  string
		steps []step
		mech  string
		authz string
	}{
		{"PLAIN initial response", []step{{"AUTH PLAIN " + plainIR("", authUser, authPassword), "235 2.7.0 Authentication successful"}}, "PLAIN", ""},
		{"PLAIN empty challenge", []step{
			{"AUTH PLAIN", "334 "},
			{plainIR("", authUser, authPassword), "235 2.7.0 Authentication successful"},
		}, "PLAIN", ""},
		{"PLAIN authzid equal to authcid", []step{{"AUTH PLAIN " + plainIR(authUser, authUser, authPassword), "235 2.7.0 Authentication successful"}}, "PLAIN", authUser},
		{"plain in lower case", []step{{"auth plain " + plainIR("", authUser, authPassword), "235 2.7.0 Authentication successful"}}, "PLAIN", ""},
		{"LOGIN", []step{
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{b64(authUser), "334 UGFzc3dvcmQ6"},
			{b64(authPassword), "235 2.7.0 Authentication successful"},
		}, "LOGIN", ""},
		{"LOGIN initial response", []step{
			{"AUTH LOGIN " + b64(authUser), "334 UGFzc3dvcmQ6"},
			{b64(authPassword), "235 2.7.0 Authentication successful"},
		}, "LOGIN", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, be, ct := startAuth(t, nil)
			c, _ := authTLS(t, srv, ct)
			for _, st := range tt.steps {
				rep, err := c.Cmd(st.send)
				if err != nil {
					t.Fatalf("%q: %v", st.send, err)
				}
				if len(rep.Lines) != 1 || rep.Lines[0] != st.want {
					t.Fatalf("%q: got %q, want %q", st.send, rep, st.want)
				}
			}
			if r := engineSend(t, c, "alice@client.example", "bob@elsewhere.example", "Subject: submitted\r\n\r\nhi\r\n"); r.Code != 250 {
				t.Fatalf("transaction after AUTH: %v", r)
			}
			engineCmd(t, c, "QUIT", "221 ")
			msgs := be.Messages()
			if len(msgs) != 1 || msgs[0].AuthUser != authUser {
				t.Fatalf("messages: %+v, want one from AuthUser %q", msgs, authUser)
			}
			want := []smtptest.AuthAttempt{{Mech: tt.mech, Identity: tt.authz, Username: authUser, OK: true}}
			if got := be.AuthAttempts(); !slices.Equal(got, want) {
				t.Fatalf("backend Auth calls: %+v, want %+v", got, want)
			}
		})
	}
}

// TestAuthAgain: S-SUB-07 (RFC 4954 §4: "After a successful AUTH command
// completes, a server MUST reject any further AUTH commands with a 503
// reply"), whatever the mechanism and even with other credentials; the
// backend is not asked again, and the identity stays the first one.
func TestAuthAgain(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, func(o *smtpserver.Options) {
		o.Backend.(*smtptest.Backend).Users["mallory"] = "pw"
	})
	c, _ := authTLS(t, srv, ct)
	authOK(t, c)
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", "mallory", "pw"), "503 5.5.1 ")
	engineCmd(t, c, "AUTH LOGIN", "503 5.5.1 ")
	engineCmd(t, c, "AUTH PLAIN", "503 5.5.1 ")
	engineCmd(t, c, "AUTH CRAM-MD5", "503 5.5.1 ")
	// EHLO and RSET end the transaction, not the authentication.
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "RSET", "250 ")
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", "mallory", "pw"), "503 5.5.1 ")
	if n := authAttempts(be); n != 1 {
		t.Fatalf("backend asked %d times, want 1", n)
	}
	if r := engineSend(t, c, "a@client.example", "b@elsewhere.example", "Subject: x\r\n\r\n"); r.Code != 250 {
		t.Fatal(r)
	}
	if msgs := be.Messages(); len(msgs) != 1 || msgs[0].AuthUser != authUser {
		t.Fatalf("messages: %+v", msgs)
	}
}

// TestAuthInvalid: S-SUB-08 (RFC 4954 §6): wrong credentials get "535
// 5.7.8 Authentication credentials invalid", alike for a wrong password and
// an unknown user; a PLAIN authorization identity other than the user's
// (requirements §5.5) too, without asking the backend. The session stays
// unauthenticated and may try again.
func TestAuthInvalid(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	c, _ := authTLS(t, srv, ct)
	const invalid = "535 5.7.8 Authentication credentials invalid"
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, "wrong"), invalid)
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", "nobody", authPassword), invalid)
	engineCmd(t, c, "AUTH LOGIN "+b64(authUser), "334 UGFzc3dvcmQ6")
	engineCmd(t, c, b64("wrong"), invalid)
	// Right password, someone else's identity.
	engineCmd(t, c, "AUTH PLAIN "+plainIR("bob", authUser, authPassword), invalid)
	if n := authAttempts(be); n != 3 {
		t.Fatalf("backend asked %d times, want 3 (not for the authzid mismatch)", n)
	}
	if r := engineSend(t, c, "a@client.example", "b@elsewhere.example", "Subject: x\r\n\r\n"); r.Code != 250 {
		t.Fatal(r)
	}
	if msgs := be.Messages(); len(msgs) != 1 || msgs[0].AuthUser != "" || strings.Contains(msgs[0].Received, "ESMTPSA") {
		t.Fatalf("a failed AUTH authenticated: %+v", msgs)
	}
	authOK(t, c)
}

// TestAuthCancel: S-SUB-09 (RFC 4954 §4: a client cancelling with "*"
// gets 501), at each challenge; the backend is not asked and the session
// can authenticate afterwards.
func TestAuthCancel(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	c, _ := authTLS(t, srv, ct)
	const cancelled = "501 5.7.0 Authentication cancelled"
	engineCmd(t, c, "AUTH PLAIN", "334 ")
	engineCmd(t, c, "*", cancelled)
	engineCmd(t, c, "AUTH LOGIN", "334 VXNlcm5hbWU6")
	engineCmd(t, c, "*", cancelled)
	engineCmd(t, c, "AUTH LOGIN", "334 VXNlcm5hbWU6")
	engineCmd(t, c, b64(authUser), "334 UGFzc3dvcmQ6")
	engineCmd(t, c, "*", cancelled)
	engineCmd(t, c, "AUTH LOGIN "+b64(authUser), "334 UGFzc3dvcmQ6")
	engineCmd(t, c, "*", cancelled)
	if n := authAttempts(be); n != 0 {
		t.Fatalf("backend asked %d times", n)
	}
	engineCmd(t, c, "NOOP", "250 ")
	authOK(t, c)
}

// TestAuthInTransaction: S-SUB-10 (RFC 4954 §4: "The AUTH command is not
// permitted during a mail transaction. An AUTH command issued during a mail
// transaction MUST be rejected with a 503 reply"): after MAIL, after RCPT,
// and during a BDAT transfer (RFC 3030); the transaction is kept; after it
// ends AUTH works.
func TestAuthInTransaction(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	c, _ := authTLS(t, srv, ct)
	const refused = "503 5.5.1 AUTH not permitted during a mail transaction"
	auth := "AUTH PLAIN " + plainIR("", authUser, authPassword)
	engineCmd(t, c, "MAIL FROM:<alice@client.example>", "250 ")
	engineCmd(t, c, auth, refused)
	engineCmd(t, c, "AUTH LOGIN", refused)
	engineCmd(t, c, "RCPT TO:<bob@elsewhere.example>", "250 ")
	engineCmd(t, c, auth, refused)
	if err := c.Write("BDAT 9\r\nSubject: "); err != nil {
		t.Fatal(err)
	}
	engineCmd(t, c, "", "250 ")
	engineCmd(t, c, auth, refused)
	if err := c.Write("BDAT 5 LAST\r\nx\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	engineCmd(t, c, "", "250 ")
	if n := authAttempts(be); n != 0 {
		t.Fatalf("backend asked %d times during the transaction", n)
	}
	if msgs := be.Messages(); len(msgs) != 1 || string(msgs[0].Data) != "Subject: x\r\n\r\n" || msgs[0].AuthUser != "" {
		t.Fatalf("messages: %+v", msgs)
	}
	authOK(t, c)
}

// TestAuthSyntax: RFC 4954 §4 and §6 replies to malformed exchanges:
// unknown mechanism 504 5.5.4, invalid base64 501 5.5.2 (initial response
// and continuation), malformed PLAIN messages 501 5.5.2 (RFC 4616 §2),
// AUTH before EHLO or after HELO 503 5.5.1. None asks the backend.
func TestAuthSyntax(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	c, _ := authTLS(t, srv, ct)
	for _, tt := range []struct{ send, want string }{
		{"AUTH", "501 5.5.4 "},
		{"AUTH CRAM-MD5", "504 5.5.4 Unrecognized authentication mechanism"},
		{"AUTH SCRAM-SHA-256 " + b64("n,,n=user,r=abc"), "504 5.5.4 "},
		{"AUTH PLAIN not-base64!", "501 5.5.2 Invalid base64 data"},
		{"AUTH PLAIN AGEAYmI", "501 5.5.2 Invalid base64 data"}, // "\x00a\x00bb" without its padding
		{"AUTH PLAIN =", "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + b64(authUser+"\x00"+authPassword), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + b64("\x00"+authUser+"\x00"+authPassword+"\x00x"), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + plainIR("", "", authPassword), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + plainIR("", authUser, ""), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + plainIR("", "alice\r\nRCPT", authPassword), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + plainIR("", "\xff\xfe", authPassword), "501 5.5.2 Malformed authentication data"},
		{"AUTH LOGIN =", "501 5.5.2 Malformed authentication data"},
	} {
		engineCmd(t, c, tt.send, tt.want)
	}
	engineCmd(t, c, "AUTH PLAIN", "334 ")
	engineCmd(t, c, "=", "501 5.5.2 Invalid base64 data") // "=" is for initial responses only
	engineCmd(t, c, "AUTH LOGIN", "334 VXNlcm5hbWU6")
	engineCmd(t, c, "%%%", "501 5.5.2 Invalid base64 data")
	if n := authAttempts(be); n != 0 {
		t.Fatalf("backend asked %d times", n)
	}

	// AUTH is an ESMTP extension: after STARTTLS, not before EHLO, and
	// not in a HELO session.
	c2 := dialEngine(t, srv.Addr)
	engineEHLO(t, c2, "client.example")
	engineStartTLS(t, c2, ct)
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, authPassword), "503 5.5.1 Send EHLO first")
	engineCmd(t, c2, "HELO client.example", "250 ")
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, authPassword), "503 5.5.1 Send EHLO first")
	engineEHLO(t, c2, "client.example")
	authOK(t, c2)
}

// TestAuthInjection: S-INJ-06 and S-AUTH-01 (RFC 3207 §4.2, §5; the
// CVE-2011-0411 class): an AUTH PLAIN with valid credentials injected in
// plaintext after STARTTLS is never run, whether it comes with STARTTLS or
// after its 220: the connection is closed and the backend never sees the
// credentials. A clean session inside TLS is unauthenticated (its mail
// carries no AuthUser and "with ESMTPS"), and its own AUTH gets 235, not
// 503 "already authenticated".
func TestAuthInjection(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	inject := "AUTH PLAIN " + plainIR("", authUser, authPassword) + "\r\n"

	t.Run("same segment", func(t *testing.T) {
		c := dialEngine(t, srv.Addr)
		if err := c.Write("EHLO client.example\r\nSTARTTLS\r\n" + inject); err != nil {
			t.Fatal(err)
		}
		engineCmd(t, c, "", "250 ")
		engineCmd(t, c, "", "220 ")
		engineExpectClose(t, c)
	})
	t.Run("after the 220", func(t *testing.T) {
		c := dialEngine(t, srv.Addr)
		engineEHLO(t, c, "client.example")
		engineCmd(t, c, "STARTTLS", "220 ")
		if err := c.Write(inject); err != nil {
			t.Fatal(err)
		}
		// The server reads the injected line as its ClientHello: the
		// handshake fails and the connection is closed.
		if _, err := c.StartTLS(ct); err == nil {
			if err := c.Write("NOOP\r\n"); err == nil {
				if rep, err := c.ReadReply(); err == nil {
					t.Fatalf("TLS session after injected plaintext: %v", rep)
				}
			}
		}
	})
	if n := authAttempts(be); n != 0 {
		t.Fatalf("S-INJ-06: the injected AUTH reached the backend (%d calls)", n)
	}

	c, _ := authTLS(t, srv, ct)
	if r := engineSend(t, c, "victim@client.example", "bob@elsewhere.example", "Subject: before AUTH\r\n\r\n"); r.Code != 250 {
		t.Fatal(r)
	}
	authOK(t, c)
	msgs := be.Messages()
	if len(msgs) != 1 || msgs[0].AuthUser != "" || !strings.Contains(msgs[0].Received, " with ESMTPS id ") {
		t.Fatalf("S-INJ-06: mail before AUTH in the clean session looks authenticated: %+v", msgs)
	}
}

// TestAuthResetBySTARTTLS: S-AUTH-01 (RFC 3207 §4.2: the server "MUST
// discard any knowledge obtained from the client" before TLS). AUTH before
// TLS is refused, so there is no authentication to carry over; what the
// client tried in plaintext leaves nothing behind: after STARTTLS the
// session is unauthenticated (mail says ESMTPS, no AuthUser) and AUTH gets
// 235, not 503. (auth_internal_test.go checks that the connection forgets an
// identity at the TLS reset.)
func TestAuthResetBySTARTTLS(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, nil)
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, authPassword), "538 5.7.11 ")
	engineCmd(t, c, "AUTH LOGIN", "538 5.7.11 ")
	engineStartTLS(t, c, ct)
	engineEHLO(t, c, "client.example")
	if r := engineSend(t, c, "a@client.example", "b@elsewhere.example", "Subject: x\r\n\r\n"); r.Code != 250 {
		t.Fatal(r)
	}
	authOK(t, c)
	if r := engineSend(t, c, "a@client.example", "b@elsewhere.example", "Subject: y\r\n\r\n"); r.Code != 250 {
		t.Fatal(r)
	}
	msgs := be.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if msgs[0].AuthUser != "" || !strings.Contains(msgs[0].Received, " with ESMTPS id ") {
		t.Errorf("before AUTH: AuthUser %q, Received:\n%s", msgs[0].AuthUser, msgs[0].Received)
	}
	if msgs[1].AuthUser != authUser || !strings.Contains(msgs[1].Received, " with ESMTPSA id ") {
		t.Errorf("after AUTH: AuthUser %q, Received:\n%s", msgs[1].AuthUser, msgs[1].Received)
	}
}

// TestAuthReceived: S-RCV-01 (RFC 3848: "ESMTPSA" for TLS plus AUTH),
// S-UTF8-04 (RFC 6531 §3.7.3: "UTF8SMTPSA"), and S-RCV-04: the header never
// discloses the authenticated user name.
func TestAuthReceived(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, mail, with string
	}{
		{"ESMTPSA", "MAIL FROM:<alice@client.example>", "ESMTPSA"},
		{"UTF8SMTPSA", "MAIL FROM:<alice@client.example> SMTPUTF8", "UTF8SMTPSA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, be, ct := startAuth(t, nil)
			c, _ := authTLS(t, srv, ct)
			authOK(t, c)
			engineCmd(t, c, tt.mail, "250 ")
			engineCmd(t, c, "RCPT TO:<bob@elsewhere.example>", "250 ")
			engineCmd(t, c, "DATA", "354 ")
			if err := c.Write("Subject: trace\r\n\r\n.\r\n"); err != nil {
				t.Fatal(err)
			}
			engineCmd(t, c, "", "250 ")
			msgs := be.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			h := msgs[0].Received
			if !strings.Contains(h, " (Petrel) with "+tt.with+" id test\r\n") {
				t.Errorf("Received lacks %q:\n%s", tt.with, h)
			}
			if strings.Contains(strings.ToLower(h), "alice.private") || strings.Contains(h, "private") {
				t.Errorf("S-RCV-04: Received discloses the user name:\n%s", h)
			}
		})
	}
}

// TestAuthLineLength: RFC 4954 §4 ("12288 octets is considered to be a
// sufficient line length limit") and §6 / S-SUB-08 ("500 5.5.6
// Authentication Exchange line is too long"). An AUTH command line and a
// response line of 12288 octets (CRLF not counted) are read and processed;
// one octet more gets 500 5.5.6; a huge one too, read through without being
// kept, and the session goes on. Long credentials (a 9000-octet password)
// work. Other commands keep RFC 5321's 512 octets.
func TestAuthLineLength(t *testing.T) {
	t.Parallel()
	longPassword := strings.Repeat("p", 9000)
	srv, be, ct := startAuth(t, func(o *smtpserver.Options) {
		o.Backend.(*smtptest.Backend).Users["long"] = longPassword
	})
	c, _ := authTLS(t, srv, ct)
	const tooLong = "500 5.5.6 Authentication exchange line is too long"

	// The command line. "AUTH PLAIN " is 11 octets; 12277 octets of
	// base64 alphabet that is no valid base64 (length not a multiple of
	// 4) make 12288: read whole, refused as base64.
	line := "AUTH PLAIN " + strings.Repeat("A", 12277)
	engineCmd(t, c, line, "501 5.5.2 Invalid base64 data")
	engineCmd(t, c, line+"A", tooLong)
	engineCmd(t, c, "AUTH PLAIN "+strings.Repeat("A", 1<<20), tooLong)
	engineCmd(t, c, "NOOP", "250 ")

	// A response line after "334 ": 12288 octets of valid base64 (of
	// octets that are no PLAIN message) are decoded; 12292 are not read.
	engineCmd(t, c, "AUTH PLAIN", "334 ")
	engineCmd(t, c, strings.Repeat("AAAA", 3072), "501 5.5.2 Malformed authentication data")
	engineCmd(t, c, "AUTH PLAIN", "334 ")
	engineCmd(t, c, strings.Repeat("AAAA", 3073), tooLong)
	engineCmd(t, c, "AUTH LOGIN", "334 VXNlcm5hbWU6")
	engineCmd(t, c, b64(authUser), "334 UGFzc3dvcmQ6")
	engineCmd(t, c, strings.Repeat("x", 1<<20), tooLong)
	engineCmd(t, c, "NOOP", "250 ")
	if n := authAttempts(be); n != 0 {
		t.Fatalf("backend asked %d times", n)
	}

	// Other verbs: still 512 octets (RFC 5321 §4.5.3.1.4).
	engineCmd(t, c, "NOOP "+strings.Repeat("x", 600), "500 5.5.2 ")

	// A 9000-octet password: 12024 octets of base64.
	ir := plainIR("", "long", longPassword)
	if n := len("AUTH PLAIN " + ir); n <= 512 || n > 12288 {
		t.Fatalf("test line of %d octets", n)
	}
	engineCmd(t, c, "AUTH PLAIN "+ir, "235 2.7.0 ")
}

// TestAuthRateLimit: the failure limit (S-SUB-08 POLICY, requirements
// §5.5): after MaxAuthFailures (5) failures from one client address within
// AuthFailureWindow (5 minutes), every AUTH from it, on this connection or
// another, gets "454 4.7.0 Too many authentication failures" without the
// backend being asked, even with valid credentials; another address is not
// affected; once the window has passed (an injected clock, Options.Now),
// AUTH works again.
func TestAuthRateLimit(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	srv, be, ct := startAuth(t, func(o *smtpserver.Options) { o.Now = clock.Now })
	const tooMany = "454 4.7.0 Too many authentication failures, try again later"
	c, _ := authTLS(t, srv, ct)
	for i := range smtpserver.DefaultMaxAuthFailures {
		clock.Add(time.Second)
		if i%2 == 0 {
			engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, "guess"), "535 5.7.8 ")
		} else {
			engineCmd(t, c, "AUTH LOGIN", "334 ")
			engineCmd(t, c, b64(authUser), "334 ")
			engineCmd(t, c, b64("guess"), "535 5.7.8 ")
		}
	}
	if n := authAttempts(be); n != smtpserver.DefaultMaxAuthFailures {
		t.Fatalf("backend asked %d times, want %d", n, smtpserver.DefaultMaxAuthFailures)
	}
	// The sixth attempt: refused before any challenge, valid or not.
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, authPassword), tooMany)
	engineCmd(t, c, "AUTH LOGIN", tooMany)
	engineCmd(t, c, "AUTH PLAIN", tooMany)

	// Another connection from the same address.
	c2, _ := authTLS(t, srv, ct)
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, authPassword), tooMany)
	if n := authAttempts(be); n != smtpserver.DefaultMaxAuthFailures {
		t.Fatalf("backend asked %d times over the limit", n)
	}

	// Another address (127.0.0.2 is loopback too on Linux).
	if nc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}).Dial("tcp", srv.Addr); err != nil {
		t.Logf("no second loopback address (%v); other-address check skipped", err)
	} else {
		c3 := smtptest.NewClient(nc)
		t.Cleanup(func() { _ = c3.Close() })
		engineCmd(t, c3, "", "220 ")
		engineEHLO(t, c3, "client.example")
		engineStartTLS(t, c3, ct)
		engineEHLO(t, c3, "client.example")
		authOK(t, c3)
	}

	// The window is sliding: the oldest failure leaves it first.
	clock.Add(smtpserver.DefaultAuthFailureWindow - time.Duration(smtpserver.DefaultMaxAuthFailures)*time.Second)
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, authPassword), tooMany)
	clock.Add(time.Second + time.Millisecond)
	// One failure has left the window: one attempt is allowed.
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, "guess"), "535 5.7.8 ")
	engineCmd(t, c2, "AUTH PLAIN "+plainIR("", authUser, authPassword), tooMany)
	clock.Add(smtpserver.DefaultAuthFailureWindow)
	authOK(t, c2)
	// The first connection too.
	authOK(t, c)
}

// TestAuthLimiterShared: one AuthLimiter shared by two listeners (587 and
// 465) counts their failures together.
func TestAuthLimiterShared(t *testing.T) {
	t.Parallel()
	lim := smtpserver.NewAuthLimiter(2, time.Hour)
	srvA, _, ctA := startAuth(t, func(o *smtpserver.Options) { o.AuthLimiter = lim })
	srvB, beB, ctB := startAuth(t, func(o *smtpserver.Options) { o.AuthLimiter = lim })
	a, _ := authTLS(t, srvA, ctA)
	engineCmd(t, a, "AUTH PLAIN "+plainIR("", authUser, "guess1"), "535 ")
	engineCmd(t, a, "AUTH PLAIN "+plainIR("", authUser, "guess2"), "535 ")
	b, _ := authTLS(t, srvB, ctB)
	engineCmd(t, b, "AUTH PLAIN "+plainIR("", authUser, authPassword), "454 4.7.0 ")
	if n := authAttempts(beB); n != 0 {
		t.Fatalf("second listener's backend asked %d times", n)
	}
}

// TestAuthFailureDelay: each failure is answered after AuthFailureDelay
// (default 1 s), a success at once.
func TestAuthFailureDelay(t *testing.T) {
	t.Parallel()
	srv, _, ct := startAuth(t, func(o *smtpserver.Options) { o.AuthFailureDelay = 0 }) // 0: the default
	c, _ := authTLS(t, srv, ct)
	start := time.Now()
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, "guess"), "535 5.7.8 ")
	if d := time.Since(start); d < smtpserver.DefaultAuthFailureDelay {
		t.Errorf("failure answered after %v, want at least %v", d, smtpserver.DefaultAuthFailureDelay)
	}
	start = time.Now()
	authOK(t, c)
	if d := time.Since(start); d >= smtpserver.DefaultAuthFailureDelay {
		t.Errorf("success answered after %v", d)
	}
}

// TestAuthBackendErrors: RFC 4954 §6: a backend error that is no
// *smtp.Error is logged and answered "454 4.7.0" (temporary); a 4xx
// *smtp.Error is sent as it is. Neither counts as a failed attempt.
func TestAuthBackendErrors(t *testing.T) {
	t.Parallel()
	var fail sync.Map // user name → error
	srv, _, ct := startAuth(t, func(o *smtpserver.Options) {
		o.Backend.(*smtptest.Backend).AuthErr = func(user string) error {
			if e, ok := fail.Load(user); ok {
				return e.(error)
			}
			return nil
		}
		o.MaxAuthFailures = 1
	})
	fail.Store("db-down", errors.New("users database: connection refused"))
	fail.Store("busy", &smtp.Error{Code: 454, Enhanced: smtp.E470Security, Message: "Try later"})
	c, _ := authTLS(t, srv, ct)
	for range 3 {
		rep := engineCmd(t, c, "AUTH PLAIN "+plainIR("", "db-down", "pw"), "454 4.7.0 Temporary authentication failure")
		if strings.Contains(rep.String(), "refused") {
			t.Fatalf("internal error text in the reply: %v", rep)
		}
		engineCmd(t, c, "AUTH PLAIN "+plainIR("", "busy", "pw"), "454 4.7.0 Try later")
	}
	authOK(t, c) // MaxAuthFailures is 1: none of those counted
}

// TestAuthLogging: requirements §5.5 ("credentials never logged"): the log
// has the user name and the outcome of each attempt, never the password nor
// the base64 exchange.
func TestAuthLogging(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, _, ct := startAuth(t, func(o *smtpserver.Options) { o.Logger = logger })
	c, _ := authTLS(t, srv, ct)
	const wrong = "Wr0ng-Guess-Pw"
	secrets := []string{authPassword, wrong, plainIR("", authUser, wrong), plainIR("", authUser, authPassword), b64(wrong), b64(authPassword)}
	engineCmd(t, c, "AUTH PLAIN "+plainIR("", authUser, wrong), "535 ")
	engineCmd(t, c, "AUTH LOGIN", "334 ")
	engineCmd(t, c, b64(authUser), "334 ")
	engineCmd(t, c, b64(wrong), "535 ")
	engineCmd(t, c, "AUTH PLAIN "+plainIR("bob", authUser, authPassword), "535 ")
	authOK(t, c)
	engineCmd(t, c, "QUIT", "221 ")
	engineExpectClose(t, c)
	_ = srv.Close()
	mu.Lock()
	log := buf.String()
	mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("log contains %q:\n%s", s, log)
		}
	}
	if n := strings.Count(log, "user="+authUser); n < 4 {
		t.Errorf("log names the user %d times, want one per attempt (4):\n%s", n, log)
	}
	if !strings.Contains(log, "AUTH succeeded") || strings.Count(log, "AUTH failed") != 3 {
		t.Errorf("log lacks the outcomes:\n%s", log)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestAuthSessionContext: Auth gets the session's context, and a backend
// may see the identity through Conn.AuthUser only after it returns nil.
func TestAuthSessionContext(t *testing.T) {
	t.Parallel()
	be := &ctxAuthBackend{}
	srv, _, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.Backend = be })
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineStartTLS(t, c, clientTLS)
	engineEHLO(t, c, "client.example")
	authOK(t, c)
	engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
	be.mu.Lock()
	defer be.mu.Unlock()
	if !be.hadCtx || be.userDuring != "" || be.userAfter != authUser {
		t.Fatalf("ctx %v, AuthUser during Auth %q, after %q", be.hadCtx, be.userDuring, be.userAfter)
	}
}

type ctxAuthBackend struct {
	smtptest.Backend
	mu                    sync.Mutex
	hadCtx                bool
	userDuring, userAfter string
}

func (b *ctxAuthBackend) NewSession(ctx context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	s, err := b.Backend.NewSession(ctx, c)
	return &ctxAuthSession{Session: s, b: b, c: c}, err
}

type ctxAuthSession struct {
	smtpserver.Session
	b *ctxAuthBackend
	c *smtpserver.Conn
}

func (s *ctxAuthSession) Auth(ctx context.Context, _, _, username string, password []byte) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.hadCtx = ctx != nil && ctx.Err() == nil
	s.b.userDuring = s.c.AuthUser()
	if username != authUser || string(password) != authPassword {
		return errors.New("unexpected credentials")
	}
	return nil
}

func (s *ctxAuthSession) Mail(ctx context.Context, from smtp.Path, opts *smtpserver.MailOptions) error {
	s.b.mu.Lock()
	s.b.userAfter = s.c.AuthUser()
	s.b.mu.Unlock()
	return s.Session.Mail(ctx, from, opts)
}

// TestAuthRateLimitDuringExchange: failures on other connections while a
// client sits in a LOGIN exchange count too: when its password comes, the
// limit is checked again and the backend is not asked.
func TestAuthRateLimitDuringExchange(t *testing.T) {
	t.Parallel()
	srv, be, ct := startAuth(t, func(o *smtpserver.Options) { o.MaxAuthFailures = 2 })
	a, _ := authTLS(t, srv, ct)
	engineCmd(t, a, "AUTH LOGIN "+b64(authUser), "334 UGFzc3dvcmQ6")
	b, _ := authTLS(t, srv, ct)
	engineCmd(t, b, "AUTH PLAIN "+plainIR("", authUser, "guess1"), "535 ")
	engineCmd(t, b, "AUTH PLAIN "+plainIR("", authUser, "guess2"), "535 ")
	engineCmd(t, a, b64(authPassword), "454 4.7.0 Too many authentication failures, try again later")
	if n := authAttempts(be); n != 2 {
		t.Fatalf("backend asked %d times, want 2", n)
	}
}

// TestDebugTrace: at level debug the server logs the protocol trace, one
// line per command and per reply, with AUTH's credentials redacted (the
// initial response, and continuation lines are never logged).
func TestDebugTrace(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	})
	srv, _, clientTLS := startAuth(t, func(o *smtpserver.Options) {
		o.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c, _ := authTLS(t, srv, clientTLS)
	authOK(t, c)
	engineCmd(t, c, "AUTH LOGIN", "503 5.5.1 Already authenticated")
	engineCmd(t, c, "NOOP", "250 2.0.0 OK")
	engineCmd(t, c, "QUIT", "221 2.0.0 Bye")
	_ = c.Close()
	srv.Close()
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	for _, want := range []string{`msg="C: EHLO client.example"`, `msg="S: 250-`, `msg="C: STARTTLS"`,
		`msg="C: AUTH PLAIN [redacted]"`, `msg="S: 235 2.7.0 Authentication successful"`, `msg="C: NOOP"`} {
		if !strings.Contains(got, want) {
			t.Errorf("debug log lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, plainIR("", authUser, authPassword)) || strings.Contains(got, authPassword) {
		t.Errorf("debug log shows the credentials:\n%s", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
