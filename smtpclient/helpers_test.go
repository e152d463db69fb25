package smtpclient_test

// Test helpers shared by this package's tests: certificates, a Petrel
// server with a recording logger, a scripted fake SMTP server, a
// man-in-the-middle proxy and a dialer that records the client's writes.
// Everything listens on 127.0.0.1:0 and every read is bounded, so that a
// broken client fails a test instead of hanging it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// ioTimeout bounds every read and write of the fake servers and the proxy,
// and the client's timeouts in these tests.
const ioTimeout = 10 * time.Second

// testMsg is a small 7-bit message.
const testMsg = "From: <sender@example.org>\r\nTo: <rcpt@example.org>\r\nSubject: test\r\n\r\nHello.\r\n"

// ctxT returns a context that ends with the test or after a minute.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// options returns client options at level for the tests: a fixed EHLO
// name and short timeouts.
func options(level smtpclient.Level) smtpclient.Options {
	return smtpclient.Options{
		LocalName: "client.example",
		TLS:       level,
		Timeouts: smtpclient.Timeouts{
			Connect: ioTimeout, Greeting: ioTimeout, Command: ioTimeout, TLSHandshake: ioTimeout,
			DataStart: ioTimeout, DataBlock: ioTimeout, DataEnd: ioTimeout,
		},
	}
}

// deliver dials addr, sends testMsg from sender@example.org to
// rcpt@example.org and quits. It returns the client (closed) so that its
// TLS() and Fallback() can be checked.
func deliver(t *testing.T, addr string, opts smtpclient.Options) (*smtpclient.Client, *smtpclient.Result, error) {
	t.Helper()
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, addr, opts)
	if err != nil {
		return nil, nil, err
	}
	res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{"rcpt@example.org"}}, []byte(testMsg))
	if qerr := c.Quit(ctx); qerr != nil && err == nil {
		t.Errorf("QUIT: %v", qerr)
	}
	return c, res, err
}

// ---- certificates ----

// selfSigned makes a self-signed certificate for names, valid from an hour
// ago for a day, or in [notBefore, notAfter] when given.
func selfSigned(t *testing.T, names []string, validity ...time.Time) tls.Certificate {
	t.Helper()
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if len(validity) == 2 {
		nb, na = validity[0], validity[1]
	}
	c, err := smtptest.Certificate(names, nb, na)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pool returns a CertPool trusting the certificates' leaves.
func pool(certs ...tls.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Leaf)
	}
	return p
}

// issue makes a certificate for names signed by parent (self-signed when
// parent is nil); isCA makes it a CA.
func issue(t *testing.T, parent *tls.Certificate, names []string, isCA bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	} else {
		tmpl.DNSNames = names
	}
	signer, signerCert := crypto.Signer(key), tmpl
	if parent != nil {
		signer, signerCert = parent.PrivateKey.(crypto.Signer), parent.Leaf
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serverTLS is a server config presenting cert.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// ---- Petrel's server, with its log recorded ----

// logRecords is an slog.Handler that keeps every record as a map of its
// attributes, "msg" included.
type logRecords struct {
	mu    *sync.Mutex
	recs  *[]map[string]string
	attrs []slog.Attr
}

func newLogRecords() *logRecords {
	return &logRecords{mu: &sync.Mutex{}, recs: &[]map[string]string{}}
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, m)
	h.mu.Unlock()
	return nil
}

func (h *logRecords) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecords{mu: h.mu, recs: h.recs, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...)}
}

func (h *logRecords) WithGroup(string) slog.Handler { return h }

