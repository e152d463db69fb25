package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/postfixtest"
	"github.com/petrel-mta/petrel/internal/probe"
	"github.com/petrel-mta/petrel/internal/probe/probetest"
	"github.com/petrel-mta/petrel/smtptest"
)

func runCheck(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"check"}, args...), &out, &errb)
	r := cmdResult{code, out.String(), errb.String()}
	t.Logf("petrel check %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// lines checks that each wanted line is in the output, whole.
func (r cmdResult) lines(t *testing.T, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(r.stdout, "\n") {
		have[l] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("output lacks the line %q", w)
		}
	}
}

// TestCheckPetrel: the daemon, as `petrel serve` runs it, passes: STARTTLS,
// TLS 1.3 and 1.2 accepted, 1.0 and 1.1 refused, X25519MLKEM768, not
// vulnerable to command injection, certificate valid with --ca.
func TestCheckPetrel(t *testing.T) {
	dir := t.TempDir()
	addrs, _, _ := daemon(t, loopbackArgs(dir)...)
	ca := filepath.Join(dir, "tls", "cert.pem")
	r := runCheck(t, addrs["mx"], "--servername", "mx.test", "--ca", ca, "--ehlo", "check.test")
	if r.code != 0 {
		t.Errorf("exit %d, want 0", r.code)
	}
	r.lines(t,
		"OK    STARTTLS offered",
		"OK    TLS 1.0 refused",
		"OK    TLS 1.1 refused",
		"OK    TLS 1.2 accepted",
		"OK    TLS 1.3 accepted",
		"OK    key exchange X25519MLKEM768 accepted (hybrid post-quantum)",
		"OK    certificate chain valid for mx.test (PKIX)",
		"OK    STARTTLS command injection: not vulnerable (the server closed the connection)",
		"Result: OK (0 FAIL, 0 WARN, 13 OK)",
	)
	// Without --ca the self-signed certificate is a warning, not a
	// failure (MX delivery is opportunistic)...
	r = runCheck(t, addrs["mx"], "--servername", "mx.test")
	if r.code != 0 || !strings.Contains(r.stdout, "WARN  certificate not valid for mx.test") {
		t.Errorf("self-signed without --ca: exit %d", r.code)
	}
	// ...and a failure with --strict.
	r = runCheck(t, "--strict", addrs["mx"], "--servername", "mx.test")
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL  certificate not valid for mx.test") {
		t.Errorf("self-signed with --strict: exit %d", r.code)
	}
}

// TestCheckNoSTARTTLS: a server without STARTTLS fails, exit 1.
func TestCheckNoSTARTTLS(t *testing.T) {
	srv := probetest.Start(t, probetest.Options{})
	r := runCheck(t, srv.Addr)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	r.lines(t, "FAIL  STARTTLS not offered: all mail to this server travels in plaintext (RFC 3207)")
}

// TestCheckVulnerable: a deliberately vulnerable server, which keeps its
// buffered plaintext across STARTTLS and so answers the injected NOOP
// inside TLS, is flagged (CVE-2011-0411), exit 1.
func TestCheckVulnerable(t *testing.T) {
	serverTLS, ca := testTLS(t)
	srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS, Vulnerable: true})
	r := runCheck(t, srv.Addr, "--ca", ca)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	r.lines(t,
		"OK    STARTTLS offered",
		"FAIL  STARTTLS command injection: server answered an injected command after STARTTLS (CVE-2011-0411)",
		"Result: FAIL (1 FAIL, 0 WARN, 12 OK)",
	)
	// What the server saw: the NOOP, never sent inside TLS by the probe,
	// was executed after the handshake.
	cmds := strings.Join(srv.Commands(), "\n")
	if !strings.Contains(cmds, "STARTTLS\nNOOP") {
		t.Errorf("server commands: %q", cmds)
	}
}

// TestCheckJSON: --json prints the Report with its fields.
func TestCheckJSON(t *testing.T) {
	serverTLS, ca := testTLS(t)
	srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS, Vulnerable: true})
	r := runCheck(t, "--json", srv.Addr, "--ca", ca, "--servername", "localhost")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	var rep probe.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if rep.Target != srv.Addr || len(rep.Hosts) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	h := rep.Hosts[0]
	if !h.STARTTLS || h.Address != srv.Addr || h.TLS == nil || len(h.TLS.Versions) != 4 || len(h.TLS.Groups) != 4 ||
		h.TLS.PKIX == nil || !h.TLS.PKIX.Valid || len(h.TLS.Certificates) != 1 || h.Injection == nil || !h.Injection.Vulnerable {
		t.Errorf("host report: %+v", h)
	}
	// The field names are an interface too.
	var raw map[string]any
	_ = json.Unmarshal([]byte(r.stdout), &raw)
	host := raw["hosts"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "address", "greeting", "starttls", "tls", "injection", "findings"} {
		if _, ok := host[k]; !ok {
			t.Errorf("JSON host lacks %q", k)
		}
	}
	tlsObj := host["tls"].(map[string]any)
	for _, k := range []string{"version", "cipher_suite", "group", "versions", "groups", "certificates", "pkix"} {
		if _, ok := tlsObj[k]; !ok {
			t.Errorf("JSON tls lacks %q", k)
		}
	}
}

