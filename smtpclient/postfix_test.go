package smtpclient_test

// The client against a real, independent server: a throw-away Postfix
// instance (internal/postfixtest) with OpenSSL's TLS. Skipped without
// Postfix or root, unless PETREL_INTEROP_REQUIRED=1.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/postfixtest"
	"github.com/petrel-mta/petrel/smtpclient"
)

const postfixDelivery = 60 * time.Second

// startPostfix starts a Postfix instance whose smtpd presents cert, at
// smtpd_tls_security_level level.
func startPostfix(t *testing.T, cert tls.Certificate, level string) *postfixtest.Instance {
	t.Helper()
	certFile, keyFile := postfixtest.WriteCertificate(t, cert)
	return postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile, TLSLevel: level})
}

// toPostfix sends a message to local@postfix.test at opts' level and
// returns the client and the error.
func toPostfix(t *testing.T, pf *postfixtest.Instance, opts smtpclient.Options, local string) (*smtpclient.Client, error) {
	t.Helper()
	msg := fmt.Sprintf("From: <sender@example.org>\r\nTo: <%s@postfix.test>\r\nSubject: %s\r\n\r\n.leading dot\r\nbody of %s\r\n", local, local, local)
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, pf.Addr, opts)
	if err != nil {
		return nil, err
	}
	res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{local + "@postfix.test"}}, []byte(msg))
	if qerr := c.Quit(ctx); qerr != nil && err == nil {
		err = qerr
	}
	if err == nil && (res.Accepted != 1 || !strings.Contains(res.Reply, "queued as")) {
		err = fmt.Errorf("result %+v", res)
	}
	return c, err
}

// delivered waits for local's message in Postfix's Maildir and checks it.
func delivered(t *testing.T, pf *postfixtest.Instance, local string, overTLS bool) {
	t.Helper()
	m := pf.WaitMessages(t, local, 1, postfixDelivery)[0]
	if !bytes.HasSuffix(m.Data, []byte("\n\n.leading dot\nbody of "+local+"\n")) {
		t.Errorf("delivered message:\n%s", m.Data)
	}
	if tlsClause := bytes.Contains(m.Data, []byte("(using TLSv1.3 with cipher ")); tlsClause != overTLS {
		t.Errorf("Received header with TLS: %v, want %v:\n%s", tlsClause, overTLS, m.Data)
	}
}