// find returns the records whose message is msg.
func (h *logRecords) find(msg string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range *h.recs {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until a record with message msg exists (the server logs a
// disconnect after the client has gone) and returns them all.
func (h *logRecords) waitFor(t *testing.T, msg string) []map[string]string {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		if recs := h.find(msg); len(recs) > 0 {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never logged %q", msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// petrel is a Petrel server on a loopback port with a recording backend
// and log.
type petrel struct {
	*smtptest.Server
	backend *smtptest.Backend
	log     *logRecords
}

// startPetrel starts Petrel's server with opts (Backend and Logger are
// filled in) and closes it when the test ends.
func startPetrel(t *testing.T, opts smtpserver.Options) *petrel {
	t.Helper()
	p := &petrel{backend: &smtptest.Backend{}, log: newLogRecords()}
	if opts.Backend == nil {
		opts.Backend = p.backend
	} else {
		p.backend = opts.Backend.(*smtptest.Backend)
	}
	if opts.Hostname == "" {
		opts.Hostname = "mx.example"
	}
	opts.Logger = slog.New(p.log)
	srv, err := smtptest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.Server = srv
	t.Cleanup(func() { srv.Close() })
	return p
}

// ---- a recording net.Conn ----

// recConn records every byte read from the connection: on the server
// side of a fake server or proxy, everything the client sent, ciphertext
// included.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func (c *recConn) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

// bufConn reads through a bufio.Reader (so that peeked bytes are not lost)
// and writes to the connection.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ---- the client's writes, recorded ----

// writeLog records each Write call the client makes on its TCP
// connection, and the server's replies in between as "S:" entries, so a
// test sees the client's grouping of commands (RFC 2920).
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) add(s string) {
	w.mu.Lock()
	w.writes = append(w.writes, s)
	w.mu.Unlock()
}

func (w *writeLog) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// dialer returns an Options.Dialer whose connections log each write.
func (w *writeLog) dialer() *logDialer { return &logDialer{w: w} }

type logDialer struct{ w *writeLog }

func (d *logDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &logConn{Conn: nc, w: d.w}, nil
}

type logConn struct {
	net.Conn
	w *writeLog
}

func (c *logConn) Write(p []byte) (int, error) {
	c.w.add("C:" + string(p))
	return c.Conn.Write(p)
}

// ---- a scripted fake SMTP server ----

// fakeServer accepts connections on a loopback port and runs handler on
// each. Close (run at the end of the test) closes the listener and every
// connection and waits for the handlers.
type fakeServer struct {
	t    *testing.T
	l    net.Listener
	Addr string

	mu    sync.Mutex
	conns []*fconn
	wg    sync.WaitGroup
}

func newFakeServer(t *testing.T, handler func(f *fconn)) *fakeServer {
	t.Helper()
	return newFakeServerOn(t, "tcp", handler)
}

// newFakeServerOn is newFakeServer on a loopback port ("tcp") or on a unix
// socket ("unix") in a directory of its own; Addr is then its path.
func newFakeServerOn(t *testing.T, network string, handler func(f *fconn)) *fakeServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		// Not t.TempDir(): a socket's path must stay short (108 octets).
		dir, err := os.MkdirTemp("", "smtpclient")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		addr = filepath.Join(dir, "s")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, l: l, Addr: l.Addr().String()}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			rc := &recConn{Conn: nc}
			f := &fconn{rec: rc, conn: rc, r: bufio.NewReader(rc), tlsAt: -1}
			s.mu.Lock()
			s.conns = append(s.conns, f)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				handler(f)
				f.conn.Close()
				f.mu.Lock()
				f.done = true
				f.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its handlers.
func (s *fakeServer) Close() {
	s.l.Close()
	s.mu.Lock()
	for _, f := range s.conns {
		f.rec.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// wait waits for the handlers of the connections so far to end (the
// client closed), at most ioTimeout.
func (s *fakeServer) wait() {
	deadline := time.Now().Add(ioTimeout)
	for {
		s.mu.Lock()
		all := true
		for _, f := range s.conns {
			if !f.finished() {
				all = false
			}
		}
		s.mu.Unlock()
		if all || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// conn returns the n-th connection, failing the test if there is none.
func (s *fakeServer) conn(n int) *fconn {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n >= len(s.conns) {
		s.t.Fatalf("fake server: no connection %d (got %d)", n, len(s.conns))
	}
	return s.conns[n]
}

// count returns the number of connections accepted.
func (s *fakeServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// fconn is the server side of one fake-server connection.
type fconn struct {
	rec  *recConn // the TCP connection, recording the client's bytes
	conn net.Conn // rec, or the *tls.Conn over it
	r    *bufio.Reader

	mu       sync.Mutex
	cmds     []string // command lines received, without CRLF; "TLS: " prefix inside TLS
	data     [][]byte // DATA payloads as on the wire, up to and with the end of data
	bdat     [][]byte // BDAT chunks
	creds    []string // decoded AUTH credentials
	afterTLS []byte   // the first bytes the client sent after the 220 to STARTTLS
	tlsAt    int      // offset in rec where TLS began; -1 while plaintext
	done     bool     // the handler returned
	wlog     *writeLog
}

func (f *fconn) finished() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done
}

// inTLS reports whether the connection runs TLS.
func (f *fconn) inTLS() bool {
	_, ok := f.conn.(*tls.Conn)
	return ok
}

// send writes s in one Write call (one TCP segment on loopback).
func (f *fconn) send(s string) bool {
	if f.wlog != nil {
		f.wlog.add("S:" + s)
	}
	_ = f.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := io.WriteString(f.conn, s)
	return err == nil
}

// line reads one line (up to LF) and returns it without CRLF.
func (f *fconn) line() (string, bool) {
	_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := f.r.ReadString('\n')
	if err != nil {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), true
}

// command reads a command line and records it.
func (f *fconn) command() (string, bool) {
	l, ok := f.line()
	if !ok {
		return "", false
	}
	f.mu.Lock()
	if f.inTLS() {
		f.cmds = append(f.cmds, "TLS: "+l)
	} else {
		f.cmds = append(f.cmds, l)
	}
	f.mu.Unlock()
	return l, true
}

// commands returns the command lines received so far.
func (f *fconn) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// credentials returns the AUTH credentials received, as "user:pass".
func (f *fconn) credentials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.creds...)
}

// payloads returns the DATA payloads and BDAT chunks received.
func (f *fconn) payloads() (data, bdat [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.data...), append([][]byte(nil), f.bdat...)
}

// hasCommand reports whether a command starting with prefix was received
// (in plaintext or in TLS).
func (f *fconn) hasCommand(prefix string) bool {
	for _, c := range f.commands() {
		if strings.HasPrefix(strings.ToUpper(strings.TrimPrefix(c, "TLS: ")), prefix) {
			return true
		}
	}
	return false
}

// cleartext returns the bytes the client sent before TLS began (all of them
// when TLS never began).
func (f *fconn) cleartext() []byte {
	b := f.rec.bytes()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tlsAt >= 0 && f.tlsAt <= len(b) {
		return b[:f.tlsAt]
	}
	return b
}

// startTLS runs the server handshake: the next client bytes are recorded
// in afterTLS first.
func (f *fconn) startTLS(cfg *tls.Config) bool {
	f.mu.Lock()
	f.tlsAt = f.rec.len() - f.r.Buffered()
	f.mu.Unlock()
	_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if b, err := f.r.Peek(1); err == nil {
		f.mu.Lock()
		f.afterTLS = append([]byte(nil), b...)
		f.mu.Unlock()
	}
	tc := tls.Server(bufConn{Conn: f.rec, r: f.r}, cfg)
	_ = f.rec.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		return false
	}
	_ = f.rec.SetDeadline(time.Time{})
	f.conn = tc
	f.r = bufio.NewReader(tc)
	return true
}

// ehloReply formats a 250 EHLO reply with the given keywords.
func ehloReply(kws []string) string {
	return replyLines(250, append([]string{"fake.example greets you"}, kws...))
}

// replyLines formats a (multi-line) reply.
func replyLines(code int, lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		b.WriteString(strconv.Itoa(code) + sep + l + "\r\n")
	}
	return b.String()
}

// fake configures serveSMTP, a small but complete SMTP server.
type fake struct {
	ext    []string    // EHLO keywords in plaintext (or in implicit TLS)
	tlsExt []string    // EHLO keywords inside TLS; nil: ext without STARTTLS
	tls    *tls.Config // for STARTTLS, or implicit TLS
	// implicit: TLS from the first byte (RFC 8314).
	implicit bool
	// greeting replaces "220 fake.example ESMTP\r\n" (raw, with CRLF).
	greeting string
	// ehlo, when set, is the raw reply to EHLO (plaintext only).
	ehlo string
	// rcpt returns the raw reply to RCPT TO (with CRLF); nil: 250.
	rcpt func(arg string) string
	// starttls, when set, replaces the STARTTLS handling: it gets the
	// connection after the command and returns whether to go on serving.
	starttls func(f *fconn) bool
	// afterHandshake runs right after the TLS handshake; false ends the
	// session.
	afterHandshake func(f *fconn) bool
	// reply, when set, may handle any command instead of the default
	// handling: when it returns true, its reply (raw; may be empty, when
	// it sent one itself) is sent and the command is done.
	reply func(f *fconn, cmd string) (string, bool)
	// wlog, when set, gets every reply as an "S:" entry, before it is
	// sent.
	wlog *writeLog
}

// serveSMTP serves one session as fk says, recording it in f, until QUIT,
// EOF or an error.
func (f *fconn) serveSMTP(fk fake) {
	f.wlog = fk.wlog
	if fk.implicit {
		if !f.startTLS(fk.tls) {
			return
		}
	}
	greeting := fk.greeting
	if greeting == "" {
		greeting = "220 fake.example ESMTP\r\n"
	}
	if !f.send(greeting) {
		return
	}
	for {
		line, ok := f.command()
		if !ok {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if fk.reply != nil {
			if r, ok := fk.reply(f, line); ok {
				if r != "" && !f.send(r) {
					return
				}
				continue
			}
		}
		var r string
		switch verb {
		case "EHLO":
			kws := fk.ext
			if f.inTLS() && !fk.implicit {
				kws = fk.tlsExt
				if kws == nil {
					for _, k := range fk.ext {
						if k != "STARTTLS" {
							kws = append(kws, k)
						}
					}
				}
			}
			r = ehloReply(kws)
			if fk.ehlo != "" && !f.inTLS() {
				r = fk.ehlo
			}
		case "HELO":
			r = "250 fake.example\r\n"
		case "STARTTLS":
			if fk.starttls != nil {
				if !fk.starttls(f) {
					return
				}
				continue
			}
			if f.inTLS() || fk.tls == nil {
				r = "503 5.5.1 TLS already active\r\n"
				break
			}
			if !f.send("220 2.0.0 Ready to start TLS\r\n") || !f.startTLS(fk.tls) {
				return
			}
			if fk.afterHandshake != nil && !fk.afterHandshake(f) {
				return
			}
			continue
		case "MAIL":
			r = "250 2.1.0 OK\r\n"
		case "RCPT":
			r = "250 2.1.5 OK\r\n"
			if fk.rcpt != nil {
				r = fk.rcpt(arg)
			}
		case "DATA":
			if !f.send("354 End data with <CR><LF>.<CR><LF>\r\n") {
				return
			}
			d, ok := f.readData()
			f.mu.Lock()
			f.data = append(f.data, d)
			f.mu.Unlock()
			if !ok {
				return
			}
			r = "250 2.0.0 Ok: queued as FAKE1\r\n"
		case "BDAT":
			size, _, _ := strings.Cut(arg, " ")
			n, err := strconv.Atoi(size)
			if err != nil || n < 0 || n > 1<<20 {
				f.send("501 5.5.4 bad BDAT\r\n")
				return
			}
			chunk := make([]byte, n)
			_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := io.ReadFull(f.r, chunk); err != nil {
				return
			}
			f.mu.Lock()
			f.bdat = append(f.bdat, chunk)
			f.mu.Unlock()
			r = "250 2.0.0 chunk OK\r\n"
		case "AUTH":
			cred, ok := f.auth(arg)
			if !ok {
				return
			}
			f.mu.Lock()
			f.creds = append(f.creds, cred)
			f.mu.Unlock()
			r = "235 2.7.0 Authentication successful\r\n"
		case "RSET", "NOOP":
			r = "250 2.0.0 OK\r\n"
		case "QUIT":
			f.send("221 2.0.0 Bye\r\n")
			return
		default:
			r = "502 5.5.1 not implemented\r\n"
		}
		if !f.send(r) {
			return
		}
	}
}

// readData reads DATA content up to and with the first <CRLF>.<CRLF> (or
// a first line "."), as it came.
func (f *fconn) readData() ([]byte, bool) {
	var d []byte
	for len(d) < 1<<20 {
		_ = f.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		l, err := f.r.ReadSlice('\n')
		d = append(d, l...)
		if err != nil && err != bufio.ErrBufferFull {
			return d, false
		}
		if bytes.Equal(d, []byte(".\r\n")) || bytes.HasSuffix(d, []byte("\r\n.\r\n")) {
			return d, true
		}
	}
	return d, false
}

// auth runs the server side of AUTH PLAIN or LOGIN and returns the
// credentials as "user:pass".
func (f *fconn) auth(arg string) (string, bool) {
	mech, ir, _ := strings.Cut(arg, " ")
	dec := func(s string) string {
		b, _ := base64.StdEncoding.DecodeString(s)
		return string(b)
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		if ir == "" {
			if !f.send("334 \r\n") {
				return "", false
			}
			var ok bool
			if ir, ok = f.line(); !ok {
				return "", false
			}
		}
		parts := strings.Split(dec(ir), "\x00")
		if len(parts) != 3 {
			return "", false
		}
		return parts[1] + ":" + parts[2], true
	case "LOGIN":
		if !f.send("334 VXNlcm5hbWU6\r\n") {
			return "", false
		}
		u, ok := f.line()
		if !ok || !f.send("334 UGFzc3dvcmQ6\r\n") {
			return "", false
		}
		p, ok := f.line()
		if !ok {
			return "", false
		}
		return dec(u) + ":" + dec(p), true
	}
	return "", false
}

// newFake starts a fake server serving fk on every connection.
func newFake(t *testing.T, fk fake) *fakeServer {
	return newFakeServer(t, func(f *fconn) { f.serveSMTP(fk) })
}

// ---- a man in the middle ----

// mitm tells the proxy how to tamper with the plaintext part of a session.
type mitm struct {
	// stripSTARTTLS removes STARTTLS from the plaintext EHLO reply.
	stripSTARTTLS bool
	// addEHLO adds keywords to the plaintext EHLO reply; a keyword
	// replaces an offered one with the same name (e.g. "SIZE 10").
	addEHLO []string
	// refuseSTARTTLS answers STARTTLS itself with this reply (e.g. "454
	// 4.7.0 TLS not available") and does not pass it on.
	refuseSTARTTLS string
	// inject is sent behind the server's 220 to STARTTLS, in the same
	// segment.
	inject string
	// closeAfter220 closes both connections after passing on the 220.
	closeAfter220 bool
}

// proxy is a TCP man in the middle between the client and a server that
// tampers with the plaintext phase as its mitm says and relays everything
// else untouched. It records every byte each client sent.
type proxy struct {
	t      *testing.T
	l      net.Listener
	Addr   string
	target string
	m      mitm

	mu    sync.Mutex
	conns []*pconn
	all   []net.Conn
	wg    sync.WaitGroup
}

// pconn is what the proxy saw on one client connection.
type pconn struct {
	client *recConn
	done   chan struct{} // closed when the proxy is done with the connection
	mu     sync.Mutex
	tlsAt  int // offset of the first TLS byte in client's record; -1: none
}

// cleartext returns the bytes this client sent in the clear.
func (p *pconn) cleartext() []byte {
	b := p.client.bytes()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tlsAt >= 0 && p.tlsAt <= len(b) {
		return b[:p.tlsAt]
	}
	return b
}

func newProxy(t *testing.T, target string, m mitm) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, l: l, Addr: l.Addr().String(), target: target, m: m}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			pc := &pconn{client: &recConn{Conn: nc}, done: make(chan struct{}), tlsAt: -1}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.all = append(p.all, nc)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer close(pc.done)
				p.handle(pc)
			}()
		}
	}()
	t.Cleanup(p.Close)
	return p
}

