package smtptest

// Golden SMTP transcripts (style.md §10.4), and the raw client they run on.
//
// A transcript is a script of one step per line:
//
//	# a comment; blank lines are ignored too
//	C: EHLO client.example     the client sends the text and CRLF
//	S: 250-* greets *          one reply line is expected; "*" matches any
//	                           run of characters (also none), everything
//	                           else literally, and the whole line must match
//	!raw "DATA\r\n"            the client sends the exact bytes of a Go
//	                           quoted string (strconv.Unquote syntax)
//	!starttls                  the client runs a TLS handshake with the
//	                           client config over the connection and goes on
//	                           inside TLS; as the first step it is implicit
//	                           TLS (RFC 8314 §3.3): TLS before the greeting
//	!eof                       the server must close the connection: a read
//	                           gets EOF (or a reset) and no byte within 5s
//
// The text after "C: " and "S: " is taken as it is, trailing spaces
// included. Every read waits at most 5 seconds. When the script ends without
// !eof, any reply the server has already sent that no S: line consumed is
// a mismatch too.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout bounds each read of a Client whose Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Client is a raw SMTP client for tests: it writes exactly the bytes it is
// given and reads replies line by line, so that tests control pipelining,
// line ends and the timing of STARTTLS, which net/smtp hides.
type Client struct {
	// Conn is the current connection: the TCP connection, or the
	// *tls.Conn over it after StartTLS.
	Conn net.Conn
	// Raw is the TCP connection.
	Raw net.Conn
	// Timeout bounds each read; zero is DefaultTimeout.
	Timeout time.Duration

	r *bufio.Reader
}

// Dial connects to addr over TCP.
func Dial(addr string) (*Client, error) {
	nc, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		return nil, err
	}
	return NewClient(nc), nil
}

// NewClient wraps an established connection.
func NewClient(nc net.Conn) *Client {
	return &Client{Conn: nc, Raw: nc, r: bufio.NewReader(nc)}
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// Write sends s exactly as it is.
func (c *Client) Write(s string) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout()))
	_, err := io.WriteString(c.Conn, s)
	return err
}

// Cmd sends line followed by CRLF and reads the reply.
func (c *Client) Cmd(line string) (*Reply, error) {
	if err := c.Write(line + "\r\n"); err != nil {
		return nil, err
	}
	return c.ReadReply()
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// ReadLine reads one reply line and returns it without its CRLF. A line
// that ends in a bare LF is an error (RFC 5321 §2.3.8).
func (c *Client) ReadLine() (string, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout()))
	line, err := c.r.ReadString('\n')
	if err != nil {
		if line != "" {
			return "", fmt.Errorf("%w after partial line %q", err, line)
		}
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("reply line %q does not end in CRLF", line)
	}
	return line[:len(line)-2], nil
}

// Reply is one SMTP reply (RFC 5321 §4.2).
type Reply struct {
	Code  int      // basic reply code
	Lines []string // full lines as received, without CRLF
}

// Text returns the text of each line, after "250-" or "250 ".
func (r *Reply) Text() []string {
	t := make([]string, len(r.Lines))
	for i, l := range r.Lines {
		if len(l) > 4 {
			t[i] = l[4:]
		}
	}
	return t
}

// String returns the reply's lines joined by " | ".
func (r *Reply) String() string { return strings.Join(r.Lines, " | ") }

// maxReplyLines bounds a multi-line reply, so a broken server cannot keep a
// test reading forever.
const maxReplyLines = 100

// ReadReply reads one complete reply, checking that all its lines carry the
// same code and that only the last has a space after it.
func (c *Client) ReadReply() (*Reply, error) {
	rep := &Reply{}
	for len(rep.Lines) < maxReplyLines {
		line, err := c.ReadLine()
		if err != nil {
			return rep, err
		}
		rep.Lines = append(rep.Lines, line)
		if len(line) < 3 {
			return rep, fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return rep, fmt.Errorf("malformed reply line %q", line)
		}
		if rep.Code == 0 {
			rep.Code = code
		} else if code != rep.Code {
			return rep, fmt.Errorf("reply line %q continues a %d reply", line, rep.Code)
		}
		if len(line) == 3 || line[3] == ' ' {
			return rep, nil
		}
		if line[3] != '-' {
			return rep, fmt.Errorf("malformed reply line %q", line)
		}
	}
	return rep, fmt.Errorf("reply longer than %d lines", maxReplyLines)
}

// StartTLS runs a TLS client handshake with cfg over the connection; later
// reads and writes go through TLS. The server must not have sent anything
// the client has not read (that would be a response injection, RFC 3207
// §5 and the NO STARTTLS paper).
func (c *Client) StartTLS(cfg *tls.Config) (*tls.ConnectionState, error) {
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		return nil, fmt.Errorf("%d octets received before the TLS handshake: %q", n, b)
	}
	if cfg == nil {
		return nil, errors.New("no client TLS config")
	}
	tc := tls.Client(c.Raw, cfg)
	_ = c.Raw.SetDeadline(time.Now().Add(c.timeout()))
	err := tc.Handshake()
	_ = c.Raw.SetDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c.Conn = tc
	c.r = bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st, nil
}

