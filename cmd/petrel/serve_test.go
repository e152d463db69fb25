package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/certs"
	"github.com/petrel-mta/petrel/internal/config"
	"github.com/petrel-mta/petrel/internal/users"
)

// syncBuffer is a bytes.Buffer safe for the daemon's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon runs `petrel serve` in-process with args and returns the
// listener addresses it printed, by name.
func daemon(t *testing.T, args ...string) (addrs map[string]string, stderr *syncBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	stderr = &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		code := run(ctx, append([]string{"serve"}, args...), pw, stderr)
		pw.Close()
		done <- code
	}()
	addrs = map[string]string{}
	re := regexp.MustCompile(`^petrel: (\S+)\s+on (\S+) `)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if m := re.FindStringSubmatch(line); m != nil {
			addrs[m[1]] = m[2]
		}
		if strings.HasPrefix(line, "petrel: delivering mail") { // printed after every listener
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	stopped := false
	var code int
	stop = func() int {
		if !stopped {
			cancel()
			select {
			case code = <-done:
			case <-time.After(40 * time.Second):
				t.Fatal("petrel serve did not stop")
			}
			stopped = true
		}
		return code
	}
	t.Cleanup(func() { stop() })
	if len(addrs) == 0 {
		t.Fatalf("no listener printed; stderr:\n%s", stderr)
	}
	return addrs, stderr, stop
}

func loopbackArgs(dir string) []string {
	return []string{"--data", dir, "--hostname", "mx.test", "--domain", "example.test", "--domain", "localhost",
		"--mx", "127.0.0.1:0", "--submission", "127.0.0.1:0", "--submissions", "127.0.0.1:0"}
}

func trust(t *testing.T, certFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("bad certificate PEM")
	}
	return &tls.Config{RootCAs: pool, ServerName: "mx.test"}
}

// TestServeEmbeddedDefault: a fresh data directory gets a self-signed
// certificate (kept across restarts), the three listeners work with their
// roles, and a message sent over STARTTLS lands in the recipient's Maildir.
func TestServeEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	addrs, stderr, stop := daemon(t, loopbackArgs(dir)...)
	certFile := filepath.Join(dir, "tls", "cert.pem")
	first, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatalf("no self-signed certificate: %v", err)
	}
	if key, err := os.Stat(filepath.Join(dir, "tls", "key.pem")); err != nil || key.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", key, err)
	}
	clientTLS := trust(t, certFile)

	// MX: STARTTLS offered, verified against the generated certificate.
	c, err := smtp.Dial(addrs["mx"])
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("MX does not offer STARTTLS")
	}
	if err := c.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@example.org"); err != nil {
		t.Fatal(err)
	}
	// Unknown local users are refused at RCPT (no backscatter later); the
	// first message goes to postmaster, as the start-up hint says.
	if err := c.Rcpt("Carol@Example.Test"); err == nil || !strings.Contains(err.Error(), "550") ||
		!strings.Contains(err.Error(), "5.1.1 <Carol@Example.Test>: Recipient address rejected") {
		t.Fatalf("unknown recipient: %v, want 550 5.1.1", err)
	}
	if err := c.Rcpt("Postmaster@Example.Test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("someone@elsewhere.example"); err == nil || !strings.Contains(err.Error(), "5.7.1 Relay access denied") {
		t.Fatalf("relay attempt: %v, want 554 5.7.1", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: first\r\n\r\nhello\r\n"
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
	files := waitMaildir(t, filepath.Join(dir, "maildir", "postmaster", "new"))
	if len(files) != 1 {
		t.Fatalf("maildir files: %v", files)
	}
	data, _ := os.ReadFile(files[0])
	if !bytes.HasPrefix(data, []byte("Received: from ")) || !bytes.HasSuffix(data, []byte("\r\n"+msg)) ||
		!bytes.Contains(data, []byte(" with ")) || !bytes.Contains(data, []byte("TLSv1.3")) {
		t.Errorf("stored message:\n%s", data)
	}

	// Submission: STARTTLS required (RFC 3207 §4, 530 5.7.0).
	tc, err := textproto.Dial("tcp", addrs["submission"])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	_ = tc.PrintfLine("EHLO c.test")
	if _, _, err := tc.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	_ = tc.PrintfLine("MAIL FROM:<a@example.org>")
	if code, text, _ := tc.ReadResponse(0); code != 530 || !strings.HasPrefix(text, "5.7.0") {
		t.Errorf("submission MAIL before STARTTLS: %d %s", code, text)
	}
	tc.Close()

	// Submissions: TLS from the first byte (RFC 8314 §3.3).
	conn, err := tls.Dial("tcp", addrs["submissions"], clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 mx.test ") {
		t.Errorf("implicit TLS greeting %q %v", line, err)
	}
	conn.Close()

	if code := stop(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"msg=\"message accepted\"", "msg=tls", "cipher=TLS_", "msg=disconnect"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, stderr)
		}
	}

	// The certificate is kept for later starts.
	_, _, stop2 := daemon(t, loopbackArgs(dir)...)
	stop2()
	again, _ := os.ReadFile(certFile)
	if !bytes.Equal(first, again) {
		t.Error("certificate regenerated on restart")
	}
}

