package postfixtest_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/postfixtest"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

const deliveryTimeout = 60 * time.Second

// cert makes a certificate for the instance's host name and 127.0.0.1 and
// writes it out; pool trusts it.
func cert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	c, err := smtptest.Certificate([]string{postfixtest.Hostname, "127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = postfixtest.WriteCertificate(t, c)
	pool = x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return certFile, keyFile, pool
}

// send runs one SMTP session with the raw test client: EHLO, STARTTLS when
// clientTLS is set, then MAIL, the RCPTs and DATA, and returns each reply
// of the transaction (MAIL, RCPTs, DATA, end of data).
func send(t *testing.T, addr string, clientTLS *tls.Config, from string, to []string, body string) []*smtptest.Reply {
	t.Helper()
	c, err := smtptest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = 30 * time.Second
	must := func(r *smtptest.Reply, err error) *smtptest.Reply {
		t.Helper()
		if err != nil {
			t.Fatalf("%v (reply so far %v)", err, r)
		}
		return r
	}
	if r := must(c.ReadReply()); r.Code != 220 {
		t.Fatalf("greeting %v", r)
	}
	if r := must(c.Cmd("EHLO client.example")); r.Code != 250 {
		t.Fatalf("EHLO: %v", r)
	}
	if clientTLS != nil {
		if r := must(c.Cmd("STARTTLS")); r.Code != 220 {
			t.Fatalf("STARTTLS: %v", r)
		}
		if _, err := c.StartTLS(clientTLS); err != nil {
			t.Fatal(err)
		}
		if r := must(c.Cmd("EHLO client.example")); r.Code != 250 {
			t.Fatalf("EHLO in TLS: %v", r)
		}
	}
	var reps []*smtptest.Reply
	r := must(c.Cmd("MAIL FROM:<" + from + ">"))
	reps = append(reps, r)
	if r.Code != 250 {
		return reps
	}
	ok := 0
	for _, rcpt := range to {
		r := must(c.Cmd("RCPT TO:<" + rcpt + ">"))
		reps = append(reps, r)
		if r.Code == 250 {
			ok++
		}
	}
	if ok == 0 {
		return reps
	}
	r = must(c.Cmd("DATA"))
	reps = append(reps, r)
	if r.Code != 354 {
		return reps
	}
	reps = append(reps, must(c.Cmd(body+".")))
	must(c.Cmd("QUIT"))
	return reps
}

func codes(reps []*smtptest.Reply) []int {
	var cs []int
	for _, r := range reps {
		cs = append(cs, r.Code)
	}
	return cs
}

// The instance takes mail for postfix.test over STARTTLS into a Maildir per
// local part, refuses unknown* recipients per recipient, refuses relaying
// without a relay host, logs the TLS session and the delivery, and leaves
// no process behind when stopped.
func TestStartTLSDelivery(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := cert(t)
	pf := postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile})

	body := "Subject: postfixtest\r\n\r\nhello\r\n"
	reps := send(t, pf.Addr, &tls.Config{RootCAs: pool, ServerName: postfixtest.Hostname},
		"sender@example.org", []string{"alice@postfix.test", "unknown-bob@postfix.test", "carol@example.org"}, body)
	got := codes(reps)
	want := []int{250, 250, 550, 554, 354, 250}
	if len(got) != len(want) {
		t.Fatalf("replies %v, want codes %v", reps, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("reply codes %v, want %v (replies %v)", got, want, reps)
		}
	}
	if !strings.Contains(reps[3].String(), "Relay access denied") {
		t.Errorf("RCPT to a foreign domain: %v, want Relay access denied", reps[3])
	}

	msgs := pf.WaitMessages(t, "alice", 1, deliveryTimeout)
	if !bytes.HasSuffix(msgs[0].Data, []byte("Subject: postfixtest\n\nhello\n")) {
		t.Errorf("delivered message:\n%s", msgs[0].Data)
	}
	if !bytes.Contains(msgs[0].Data, []byte("Delivered-To: alice@postfix.test")) {
		t.Errorf("no Delivered-To in:\n%s", msgs[0].Data)
	}
	log := pf.WaitLog(t, "status=sent", 10*time.Second)
	if !strings.Contains(log, "TLS connection established from") {
		t.Errorf("maillog has no TLS session:\n%s", log)
	}

	if err := pf.Stop(); err != nil {
		t.Error(err)
	}
	if _, err := net.DialTimeout("tcp", pf.Addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after Stop", pf.Addr)
	}
	if err := pf.Stop(); err != nil { // a second Stop does nothing
		t.Error(err)
	}
}

