package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/probe/probetest"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// testTLS returns a server configuration with a certificate for localhost
// and 127.0.0.1, valid for 90 days, and a PEM file of it for --ca.
func testTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	now := time.Now()
	cert, err := smtptest.Certificate([]string{"localhost", "127.0.0.1"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, file
}

// petrelServer starts Petrel's server engine (smtptest) on loopback.
func petrelServer(t *testing.T, backend *smtptest.Backend, implicit bool) (addr, caFile string) {
	t.Helper()
	serverTLS, caFile := testTLS(t)
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: backend, TLSConfig: serverTLS, ImplicitTLS: implicit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr, caFile
}

type cmdResult struct {
	code           int
	stdout, stderr string
}

func runSend(t *testing.T, stdin io.Reader, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := send(ctx, args, stdin, &out, &errb)
	r := cmdResult{code, out.String(), errb.String()}
	t.Logf("petrel send %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

func (r cmdResult) want(t *testing.T, code int, substrings ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d", r.code, code)
	}
	for _, s := range substrings {
		if !strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// oneLineError checks that stderr is one line, as every CLI error is.
func (r cmdResult) oneLineError(t *testing.T) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "petrel send: ") {
		t.Errorf("want one error line, got %q", r.stderr)
	}
}

// TestSendLevels: every TLS level against Petrel's server; --ca makes
// verify and secure pass, --servername names the certificate.
func TestSendLevels(t *testing.T) {
	backend := &smtptest.Backend{}
	addr, ca := petrelServer(t, backend, false)
	cases := []struct {
		args    []string
		tls     bool
		tlsLine string
	}{
		{[]string{"--tls", "none"}, false, "tls: plaintext: TLS not requested (--tls none)"},
		{nil, true, "tls: TLS 1.3 TLS_AES_128_GCM_SHA256 X25519MLKEM768, certificate not verified (certificate signed by unknown authority)"},
		{[]string{"--tls", "encrypt"}, true, "certificate not verified"},
		{[]string{"--tls", "verify", "--ca", ca}, true, "certificate verified for 127.0.0.1"},
		{[]string{"--tls", "verify", "--ca", ca, "--servername", "localhost"}, true, "certificate verified for localhost"},
		{[]string{"--tls", "secure", "--ca", ca, "--servername", "localhost"}, true, "certificate verified for localhost"},
	}
	for i, c := range cases {
		args := append([]string{"--server", addr, "--from", "alice@example.org", "--to", "bob@example.test"}, c.args...)
		r := runSend(t, nil, args...)
		r.want(t, 0, "server: 127.0.0.1 ["+addr+"]", c.tlsLine, "accepted: bob@example.test", "reply: 250 ")
		msgs := backend.Messages()
		if len(msgs) != i+1 || msgs[i].TLS != c.tls || msgs[i].From.String() != "alice@example.org" {
			t.Fatalf("case %d: messages %+v", i, msgs)
		}
	}

	// verify without the CA, or for a name the certificate lacks: nothing
	// is sent, 75 (a TLS failure defers).
	for _, args := range [][]string{
		{"--tls", "verify"},
		{"--tls", "secure", "--ca", ca, "--servername", "mx.example.org"},
	} {
		r := runSend(t, nil, append([]string{"--server", addr, "--to", "bob@example.test"}, args...)...)
		r.want(t, 75, "certificate not verified", "nothing was sent")
		r.oneLineError(t)
	}
	if n := len(backend.Messages()); n != len(cases) {
		t.Errorf("%d messages, want %d", n, len(cases))
	}
}

// TestSendImplicitTLS: --implicit-tls (RFC 8314) defaults to encrypt and
// verifies with --ca.
func TestSendImplicitTLS(t *testing.T) {
	backend := &smtptest.Backend{}
	addr, ca := petrelServer(t, backend, true)
	r := runSend(t, nil, "--server", addr, "--implicit-tls", "--to", "bob@example.test")
	r.want(t, 0, "implicit TLS, certificate not verified", "accepted: bob@example.test")
	r = runSend(t, nil, "--server", addr, "--implicit-tls", "--tls", "secure", "--servername", "localhost", "--ca", ca, "--to", "bob@example.test")
	r.want(t, 0, "implicit TLS, certificate verified for localhost")
	if msgs := backend.Messages(); len(msgs) != 2 || !msgs[0].TLS {
		t.Errorf("messages: %+v", msgs)
	}
	r = runSend(t, nil, "--server", addr, "--implicit-tls", "--tls", "none", "--to", "bob@example.test")
	r.want(t, 64, "--implicit-tls cannot be combined with --tls none")
}

// TestSendExitStatuses: 69 for a 5xx, 75 for a 4xx or a missing STARTTLS
// under encrypt (and then no MAIL at all), the worst of both when some
// recipients are refused.
func TestSendExitStatuses(t *testing.T) {
	backend := &smtptest.Backend{RejectRcpt: func(to smtp.Path) error {
		switch to.Local {
		case "nobody":
			return &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 1, Detail: 1}, Message: "No such user"}
		case "busy":
			return &smtp.Error{Code: 450, Enhanced: smtp.EnhancedCode{Class: 4, Subject: 2, Detail: 1}, Message: "Mailbox busy"}
		}
		return nil
	}}
	addr, _ := petrelServer(t, backend, false)
	base := []string{"--server", addr, "--from", "a@example.org"}

	r := runSend(t, nil, append(base, "--to", "bob@example.test", "--to", "nobody@example.test")...)
	r.want(t, 69, "accepted: bob@example.test", "refused: nobody@example.test: RCPT: 550 5.1.1 No such user", "reply: 250")
	r = runSend(t, nil, append(base, "--to", "nobody@example.test", "--to", "busy@example.test", "--to", "bob@example.test")...)
	r.want(t, 75, "refused: busy@example.test: RCPT: 450 4.2.1 Mailbox busy")
	r = runSend(t, nil, append(base, "--to", "nobody@example.test")...)
	r.want(t, 69, "refused: nobody@example.test", "message not delivered")
	r.oneLineError(t)

	// A server answering 451 to MAIL; one refusing the message after DATA.
	fake := probetest.Start(t, probetest.Options{
		Mail: func(from string) string {
			if from == "later@example.org" {
				return "451 4.3.0 Try again later"
			}
			return ""
		},
		Data: func([]byte) string { return "554 5.7.1 Message refused" },
	})
	r = runSend(t, nil, "--server", fake.Addr, "--from", "later@example.org", "--to", "bob@example.test")
	r.want(t, 75, "refused: bob@example.test: MAIL: 451 4.3.0 Try again later")
	r.oneLineError(t)
	r = runSend(t, nil, "--server", fake.Addr, "--to", "bob@example.test", "--to", "carol@example.test")
	r.want(t, 69, "refused: bob@example.test: DATA: 554 5.7.1 Message refused", "refused: carol@example.test: DATA: 554")

	// STARTTLS missing at level encrypt: 75, and no MAIL was sent.
	plain := probetest.Start(t, probetest.Options{})
	r = runSend(t, nil, "--server", plain.Addr, "--tls", "encrypt", "--to", "bob@example.test")
	r.want(t, 75, "STARTTLS not offered", "nothing was sent: use --tls may")
	r.oneLineError(t)
	for _, c := range plain.Commands() {
		if strings.HasPrefix(c, "MAIL") || strings.HasPrefix(c, "RCPT") || c == "DATA" {
			t.Errorf("sent %q without the TLS the level requires", c)
		}
	}
	// The same at level may: delivered in plaintext, and said so.
	r = runSend(t, nil, "--server", plain.Addr, "--to", "bob@example.test")
	r.want(t, 0, "tls: plaintext: STARTTLS not offered")

	// Nobody listening: 75.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r = runSend(t, nil, "--server", dead, "--to", "bob@example.test")
	r.want(t, 75, "connection refused", "is the server running")
	r.oneLineError(t)

	// A server that never greets: --timeout ends the wait, 75.
	r = runSend(t, nil, "--server", silentServer(t), "--to", "bob@example.test", "--timeout", "300ms")
	r.want(t, 75, "timed out after 300ms: raise --timeout")
	r.oneLineError(t)
}

