package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/dovecottest"
	"github.com/petrel-mta/petrel/internal/postfixtest"
	"github.com/petrel-mta/petrel/internal/users"
	"github.com/petrel-mta/petrel/smtptest"
)

// TestTwoPetrels: end to end over loopback (issue 4). Petrel A takes a
// message on submission with STARTTLS and AUTH, queues it durably, finds
// B as the MX of b.test through a DNS server on 127.0.0.1, and relays it to
// B with STARTTLS (level may); B delivers it to its Maildir, byte-exact
// below the two Received headers, each recording TLS.
func TestTwoPetrels(t *testing.T) {
	// B: the MX of b.test.
	dirB := t.TempDir()
	cfgB := filepath.Join(dirB, "petrel.toml")
	if err := os.WriteFile(cfgB, []byte("[local]\nmailboxes = [\"bob\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrsB, stderrB, _ := daemon(t, "--config", cfgB, "--data", dirB, "--hostname", "mx.b.test", "--domain", "b.test",
		"--mx", "127.0.0.1:0", "--submission", "", "--submissions", "")
	_, portB, _ := net.SplitHostPort(addrsB["mx"])

	dns := dnsxtest.NewServer(t,
		"b.test. 300 IN MX 10 mx.b.test.",
		"mx.b.test. 300 IN A 127.0.0.1")

	// A: submission for a.test, delivering by MX through that DNS server.
	dirA := t.TempDir()
	cfgFile := senderSetup(t, dirA, portB)
	addrsA, stderrA, _ := daemon(t, "--config", cfgFile, "--data", dirA, "--hostname", "mx.a.test", "--domain", "a.test",
		"--mx", "127.0.0.1:0", "--submission", "127.0.0.1:0", "--submissions", "", "--resolver", dns.Addr)

	c, err := smtp.Dial(addrsA["submission"])
	if err != nil {
		t.Fatal(err)
	}
	tlsA := trust(t, filepath.Join(dirA, "tls", "cert.pem"))
	tlsA.ServerName = "mx.a.test"
	if err := c.StartTLS(tlsA); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@a.test", "correct horse battery", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@a.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@b.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: across\r\n\r\n.a dot line\r\nend\r\n"
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()

	files := waitMaildir(t, filepath.Join(dirB, "maildir", "bob", "new"))
	if len(files) != 1 {
		t.Fatalf("B's maildir: %v\nA's log:\n%s\nB's log:\n%s", files, stderrA, stderrB)
	}
	data, _ := os.ReadFile(files[0])
	if !bytes.HasSuffix(data, []byte("\r\n"+msg)) {
		t.Errorf("message not byte-exact:\n%q", data)
	}
	headers := string(data[:len(data)-len(msg)])
	if n := strings.Count(headers, "Received: from "); n != 2 {
		t.Errorf("want 2 Received headers (B's, then A's), got %d:\n%s", n, headers)
	}
	if !strings.Contains(headers, "by mx.b.test (Petrel) with ESMTPS") || !strings.Contains(headers, "by mx.a.test (Petrel) with ESMTPSA") &&
		!strings.Contains(headers, "by mx.a.test (Petrel) with UTF8SMTPSA") {
		t.Errorf("hops not both over TLS (A's submission authenticated):\n%s", headers)
	}
	if !strings.Contains(stderrA.String(), "mx.b.test") {
		t.Errorf("A's log does not name the MX host:\n%s", stderrA)
	}
	// The queue of A is empty once the delivery is recorded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := filepath.Glob(filepath.Join(dirA, "queue", "msg", "*"))
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's queue still holds %v", entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPostfixNextHop: Petrel relays an authenticated user's message to a
// throw-away Postfix found as the MX of postfix.test, over STARTTLS; Postfix
// records the TLS session and delivers the message intact (issue 4 item 6).
func TestPostfixNextHop(t *testing.T) {
	now := time.Now()
	cert, err := smtptest.Certificate([]string{postfixtest.Hostname, "127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := postfixtest.WriteCertificate(t, cert)
	pf := postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile, TLSLevel: "may"})
	_, pfPort, _ := net.SplitHostPort(pf.Addr)
	dns := dnsxtest.NewServer(t,
		postfixtest.Domain+". 300 IN MX 10 "+postfixtest.Hostname+".",
		postfixtest.Hostname+". 300 IN A 127.0.0.1")

	dir := t.TempDir()
	cfgFile := senderSetup(t, dir, pfPort)
	addrs, stderr, _ := daemon(t, "--config", cfgFile, "--data", dir, "--hostname", "mx.a.test", "--domain", "a.test",
		"--mx", "", "--submission", "", "--submissions", "127.0.0.1:0", "--resolver", dns.Addr)

	clientTLS := trust(t, filepath.Join(dir, "tls", "cert.pem"))
	clientTLS.ServerName = "mx.a.test"
	conn, err := tls.Dial("tcp", addrs["submissions"], clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@a.test", "correct horse battery", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	msg := "From: <alice@a.test>\r\nTo: <carol@postfix.test>\r\nSubject: to postfix\r\nMessage-ID: <next-hop@a.test>\r\n\r\nhello postfix\r\n"
	if err := c.Mail("alice@a.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("carol@" + postfixtest.Domain); err != nil {
		t.Fatal(err)
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

	got := pf.WaitMessages(t, "carol", 1, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("postfix got %d messages; petrel log:\n%s", len(got), stderr)
	}
	if !bytes.HasSuffix(got[0].Data, []byte("\r\n"+msg)) && !bytes.HasSuffix(got[0].Data, []byte("\n"+strings.ReplaceAll(msg, "\r\n", "\n"))) {
		t.Errorf("message not intact at Postfix:\n%s", got[0].Data)
	}
	pf.WaitLog(t, "TLS connection established from", 10*time.Second)
	if !strings.Contains(string(got[0].Data), "(using TLSv1.") {
		t.Errorf("Postfix's Received header shows no TLS:\n%s", got[0].Data)
	}
}

// senderSetup prepares the data directory of a sending Petrel: the user
// alice@a.test (password "correct horse battery") and a config file that
// delivers to MX hosts on port mxPort. It returns the config file.
func senderSetup(t *testing.T, dir, mxPort string) string {
	t.Helper()
	db, err := users.Open(users.DefaultPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add("alice@a.test", []byte("correct horse battery")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "petrel.toml")
	if err := os.WriteFile(cfgFile, []byte("[delivery]\nport = "+mxPort+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile
}

// TestServeLMTP: with [local] lmtp, the daemon hands local mail to a real
// Dovecot LMTP server (RFC 2033) on a unix socket instead of its Maildirs,
// one reply per recipient: the known user gets the message, the unknown
// one (unknown to Dovecot, accepted by Petrel's recipients = "any")
// bounces back to the local sender, whose report Dovecot stores too.
func TestServeLMTP(t *testing.T) {
	dc := dovecottest.Start(t, dovecottest.Config{Users: []string{"alice", "sender"}, Unix: true})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "petrel.toml")
	if err := os.WriteFile(cfg, []byte("[local]\nrecipients = \"any\"\nlmtp = \"unix:"+dc.Addr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs, stderr, _ := daemon(t, "--config", cfg, "--data", dir, "--hostname", "mx.lmtp.test", "--domain", dovecottest.Domain,
		"--mx", "127.0.0.1:0", "--submission", "", "--submissions", "")
	c, err := smtp.Dial(addrs["mx"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	transact(t, c, "sender@lmtp.test", []string{"alice@lmtp.test", "ghost@lmtp.test"}, "Subject: by lmtp\r\n\r\nhello dovecot\r\n")
	msg := dc.WaitMessages(t, "alice", 1, 30*time.Second)[0]
	if !strings.Contains(string(msg), "Subject: by lmtp\n\nhello dovecot\n") || !strings.Contains(string(msg), "by mx.lmtp.test (Petrel)") {
		t.Errorf("alice's copy:\n%s", msg)
	}
	report := dc.WaitMessages(t, "sender", 1, 30*time.Second)[0]
	if !strings.Contains(string(report), "Final-Recipient: rfc822; ghost@lmtp.test") || !strings.Contains(string(report), "550 5.1.1") {
		t.Errorf("sender's report:\n%s\nlog:\n%s", report, stderr)
	}
}
