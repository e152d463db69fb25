package smtpserver_test

// Attack tests (requirements.md §5): each one runs the attack against a real
// server listening on 127.0.0.1:0, over raw TCP (and crypto/tls for the TLS
// part), with bounded read deadlines. The helpers here are prefixed "atk"
// so they cannot clash with other test files of the package.
//
// This file: the shared client and backend, and the information-leak
// tests. attack_inject_test.go: STARTTLS and implicit-TLS injection
// (S-INJ). attack_smuggle_test.go: SMTP smuggling and line lengths
// (S-SMUG, S-BDAT-02, S-SMTP-13/14). attack_dos_test.go: resource
// exhaustion (S-DOS, S-SMTP-17, S-SIZE, ALPACA).

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// atkIO bounds every read and write the attack client does.
const atkIO = 5 * time.Second

// atkBackend wraps smtptest.Backend and records every Session.Mail call,
// so a test can tell whether an injected or smuggled MAIL ever ran, even
// when no message was stored.
type atkBackend struct {
	*smtptest.Backend

	mu    sync.Mutex
	mails []string // reverse-paths given to Session.Mail
}

func newAtkBackend() *atkBackend { return &atkBackend{Backend: &smtptest.Backend{}} }

func (b *atkBackend) NewSession(ctx context.Context, c *smtpserver.Conn) (smtpserver.Session, error) {
	s, err := b.Backend.NewSession(ctx, c)
	if err != nil {
		return nil, err
	}
	return &atkSession{Session: s, b: b}, nil
}

// Mails returns the reverse-paths of all MAIL commands the backend saw.
func (b *atkBackend) Mails() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.mails...)
}

type atkSession struct {
	smtpserver.Session
	b *atkBackend
}

func (s *atkSession) Mail(ctx context.Context, from smtp.Path, opts *smtpserver.MailOptions) error {
	s.b.mu.Lock()
	s.b.mails = append(s.b.mails, from.String())
	s.b.mu.Unlock()
	return s.Session.Mail(ctx, from, opts)
}

// atkEnv is a running server with its recording backend and a client TLS
// configuration that trusts its certificate.
type atkEnv struct {
	srv       *smtptest.Server
	be        *atkBackend
	clientTLS *tls.Config
	addr      string
}

// atkStart starts a server with STARTTLS (unless opts already has TLS
// settings) and an atkBackend (unless opts.Backend is set). The server is
// closed when the test ends.
func atkStart(t testing.TB, opts smtpserver.Options) *atkEnv {
	t.Helper()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	env := &atkEnv{clientTLS: clientTLS}
	if opts.TLSConfig == nil && opts.GetTLSConfig == nil {
		opts.TLSConfig = serverTLS
	}
	if opts.Backend == nil {
		env.be = newAtkBackend()
		opts.Backend = env.be
	}
	if opts.Hostname == "" {
		opts.Hostname = "mx.test.example"
	}
	srv, err := smtptest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	env.srv, env.addr = srv, srv.Addr
	return env
}

// stop closes the server and waits for every connection to end, so that
// the backend's records are final. (The test's Cleanup closes it again,
// which is harmless.)
func (e *atkEnv) stop() { _ = e.srv.Server.Close() }

// checkNoSpoof fails unless the backend saw no MAIL from the attacker and
// stored at most max messages, none from the attacker.
func (e *atkEnv) checkNoSpoof(t testing.TB, max int) {
	t.Helper()
	for _, m := range e.be.Mails() {
		if strings.Contains(m, "spoof@") || strings.Contains(m, "attacker@") {
			t.Errorf("injected/smuggled MAIL FROM:<%s> reached the backend", m)
		}
	}
	msgs := e.be.Messages()
	if len(msgs) > max {
		t.Errorf("backend stored %d messages, want at most %d", len(msgs), max)
	}
	for _, m := range msgs {
		if strings.Contains(m.From.String(), "spoof@") || strings.Contains(m.From.String(), "attacker@") {
			t.Errorf("backend stored a message from %s", m.From)
		}
	}
}

// atkReply is one SMTP reply.
type atkReply struct {
	code  int
	lines []string // text of each line, after "ddd-" / "ddd "
}

