package smtpclient_test

// The client's TLS security levels (requirements §5.7: Postfix's
// smtp_tls_security_level) against Petrel's own server over real sockets
// and real crypto/tls: valid, wrong-name, expired and untrusted
// certificates, implicit TLS (RFC 8314), and a server that requires TLS.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
)

var allLevels = []smtpclient.Level{smtpclient.None, smtpclient.May, smtpclient.Encrypt, smtpclient.Verify, smtpclient.Secure}

// checkDelivered checks that p received exactly one message, over TLS or
// not.
func checkDelivered(t *testing.T, p *petrel, overTLS bool) {
	t.Helper()
	msgs := p.backend.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server received %d messages, want 1", len(msgs))
	}
	if msgs[0].TLS != overTLS {
		t.Errorf("message received with TLS=%v, want %v", msgs[0].TLS, overTLS)
	}
	if string(msgs[0].Data) != testMsg {
		t.Errorf("message received as %q, want %q", msgs[0].Data, testMsg)
	}
}

// Every level with a certificate valid for the name: None delivers in
// plaintext, the others over TLS, verified (the client trusts the issuer,
// so even May and Encrypt, which do not require it, record Verified).
// Verify checks the host dialled (127.0.0.1, an IP SAN) unless ServerName
// says otherwise; Secure needs ServerName (RFC 7817 §3, C-TLS-07).
func TestLevelsValidCertificate(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example", "127.0.0.1"})
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
	for _, tc := range []struct {
		level      smtpclient.Level
		serverName string
		wantName   string // TLSInfo.ServerName
	}{
		{smtpclient.None, "", ""},
		{smtpclient.May, "", "127.0.0.1"},
		{smtpclient.Encrypt, "", "127.0.0.1"},
		{smtpclient.Verify, "", "127.0.0.1"},
		{smtpclient.Verify, "mx.example", "mx.example"},
		{smtpclient.Secure, "mx.example", "mx.example"},
	} {
		t.Run(tc.level.String()+"/"+tc.serverName, func(t *testing.T) {
			p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
			opts := options(tc.level)
			opts.ServerName = tc.serverName
			opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
			c, res, err := deliver(t, p.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted != 1 || !strings.Contains(res.Reply, "2.0.0") {
				t.Errorf("result %+v", res)
			}
			checkDelivered(t, p, tc.level != smtpclient.None)
			if c.Level() != tc.level || c.Fallback() != "" {
				t.Errorf("Level %v Fallback %q", c.Level(), c.Fallback())
			}
			info := c.TLS()
			if tc.level == smtpclient.None {
				if info != nil {
					t.Errorf("TLS info %v at level none", info)
				}
				return
			}
			if info == nil {
				t.Fatal("no TLS info")
			}
			if !info.Verified || info.VerifyError != nil || info.ServerName != tc.wantName || info.Implicit {
				t.Errorf("TLS info %+v, want verified for %q", info, tc.wantName)
			}
		})
	}
	// Secure without a configured name refuses to run.
	_, err := smtpclient.Dial(ctxT(t), p.Addr, options(smtpclient.Secure))
	if err == nil || !strings.Contains(err.Error(), "ServerName") {
		t.Errorf("Secure without ServerName: %v", err)
	}
}

// TLSInfo reports what the session got: version, cipher suite, key-exchange
// group (X25519MLKEM768 against Petrel, whose server prefers it; X25519 in
// TLS 1.2, which has no hybrid groups), and the chain as sent. A chain
// through an intermediate verifies with only the root trusted.
func TestTLSInfo(t *testing.T) {
	t.Parallel()
	root := issue(t, nil, []string{"Test Root"}, true)
	inter := issue(t, &root, []string{"Test Intermediate"}, true)
	leaf := issue(t, &inter, []string{"mx.example"}, false)
	chain := tls.Certificate{Certificate: [][]byte{leaf.Certificate[0], inter.Certificate[0]}, PrivateKey: leaf.PrivateKey, Leaf: leaf.Leaf}
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(chain)})

	t.Run("TLS1.3", func(t *testing.T) {
		opts := options(smtpclient.Secure)
		opts.ServerName = "mx.example"
		opts.TLSConfig = &tls.Config{RootCAs: pool(root)}
		c, _, err := deliver(t, p.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		info := c.TLS()
		if info.Version != tls.VersionTLS13 || info.Group != tls.X25519MLKEM768 || !info.PostQuantum() {
			t.Errorf("TLS info %v, want TLS 1.3 with X25519MLKEM768", info)
		}
		if tls.CipherSuiteName(info.CipherSuite) != "TLS_AES_128_GCM_SHA256" && tls.CipherSuiteName(info.CipherSuite) != "TLS_AES_256_GCM_SHA384" && tls.CipherSuiteName(info.CipherSuite) != "TLS_CHACHA20_POLY1305_SHA256" {
			t.Errorf("cipher suite %s", tls.CipherSuiteName(info.CipherSuite))
		}
		if len(info.PeerCertificates) != 2 || !info.PeerCertificates[0].Equal(leaf.Leaf) || !info.PeerCertificates[1].Equal(inter.Leaf) {
			t.Errorf("peer chain %d certificates, want leaf and intermediate", len(info.PeerCertificates))
		}
		if !info.Verified || info.ServerName != "mx.example" {
			t.Errorf("TLS info %+v", info)
		}
		if s := info.String(); !strings.HasPrefix(s, "TLSv1.3 TLS_") || !strings.HasSuffix(s, " X25519MLKEM768 verified") {
			t.Errorf("String() = %q", s)
		}
	})
	t.Run("TLS1.2", func(t *testing.T) {
		opts := options(smtpclient.Encrypt)
		opts.TLSConfig = &tls.Config{MaxVersion: tls.VersionTLS12}
		c, _, err := deliver(t, p.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		info := c.TLS()
		if info.Version != tls.VersionTLS12 || info.Group != tls.X25519 || info.PostQuantum() {
			t.Errorf("TLS info %v, want TLS 1.2 with X25519", info)
		}
		if got := tls.CipherSuiteName(info.CipherSuite); !strings.HasPrefix(got, "TLS_ECDHE_ECDSA_WITH_") || !strings.Contains(got, "GCM") && !strings.Contains(got, "CHACHA20") {
			t.Errorf("TLS 1.2 cipher suite %s, want ECDHE-ECDSA AEAD", got)
		}
		// Not trusted (system roots know no test CA): recorded, not fatal.
		if info.Verified || info.VerifyError == nil || !strings.HasPrefix(info.String(), "TLSv1.2 ") {
			t.Errorf("TLS info %v: want unverified with the reason", info)
		}
	})
}

// badCert is a certificate that fails verification for one reason.
type badCert struct {
	name       string
	cert       tls.Certificate
	roots      *x509.CertPool
	serverName string // for Secure, and for Verify when set
	// is tells the x509 error apart.
	is func(error) bool
}

func badCerts(t *testing.T) []badCert {
	wrongName := selfSigned(t, []string{"wrong.example"})
	expired := selfSigned(t, []string{"mx.example", "127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	untrusted := selfSigned(t, []string{"mx.example", "127.0.0.1"})
	return []badCert{
		{"wrong-name", wrongName, pool(wrongName), "mx.example", func(err error) bool {
			var he x509.HostnameError
			return errors.As(err, &he)
		}},
		{"expired", expired, pool(expired), "mx.example", func(err error) bool {
			var ie x509.CertificateInvalidError
			return errors.As(err, &ie) && ie.Reason == x509.Expired
		}},
		// An empty pool: the issuer is trusted by no one (hermetic, unlike
		// the system roots).
		{"self-signed-untrusted", untrusted, x509.NewCertPool(), "mx.example", func(err error) bool {
			var ue x509.UnknownAuthorityError
			return errors.As(err, &ue)
		}},
	}
}

// Certificates that fail verification (C-TLS-07: wrong name, expired,
// unknown issuer). At Verify and Secure the client fails with a temporary
// TLSError (the message is deferred, never sent: the server receives
// nothing), and, the security being insufficient, sends QUIT inside TLS
// right after the handshake (RFC 3207 §4.1, C-TLS-06). At May and Encrypt,
// which do not authenticate the server, the message is delivered over TLS
// and TLSInfo records Verified=false with the reason.
func TestBadCertificates(t *testing.T) {
	t.Parallel()
	for _, bc := range badCerts(t) {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			for _, level := range []smtpclient.Level{smtpclient.Verify, smtpclient.Secure} {
				t.Run(level.String(), func(t *testing.T) {
					p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(bc.cert)})
					opts := options(level)
					opts.ServerName = bc.serverName
					opts.TLSConfig = &tls.Config{RootCAs: bc.roots}
					var trace strings.Builder
					opts.Trace = &trace
					_, _, err := deliver(t, p.Addr, opts)
					te := tlsError(t, err)
					if !bc.is(err) {
						t.Errorf("error %v: want the %s verification error", te, bc.name)
					}
					if n := len(p.backend.Messages()); n != 0 {
						t.Errorf("server received %d messages", n)
					}
					// C-TLS-06: QUIT inside TLS. The server saw a TLS session
					// that ended with QUIT, and no transaction.
					recs := p.log.waitFor(t, "disconnect")
					if len(p.log.find("tls")) != 1 || recs[0]["reason"] != "QUIT" || recs[0]["messages"] != "0" {
						t.Errorf("server log: tls %v, disconnect %v; want one TLS session closed by QUIT", p.log.find("tls"), recs)
					}
					tr := trace.String()
					i := strings.Index(tr, "S: 220 2.0.0 Ready to start TLS")
					if i < 0 || !strings.HasSuffix(tr[i:], "C: QUIT\nS: 221 2.0.0 Bye\n") || strings.Contains(tr, "MAIL") {
						t.Errorf("trace: want QUIT right after the handshake and no MAIL:\n%s", tr)
					}
				})
			}
			for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt} {
				t.Run(level.String(), func(t *testing.T) {
					p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(bc.cert)})
					opts := options(level)
					opts.ServerName = bc.serverName
					opts.TLSConfig = &tls.Config{RootCAs: bc.roots}
					c, _, err := deliver(t, p.Addr, opts)
					if err != nil {
						t.Fatal(err)
					}
					checkDelivered(t, p, true)
					info := c.TLS()
					if info == nil || info.Verified || info.VerifyError == nil || !bc.is(info.VerifyError) {
						t.Errorf("TLS info %+v: want Verified=false with the %s error", info, bc.name)
					}
					if c.Fallback() != "" {
						t.Errorf("Fallback %q with TLS in use", c.Fallback())
					}
				})
			}
		})
	}
}

