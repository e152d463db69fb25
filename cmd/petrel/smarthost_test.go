package main

// Smarthost mode end to end: Petrel A relays every non-local message to
// Petrel B's submission listener (STARTTLS, RFC 3207) and authenticates
// there (AUTH PLAIN, RFC 4954), at the TLS level "verify" of
// [delivery] smarthost_tls, the default.
//
// How A trusts B. B's certificate is the self-signed one it generates in
// its data directory. The daemon has no configuration key for the CA
// certificates of delivery: deliveryOptions (serve.go) leaves
// delivery.TLSPolicy.TLSConfig nil, so smtpclient verifies against the
// system roots. The only way an operator can make Petrel trust a private
// CA is therefore the one crypto/x509 reads on Linux: the SSL_CERT_FILE
// (and SSL_CERT_DIR) environment variable. crypto/x509 loads the system
// roots once per process, so the variable cannot be set for one in-process
// daemon among others (the daemon helper of serve_test.go runs them all in
// the test process). A therefore runs as a process of its own: this test
// binary started again as `petrel serve` (TestSmarthostServeProcess, the
// os/exec TestHelperProcess pattern, as internal/queue's crash test does),
// with SSL_CERT_FILE naming the certificate it should trust and
// SSL_CERT_DIR an empty directory, so that the host's roots play no part.
// B runs in-process with the daemon helper.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/certs"
	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/queue"
)

const (
	// smarthostUser is A's account at B, made with `petrel user add`.
	smarthostUser     = "a-relay@b.test"
	smarthostPassword = "smarthost secret at B"
	alicePassword     = "correct horse battery"

	// serveChildEnv marks the test binary started as `petrel serve`.
	serveChildEnv = "PETREL_TEST_SERVE_CHILD"

	// waitLimit bounds every wait for the daemons; it is a deadline for
	// polling, not a timing assertion.
	waitLimit = 30 * time.Second
)

// smarthostMessage is what alice submits to A: every byte of it must reach
// B's Maildir unchanged, below the Received headers of A and B.
const smarthostMessage = "From: <alice@a.test>\r\nTo: <postmaster@b.test>\r\nSubject: by smarthost\r\n" +
	"Message-ID: <smarthost@a.test>\r\n\r\n.a line that starts with a dot\r\nend\r\n"

// TestSmarthostServeProcess is not a test: it is this binary run as
// `petrel serve ARGS` by serveProcess, which passes the arguments after
// "--". It stops on SIGTERM or SIGINT as main does, or when its standard
// input ends (the parent test process is gone, even killed), and exits
// with serve's status.
func TestSmarthostServeProcess(t *testing.T) {
	if os.Getenv(serveChildEnv) != "1" {
		t.Skip("helper: runs only as the child process of the smarthost tests")
	}
	i := slices.Index(os.Args, "--")
	if i < 0 {
		fmt.Fprintln(os.Stderr, "no -- before the arguments of petrel serve")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	code := run(ctx, append([]string{"serve"}, os.Args[i+1:]...), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// serveProcess runs `petrel serve args` as a child process whose
// environment has SSL_CERT_FILE=trustFile (the roots it trusts for
// delivery) and an empty SSL_CERT_DIR. It returns the listener addresses
// the daemon printed, by name, and its log. The process is stopped with
// SIGTERM when the test ends, and must then exit 0 (a data race found by
// -race in the child makes it exit 66).
func serveProcess(t *testing.T, trustFile string, args ...string) (addrs map[string]string, stderr *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestSmarthostServeProcess$", "-test.count=1",
		"-test.timeout=10m", "--"}, args...)...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "SSL_CERT_FILE" && k != "SSL_CERT_DIR" && k != serveChildEnv {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, serveChildEnv+"=1", "SSL_CERT_FILE="+trustFile, "SSL_CERT_DIR="+t.TempDir())
	pr, pw := io.Pipe()
	stderr = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = pw, stderr
	// Held open until the end: the child stops when it closes, so it
	// cannot outlive this process.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close() // the reader below sees EOF
		exited <- err
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		defer stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("petrel serve (A) exited with %v; its log:\n%s", err, stderr)
			}
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("petrel serve (A) did not stop on SIGTERM; killed")
		}
	})

	// The reader parses the startup lines, then drains stdout until the
	// child exits, so that the child never blocks on it.
	ready := make(chan map[string]string, 1)
	go func() {
		defer close(ready)
		re := regexp.MustCompile(`^petrel: (\S+)\s+on (\S+) `)
		found := map[string]string{}
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if found == nil {
				continue
			}
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found[m[1]] = m[2]
			}
			if strings.HasPrefix(sc.Text(), "petrel: delivering mail") { // printed after every listener
				ready <- found
				found = nil
			}
		}
		_, _ = io.Copy(io.Discard, pr) // after a line too long for the scanner
	}()
	select {
	case addrs, ok := <-ready:
		if !ok {
			t.Fatalf("petrel serve (A) ended before it was ready; its log:\n%s", stderr)
		}
		return addrs, stderr
	case <-time.After(waitLimit):
		t.Fatalf("petrel serve (A) not ready after %v; its log:\n%s", waitLimit, stderr)
	}
	return nil, nil // not reached
}

