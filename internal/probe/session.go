package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// session is one probe connection: a minimal SMTP client that can do what
// smtpclient rightly refuses to (old TLS versions, pipelining behind
// STARTTLS).
type session struct {
	raw  net.Conn
	conn net.Conn // raw, or the *tls.Conn over it
	r    *bufio.Reader
	stop func() bool
}

// replyError is a reply the probe did not expect.
type replyError struct {
	cmd   string
	code  int
	lines []string
}

func (e *replyError) Error() string {
	return fmt.Sprintf("%s: %d %s", e.cmd, e.code, strings.Join(e.lines, " / "))
}

// dial connects to addr, reads the greeting and says EHLO. It returns the
// session, the greeting text and the EHLO keywords.
func (p *prober) dial(ctx context.Context, addr string) (*session, string, []string, error) {
	dctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	nc, err := p.opts.Dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, "", nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(p.opts.Timeout))
	s := &session{raw: nc, conn: nc, r: bufio.NewReader(nc)}
	// Cancelling ctx ends any blocked read or write.
	s.stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	code, lines, err := s.readReply()
	if err != nil {
		s.close()
		return nil, "", nil, fmt.Errorf("reading the greeting: %w", err)
	}
	if code != smtp.C220ServiceReady {
		s.close()
		return nil, "", nil, &replyError{"greeting", code, lines}
	}
	greeting := strings.Join(lines, " / ")
	ext, err := s.ehlo(p.opts.EHLO)
	if err != nil {
		s.close()
		return nil, greeting, nil, err
	}
	return s, greeting, ext, nil
}

func (s *session) ehlo(name string) ([]string, error) {
	code, lines, err := s.cmd("EHLO " + name)
	if err != nil {
		return nil, err
	}
	if code != smtp.C250OK {
		return nil, &replyError{"EHLO", code, lines}
	}
	var ext []string
	for _, l := range lines[1:] {
		ext = append(ext, strings.ToUpper(strings.TrimSpace(l)))
	}
	return ext, nil
}

func hasExt(ext []string, kw string) bool {
	for _, e := range ext {
		if k, _, _ := strings.Cut(e, " "); k == kw {
			return true
		}
	}
	return false
}

// write sends raw bytes in one write.
func (s *session) write(b string) error {
	_, err := io.WriteString(s.conn, b)
	return err
}

func (s *session) cmd(line string) (int, []string, error) {
	if err := s.write(line + "\r\n"); err != nil {
		return 0, nil, err
	}
	return s.readReply()
}

// readReply reads one (possibly multi-line) reply.
func (s *session) readReply() (int, []string, error) {
	var code int
	var lines []string
	for len(lines) < 100 {
		l, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		c, more, text, err := smtp.ParseReplyLine(strings.TrimRight(l, "\r\n"))
		if err != nil {
			return 0, nil, fmt.Errorf("malformed reply %q", truncate(l))
		}
		if code != 0 && c != code {
			return 0, nil, fmt.Errorf("reply code changed within a reply: %q", truncate(l))
		}
		code = c
		lines = append(lines, text)
		if !more {
			return code, lines, nil
		}
	}
	return 0, nil, errors.New("reply with too many lines")
}

func truncate(s string) string {
	s = strings.TrimRight(s, "\r\n")
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// startTLS sends STARTTLS alone and, after a 220, runs the handshake with
// cfg on the raw connection.
func (s *session) startTLS(ctx context.Context, cfg *tls.Config) (tls.ConnectionState, error) {
	code, lines, err := s.cmd("STARTTLS")
	if err != nil {
		return tls.ConnectionState{}, err
	}
	if code != smtp.C220ServiceReady {
		return tls.ConnectionState{}, &replyError{"STARTTLS", code, lines}
	}
	return s.handshake(ctx, cfg)
}

// handshakeError is a TLS handshake that failed after the 220: the server
// did not accept what the client offered.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func (s *session) handshake(ctx context.Context, cfg *tls.Config) (tls.ConnectionState, error) {
	if n := s.r.Buffered(); n > 0 {
		return tls.ConnectionState{}, fmt.Errorf("the server sent %d octets after its 220 to STARTTLS", n)
	}
	tc := tls.Client(s.raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, &handshakeError{err}
	}
	s.conn = tc
	s.r = bufio.NewReader(tc)
	return tc.ConnectionState(), nil
}

// quit says QUIT (waiting briefly for the reply) and closes.
func (s *session) quit() {
	_ = s.raw.SetDeadline(time.Now().Add(2 * time.Second))
	_, _, _ = s.cmd("QUIT")
	s.close()
}

func (s *session) close() {
	s.stop()
	if tc, ok := s.conn.(*tls.Conn); ok {
		_ = s.raw.SetWriteDeadline(time.Now().Add(time.Second))
		_ = tc.Close()
		return
	}
	_ = s.raw.Close()
}