// VerifyConnection replaces the PKIX check at Verify and Secure (the hook
// for DANE and MTA-STS): its verdict decides, and is what TLSInfo reports.
func TestVerifyConnectionHook(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
	for _, accept := range []bool{true, false} {
		opts := options(smtpclient.Secure)
		opts.ServerName = "mx.example"
		opts.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool()} // PKIX would fail
		var saw int
		opts.VerifyConnection = func(cs tls.ConnectionState) error {
			saw = len(cs.PeerCertificates)
			if accept && cs.PeerCertificates[0].Equal(cert.Leaf) {
				return nil
			}
			return errors.New("pin mismatch")
		}
		c, _, err := deliver(t, p.Addr, opts)
		if saw != 1 {
			t.Errorf("hook saw %d certificates", saw)
		}
		if accept {
			if err != nil || !c.TLS().Verified {
				t.Errorf("hook accepts: err %v", err)
			}
		} else if te := tlsError(t, err); !strings.Contains(te.Error(), "pin mismatch") {
			t.Errorf("hook refuses: %v", err)
		}
	}
	if n := len(p.backend.Messages()); n != 1 {
		t.Errorf("server received %d messages, want 1", n)
	}
}

// A server that requires TLS (RFC 3207 §4: 530 5.7.0 to MAIL before
// STARTTLS) and a client at level None: the 530 surfaces as a permanent
// ReplyError for MAIL. At May the client uses STARTTLS and delivers.
func TestRequireTLSServer(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert), RequireTLS: true})
	_, res, err := deliver(t, p.Addr, options(smtpclient.None))
	re := replyError(t, err)
	if re.Command != "MAIL" || re.Reply.Code != smtp.C530AuthRequired || re.Reply.Enhanced != smtp.E570Security {
		t.Errorf("error %v: want MAIL: 530 5.7.0", err)
	}
	if smtpclient.Temporary(err) || res.Accepted != 0 {
		t.Errorf("530 is permanent; got temporary=%v accepted=%d", smtpclient.Temporary(err), res.Accepted)
	}
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 530 {
		t.Errorf("errors.As *smtp.Error: %v", se)
	}
	if len(p.backend.Messages()) != 0 {
		t.Fatal("message accepted without TLS")
	}
	if _, _, err := deliver(t, p.Addr, options(smtpclient.May)); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, p, true)
}