// Postfix as the server, its certificate valid for mx.postfix.test:
// STARTTLS offered (smtpd_tls_security_level=may) → May, Encrypt, Verify
// and Secure deliver over TLS, verified; STARTTLS required (encrypt) →
// level None gets Postfix's 530 5.7.0 as a ReplyError; a certificate for
// another name, an expired one, and one not trusted fail Verify (with QUIT
// inside TLS, C-TLS-06), while Encrypt and May deliver.
func TestPostfixServer(t *testing.T) {
	t.Parallel()
	now := time.Now()
	valid := selfSigned(t, []string{postfixtest.Hostname, "127.0.0.1"})
	trust := func(level smtpclient.Level, c tls.Certificate) smtpclient.Options {
		o := options(level)
		o.ServerName = postfixtest.Hostname
		o.TLSConfig = &tls.Config{RootCAs: pool(c)}
		return o
	}

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		pf := startPostfix(t, valid, "may")
		for _, level := range []smtpclient.Level{smtpclient.May, smtpclient.Encrypt, smtpclient.Verify, smtpclient.Secure} {
			opts := trust(level, valid)
			if level == smtpclient.Verify {
				opts.ServerName = "" // the host dialled: 127.0.0.1, an IP SAN
			}
			opts.NoChunking = level == smtpclient.Encrypt // DATA once, BDAT otherwise
			c, err := toPostfix(t, pf, opts, level.String())
			if err != nil {
				t.Fatalf("%v: %v", level, err)
			}
			info := c.TLS()
			if info == nil || !info.Verified || info.Version != tls.VersionTLS13 {
				t.Errorf("%v: TLS %+v", level, info)
			}
			t.Logf("%v: %v, chain of %d", level, info, len(info.PeerCertificates))
			delivered(t, pf, level.String(), true)
		}
		// The same server, not trusted (an empty pool): Verify fails, May
		// delivers, unverified.
		untrusted := options(smtpclient.Verify)
		untrusted.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool()}
		_, err := toPostfix(t, pf, untrusted, "untrusted-verify")
		var ue x509.UnknownAuthorityError
		if tlsError(t, err); !errors.As(err, &ue) {
			t.Errorf("untrusted, Verify: %v", err)
		}
		untrusted.TLS = smtpclient.May
		c, err := toPostfix(t, pf, untrusted, "untrusted-may")
		if err != nil || c.TLS() == nil || c.TLS().Verified {
			t.Fatalf("untrusted, May: %v, TLS %v", err, c.TLS())
		}
		delivered(t, pf, "untrusted-may", true)
		log := pf.WaitLog(t, "quit=1", 10*time.Second)
		if !strings.Contains(log, "Trusted TLS connection established from") && !strings.Contains(log, "TLS connection established from") {
			t.Errorf("no TLS session in Postfix's log")
		}
	})

	t.Run("required", func(t *testing.T) {
		t.Parallel()
		pf := startPostfix(t, valid, "encrypt")
		_, err := toPostfix(t, pf, options(smtpclient.None), "none")
		re := replyError(t, err)
		if re.Command != "MAIL" || re.Reply.Code != 530 || re.Reply.Enhanced.String() != "5.7.0" || smtpclient.Temporary(err) {
			t.Errorf("level none against a TLS-required Postfix: %v, want MAIL: 530 5.7.0", err)
		}
		if _, err := toPostfix(t, pf, options(smtpclient.May), "may"); err != nil {
			t.Fatal(err)
		}
		delivered(t, pf, "may", true)
		if len(pf.Messages("none")) != 0 {
			t.Error("a message delivered without TLS")
		}
	})

	for _, bad := range []struct {
		name  string
		cert  tls.Certificate
		is    func(error) bool
		relax smtpclient.Level // a level that delivers anyway
	}{
		{"wrong-name", selfSigned(t, []string{"wrong.example"}), func(err error) bool {
			var he x509.HostnameError
			return errors.As(err, &he)
		}, smtpclient.Encrypt},
		{"expired", selfSigned(t, []string{postfixtest.Hostname, "127.0.0.1"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), func(err error) bool {
			var ie x509.CertificateInvalidError
			return errors.As(err, &ie) && ie.Reason == x509.Expired
		}, smtpclient.May},
	} {
		t.Run(bad.name, func(t *testing.T) {
			t.Parallel()
			pf := startPostfix(t, bad.cert, "may")
			for _, level := range []smtpclient.Level{smtpclient.Verify, smtpclient.Secure} {
				_, err := toPostfix(t, pf, trust(level, bad.cert), "verify")
				if tlsError(t, err); !bad.is(err) {
					t.Errorf("%v: error %v", level, err)
				}
			}
			// C-TLS-06: each session ended with QUIT right after STARTTLS.
			log := pf.WaitLogCount(t, "ehlo=1 starttls=1 quit=1 commands=3", 2, 10*time.Second)
			if n := strings.Count(log, "ehlo=1 starttls=1 quit=1 commands=3"); n != 2 {
				t.Errorf("%d sessions ended with QUIT after STARTTLS, want 2:\n%s", n, log)
			}
			c, err := toPostfix(t, pf, trust(bad.relax, bad.cert), "relaxed")
			if err != nil {
				t.Fatalf("%v: %v", bad.relax, err)
			}
			if info := c.TLS(); info == nil || info.Verified || !bad.is(info.VerifyError) {
				t.Errorf("%v: TLS %+v, want unverified with the reason", bad.relax, info)
			}
			delivered(t, pf, "relaxed", true)
			if len(pf.Messages("verify")) != 0 {
				t.Error("a message delivered at a failed Verify")
			}
		})
	}
}

// TestPostfixQuickAck measures, against Postfix (OpenSSL writes its TLS 1.3
// session tickets in separate segments), the time from connect to the EHLO
// reply inside TLS, with and without the TCP_QUICKACK re-arming. It logs the
// means and asserts only that every session works: timings are not
// asserted, machines are noisy. Not parallel, so that this package's other
// tests do not run meanwhile.
func TestPostfixQuickAck(t *testing.T) {
	const n = 10
	cert := selfSigned(t, []string{postfixtest.Hostname, "127.0.0.1"})
	pf := startPostfix(t, cert, "may")
	var with, without []time.Duration
	const warmup = 2 // the first sessions start Postfix's smtpd and tlsmgr
	for i := -warmup; i < 2*n; i++ {
		opts := options(smtpclient.Encrypt)
		opts.NoQuickAck = i%2 != 0 // interleaved, so drift hits both alike
		ctx := ctxT(t)
		start := time.Now()
		c, err := smtpclient.Dial(ctx, pf.Addr, opts)
		d := time.Since(start)
		if err != nil {
			t.Fatalf("dial %d (NoQuickAck=%v): %v", i, opts.NoQuickAck, err)
		}
		if c.TLS() == nil {
			t.Fatalf("dial %d: no TLS", i)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatalf("dial %d: QUIT: %v", i, err)
		}
		switch {
		case i < 0:
		case opts.NoQuickAck:
			without = append(without, d)
		default:
			with = append(with, d)
		}
	}
	mean := func(ds []time.Duration) time.Duration {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return s / time.Duration(len(ds))
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	t.Logf("connect+greeting+EHLO+STARTTLS+EHLO against Postfix, %d sessions each: with TCP_QUICKACK re-arming mean %v median %v; with NoQuickAck mean %v median %v",
		n, r(mean(with)), r(median(with)), r(mean(without)), r(median(without)))
	t.Logf("with:    %v", with)
	t.Logf("without: %v", without)
}
