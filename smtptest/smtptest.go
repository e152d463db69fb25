// Package smtptest provides helpers for testing SMTP code, in the manner of
// net/http/httptest: throw-away TLS certificates, an in-memory Backend that
// records what it receives, and a server listening on a loopback port.
package smtptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
)

// Certificate makes a self-signed ECDSA P-256 certificate valid for the
// given names (DNS names, or IP addresses) from notBefore to notAfter.
func Certificate(names []string, notBefore, notAfter time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// TLSConfigs returns a server config with a fresh certificate for
// localhost and 127.0.0.1, and a client config that trusts it.
func TLSConfigs() (server, client *tls.Config, err error) {
	now := time.Now()
	cert, err := Certificate([]string{"localhost", "127.0.0.1", "::1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}},
		&tls.Config{RootCAs: pool, ServerName: "localhost"}, nil
}

// Message is what the Backend received in one transaction.
type Message struct {
	ConnID   string
	From     smtp.Path
	Opts     smtpserver.MailOptions
	To       []smtp.Path
	Data     []byte
	TLS      bool
	Hello    string
	AuthUser string // Conn.AuthUser: "" unless the client authenticated
	Received string // the Received header the server would add
}

// Backend is an in-memory smtpserver.Backend. It accepts every sender and
// recipient unless RejectRcpt says otherwise, and keeps each accepted
// message. Set the hooks before the server starts.
type Backend struct {
	// RejectRcpt, when set, may refuse a recipient with an error.
	RejectRcpt func(to smtp.Path) error
	// DataErr, when set, is returned by Data after reading the message.
	DataErr func() error
	// Users, when not nil, makes the sessions smtpserver.AuthSessions, so
	// that the server offers AUTH (under TLS): a user name and its
	// password. Nil (the default) leaves AUTH unimplemented.
	Users map[string]string
	// AuthErr, when set, is called by Auth first; a non-nil result is
	// returned instead of checking Users.
	AuthErr func(username string) error

	mu       sync.Mutex
	msgs     []Message
	sessions int
	closed   int
	auths    []AuthAttempt
}

// AuthAttempt is one call of Auth.
type AuthAttempt struct {
	Mech, Identity, Username string
	OK                       bool
}

// NewSession implements smtpserver.Backend.
func (b *Backend) NewSession(_ context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	b.mu.Lock()
	b.sessions++
	b.mu.Unlock()
	s := &session{b: b, c: c}
	if b.Users != nil {
		return &authSession{s}, nil
	}
	return s, nil
}

// AuthAttempts returns the Auth calls so far (the passwords are not kept).
func (b *Backend) AuthAttempts() []AuthAttempt {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]AuthAttempt(nil), b.auths...)
}

// errAuthInvalid is RFC 4954 §6's reply for wrong credentials.
var errAuthInvalid = &smtp.Error{Code: smtp.C535AuthInvalid, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 7, Detail: 8},
	Message: "Authentication credentials invalid"}

// authSession is a session of a Backend with Users.
type authSession struct{ *session }

// Auth implements smtpserver.AuthSession: the password must be Users'
// for username (compared in constant time).
func (s *authSession) Auth(_ context.Context, mech, identity, username string, password []byte) error {
	var err error
	if s.b.AuthErr != nil {
		err = s.b.AuthErr(username)
	}
	if err == nil {
		want, ok := s.b.Users[username]
		if !ok || subtle.ConstantTimeCompare([]byte(want), password) != 1 {
			err = errAuthInvalid
		}
	}
	s.b.mu.Lock()
	s.b.auths = append(s.b.auths, AuthAttempt{Mech: mech, Identity: identity, Username: username, OK: err == nil})
	s.b.mu.Unlock()
	return err
}

// Messages returns the messages accepted so far.
func (b *Backend) Messages() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.msgs...)
}

// Sessions returns how many sessions were made and how many closed.
func (b *Backend) Sessions() (made, closed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions, b.closed
}

type session struct {
	b  *Backend
	c  *smtpserver.Conn
	tx *Message
}

func (s *session) Mail(_ context.Context, from smtp.Path, opts *smtpserver.MailOptions) error {
	s.tx = &Message{ConnID: s.c.ID(), From: from, Opts: *opts}
	return nil
}

func (s *session) Rcpt(_ context.Context, to smtp.Path, _ *smtpserver.RcptOptions) error {
	if s.b.RejectRcpt != nil {
		if err := s.b.RejectRcpt(to); err != nil {
			return err
		}
	}
	s.tx.To = append(s.tx.To, to)
	return nil
}

func (s *session) Data(_ context.Context, r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	if s.b.DataErr != nil {
		if err := s.b.DataErr(); err != nil {
			return err
		}
	}
	if s.tx == nil {
		return errors.New("smtptest: Data without Mail")
	}
	m := *s.tx
	m.Data = buf.Bytes()
	m.TLS = s.c.TLS() != nil
	m.Hello, _ = s.c.Hello()
	m.AuthUser = s.c.AuthUser()
	m.Received = s.c.Received("test")
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, m)
	s.b.mu.Unlock()
	return nil
}

func (s *session) Reset(context.Context) { s.tx = nil }

func (s *session) Close() error {
	s.b.mu.Lock()
	s.b.closed++
	s.b.mu.Unlock()
	return nil
}

// Server is an smtpserver.Server listening on a loopback port.
type Server struct {
	*smtpserver.Server
	Addr string
	done chan error
	once sync.Once
}

// NewServer starts srv on 127.0.0.1 on a free port. Close it with Close.
func NewServer(opts smtpserver.Options) (*Server, error) {
	srv, err := smtpserver.New(opts)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Server: srv, Addr: l.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(l) }()
	return s, nil
}

// Close closes the server and waits for Serve to return. Calling it again
// does nothing.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.Server.Close()
		<-s.done
	})
	return err
}
