// Package certs provides the TLS server certificate of the daemon: a
// self-signed certificate generated on first start when none is configured
// ([EnsureSelfSigned]), and a [Store] that serves the current certificate to
// crypto/tls and can reload it from disk without a restart.
//
// The server side of STARTTLS (RFC 3207) and of implicit TLS (RFC 8314) uses
// [Store.TLSConfig]: TLS 1.2 at least, the hybrid post-quantum group
// X25519MLKEM768 preferred. A self-signed certificate gives confidentiality
// against passive attackers only: peers that verify certificates (RFC 7817,
// MTA-STS) reject it, unless a DANE-EE TLSA record pins it (RFC 7672), so
// production servers should configure a real one.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// File names used by EnsureSelfSigned inside its directory.
const (
	CertFileName = "cert.pem"
	KeyFileName  = "key.pem"
)

// selfSignedValidity is the lifetime of a generated certificate: 825 days,
// the longest that Apple platforms accept for a TLS server certificate.
const selfSignedValidity = 825 * 24 * time.Hour

// EnsureSelfSigned returns the paths of dir/cert.pem and dir/key.pem, first
// generating them if either is missing. created reports whether they were
// generated. An existing pair is returned as is, whatever its names and
// expiry.
//
// A generated certificate is self-signed, with an ECDSA P-256 key; its
// subject alternative names are every name in hostnames (an IP address
// becomes an IP SAN) plus "localhost", 127.0.0.1 and ::1, and its common
// name is the first host name (or "localhost"). It is valid from now-1h to
// now+825 days. dir is created with mode 0700 if needed; key.pem is written
// with mode 0600 and cert.pem with 0644, each atomically (temporary file,
// fsync, rename, directory fsync), the key first, so that a crash leaves
// either no certificate or a complete pair.
func EnsureSelfSigned(dir string, hostnames []string, now time.Time) (certFile, keyFile string, created bool, err error) {
	certFile = filepath.Join(dir, CertFileName)
	keyFile = filepath.Join(dir, KeyFileName)
	certOK, err := exists(certFile)
	if err != nil {
		return "", "", false, err
	}
	keyOK, err := exists(keyFile)
	if err != nil {
		return "", "", false, err
	}
	if certOK && keyOK {
		return certFile, keyFile, false, nil
	}

	certPEM, keyPEM, err := generate(hostnames, now)
	if err != nil {
		return "", "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, fmt.Errorf("certs: %w", err)
	}
	if err := writeCertFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", false, err
	}
	if err := writeCertFile(certFile, certPEM, 0o644); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("certs: %w", err)
	}
}

// generate returns a PEM certificate and PEM PKCS #8 key as described at
// EnsureSelfSigned.
func generate(hostnames []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generating serial number: %w", err)
	}
	serial.SetBit(serial, 127, 1) // never zero, always 128 bits long

	commonName := "localhost"
	var dnsNames []string
	var ips []net.IP
	seen := make(map[string]bool)
	names := append(slices.Clone(hostnames), "localhost", "127.0.0.1", "::1")
	for _, h := range names {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if h == "" || seen[h] {
			continue
		}
		if len(seen) == 0 {
			commonName = h
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, h)
		}
	}

	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: creating certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: encoding key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// writeCertFile writes a PEM file atomically and durably.
func writeCertFile(path string, data []byte, perm fs.FileMode) error {
	if err := safeio.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