// TestServeBadConfig: a bad configuration is refused at start with every
// problem listed, one line each, naming its key.
func TestServeBadConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "petrel.toml")
	cfg := `data_dir = "` + dir + `"
[limits]
max_recipients = 10
[timeouts]
command = "soon"
[listeners]
mx = "nonsense"
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--config", file}, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
	}
	t.Log(stderr.String())

	cfg = `data_dir = "` + dir + `"
[limits]
max_recipients = 10
max_message_size = 100
[listeners]
mx = "nonsense"
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"serve", "--config", file}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, key := range []string{"max_recipients", "max_message_size", "listeners.mx"} {
		if !strings.Contains(stderr.String(), key) {
			t.Errorf("stderr does not name %s:\n%s", key, stderr.String())
		}
	}
	if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n < 3 {
		t.Errorf("want one line per problem (3) after the heading, got:\n%s", stderr.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d", code)
	}
	if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.Contains(stderr.String(), "petrel help") {
		t.Errorf("error should be one line saying what to do: %q", stderr.String())
	}
}

// TestServeSIGHUPReloadsCertificate: SIGHUP makes the daemon serve the
// certificate now in the files, without a restart; a broken file keeps the
// current one.
func TestServeSIGHUPReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	addrs, stderr, _ := daemon(t, loopbackArgs(dir)...)
	served := func() []byte {
		t.Helper()
		conn, err := tls.Dial("tcp", addrs["submissions"], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()

	// New files: generate into another directory and copy over.
	other := t.TempDir()
	newCert, newKey, _, err := certsEnsure(other)
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{newCert: "cert.pem", newKey: "key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tls", dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for bytes.Equal(served(), before) {
		if time.Now().After(deadline) {
			t.Fatalf("certificate not reloaded after SIGHUP; stderr:\n%s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := served()

	// A broken certificate file: the reload fails, the current one stays.
	if err := os.WriteFile(filepath.Join(dir, "tls", "cert.pem"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(stderr.String(), "certificate reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload failure logged; stderr:\n%s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !bytes.Equal(served(), after) {
		t.Error("a failed reload changed the served certificate")
	}
}

func certsEnsure(dir string) (string, string, bool, error) {
	return certs.EnsureSelfSigned(dir, []string{"mx.test"}, time.Now())
}

// TestServeAuth: AUTH on the submission listener with a user from the
// users file (`petrel user add`), only inside TLS (RFC 4954 §4); never on the
// MX; the message is recorded `with ESMTPSA` (RFC 3848) without the user
// name; a wrong password gets 535 5.7.8.
func TestServeAuth(t *testing.T) {
	dir := t.TempDir()
	db, err := users.Open(users.DefaultPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add("alice@example.test", []byte("correct horse battery")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	addrs, stderr, _ := daemon(t, loopbackArgs(dir)...)
	clientTLS := trust(t, filepath.Join(dir, "tls", "cert.pem"))

	// Submission: no AUTH before TLS, AUTH inside it.
	c, err := smtp.Dial(addrs["submission"])
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH advertised before STARTTLS (RFC 4954 §4, S-SUB-04)")
	}
	if err := c.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
		t.Fatalf("AUTH not advertised inside TLS: %q", mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "wrong password", "127.0.0.1")); err == nil || !strings.Contains(err.Error(), "5.7.8") {
		t.Errorf("wrong password: %v, want 535 5.7.8", err)
	}
	// net/smtp quits after a failed AUTH: a new connection.
	if c, err = smtp.Dial(addrs["submission"]); err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "correct horse battery", "127.0.0.1")); err != nil {
		t.Fatalf("AUTH: %v; stderr:\n%s", err, stderr)
	}
	transact(t, c, "alice@example.test", []string{"postmaster@example.test"}, "Subject: authenticated\r\n\r\nhi\r\n")
	files := waitMaildir(t, filepath.Join(dir, "maildir", "postmaster", "new"))
	if len(files) != 1 {
		t.Fatalf("maildir: %v", files)
	}
	data, _ := os.ReadFile(files[0])
	received, _, _ := bytes.Cut(data, []byte("Subject:"))
	// net/smtp uses SMTPUTF8 when offered: UTF8SMTPSA (RFC 6531 §3.7.3).
	if !bytes.Contains(received, []byte("SMTPSA id ")) || bytes.Contains(received, []byte("alice")) {
		t.Errorf("Received header: want ESMTPSA/UTF8SMTPSA and no user name (S-RCV-04):\n%s", data)
	}

	// MX: never AUTH, even inside TLS.
	m, err := smtp.Dial(addrs["mx"])
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Extension("AUTH"); ok {
		t.Error("AUTH advertised on the MX listener")
	}
}

// waitMaildir waits (up to 10 s) for the delivery loop to put a message in
// the Maildir directory newDir, and returns its files.
func waitMaildir(t *testing.T, newDir string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(newDir, "*"))
		if len(files) > 0 || time.Now().After(deadline) {
			return files
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// delivery.ca_file adds roots for verify and secure; a file without a
// certificate is refused with a line that names the key.
func TestDeliveryCAFile(t *testing.T) {
	dir := t.TempDir()
	certFile, _, _, err := certsEnsure(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Delivery.CAFile = certFile
	o, err := deliveryOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(certFile)
	block, _ := pemDecode(pem)
	cert, err := x509.ParseCertificate(block)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS.TLSConfig == nil || o.TLS.TLSConfig.RootCAs == nil {
		t.Fatal("no RootCAs")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: o.TLS.TLSConfig.RootCAs, DNSName: "mx.test"}); err != nil {
		t.Errorf("the CA file's certificate is not trusted: %v", err)
	}
	bad := filepath.Join(dir, "empty.pem")
	_ = os.WriteFile(bad, []byte("not a certificate\n"), 0o600)
	cfg.Delivery.CAFile = bad
	if _, err := deliveryOptions(cfg); err == nil || !strings.Contains(err.Error(), "delivery.ca_file") {
		t.Errorf("bad CA file: %v", err)
	}
}

func pemDecode(b []byte) ([]byte, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return block.Bytes, nil
}

// --hold queues mail without delivering it; a start without it delivers
// what was held.
func TestServeHold(t *testing.T) {
	dir := t.TempDir()
	addrs, stderr, stop := daemon(t, append(loopbackArgs(dir), "--hold")...)
	c, err := smtp.Dial(addrs["mx"])
	if err != nil {
		t.Fatal(err)
	}
	transact(t, c, "a@example.org", []string{"postmaster@example.test"}, "Subject: held\r\n\r\nx\r\n")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"queue", "list", "--data", dir}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "postmaster@example.test") {
		t.Fatalf("queue list: %d %s %s", code, out.String(), errb.String())
	}
	if !strings.Contains(stderr.String(), "delivery held") {
		t.Errorf("log does not say delivery is held:\n%s", stderr)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "maildir", "postmaster", "new", "*")); len(files) != 0 {
		t.Fatalf("delivered while held: %v", files)
	}
	daemon(t, loopbackArgs(dir)...)
	if files := waitMaildir(t, filepath.Join(dir, "maildir", "postmaster", "new")); len(files) != 1 {
		t.Fatalf("after the restart: %v", files)
	}
}

// transact sends one message on c (MAIL, RCPT for each of to, DATA) and
// quits, failing t on any refusal.
func transact(t *testing.T, c *smtp.Client, from string, to []string, msg string) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
}
