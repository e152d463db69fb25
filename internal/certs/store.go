package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Store holds the current server certificate, loaded from a certificate
// file and a key file, and hands it to crypto/tls through GetCertificate.
// Reload replaces it without a restart; handshakes in progress keep the
// certificate they started with. A Store is safe for concurrent use.
type Store struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
}

// NewStore loads the PEM certificate chain in certFile (leaf first) and the
// matching PEM private key in keyFile. It fails if either file cannot be
// read or parsed or if the key does not match the certificate. An expired
// certificate is accepted and logged as a warning. log may be nil.
func NewStore(certFile, keyFile string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{certFile: certFile, keyFile: keyFile, log: log}
	c, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cert.Store(c)
	s.logLoaded("certificate loaded", c.Leaf)
	return s, nil
}

// Reload loads the certificate and key files again. On success the new
// certificate is used for the following handshakes; on failure the current
// one stays in use and the error is returned.
func (s *Store) Reload() error {
	c, err := s.load()
	if err != nil {
		return err
	}
	s.cert.Store(c)
	s.logLoaded("certificate reloaded", c.Leaf)
	return nil
}

// GetCertificate returns the current certificate, whatever the client asked
// for. It has the signature of tls.Config.GetCertificate.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// Leaf returns the parsed leaf of the current certificate, for example to
// log or monitor its expiry. The caller must not modify it.
func (s *Store) Leaf() *x509.Certificate {
	return s.cert.Load().Leaf
}

// TLSConfig returns a new server configuration that serves the certificates
// of s: TLS 1.2 at least (TLS 1.3 is preferred by crypto/tls), key exchange
// groups X25519MLKEM768 (hybrid post-quantum), then X25519 and P-256.
// Renegotiation is never supported by a crypto/tls server, and session
// tickets are left enabled. The caller may adjust the result, for example to
// set NextProtos.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		GetCertificate:   s.GetCertificate,
	}
}

func (s *Store) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: loading %s and %s: %w", s.certFile, s.keyFile, err)
	}
	if c.Leaf == nil { // nil only with GODEBUG=x509keypairleaf=0
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certs: parsing %s: %w", s.certFile, err)
		}
		c.Leaf = leaf
	}
	return &c, nil
}

func (s *Store) logLoaded(msg string, leaf *x509.Certificate) {
	attrs := []any{
		slog.String("cert", s.certFile),
		slog.String("subject", leaf.Subject.String()),
		slog.Any("names", leaf.DNSNames),
		slog.Time("not_after", leaf.NotAfter),
	}
	if time.Now().After(leaf.NotAfter) {
		s.log.Warn(msg+"; it has expired", attrs...)
		return
	}
	s.log.Info(msg, attrs...)
}