// smarthostB starts Petrel B, the smarthost: local domain b.test, host name
// mx.b.test, only the submission listener (STARTTLS required, RFC 3207 §4;
// AUTH only inside TLS, RFC 4954 §4), with the user smarthostUser added by
// `petrel user add` before it starts. It returns B's data directory, its
// submission address and its log.
func smarthostB(t *testing.T) (dir, submission string, log *syncBuffer) {
	t.Helper()
	dir = t.TempDir()
	runUser(t, strings.NewReader(smarthostPassword+"\n"), "add", smarthostUser, "--data", dir).want(t, 0, "added "+smarthostUser)
	addrs, log, _ := daemon(t, "--data", dir, "--hostname", "mx.b.test", "--domain", "b.test",
		"--mx", "", "--submission", "127.0.0.1:0", "--submissions", "")
	if addrs["submission"] == "" {
		t.Fatalf("B has no submission listener: %v", addrs)
	}
	return dir, addrs["submission"], log
}

// smarthostA prepares A's data directory: the user alice@a.test (added by
// `petrel user add`), a file holding password as smarthost_password_file,
// and a configuration file with the [delivery] table given. The table may
// use {{PASSWORD_FILE}} for the file's path. It returns the configuration
// file.
func smarthostA(t *testing.T, dir, password, delivery string) string {
	t.Helper()
	runUser(t, strings.NewReader(alicePassword+"\n"), "add", "alice@a.test", "--data", dir).want(t, 0, "added alice@a.test")
	pwFile := filepath.Join(dir, "smarthost-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "[delivery]\n" + strings.ReplaceAll(delivery, "{{PASSWORD_FILE}}", fmt.Sprintf("%q", pwFile))
	cfgFile := filepath.Join(dir, "petrel.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("A's %s:\n%s", cfgFile, cfg)
	return cfgFile
}

// aArgs are the flags of A: submission only, local domain a.test.
func aArgs(dir, cfgFile string, more ...string) []string {
	return append([]string{"--config", cfgFile, "--data", dir, "--hostname", "mx.a.test", "--domain", "a.test",
		"--mx", "", "--submission", "127.0.0.1:0", "--submissions", ""}, more...)
}

// submitToA sends smarthostMessage as alice, authenticated over STARTTLS on
// A's submission listener, to postmaster@b.test (always a valid recipient
// at B, RFC 5321 §4.5.1).
func submitToA(t *testing.T, addr, dirA string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tlsA := trust(t, filepath.Join(dirA, "tls", "cert.pem"))
	tlsA.ServerName = "mx.a.test"
	if err := c.StartTLS(tlsA); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@a.test", alicePassword, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@a.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("postmaster@b.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, smarthostMessage); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
}

// poll calls done until it reports true, failing the test after waitLimit.
func poll(t *testing.T, what string, done func() bool, logs ...*syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !done() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for i, l := range logs {
				fmt.Fprintf(&b, "\nlog %d:\n%s", i+1, l)
			}
			t.Fatalf("%s: not after %v%s", what, waitLimit, b.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// maildirFiles lists the messages delivered to any mailbox under dir
// (postmaster may be an alias of another mailbox).
func maildirFiles(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "maildir", "*", "new", "*"))
	return files
}

// queued returns the messages in the spool of the data directory dir, read
// as `petrel queue` does (Attach, the daemon running).
func queued(t *testing.T, dir string) []queue.Message {
	t.Helper()
	q, err := queue.Attach(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	msgs, err := q.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// attemptLine returns the first line of log that records a delivery
// attempt with the result given, or "".
func attemptLine(log *syncBuffer, result string) string {
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, `msg="delivery attempt"`) && strings.Contains(l, " result="+result) {
			return l
		}
	}
	return ""
}

// noSecret checks that no log holds the smarthost password (O-LOG-01).
func noSecret(t *testing.T, logs map[string]*syncBuffer) {
	t.Helper()
	for name, l := range logs {
		if strings.Contains(l.String(), smarthostPassword) {
			t.Errorf("%s's log holds the smarthost password (O-LOG-01)", name)
		}
	}
}

// checkRelayed waits for the message at B and checks the whole path: the
// message byte-exact below the two Received headers, B's header saying
// ESMTPSA (RFC 3848: A authenticated over TLS, RFC 4954 + RFC 3207), A's
// attempt logged with the TLS version and the verified name (O-LOG-01,
// C-TLS-07), A's queue empty.
func checkRelayed(t *testing.T, dirA, dirB string, logA, logB *syncBuffer, verifiedName string) {
	t.Helper()
	poll(t, "the message in B's Maildir", func() bool { return len(maildirFiles(dirB)) > 0 }, logA, logB)
	files := maildirFiles(dirB)
	if len(files) != 1 {
		t.Fatalf("B's Maildir holds %v, want one message", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), "\r\n"+smarthostMessage) && string(data) != smarthostMessage {
		t.Fatalf("message not byte-exact at B:\n%q", data)
	}
	headers := string(data[:len(data)-len(smarthostMessage)])
	// Only Received headers were added (S-SMTP-20), one per hop: B's first.
	for _, l := range strings.Split(strings.TrimSuffix(headers, "\r\n"), "\r\n") {
		if !strings.HasPrefix(l, "Received: ") && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			t.Errorf("added header line %q is not part of a Received header:\n%s", l, headers)
		}
	}
	if n := strings.Count(headers, "Received: "); n != 2 {
		t.Errorf("want 2 Received headers (B's, then A's), got %d:\n%s", n, headers)
	}
	first, _, _ := strings.Cut(headers[len("Received: "):], "Received: ")
	// S-RCV-01: TLS plus AUTH is ESMTPSA; S-RCV-04: no user name.
	if !strings.Contains(first, "by mx.b.test (Petrel) with ESMTPSA ") {
		t.Errorf("B's Received header does not record ESMTPSA (RFC 3848, S-RCV-01):\n%s", first)
	}
	if strings.Contains(headers, smarthostUser) {
		t.Errorf("the smarthost user name is in a Received header (S-RCV-04):\n%s", headers)
	}
	if !strings.Contains(logB.String(), `msg="AUTH succeeded"`) {
		t.Errorf("B logged no successful AUTH:\n%s", logB)
	}

	// O-LOG-01: the attempt names the TLS version and the verified name.
	poll(t, "A's log line of the delivery", func() bool { return attemptLine(logA, "delivered") != "" }, logA)
	line := attemptLine(logA, "delivered")
	t.Logf("A: %s", line)
	for _, re := range []string{` level=verify `, ` tls="TLS 1\.[23]" `, ` cipher=TLS_`, ` cert="?verified:` + regexp.QuoteMeta(verifiedName) + `"? `, ` rcpt=postmaster@b\.test `} {
		if !regexp.MustCompile(re).MatchString(line + " ") {
			t.Errorf("A's delivery attempt line lacks %s:\n%s", re, line)
		}
	}

	// A's queue is empty once the delivery is recorded.
	poll(t, "A's queue empty", func() bool { return len(queued(t, dirA)) == 0 }, logA)
	runQueue(t, "list", "--data", dirA).want(t, 0, "Mail queue is empty")
	noSecret(t, map[string]*syncBuffer{"A": logA, "B": logB})
}