// Close stops the proxy and waits for its goroutines.
func (p *proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.all {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// connections returns what the proxy saw, one entry per client
// connection, once it is done with them (the client and the server
// closed), or after ioTimeout.
func (p *proxy) connections() []*pconn {
	p.mu.Lock()
	conns := append([]*pconn(nil), p.conns...)
	p.mu.Unlock()
	timeout := time.After(ioTimeout)
	for _, c := range conns {
		select {
		case <-c.done:
		case <-timeout:
			p.t.Errorf("proxy: a connection still open after %v", ioTimeout)
			return conns
		}
	}
	return conns
}

// cleartext returns everything all clients sent in the clear.
func (p *proxy) cleartext() []byte {
	var all []byte
	for _, c := range p.connections() {
		all = append(all, c.cleartext()...)
	}
	return all
}

// readReply reads one whole SMTP reply, raw.
func readReply(r *bufio.Reader) ([]string, error) {
	var lines []string
	for len(lines) < 100 {
		l, err := r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines, nil
		}
	}
	return lines, errors.New("reply too long")
}

// tamperEHLO applies the mitm's changes to a raw EHLO reply.
func (m mitm) tamperEHLO(lines []string) string {
	var kws []string
	for _, l := range lines[1:] {
		kws = append(kws, strings.TrimRight(l[4:], "\r\n"))
	}
	var out []string
	for _, k := range kws {
		name, _, _ := strings.Cut(k, " ")
		if m.stripSTARTTLS && strings.EqualFold(name, "STARTTLS") {
			continue
		}
		replaced := false
		for _, a := range m.addEHLO {
			an, _, _ := strings.Cut(a, " ")
			replaced = replaced || strings.EqualFold(an, name)
		}
		if !replaced {
			out = append(out, k)
		}
	}
	out = append(out, m.addEHLO...)
	return replyLines(250, append([]string{strings.TrimRight(lines[0][4:], "\r\n")}, out...))
}

func (p *proxy) handle(pc *pconn) {
	client := pc.client
	defer client.Close()
	server, err := net.DialTimeout("tcp", p.target, ioTimeout)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.all = append(p.all, server)
	p.mu.Unlock()
	defer server.Close()
	deadline := time.Now().Add(ioTimeout)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	cr, sr := bufio.NewReader(client), bufio.NewReader(server)
	write := func(c net.Conn, s string) bool {
		_, err := io.WriteString(c, s)
		return err == nil
	}
	rep, err := readReply(sr)
	if err != nil || !write(client, strings.Join(rep, "")) {
		return
	}
	// The plaintext phase, line by line, until a command other than
	// EHLO, HELO or STARTTLS, or TLS.
	for {
		line, err := cr.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		verb = strings.ToUpper(verb)
		if verb == "STARTTLS" && p.m.refuseSTARTTLS != "" {
			if !write(client, p.m.refuseSTARTTLS+"\r\n") {
				return
			}
			continue
		}
		if verb != "EHLO" && verb != "HELO" && verb != "STARTTLS" {
			if !write(server, line) {
				return
			}
			break
		}
		if verb == "STARTTLS" {
			pc.mu.Lock()
			pc.tlsAt = client.len() - cr.Buffered()
			pc.mu.Unlock()
		}
		if !write(server, line) {
			return
		}
		rep, err := readReply(sr)
		if err != nil {
			return
		}
		out := strings.Join(rep, "")
		if verb == "EHLO" && strings.HasPrefix(out, "250") {
			out = p.m.tamperEHLO(rep)
		}
		if verb == "STARTTLS" && strings.HasPrefix(out, "220") {
			if p.m.closeAfter220 {
				write(client, out)
				return
			}
			out += p.m.inject
			if !write(client, out) {
				return
			}
			break
		}
		if !write(client, out) {
			return
		}
	}
	// Relay the rest untouched (TLS, or the plaintext transaction).
	_ = client.SetDeadline(time.Time{})
	_ = server.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(server, cr)
		server.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(client, sr)
	client.Close()
	<-done
}

// ---- assertions ----

// tlsError returns err as a *smtpclient.TLSError, failing the test when it
// is not one.
func tlsError(t *testing.T, err error) *smtpclient.TLSError {
	t.Helper()
	var te *smtpclient.TLSError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T), want a *smtpclient.TLSError", err, err)
	}
	if !smtpclient.Temporary(err) {
		t.Errorf("TLS error %v is not temporary: the message would bounce instead of being deferred", err)
	}
	return te
}

// replyError returns err's *smtpclient.ReplyError, failing the test when
// there is none.
func replyError(t *testing.T, err error) *smtpclient.ReplyError {
	t.Helper()
	var re *smtpclient.ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T), want a *smtpclient.ReplyError", err, err)
	}
	return re
}

// noMailInClear fails the test when cleartext holds a MAIL, RCPT or DATA
// command.
func noMailInClear(t *testing.T, cleartext []byte) {
	t.Helper()
	for _, cmd := range []string{"MAIL FROM", "RCPT TO", "DATA\r\n", "BDAT "} {
		if bytes.Contains(cleartext, []byte(cmd)) {
			t.Errorf("the client sent %q in the clear:\n%q", cmd, cleartext)
		}
	}
}
