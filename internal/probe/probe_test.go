package probe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/probe"
	"github.com/petrel-mta/petrel/internal/probe/probetest"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// tlsConfigs returns a server configuration with a certificate for
// localhost and 127.0.0.1 valid for 90 days (smtptest.TLSConfigs' lasts a
// day, which the probe rightly warns about), and a pool trusting it.
func tlsConfigs(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	now := time.Now()
	cert, err := smtptest.Certificate([]string{"localhost", "127.0.0.1"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}}, pool
}

func target(t *testing.T, addr string) probe.Target {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return probe.Target{Name: host, Port: port}
}

func support(t *testing.T, list []probe.Support, name string) probe.Support {
	t.Helper()
	for _, s := range list {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no result for %s in %+v", name, list)
	return probe.Support{}
}

func finding(h probe.HostReport, check string, v probe.Verdict) *probe.Finding {
	for i, f := range h.Findings {
		if f.Check == check && f.Verdict == v {
			return &h.Findings[i]
		}
	}
	return nil
}

func logFindings(t *testing.T, h probe.HostReport) {
	t.Helper()
	for _, f := range h.Findings {
		t.Logf("%-5s %s", f.Verdict, f.Message)
	}
}

func worst(h probe.HostReport) probe.Verdict {
	r := probe.Report{Hosts: []probe.HostReport{h}}
	return r.Worst()
}

// TestPetrelServer: Petrel's own server passes every check (S-TLS-09..13,
// S-INJ-01): TLS 1.2 and 1.3 only, X25519MLKEM768 accepted, the injected
// command never executed (the server closes the connection).
func TestPetrelServer(t *testing.T) {
	serverTLS, roots := tlsConfigs(t)
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: &smtptest.Backend{}, TLSConfig: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{EHLO: "probe.test", Roots: roots, ServerName: "localhost"})
	logFindings(t, h)
	if h.Error != "" || !h.STARTTLS || h.TLS == nil || h.TLS.Error != "" {
		t.Fatalf("report: %+v", h)
	}
	for name, want := range map[string]bool{"TLS 1.0": false, "TLS 1.1": false, "TLS 1.2": true, "TLS 1.3": true} {
		if s := support(t, h.TLS.Versions, name); s.Accepted != want || s.Inconclusive {
			t.Errorf("%s: %+v, want accepted=%v", name, s, want)
		}
	}
	for name, want := range map[string]bool{"X25519MLKEM768": true, "X25519": true, "P-256": true} {
		if s := support(t, h.TLS.Groups, name); s.Accepted != want {
			t.Errorf("%s: %+v, want accepted=%v", name, s, want)
		}
	}
	if h.TLS.Version != "TLS 1.3" || h.TLS.Group != "X25519MLKEM768" || !h.TLS.PKIX.Valid || h.TLS.PKIX.Name != "localhost" {
		t.Errorf("default session: %+v %+v", h.TLS, h.TLS.PKIX)
	}
	if len(h.TLS.Certificates) != 1 || h.TLS.Certificates[0].PublicKey != "ECDSA P-256" || len(h.TLS.Certificates[0].SHA256) != 64 {
		t.Errorf("certificates: %+v", h.TLS.Certificates)
	}
	for _, e := range h.TLS.ExtensionsAfterTLS {
		if e == "STARTTLS" {
			t.Error("STARTTLS offered again inside TLS")
		}
	}
	if in := h.Injection; in == nil || in.Vulnerable || in.Outcome != "closed" {
		t.Errorf("injection: %+v", in)
	}
	if w := worst(h); w != probe.OK {
		t.Errorf("worst verdict %s, want OK", w)
	}
}

// TestInjectionVulnerable: a server that keeps its buffered reader across
// STARTTLS answers the injected NOOP inside TLS: FAIL (CVE-2011-0411).
// The same server with the buffer dropped stays silent: OK.
func TestInjectionVulnerable(t *testing.T) {
	serverTLS, _ := tlsConfigs(t)
	for _, vulnerable := range []bool{true, false} {
		srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS, Vulnerable: vulnerable})
		h := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{InjectionWait: time.Second})
		logFindings(t, h)
		in := h.Injection
		if in == nil || in.Vulnerable != vulnerable {
			t.Fatalf("vulnerable=%v: injection %+v", vulnerable, in)
		}
		f := finding(h, "injection", probe.FAIL)
		if vulnerable {
			if in.Outcome != "answered" || !strings.HasPrefix(in.Reply, "250") || f == nil ||
				f.Message != "STARTTLS command injection: server answered an injected command after STARTTLS (CVE-2011-0411)" {
				t.Errorf("vulnerable server: %+v, finding %+v", in, f)
			}
			if worst(h) != probe.FAIL {
				t.Error("vulnerable server not graded FAIL")
			}
		} else if in.Outcome != "silent" || f != nil {
			t.Errorf("fixed server: %+v", in)
		}
	}
}