// TestCheckDomain: a name with MX records is a domain, and each MX host is
// probed in preference order; --host probes the name itself; a null MX is
// refused; a name without MX records is a host.
func TestCheckDomain(t *testing.T) {
	serverTLS, ca := testTLS(t)
	srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS})
	_, port, _ := net.SplitHostPort(srv.Addr)
	dns := dnsxtest.NewServer(t,
		"example.test. 300 IN MX 20 mx2.example.test.",
		"example.test. 300 IN MX 10 localhost.example.test.",
		"example.test. 300 IN A 127.0.0.1",
		"localhost.example.test. 300 IN A 127.0.0.1",
		"mx2.example.test. 300 IN A 127.0.0.2", // nobody listens there
		"null.test. 300 IN MX 0 .",
		"host.test. 300 IN A 127.0.0.1",
	)
	base := []string{"--resolver", dns.Addr, "--port", port, "--ca", ca}

	r := runCheck(t, append(base, "example.test")...)
	if r.code != 1 { // mx2 cannot be reached
		t.Errorf("exit %d, want 1", r.code)
	}
	r.lines(t,
		"Checking example.test: 2 MX host(s)",
		"localhost.example.test [127.0.0.1:"+port+"] (MX preference 10)",
		"mx2.example.test (MX preference 20)",
	)
	if !strings.Contains(r.stdout, "FAIL  cannot probe mx2.example.test: dial tcp 127.0.0.2:"+port) ||
		strings.Index(r.stdout, "localhost.example.test") > strings.Index(r.stdout, "mx2.example.test") {
		t.Error("mx2 not reported unreachable after localhost")
	}

	r = runCheck(t, append(base, "--host", "example.test")...)
	if r.code != 0 {
		t.Errorf("--host: exit %d, want 0", r.code)
	}
	r.lines(t, "Checking example.test:"+port)

	r = runCheck(t, append(base, "host.test")...)
	r.lines(t, "Checking host.test:"+port)

	r = runCheck(t, append(base, "null.test")...)
	if r.code != 2 || !strings.Contains(r.stderr, "null.test publishes a null MX (RFC 7505)") {
		t.Errorf("null MX: exit %d", r.code)
	}
}

// TestCheckUsage: usage and connection errors are 2, with one line.
func TestCheckUsage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "give one DOMAIN or HOST[:PORT]"},
		{[]string{"a.test", "b.test"}, "give one DOMAIN or HOST[:PORT] to check (got 2)"},
		{[]string{"--frobnicate", "a.test"}, "flag provided but not defined"},
		{[]string{"not a name!"}, "is neither a domain"},
		{[]string{"--port", "0", "a.test"}, "is not a TCP port"},
		{[]string{dead}, "could not reach 127.0.0.1"},
		{[]string{"--timeout", "300ms", silentServer(t)}, "timed out after 300ms: raise --timeout"},
	} {
		r := runCheck(t, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"check", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "CVE-2011-0411") {
		t.Errorf("check --help: %d", code)
	}
}

// TestCheckPostfix: throw-away Postfix instances with STARTTLS. Every
// Postfix offers STARTTLS and is not vulnerable to command injection
// (Postfix fixed CVE-2011-0411 in 2011 by discarding buffered input). One
// configured as RFC 8996 asks (smtpd_tls_protocols = >=TLSv1.2) passes, exit
// 0; with the defaults, Postfix 3.x accepts TLS 1.0 and 1.1 whenever
// OpenSSL lets it (it prefers old TLS to plaintext for opportunistic TLS):
// the check says WARN and passes (exit 0), and FAIL with --strict.
func TestCheckPostfix(t *testing.T) {
	now := time.Now()
	cert, err := smtptest.Certificate([]string{postfixtest.Hostname, "127.0.0.1"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := postfixtest.WriteCertificate(t, cert)
	for _, c := range []struct {
		name   string
		mainCF map[string]string
	}{
		{"rfc8996", map[string]string{"smtpd_tls_protocols": ">=TLSv1.2", "smtpd_tls_mandatory_protocols": ">=TLSv1.2"}},
		{"defaults", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pf := postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile, TLSLevel: "may", MainCF: c.mainCF})
			r := runCheck(t, "--json", pf.Addr, "--servername", postfixtest.Hostname, "--ca", certFile)
			var rep probe.Report
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Hosts) != 1 {
				t.Fatalf("report: %v %s", err, r.stdout)
			}
			h := rep.Hosts[0]
			for _, f := range h.Findings {
				t.Logf("%-5s %s", f.Verdict, f.Message)
			}
			if !h.STARTTLS || h.TLS == nil || h.TLS.Error != "" || !h.TLS.PKIX.Valid {
				t.Fatalf("STARTTLS with Postfix: %+v", h)
			}
			if h.Injection == nil || h.Injection.Vulnerable || h.Injection.Outcome == "error" {
				t.Errorf("injection test against Postfix: %+v", h.Injection)
			}
			old := h.TLS.Versions[0].Accepted || h.TLS.Versions[1].Accepted
			if c.mainCF != nil && old {
				t.Errorf("TLS 1.0/1.1 accepted with smtpd_tls_protocols = >=TLSv1.2: %+v", h.TLS.Versions)
			}
			if r.code != 0 {
				t.Errorf("exit %d, want 0 (Postfix passes)", r.code)
			}
			if old {
				strict := runCheck(t, "--strict", pf.Addr, "--servername", postfixtest.Hostname, "--ca", certFile)
				if strict.code != 1 || !strings.Contains(strict.stdout, "FAIL  TLS 1.0 accepted") {
					t.Errorf("--strict with TLS 1.0 accepted: exit %d\n%s", strict.code, strict.stdout)
				}
			}
		})
	}
}
