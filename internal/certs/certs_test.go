package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsureSelfSigned(t *testing.T) {
	tests := []struct {
		name      string
		hostnames []string
		wantCN    string
		wantDNS   []string
		wantIPs   []string
	}{
		{"none", nil, "localhost", []string{"localhost"}, []string{"127.0.0.1", "::1"}},
		{"one", []string{"MX.Example.ORG."}, "mx.example.org", []string{"mx.example.org", "localhost"}, []string{"127.0.0.1", "::1"}},
		{"several with IP and duplicates", []string{"a.example", "192.0.2.1", "b.example", "localhost", "a.example"},
			"a.example", []string{"a.example", "b.example", "localhost"}, []string{"192.0.2.1", "127.0.0.1", "::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "tls")
			in := slices.Clone(tt.hostnames)
			certFile, keyFile, created, err := EnsureSelfSigned(dir, in, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !created {
				t.Error("created = false on first call")
			}
			if !slices.Equal(in, tt.hostnames) {
				t.Errorf("hostnames modified: %q", in)
			}
			if certFile != filepath.Join(dir, "cert.pem") || keyFile != filepath.Join(dir, "key.pem") {
				t.Errorf("files = %s, %s", certFile, keyFile)
			}
			for path, want := range map[string]fs.FileMode{dir: 0o700, keyFile: 0o600, certFile: 0o644} {
				if got := mode(t, path); got != want {
					t.Errorf("mode of %s = %v, want %v", path, got, want)
				}
			}

			c := readCert(t, certFile)
			if c.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.wantCN)
			}
			if !slices.Equal(c.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %q, want %q", ips, tt.wantIPs)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v", c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
			}
			if c.IsCA {
				t.Error("IsCA = true")
			}
			if !c.NotBefore.Equal(testNow.Add(-time.Hour)) || !c.NotAfter.Equal(testNow.Add(825*24*time.Hour)) {
				t.Errorf("validity %v .. %v", c.NotBefore, c.NotAfter)
			}
			if c.SerialNumber.BitLen() != 128 {
				t.Errorf("serial has %d bits", c.SerialNumber.BitLen())
			}
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
			}
			if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
				t.Errorf("key does not match: %v", err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 2 {
				t.Errorf("dir holds %d entries, want 2 (temporary files left?)", len(entries))
			}
		})
	}
}