// waitDeferred waits for A to record the attempt on postmaster@b.test as
// deferred, and returns the message's queue ID.
func waitDeferred(t *testing.T, dirA string, logA *syncBuffer) string {
	t.Helper()
	var id string
	poll(t, "a deferred attempt in A's queue", func() bool {
		for _, m := range queued(t, dirA) {
			for _, r := range m.Rcpts {
				if r.Addr == "postmaster@b.test" && r.State == queue.Deferred && r.Attempts > 0 {
					id = m.ID
					return true
				}
			}
		}
		return false
	}, logA)
	return id
}

// TestSmarthostVerifiedAuth: A, configured by file with the smarthost
// mx.b.test (found through a DNS server on 127.0.0.1) and the default level
// verify, relays an authenticated submission for b.test to B's submission
// port: STARTTLS (RFC 3207), certificate verified for mx.b.test (RFC 3207
// §4.1, C-TLS-07), then AUTH (RFC 4954 §4, only over verified TLS:
// C-AUTH-01). B stores it byte-exact.
func TestSmarthostVerifiedAuth(t *testing.T) {
	t.Parallel()
	dirB, subB, logB := smarthostB(t)
	_, portB, _ := net.SplitHostPort(subB)
	dns := dnsxtest.NewServer(t, "mx.b.test. 300 IN A 127.0.0.1")

	dirA := t.TempDir()
	cfgFile := smarthostA(t, dirA, smarthostPassword, `smarthost = "mx.b.test:`+portB+`"
smarthost_user = "`+smarthostUser+`"
smarthost_password_file = {{PASSWORD_FILE}}
`) // smarthost_tls left out: "verify" is the default
	addrsA, logA := serveProcess(t, filepath.Join(dirB, "tls", "cert.pem"), aArgs(dirA, cfgFile, "--resolver", dns.Addr)...)

	submitToA(t, addrsA["submission"], dirA)
	checkRelayed(t, dirA, dirB, logA, logB, "mx.b.test")
}