// TestNoSTARTTLS: a server without STARTTLS is a FAIL, and nothing else is
// tried.
func TestNoSTARTTLS(t *testing.T) {
	srv := probetest.Start(t, probetest.Options{})
	h := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{EHLO: "probe.test"})
	logFindings(t, h)
	if h.STARTTLS || h.TLS != nil || h.Injection != nil || finding(h, "starttls", probe.FAIL) == nil {
		t.Errorf("report: %+v", h)
	}
	if !strings.Contains(h.Greeting, "probetest") {
		t.Errorf("greeting %q", h.Greeting)
	}
	for _, c := range srv.Commands() {
		if c != "EHLO probe.test" && c != "QUIT" {
			t.Errorf("unexpected command %q", c)
		}
	}
}

// TestOldTLSAccepted: a server that accepts TLS 1.0 and 1.1 gets a WARN
// (RFC 8996; opportunistic MX TLS), and a FAIL with Strict.
func TestOldTLSAccepted(t *testing.T) {
	serverTLS, _ := tlsConfigs(t)
	serverTLS.MinVersion = tls.VersionTLS10
	serverTLS.MaxVersion = tls.VersionTLS12
	serverTLS.CurvePreferences = []tls.CurveID{tls.CurveP256}
	srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS})
	h := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{})
	logFindings(t, h)
	for name, want := range map[string]bool{"TLS 1.0": true, "TLS 1.1": true, "TLS 1.2": true, "TLS 1.3": false} {
		if s := support(t, h.TLS.Versions, name); s.Accepted != want {
			t.Errorf("%s: %+v, want accepted=%v", name, s, want)
		}
	}
	if f := finding(h, "tls-version", probe.WARN); f == nil || !strings.Contains(f.Message, "RFC 8996") {
		t.Errorf("no WARN for TLS 1.0: %+v", h.Findings)
	}
	strict := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{Strict: true})
	if f := finding(strict, "tls-version", probe.FAIL); f == nil || !strings.Contains(f.Message, "RFC 8996") {
		t.Errorf("no FAIL for TLS 1.0 with Strict: %+v", strict.Findings)
	}
	for _, g := range h.TLS.Groups {
		if !g.Inconclusive {
			t.Errorf("group %s tested without TLS 1.3", g.Name)
		}
	}
}

// TestCertificatePolicy: an untrusted certificate is WARN by default (MX
// delivery is opportunistic) and FAIL with Strict; one about to expire is
// WARN.
func TestCertificatePolicy(t *testing.T) {
	serverTLS, _ := tlsConfigs(t)
	srv := probetest.Start(t, probetest.Options{TLSConfig: serverTLS})
	h := probe.Host(ctx(t), target(t, srv.Addr), probe.Options{})
	if h.TLS.PKIX.Valid || finding(h, "pkix", probe.WARN) == nil || worst(h) != probe.WARN {
		t.Errorf("untrusted, default policy: %+v", h.Findings)
	}
	h = probe.Host(ctx(t), target(t, srv.Addr), probe.Options{Strict: true})
	if finding(h, "pkix", probe.FAIL) == nil || worst(h) != probe.FAIL {
		t.Errorf("untrusted, strict: %+v", h.Findings)
	}
	later := func() time.Time { return time.Now().Add(80 * 24 * time.Hour) }
	h = probe.Host(ctx(t), target(t, srv.Addr), probe.Options{Now: later})
	if f := finding(h, "certificate", probe.WARN); f == nil || !strings.Contains(f.Message, "expires in 9 days") {
		t.Errorf("expiring: %+v", h.Findings)
	}
}

// TestUnreachable: a closed port is reported, not a panic or a hang.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := probe.Host(ctx(t), target(t, addr), probe.Options{})
	if h.Error == "" || finding(h, "connect", probe.FAIL) == nil {
		t.Errorf("report: %+v", h)
	}
}