func TestEnsureSelfSignedReuse(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _, err := EnsureSelfSigned(dir, []string{"a.example"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	cert1, _ := os.ReadFile(certFile)
	key1, _ := os.ReadFile(keyFile)

	certFile2, keyFile2, created, err := EnsureSelfSigned(dir, []string{"other.example"}, testNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("created = true on second call")
	}
	cert2, _ := os.ReadFile(certFile2)
	key2, _ := os.ReadFile(keyFile2)
	if !bytes.Equal(cert1, cert2) || !bytes.Equal(key1, key2) {
		t.Error("second call changed the files")
	}

	// A key without its certificate (a crash between the two renames) is
	// replaced by a new pair.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	_, _, created, err = EnsureSelfSigned(dir, []string{"a.example"}, testNow)
	if err != nil || !created {
		t.Fatalf("after removing cert.pem: created=%v err=%v", created, err)
	}
	key3, _ := os.ReadFile(keyFile)
	if bytes.Equal(key1, key3) {
		t.Error("key was not regenerated")
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("regenerated pair does not match: %v", err)
	}
}

// pair generates a self-signed certificate in a new directory.
func pair(t *testing.T, host string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _, err := EnsureSelfSigned(t.TempDir(), []string{host}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewStoreErrors(t *testing.T) {
	certA, keyA := pair(t, "a.example")
	_, keyB := pair(t, "b.example")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key string
	}{
		{"missing cert", filepath.Join(t.TempDir(), "none.pem"), keyA},
		{"missing key", certA, filepath.Join(t.TempDir(), "none.pem")},
		{"garbage cert", garbage, keyA},
		{"garbage key", certA, garbage},
		{"mismatched key", certA, keyB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := NewStore(tt.cert, tt.key, nil); err == nil {
				t.Errorf("NewStore succeeded with leaf %v", s.Leaf().Subject)
			} else if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestStoreReload(t *testing.T) {
	certA, keyA := pair(t, "a.example")
	certB, keyB := pair(t, "b.example")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, certFile, certA)
	copyFile(t, keyFile, keyA)

	var logBuf bytes.Buffer
	s, err := NewStore(certFile, keyFile, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if cn := s.Leaf().Subject.CommonName; cn != "a.example" {
		t.Fatalf("Leaf CN = %q, want a.example", cn)
	}
	if !strings.Contains(logBuf.String(), "certificate loaded") {
		t.Errorf("log lacks the load: %q", logBuf.String())
	}

	copyFile(t, certFile, certB)
	copyFile(t, keyFile, keyB)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn := s.Leaf().Subject.CommonName; cn != "b.example" {
		t.Fatalf("after Reload, Leaf CN = %q, want b.example", cn)
	}
	got, _ := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example"})
	if got.Leaf.Subject.CommonName != "b.example" {
		t.Errorf("GetCertificate returned %q", got.Leaf.Subject.CommonName)
	}

	// A broken or mismatched pair keeps the current certificate.
	for _, bad := range []struct{ name, cert, key string }{
		{"garbage", "", ""},
		{"mismatch", certA, keyB},
		{"truncated", "truncated", keyB},
	} {
		switch bad.cert {
		case "":
			if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nxx\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		case "truncated":
			data, _ := os.ReadFile(certB)
			if err := os.WriteFile(certFile, data[:len(data)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		default:
			copyFile(t, certFile, bad.cert)
			copyFile(t, keyFile, bad.key)
		}
		if err := s.Reload(); err == nil {
			t.Errorf("%s: Reload succeeded", bad.name)
		}
		if cn := s.Leaf().Subject.CommonName; cn != "b.example" {
			t.Errorf("%s: after failed Reload, Leaf CN = %q, want b.example", bad.name, cn)
		}
	}
}

// handshake runs a TLS handshake over TCP on 127.0.0.1 between a server
// using cfg and a client using client, and returns the client's connection
// state and both errors. (net.Pipe has no buffer, so the TLS 1.3 session
// ticket the server writes after its handshake would block.)
func handshake(t *testing.T, cfg, client *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		srvErr <- tls.Server(c, cfg).HandshakeContext(ctx)
	}()
	var d net.Dialer
	cc, err := d.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cli := tls.Client(cc, client)
	cliErr := cli.HandshakeContext(ctx)
	return cli.ConnectionState(), cliErr, <-srvErr
}

func TestTLSConfigHandshake(t *testing.T) {
	certFile, keyFile := pair(t, "mx.example.org")
	s, err := NewStore(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.Leaf())

	tests := []struct {
		name        string
		client      *tls.Config
		wantOK      bool
		wantVersion uint16
		wantCurve   tls.CurveID
	}{
		{"TLS 1.3 default client", &tls.Config{}, true, tls.VersionTLS13, tls.X25519MLKEM768},
		{"TLS 1.3 classic client", &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256, tls.X25519}}, true, tls.VersionTLS13, tls.X25519},
		{"TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, true, tls.VersionTLS12, tls.X25519},
		{"TLS 1.1 refused", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := tt.client.Clone()
			client.RootCAs = roots
			client.ServerName = "mx.example.org"
			state, cliErr, srvErr := handshake(t, s.TLSConfig(), client)
			if !tt.wantOK {
				if cliErr == nil || srvErr == nil {
					t.Fatalf("handshake succeeded: client %v, server %v", cliErr, srvErr)
				}
				if !strings.Contains(srvErr.Error(), "version") {
					t.Errorf("server error %q does not mention the version", srvErr)
				}
				return
			}
			if cliErr != nil || srvErr != nil {
				t.Fatalf("handshake: client %v, server %v", cliErr, srvErr)
			}
			if state.Version != tt.wantVersion {
				t.Errorf("version = %s, want %s", tls.VersionName(state.Version), tls.VersionName(tt.wantVersion))
			}
			if state.CurveID != tt.wantCurve {
				t.Errorf("group = %v, want %v", state.CurveID, tt.wantCurve)
			}
			if len(state.PeerCertificates) == 0 || !state.PeerCertificates[0].Equal(s.Leaf()) {
				t.Error("server did not present the store's certificate")
			}
		})
	}
}

func TestTLSConfigFields(t *testing.T) {
	certFile, keyFile := pair(t, "a.example")
	s, err := NewStore(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.TLSConfig()
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", c.MinVersion)
	}
	if c.SessionTicketsDisabled {
		t.Error("session tickets disabled")
	}
	if c.Certificates != nil || c.GetCertificate == nil {
		t.Error("certificates not served through GetCertificate")
	}
	if c2 := s.TLSConfig(); c2 == c || &c2.CurvePreferences[0] == &c.CurvePreferences[0] {
		t.Error("TLSConfig shares state between calls")
	}
}