// TestSmarthostFlagOverridesConfig: --smarthost replaces the smarthost of
// the configuration file. The file names a trap: a listener that counts
// the connections it gets and closes them at once, so that A could not
// deliver there; the flag names B by address, so the
// certificate is verified for 127.0.0.1 (an IP SAN of the self-signed
// certificate).
func TestSmarthostFlagOverridesConfig(t *testing.T) {
	t.Parallel()
	dirB, subB, logB := smarthostB(t)

	trap, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trap.Close() })
	var trapped atomic.Int32
	go func() {
		for {
			c, err := trap.Accept()
			if err != nil {
				return
			}
			trapped.Add(1)
			c.Close()
		}
	}()

	dirA := t.TempDir()
	cfgFile := smarthostA(t, dirA, smarthostPassword, `smarthost = "`+trap.Addr().String()+`"
smarthost_tls = "verify"
smarthost_user = "`+smarthostUser+`"
smarthost_password_file = {{PASSWORD_FILE}}
`)
	addrsA, logA := serveProcess(t, filepath.Join(dirB, "tls", "cert.pem"), aArgs(dirA, cfgFile, "--smarthost", subB)...)

	submitToA(t, addrsA["submission"], dirA)
	checkRelayed(t, dirA, dirB, logA, logB, "127.0.0.1")
	if line := attemptLine(logA, "delivered"); !strings.Contains(line, " addr="+subB+" ") {
		t.Errorf("A's delivery went elsewhere than --smarthost %s:\n%s", subB, line)
	}
	if n := trapped.Load(); n != 0 {
		t.Errorf("A connected %d times to the smarthost of the config file, which --smarthost overrides", n)
	}
}

// TestSmarthostWrongPassword: B refuses A's credentials with 535 5.7.8
// (RFC 4954 §6, S-SUB-08). The message stays in A's queue, deferred, with
// B's reply shown by petrel queue list and show; nothing reaches B.
func TestSmarthostWrongPassword(t *testing.T) {
	t.Parallel()
	dirB, subB, logB := smarthostB(t)

	dirA := t.TempDir()
	cfgFile := smarthostA(t, dirA, "not the password at B", `smarthost = "`+subB+`"
smarthost_user = "`+smarthostUser+`"
smarthost_password_file = {{PASSWORD_FILE}}
`)
	addrsA, logA := serveProcess(t, filepath.Join(dirB, "tls", "cert.pem"), aArgs(dirA, cfgFile)...)

	submitToA(t, addrsA["submission"], dirA)
	id := waitDeferred(t, dirA, logA)

	r := runQueue(t, "list", "--data", dirA)
	r.want(t, 0, id, "alice@a.test", "-- 1 Kbytes in 1 Request.")
	if !regexp.MustCompile(`(?m)^    postmaster@b\.test  deferred, 1 attempt, next [0-9 :-]+ \(535 5\.7\.8 `).MatchString(r.stdout) {
		t.Errorf("petrel queue list does not show the recipient deferred by B's 535 5.7.8:\n%s", r.stdout)
	}
	r = runQueue(t, "show", id, "--data", dirA)
	r.want(t, 0, "to:       postmaster@b.test  deferred, 1 attempt", "Subject: by smarthost")
	if !regexp.MustCompile(`(?m)^          reply: 535 5\.7\.8 .*\(from 127\.0\.0\.1\)$`).MatchString(r.stdout) {
		t.Errorf("petrel queue show does not give B's 535 5.7.8 reply and B as the remote MTA:\n%s", r.stdout)
	}

	if line := attemptLine(logA, "deferred"); !strings.Contains(line, "535 5.7.8") {
		t.Errorf("A's log does not record the deferral with B's reply:\n%s", logA)
	}
	if !strings.Contains(logB.String(), `msg="AUTH failed"`) {
		t.Errorf("B logged no failed AUTH:\n%s", logB)
	}
	if files := maildirFiles(dirB); len(files) != 0 {
		t.Errorf("B delivered %v, want nothing", files)
	}
	if strings.Contains(logB.String(), `msg="message accepted"`) {
		t.Errorf("B accepted a message without AUTH:\n%s", logB)
	}
	noSecret(t, map[string]*syncBuffer{"A": logA, "B": logB})
}