// TLSLevel "encrypt": RFC 3207 §4's 530 to MAIL before STARTTLS; no
// certificate: no STARTTLS offered.
func TestTLSLevels(t *testing.T) {
	t.Parallel()
	t.Run("encrypt", func(t *testing.T) {
		t.Parallel()
		certFile, keyFile, _ := cert(t)
		pf := postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile, TLSLevel: "encrypt"})
		reps := send(t, pf.Addr, nil, "a@example.org", []string{"alice@postfix.test"}, "x\r\n")
		if len(reps) != 1 || reps[0].Code != 530 || !strings.Contains(reps[0].String(), "5.7.0") {
			t.Fatalf("MAIL before STARTTLS: %v, want 530 5.7.0", reps)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		t.Parallel()
		pf := postfixtest.Start(t, postfixtest.Config{})
		c, err := smtptest.Dial(pf.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ReadReply(); err != nil {
			t.Fatal(err)
		}
		r, err := c.Cmd("EHLO client.example")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(r.String(), "STARTTLS") {
			t.Errorf("STARTTLS offered without a certificate: %v", r)
		}
		reps := send(t, pf.Addr, nil, "a@example.org", []string{"dave@postfix.test"}, "plain\r\n")
		if reps[len(reps)-1].Code != 250 {
			t.Fatalf("plaintext delivery: %v", reps)
		}
		pf.WaitMessages(t, "dave", 1, deliveryTimeout)
	})
}

// With RelayHost, mail for other domains goes on to that host (here a Petrel
// server), and extra main.cf settings apply.
func TestRelayHost(t *testing.T) {
	t.Parallel()
	backend := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "next.example", Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	pf := postfixtest.Start(t, postfixtest.Config{
		RelayHost: "[127.0.0.1]:" + port(t, srv.Addr),
		MainCF:    map[string]string{"smtp_tls_security_level": "none", "smtpd_forbid_bare_newline": "reject"},
	})
	reps := send(t, pf.Addr, nil, "a@example.org", []string{"erin@example.net"}, "Subject: relayed\r\n\r\nvia postfix\r\n")
	if reps[len(reps)-1].Code != 250 {
		t.Fatalf("relay: %v", reps)
	}
	m := waitRelayed(t, backend, srv.Addr)
	if len(m.To) != 1 || m.To[0].String() != "erin@example.net" || !bytes.HasSuffix(m.Data, []byte("\r\n\r\nvia postfix\r\n")) {
		t.Errorf("relayed message: to %v\n%s", m.To, m.Data)
	}
	pf.WaitLog(t, "relay=127.0.0.1[127.0.0.1]:"+port(t, srv.Addr), 10*time.Second)
	if out, err := pf.Command("status"); err != nil {
		t.Errorf("postfix status: %v\n%s", err, out)
	}
}

// With RelayHost, RelayCAFile and smtp_tls_security_level = encrypt in
// MainCF, the relay hop runs over STARTTLS and the relay host's certificate
// is trusted.
func TestRelayHostTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := cert(t)
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	backend := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{
		Hostname:  "next.example",
		Backend:   backend,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{c}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	pf := postfixtest.Start(t, postfixtest.Config{
		RelayHost:   "[127.0.0.1]:" + port(t, srv.Addr),
		RelayCAFile: certFile,
		MainCF:      map[string]string{"smtp_tls_security_level": "encrypt"},
	})
	reps := send(t, pf.Addr, nil, "a@example.org", []string{"frank@example.net"}, "Subject: relayed\r\n\r\nover TLS\r\n")
	if reps[len(reps)-1].Code != 250 {
		t.Fatalf("relay: %v", reps)
	}
	if m := waitRelayed(t, backend, srv.Addr); !m.TLS || !bytes.HasSuffix(m.Data, []byte("\r\n\r\nover TLS\r\n")) {
		t.Errorf("relayed message: TLS %v\n%s", m.TLS, m.Data)
	}
	pf.WaitLog(t, "Trusted TLS connection established to 127.0.0.1[127.0.0.1]:"+port(t, srv.Addr), 10*time.Second)
	pf.WaitLog(t, "status=sent", 10*time.Second)
}