// Implicit TLS (RFC 8314 §3.3): TLS from the first byte. None and May are
// raised to Encrypt (TLS is never optional there), Verify and Secure check
// the certificate as with STARTTLS, with QUIT inside TLS on failure; a
// plaintext server makes the handshake fail, never a plaintext session.
func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example", "127.0.0.1"})
	for _, level := range allLevels {
		t.Run(level.String(), func(t *testing.T) {
			p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert), ImplicitTLS: true})
			opts := options(level)
			opts.ImplicitTLS = true
			opts.ServerName = "mx.example"
			opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
			c, _, err := deliver(t, p.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkDelivered(t, p, true)
			if info := c.TLS(); info == nil || !info.Implicit || !info.Verified || info.Version != tls.VersionTLS13 {
				t.Errorf("TLS info %+v", info)
			}
		})
	}
	t.Run("wrong-name", func(t *testing.T) {
		p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert), ImplicitTLS: true})
		opts := options(smtpclient.Secure)
		opts.ImplicitTLS = true
		opts.ServerName = "other.example"
		opts.TLSConfig = &tls.Config{RootCAs: pool(cert)}
		var trace strings.Builder
		opts.Trace = &trace
		_, _, err := deliver(t, p.Addr, opts)
		var he x509.HostnameError
		if tlsError(t, err); !errors.As(err, &he) {
			t.Errorf("error %v, want a host name mismatch", err)
		}
		recs := p.log.waitFor(t, "disconnect")
		if recs[0]["reason"] != "QUIT" || len(p.backend.Messages()) != 0 {
			t.Errorf("server: disconnect %v, %d messages; want QUIT and none", recs, len(p.backend.Messages()))
		}
		// The server greets first inside implicit TLS: the reply to QUIT
		// is the 221 after that greeting, not the greeting.
		if strings.Contains(trace.String(), "C: QUIT\nS: 220 ") {
			t.Errorf("on a failed verification with implicit TLS the client sends QUIT before reading the greeting and takes the 220 greeting as QUIT's reply:\n%s", trace.String())
		}
		if !strings.HasSuffix(trace.String(), "S: 220 mx.example ESMTP Petrel\nC: QUIT\nS: 221 2.0.0 Bye\n") {
			t.Errorf("trace:\n%s", trace.String())
		}
	})
	t.Run("plaintext-server", func(t *testing.T) {
		p := startPetrel(t, smtpserver.Options{TLSConfig: serverTLS(cert)})
		opts := options(smtpclient.May)
		opts.ImplicitTLS = true
		_, _, err := deliver(t, p.Addr, opts)
		tlsError(t, err)
		if len(p.backend.Messages()) != 0 {
			t.Error("message delivered")
		}
	})
}