// TestSmarthostUntrustedCertificate: at level verify, A trusts a
// certificate for the same names as B's but not B's own, so B's fails
// verification (RFC 3207 §4.1, C-TLS-07). A defers the message (C-TLS-04:
// a mandatory level never falls back to plaintext), sends no credentials
// (C-AUTH-01, RFC 4954 §4) and no transaction: B receives nothing.
func TestSmarthostUntrustedCertificate(t *testing.T) {
	t.Parallel()
	dirB, subB, logB := smarthostB(t)
	// A look-alike: self-signed for mx.b.test too, with another key.
	lookAlike, _, _, err := certs.EnsureSelfSigned(t.TempDir(), []string{"mx.b.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	dirA := t.TempDir()
	cfgFile := smarthostA(t, dirA, smarthostPassword, `smarthost = "`+subB+`"
smarthost_tls = "verify"
smarthost_user = "`+smarthostUser+`"
smarthost_password_file = {{PASSWORD_FILE}}
`)
	addrsA, logA := serveProcess(t, lookAlike, aArgs(dirA, cfgFile)...)

	submitToA(t, addrsA["submission"], dirA)
	id := waitDeferred(t, dirA, logA)

	line := attemptLine(logA, "deferred")
	t.Logf("A: %s", line)
	if !strings.Contains(line, "454 4.7.0") || !strings.Contains(line, "x509:") {
		t.Errorf("A's log does not record a deferral for a TLS verification failure:\n%s", logA)
	}
	if strings.Contains(logA.String(), "delivering in plaintext") || attemptLine(logA, "delivered") != "" {
		t.Errorf("A delivered, or fell back to plaintext, at level verify:\n%s", logA)
	}
	r := runQueue(t, "list", "--data", dirA)
	r.want(t, 0, id)
	if !regexp.MustCompile(`(?m)^    postmaster@b\.test  deferred, 1 attempt, next [0-9 :-]+ \(454 4\.7\.0 `).MatchString(r.stdout) {
		t.Errorf("petrel queue list does not show the recipient deferred for TLS:\n%s", r.stdout)
	}

	// B saw the handshake complete, then only QUIT, inside TLS (C-TLS-06:
	// the client that finds the security insufficient quits at once, RFC
	// 3207 §4.1): no AUTH, no transaction, nothing in plaintext.
	poll(t, "B's log of A's connection ending", func() bool { return strings.Contains(logB.String(), `msg=disconnect`) }, logB)
	if !regexp.MustCompile(`msg=disconnect .* reason=QUIT messages=0 `).MatchString(logB.String()) {
		t.Errorf("B's log does not show A quitting without a message:\n%s", logB)
	}
	for _, s := range []string{`msg="AUTH succeeded"`, `msg="AUTH failed"`, `msg="message accepted"`} {
		if strings.Contains(logB.String(), s) {
			t.Errorf("B's log has %s after a certificate A refused:\n%s", s, logB)
		}
	}
	if files := maildirFiles(dirB); len(files) != 0 {
		t.Errorf("B delivered %v, want nothing", files)
	}
	noSecret(t, map[string]*syncBuffer{"A": logA, "B": logB})
}