// waitRelayed waits for the first message the relay host at addr received.
func waitRelayed(t *testing.T, backend *smtptest.Backend, addr string) smtptest.Message {
	t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for len(backend.Messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing relayed to %s after %v", addr, deliveryTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return backend.Messages()[0]
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Launch, for callers that are not tests: an instance for another domain,
// in a given directory, with a raised smtpd process limit; Queued,
// MasterPID and Processes describe it, and Close leaves nothing behind.
func TestLaunch(t *testing.T) {
	t.Parallel()
	parent, err := os.MkdirTemp("", "postfixtest-launch-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := cert(t)
	pf, err := postfixtest.Launch(t.Context(), postfixtest.Config{
		CertFile: certFile, KeyFile: keyFile, Domain: "Bench.Test", Dir: parent, SMTPDProcessLimit: 7,
	})
	if errors.Is(err, postfixtest.ErrUnavailable) {
		skipUnavailable(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = pf.Close()
		}
	})
	if filepath.Dir(pf.Dir) != parent || pf.Domain != "bench.test" || pf.Hostname != "mx.bench.test" {
		t.Errorf("Dir %s (want in %s), Domain %q, Hostname %q", pf.Dir, parent, pf.Domain, pf.Hostname)
	}
	master, err := os.ReadFile(filepath.Join(pf.Dir, "conf", "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(master), pf.Addr+" inet n - n - 7 smtpd") {
		t.Errorf("master.cf has no smtpd line with process limit 7:\n%s", master)
	}
	pid, err := pf.MasterPID()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pf.Processes(), pid) {
		t.Errorf("master %d not among the processes %v", pid, pf.Processes())
	}

	// Hold the message, so that it is seen in the queue, then release it.
	if out, err := pf.Run(t.Context(), "postconf", "-e", "smtpd_data_restrictions = check_client_access static:HOLD"); err != nil {
		t.Fatalf("postconf: %v\n%s", err, out)
	}
	if out, err := pf.Command("reload"); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	reps := send(t, pf.Addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		"sender@example.org", []string{"grace@bench.test"}, "Subject: launch\r\n\r\nheld\r\n")
	if got := codes(reps); !slices.Equal(got, []int{250, 250, 354, 250}) {
		t.Fatalf("replies %v", reps)
	}
	if n, err := pf.Queued(); err != nil || n != 1 {
		t.Errorf("Queued() = %d, %v with one message on hold, want 1", n, err)
	}
	if out, err := pf.Run(t.Context(), "postsuper", "-H", "ALL"); err != nil {
		t.Fatalf("postsuper -H ALL: %v\n%s", err, out)
	}
	if out, err := pf.Run(t.Context(), "postqueue", "-f"); err != nil {
		t.Fatalf("postqueue -f: %v\n%s", err, out)
	}
	pf.WaitMessages(t, "grace", 1, deliveryTimeout)
	deadline := time.Now().Add(deliveryTimeout)
	for {
		n, err := pf.Queued()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued after delivery", n)
		}
		time.Sleep(50 * time.Millisecond)
	}

	procs := pf.Processes()
	closed = true
	if err := pf.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(pf.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s left after Close: %v", pf.Dir, err)
	}
	for _, p := range procs {
		// A zombie is gone but for its parent's wait.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if i := bytes.LastIndexByte(stat, ')'); err == nil && i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
			t.Errorf("process %d left after Close: %s", p, stat)
		}
	}
}

// skipUnavailable skips t for lack of Postfix or root, as Start does:
// unless PETREL_INTEROP_REQUIRED=1, which makes it a failure.
func skipUnavailable(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("PETREL_INTEROP_REQUIRED") == "1" {
		t.Fatalf("%v (PETREL_INTEROP_REQUIRED=1)", err)
	}
	t.Skip(err)
}

// A Launch that cannot start says so, and leaves no directory behind.
func TestLaunchRefused(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	_, err := postfixtest.Launch(t.Context(), postfixtest.Config{CertFile: "cert.pem", Dir: parent})
	if err == nil || !strings.Contains(err.Error(), "CertFile and KeyFile go together") {
		if errors.Is(err, postfixtest.ErrUnavailable) {
			skipUnavailable(t, err)
		}
		t.Errorf("Launch with a certificate and no key: %v", err)
	}
	_, err = postfixtest.Launch(t.Context(), postfixtest.Config{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem", Dir: parent})
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("Launch with missing files: %q, want a one-line error", err)
	}
	_, err = postfixtest.Launch(t.Context(), postfixtest.Config{Dir: parent}) // t.TempDir is 0700
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("Launch in a directory the postfix user cannot reach: %v", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("Launch left %v in %s", ents, parent)
	}
}