// silentServer accepts connections and never says anything.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestSendUsage: bad usage is 64 with one line saying what to do.
func TestSendUsage(t *testing.T) {
	body := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(body, []byte("Subject: x\r\n\r\nx\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "give at least one --to"},
		{[]string{"--to", "not an address"}, "bad --to address"},
		{[]string{"--to", "a@example.test", "--from", "x"}, "bad --from address"},
		{[]string{"--to", "a@example.test", "--tls", "paranoid"}, "unknown TLS level"},
		{[]string{"--to", "a@example.test", "--tls", "secure"}, "--tls secure needs --servername"},
		{[]string{"--to", "a@example.test", "--auth-user", "alice"}, "--auth-user and --auth-pass-file go together"},
		{[]string{"--to", "a@example.test", "--size", "100", "--body", body}, "--size and --body exclude each other"},
		{[]string{"--to", "a@example.test", "--size", "10"}, "smaller than the message header"},
		{[]string{"--to", "a@example.test", "--body", "/nonexistent/msg"}, "cannot read --body"},
		{[]string{"--to", "a@example.test", "--ca", body}, "holds no PEM certificate"},
		{[]string{"--to", "a@example.test", "--frobnicate"}, "flag provided but not defined"},
		{[]string{"--to", "a@example.test", "extra"}, "unexpected argument"},
		{[]string{"--to", "a@example.test", "--ehlo", "two words"}, "--ehlo \"two words\" is not a domain name"},
		{[]string{"--to", "a@example.test", "--port", "0"}, "--port 0 is not a TCP port"},
	} {
		r := runSend(t, nil, c.args...)
		r.want(t, 64, c.want)
		r.oneLineError(t)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"send", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-auth-pass-file FILE") {
		t.Errorf("send -h: %d %s", code, errb.String())
	}
}

// TestSendAuthRedacted: AUTH over STARTTLS against a server that offers
// it; -v shows the transcript with the credentials redacted.
func TestSendAuthRedacted(t *testing.T) {
	serverTLS, ca := testTLS(t)
	fake := probetest.Start(t, probetest.Options{TLSConfig: serverTLS, AuthUser: "alice", AuthPass: "s3cret-Pa55"})
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("s3cret-Pa55\nsecond line ignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runSend(t, nil, "--server", fake.Addr, "--auth-user", "alice", "--auth-pass-file", passFile,
		"--tls", "verify", "--ca", ca, "--servername", "localhost", "--to", "bob@example.test", "-v")
	r.want(t, 0, "auth: authenticated as alice", "C: STARTTLS", "C: AUTH PLAIN [redacted]", "S: 235 ")
	secret := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00s3cret-Pa55"))
	if strings.Contains(r.stderr, "s3cret") || strings.Contains(r.stderr, secret) {
		t.Errorf("the transcript shows the password:\n%s", r.stderr)
	}
	if !strings.Contains(strings.Join(fake.Commands(), "\n"), "AUTH PLAIN "+secret) {
		t.Errorf("the server did not get the credentials: %q", fake.Commands())
	}

	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("guess\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runSend(t, nil, "--server", fake.Addr, "--auth-user", "alice", "--auth-pass-file", wrong, "--ca", ca, "--servername", "localhost", "--to", "bob@example.test")
	r.want(t, 69, "authentication as alice failed: AUTH: 535 5.7.8")
	r.oneLineError(t)

	// A server without STARTTLS: --auth-user defaults to verify, so the
	// credentials are never at risk.
	plain := probetest.Start(t, probetest.Options{AuthUser: "alice", AuthPass: "s3cret-Pa55"})
	r = runSend(t, nil, "--server", plain.Addr, "--auth-user", "alice", "--auth-pass-file", passFile, "--to", "bob@example.test")
	r.want(t, 75, "STARTTLS not offered")
	// A level that does not verify the certificate is refused with AUTH
	// (C-AUTH-01, RFC 8314 §5).
	r = runSend(t, nil, "--server", plain.Addr, "--tls", "may", "--auth-user", "alice", "--auth-pass-file", passFile, "--to", "bob@example.test")
	r.want(t, 64, "--auth-user needs a verified server certificate")
	// An unverified certificate: the library refuses AUTH.
	r = runSend(t, nil, "--server", fake.Addr, "--tls", "verify", "--auth-user", "alice", "--auth-pass-file", passFile, "--servername", "wrong.example", "--ca", ca, "--to", "bob@example.test")
	r.want(t, 75, "certificate not verified")
	for _, c := range plain.Commands() {
		if strings.HasPrefix(c, "AUTH") || strings.HasPrefix(c, "MAIL") {
			t.Errorf("sent %q in plaintext", c)
		}
	}
}

// TestSendMX: without --server, the first recipient's domain's MX hosts
// are tried in preference order through --resolver; a null MX is a
// permanent failure before any connection (RFC 7505, C-SMTP-03).
func TestSendMX(t *testing.T) {
	backend := &smtptest.Backend{}
	addr, _ := petrelServer(t, backend, false)
	_, port, _ := net.SplitHostPort(addr)
	dns := dnsxtest.NewServer(t,
		"example.test. 300 IN MX 10 mx1.example.test.",
		"example.test. 300 IN MX 5 mx0.example.test.",
		"mx0.example.test. 300 IN A 127.0.0.2", // nobody listens there
		"mx1.example.test. 300 IN A 127.0.0.1",
		"implicit.test. 300 IN A 127.0.0.1",
		"null.test. 300 IN MX 0 .",
		"null.test. 300 IN A 127.0.0.1",
	)
	dns.ServFail("broken.test.")
	base := []string{"--resolver", dns.Addr, "--port", port, "--from", "a@example.org"}

	r := runSend(t, nil, append(base, "--to", "bob@example.test", "--to", "carol@implicit.test")...)
	r.want(t, 0, "mx0.example.test: connect:", "trying the next MX host", "server: mx1.example.test [127.0.0.1:"+port+"]",
		"accepted: bob@example.test", "accepted: carol@implicit.test")
	r = runSend(t, nil, append(base, "--to", "carol@implicit.test")...)
	r.want(t, 0, "server: implicit.test [127.0.0.1:"+port+"]")
	if n := len(backend.Messages()); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}

	r = runSend(t, nil, append(base, "--to", "bob@null.test")...)
	r.want(t, 69, "null.test publishes a null MX (RFC 7505)")
	r.oneLineError(t)
	r = runSend(t, nil, append(base, "--to", "bob@nowhere.test")...)
	r.want(t, 69, "nowhere.test has no MX and no address records")
	r = runSend(t, nil, append(base, "--to", "bob@broken.test")...)
	r.want(t, 75, "cannot look up the MX hosts of broken.test", "check --resolver")
	r.oneLineError(t)
	if n := len(backend.Messages()); n != 2 {
		t.Errorf("%d messages after the failures, want 2", n)
	}
}

// TestSendBodies: --size, --body FILE, --body - and standard input arrive
// byte for byte; without any, a generated test message is sent.
func TestSendBodies(t *testing.T) {
	backend := &smtptest.Backend{}
	addr, _ := petrelServer(t, backend, false)
	base := []string{"--server", addr, "--to", "bob@example.test"}
	last := func() []byte {
		m := backend.Messages()
		return m[len(m)-1].Data
	}

	for _, size := range []int{400, 401, 1000, 65537, 1 << 20} {
		r := runSend(t, nil, append(base, "--size", strconv.Itoa(size))...)
		r.want(t, 0)
		got := last()
		if len(got) != size {
			t.Errorf("--size %d: %d bytes arrived", size, len(got))
		}
		if !bytes.HasPrefix(got, []byte("Date: ")) || !bytes.HasSuffix(got, []byte("\r\n")) ||
			!bytes.Contains(got, []byte("\r\nSubject: petrel send test ")) {
			t.Errorf("--size %d: not a message: %.200q", size, got)
		}
		for _, line := range bytes.Split(got[:len(got)-2], []byte("\r\n")) {
			if len(line) > 998 || bytes.ContainsAny(line, "\r\n") {
				t.Fatalf("--size %d: bad line %q", size, line)
			}
		}
	}
	for size := 300; size < 500; size++ { // around the header's length: the edge cases
		j := &sendFlags{set: map[string]bool{"size": true}, size: int64(size)}
		msg, err := j.message(nil, testEnvelope)
		if err != nil {
			continue // smaller than the header
		}
		if len(msg) != size || !bytes.HasSuffix(msg, []byte("\r\n")) {
			t.Errorf("synthetic %d: %d bytes %q", size, len(msg), msg)
		}
	}

	exact := []byte("From: <a@example.org>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n.a line with a leading dot\r\n..two\r\n.\r\ncafé, 8-bit\r\n\r\n")
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, exact, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runSend(t, nil, append(base, "--body", file)...)
	r.want(t, 0)
	if got := last(); !bytes.Equal(got, exact) {
		t.Errorf("--body FILE arrived as %q", got)
	}
	r = runSend(t, bytes.NewReader(exact), append(base, "--body", "-")...)
	r.want(t, 0)
	if got := last(); !bytes.Equal(got, exact) {
		t.Errorf("--body - arrived as %q", got)
	}
	r = runSend(t, bytes.NewReader(exact), base...)
	r.want(t, 0)
	if got := last(); !bytes.Equal(got, exact) {
		t.Errorf("standard input arrived as %q", got)
	}
	// Bare LF line ends are sent as CRLF (RFC 5321 §2.3.8).
	r = runSend(t, strings.NewReader("Subject: lf\n\nline\n"), base...)
	r.want(t, 0)
	if got := string(last()); got != "Subject: lf\r\n\r\nline\r\n" {
		t.Errorf("LF message arrived as %q", got)
	}

	// An empty standard input, or none: the generated test message.
	for _, stdin := range []io.Reader{nil, strings.NewReader("")} {
		r = runSend(t, stdin, append(base, "--from", "alice@example.org")...)
		r.want(t, 0)
		got := string(last())
		for _, h := range []string{"Date: ", "\r\nFrom: <alice@example.org>\r\n", "\r\nTo: <bob@example.test>\r\n", "\r\nSubject: petrel send test ", "\r\nMessage-ID: <"} {
			if !strings.Contains(got, h) {
				t.Errorf("generated message lacks %q:\n%s", h, got)
			}
		}
	}

	// Through run(), as the binary is called.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"send", "--server", addr, "--to", "bob@example.test", "--body", file}, &out, &errb); code != 0 {
		t.Errorf("run send: %d %s", code, errb.String())
	}
}

var testEnvelope = smtpclient.Envelope{From: "a@example.org", To: []string{"bob@example.test"}}