// enh is the enhanced status code at the start of the last line, if any.
func (r atkReply) enh() string {
	if len(r.lines) == 0 {
		return ""
	}
	e, _ := smtp.SplitEnhanced(r.code, r.lines[len(r.lines)-1])
	if e.IsZero() {
		return ""
	}
	return e.String()
}

func (r atkReply) String() string {
	return fmt.Sprintf("%d %s", r.code, strings.Join(r.lines, " | "))
}

// atkConn is a raw SMTP client connection.
type atkConn struct {
	t   testing.TB
	raw net.Conn
	nc  net.Conn // raw, or the TLS connection over it
	br  *bufio.Reader
}

func atkDial(t testing.TB, addr string) *atkConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, atkIO)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &atkConn{t: t, raw: nc, nc: nc, br: bufio.NewReader(nc)}
}

// atkGreeted dials and reads the 220 greeting.
func atkGreeted(t testing.TB, addr string) *atkConn {
	t.Helper()
	c := atkDial(t, addr)
	c.expect(220, "")
	return c
}

func (c *atkConn) write(s string) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(atkIO))
	_, err := io.WriteString(c.nc, s)
	return err
}

func (c *atkConn) send(s string) {
	c.t.Helper()
	if err := c.write(s); err != nil {
		c.t.Fatalf("write %.40q: %v", s, err)
	}
}

// readReply reads one (possibly multi-line) reply within d.
func (c *atkConn) readReplyWithin(d time.Duration) (atkReply, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var r atkReply
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			if line != "" {
				return r, fmt.Errorf("%w (partial line %q)", err, line)
			}
			return r, err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return r, fmt.Errorf("reply line not ending in CRLF: %q", line)
		}
		code, more, text, err := smtp.ParseReplyLine(strings.TrimSuffix(line, "\r\n"))
		if err != nil {
			return r, fmt.Errorf("%w: %q", err, line)
		}
		if r.code != 0 && code != r.code {
			return r, fmt.Errorf("reply code changed within a reply: %q", line)
		}
		r.code = code
		r.lines = append(r.lines, text)
		if !more {
			return r, nil
		}
	}
}

func (c *atkConn) readReply() (atkReply, error) { return c.readReplyWithin(atkIO) }

// expect reads one reply and fails unless it has the code and, when enh is
// not empty, the enhanced code.
func (c *atkConn) expect(code int, enh string) atkReply {
	c.t.Helper()
	r, err := c.readReply()
	if err != nil {
		c.t.Fatalf("want %d %s, read error: %v", code, enh, err)
	}
	if r.code != code || (enh != "" && r.enh() != enh) {
		c.t.Fatalf("got reply %v, want %d %s", r, code, enh)
	}
	return r
}

// cmd sends one command line and expects the reply.
func (c *atkConn) cmd(line string, code int, enh string) atkReply {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code, enh)
}

// ehlo sends EHLO and expects the 250 reply.
func (c *atkConn) ehlo() atkReply {
	c.t.Helper()
	return c.cmd("EHLO client.test.example", 250, "")
}

// atkClosed reports whether err means the peer closed the connection.
func atkClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

func atkTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// repliesUntilClose reads replies until the server closes the connection.
// A timeout (the server kept the connection open past atkIO) or a malformed
// reply fails the test.
func (c *atkConn) repliesUntilClose() []atkReply {
	c.t.Helper()
	var rs []atkReply
	for {
		r, err := c.readReply()
		switch {
		case err == nil:
			rs = append(rs, r)
			if len(rs) > 10000 {
				c.t.Fatalf("too many replies")
			}
			continue
		case atkClosed(err) && !strings.Contains(err.Error(), "partial line"):
			return rs
		default:
			c.t.Fatalf("after replies %v: %v", rs, err)
			return nil
		}
	}
}

// silent fails if the server sends anything within d.
func (c *atkConn) silent(d time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.Peek(1)
	if err == nil {
		more, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("unsolicited data from the server: %q", more)
	}
	if !atkTimeout(err) {
		c.t.Fatalf("want silence for %v, got %q, %v", d, b, err)
	}
}

// readAllRaw reads every byte until the server closes, within d. It
// returns what was read and whether the server closed (as opposed to the
// deadline passing).
func (c *atkConn) readAllRaw(d time.Duration) ([]byte, bool) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.br.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, !atkTimeout(err)
		}
	}
}