// ExpectClose checks that the server closes the connection: a read gets
// EOF or a reset within the timeout, and not a single octet before it.
func (c *Client) ExpectClose() error {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout()))
	var buf [512]byte
	n, err := c.r.Read(buf[:])
	switch {
	case n > 0:
		more, _ := c.r.Peek(c.r.Buffered())
		return fmt.Errorf("expected the connection to close, got %q", append(buf[:n:n], more...))
	case IsClosed(err):
		return nil
	case err == nil:
		return errors.New("expected the connection to close, read returned nothing")
	default:
		return fmt.Errorf("expected the connection to close: %w", err)
	}
}

// IsClosed reports whether err from a read means the peer closed the
// connection: EOF, a TLS-level unexpected EOF, or a TCP reset (the peer
// closed with unread data in its receive buffer).
func IsClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// step is one transcript line.
type step struct {
	line int    // 1-based line in the script
	kind string // "C", "S", "raw", "starttls", "eof"
	text string // C: text, S: pattern, raw bytes
	src  string // the script line, for messages
}

// parseTranscript parses a script into its steps.
func parseTranscript(script string) ([]step, error) {
	var steps []step
	for i, src := range strings.Split(script, "\n") {
		src = strings.TrimSuffix(src, "\r")
		st := step{line: i + 1, src: src}
		switch {
		case strings.TrimSpace(src) == "" || strings.HasPrefix(src, "#"):
			continue
		case strings.HasPrefix(src, "C:"):
			st.kind, st.text = "C", strings.TrimPrefix(src[2:], " ")
		case strings.HasPrefix(src, "S:"):
			st.kind, st.text = "S", strings.TrimPrefix(src[2:], " ")
		case strings.HasPrefix(src, "!raw "):
			s, err := strconv.Unquote(strings.TrimSpace(src[len("!raw "):]))
			if err != nil {
				return nil, fmt.Errorf("transcript line %d: !raw needs a Go quoted string: %v", st.line, err)
			}
			st.kind, st.text = "raw", s
		case strings.TrimSpace(src) == "!starttls":
			st.kind = "starttls"
		case strings.TrimSpace(src) == "!eof":
			st.kind = "eof"
		default:
			return nil, fmt.Errorf("transcript line %d: unknown step %q", st.line, src)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// matchWildcard reports whether s matches pattern as a whole, where "*"
// matches any run of characters and everything else matches itself.
func matchWildcard(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// RunTranscript connects to addr and plays script (see the format above),
// failing t at the first mismatch with the step's line number and the
// exchange so far. clientTLS is used by !starttls and may be nil otherwise.
func RunTranscript(t testing.TB, addr string, clientTLS *tls.Config, script string) {
	t.Helper()
	if err := runTranscript(addr, clientTLS, script, DefaultTimeout); err != nil {
		t.Fatal(err)
	}
}

// runTranscript is RunTranscript returning the first mismatch as an error,
// with timeout bounding each read.
func runTranscript(addr string, clientTLS *tls.Config, script string, timeout time.Duration) error {
	steps, err := parseTranscript(script)
	if err != nil {
		return err
	}
	c, err := Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Timeout = timeout
	var log []string // the exchange so far, for the failure message
	fail := func(st step, format string, args ...any) error {
		const keep = 12
		if len(log) > keep {
			log = append([]string{"..."}, log[len(log)-keep:]...)
		}
		if len(log) == 0 {
			log = append(log, "(nothing)")
		}
		return fmt.Errorf("transcript line %d %q: %s\nexchange so far:\n\t%s",
			st.line, st.src, fmt.Sprintf(format, args...), strings.Join(log, "\n\t"))
	}
	closed := false
	for _, st := range steps {
		if closed {
			return fail(st, "step after !eof")
		}
		switch st.kind {
		case "C", "raw":
			data := st.text
			if st.kind == "C" {
				data += "\r\n"
			}
			log = append(log, "C: "+strconv.Quote(data))
			if err := c.Write(data); err != nil {
				return fail(st, "write: %v", err)
			}
		case "S":
			line, err := c.ReadLine()
			if err != nil {
				return fail(st, "read: %v", err)
			}
			log = append(log, "S: "+line)
			if !matchWildcard(st.text, line) {
				return fail(st, "got %q", line)
			}
		case "starttls":
			cs, err := c.StartTLS(clientTLS)
			if err != nil {
				return fail(st, "%v", err)
			}
			log = append(log, "-- TLS "+tls.VersionName(cs.Version)+" --")
		case "eof":
			if err := c.ExpectClose(); err != nil {
				return fail(st, "%v", err)
			}
			log = append(log, "-- closed --")
			closed = true
		}
	}
	if !closed && len(steps) > 0 && c.r.Buffered() > 0 {
		b, _ := c.r.Peek(c.r.Buffered())
		return fail(steps[len(steps)-1], "unexpected server output after the last step: %q", b)
	}
	return nil
}