// startTLS runs the client handshake on the raw connection. It fails the
// test if the client read more than the 220 before the handshake (plaintext
// the server sent after its 220 would be a bug by itself).
func (c *atkConn) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		c.t.Fatalf("server sent plaintext after its 220 to STARTTLS: %q", b)
	}
	tc := tls.Client(c.raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), atkIO)
	defer cancel()
	_ = c.raw.SetDeadline(time.Now().Add(atkIO))
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	_ = c.raw.SetDeadline(time.Time{})
	c.nc = tc
	c.br = bufio.NewReader(tc)
	return nil
}

// atkMessage is a minimal well-formed message body (CRLF lines, no end of
// data).
const atkMessage = "From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"

// atkSmuggled is the SMTP smuggling payload: a second transaction from a
// spoofed sender, as SEC Consult's PoC.
const atkSmuggled = "MAIL FROM:<spoof@victim.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nFrom: ceo@victim.example\r\n\r\nsmuggled\r\n"

// openTx sends EHLO, MAIL, RCPT (pipelined) and checks the replies.
func (c *atkConn) openTx() {
	c.t.Helper()
	c.send("EHLO client.test.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
	c.expect(250, "")
	c.expect(250, "2.1.0")
	c.expect(250, "2.1.5")
}

// TestAttackInfoLeak: a backend's internal error text never reaches the
// client (O-LOG-01; style.md §10.9 and §11; the smtpserver.Session doc):
// it gets 451 4.3.0 with only the connection ID, for Data by DATA and by
// BDAT and for Rcpt, and a generic 421 for NewSession. The session goes
// on after a 451.
func TestAttackInfoLeak(t *testing.T) {
	secret := func() error { return fmt.Errorf("secret-internal-path /var/db/x: %w", syscall.EIO) }
	tests := []struct {
		name   string
		be     func(*smtptest.Backend)
		script func(c *atkConn)
		code   int
		enh    string
	}{
		{
			name: "Data via DATA",
			be:   func(b *smtptest.Backend) { b.DataErr = secret },
			script: func(c *atkConn) {
				c.openTx()
				c.cmd("DATA", 354, "")
				c.send(atkMessage + ".\r\n")
			},
			code: 451, enh: "4.3.0",
		},
		{
			name: "Data via BDAT",
			be:   func(b *smtptest.Backend) { b.DataErr = secret },
			script: func(c *atkConn) {
				c.openTx()
				c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(atkMessage), atkMessage))
			},
			code: 451, enh: "4.3.0",
		},
		{
			name: "Rcpt",
			be:   func(b *smtptest.Backend) { b.RejectRcpt = func(smtp.Path) error { return secret() } },
			script: func(c *atkConn) {
				c.ehlo()
				c.cmd("MAIL FROM:<a@example.org>", 250, "")
				c.send("RCPT TO:<b@example.org>\r\n")
			},
			code: 451, enh: "4.3.0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newAtkBackend()
			tt.be(be.Backend)
			env := atkStart(t, smtpserver.Options{Backend: be})
			env.be = be
			c := atkGreeted(t, env.addr)
			tt.script(c)
			r, err := c.readReply()
			if err != nil {
				t.Fatal(err)
			}
			if r.code != tt.code || r.enh() != tt.enh {
				t.Errorf("got %v, want %d %s", r, tt.code, tt.enh)
			}
			atkNoLeak(t, r)
			c.cmd("NOOP", 250, "") // session survives
			if n := len(be.Messages()); n != 0 {
				t.Errorf("backend stored %d messages", n)
			}
		})
	}

	t.Run("NewSession", func(t *testing.T) {
		be := smtpserver.BackendFunc(func(context.Context, *smtpserver.Conn) (smtpserver.Session, error) {
			return nil, secret()
		})
		env := atkStart(t, smtpserver.Options{Backend: be})
		c := atkDial(t, env.addr)
		rs := c.repliesUntilClose()
		if len(rs) != 1 || rs[0].code != 421 {
			t.Fatalf("got %v, want one 421 and close", rs)
		}
		atkNoLeak(t, rs[0])
	})
}

func atkNoLeak(t *testing.T, r atkReply) {
	t.Helper()
	s := r.String()
	for _, bad := range []string{"secret", "/var", "input/output"} {
		if strings.Contains(s, bad) {
			t.Errorf("reply %q leaks internal error text %q", s, bad)
		}
	}
}
