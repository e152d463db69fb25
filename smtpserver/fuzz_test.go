package smtpserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

const fuzzHost = "fuzz.example"

// FuzzSession feeds an arbitrary byte script to a server (no TLS, the
// in-memory backend) over net.Pipe and checks that the server does not
// panic, always ends the session once the script is consumed, logs no
// internal error, and answers only well-formed replies: CRLF lines of three
// digits and a space or dash, one code per reply, an enhanced status code
// (RFC 2034) on every line of every reply except the greeting, the EHLO and
// HELO replies and 3xx intermediate replies, and nothing after a 221 or 421.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"",
		"QUIT\r\n",
		"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n..\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a@b> SIZE=100 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<ü@d>\r\nBDAT 5\r\nhello BDAT 2 LAST\r\n\r\nQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 12\r\nx\r\n.\r\nRSET\r\nBDAT 0 LAST\r\n",
		"EHLO x\r\nSTARTTLS\r\nRSET\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1000000\r\nshort",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<>\r\nDATA x\r\nDATA\r\nRSET x\r\nVRFY\r\nVRFY a\r\nHELP\r\nEXPN a\r\nAUTH PLAIN\r\nNOOP x\r\n",
		"NOOP\nRSET\rQUIT\r\n",
		strings.Repeat("x", 5000) + "\r\nNOOP\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		strings.Repeat("BOGUS\r\n", 25),
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("y", 70000) + "\r\n.\r\nQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<a@b> SIZE=99999999999\r\nMAIL FROM:<a@b> SIZE=-1\r\nMAIL FROM:<a@b> FOO=bar\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT x\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		out, errs := fuzzRunSession(t, script)
		for _, e := range errs {
			t.Errorf("server logged an error: %s", e)
		}
		if err := fuzzCheckReplies(out); err != "" {
			t.Errorf("%s\nscript: %q\nreplies: %q", err, script, out)
		}
	})
}

// fuzzRunSession serves one connection fed with script and returns every
// byte the server wrote and every error-level log record.
func fuzzRunSession(t *testing.T, script []byte) ([]byte, []string) {
	logs := &fuzzLog{}
	srv, err := smtpserver.New(smtpserver.Options{
		Name:            "fuzz",
		Hostname:        fuzzHost,
		Backend:         &smtptest.Backend{},
		Logger:          slog.New(logs),
		MaxMessageBytes: 64 << 10,
		// The script's end is an EOF (fuzzConn), so no timeout should
		// ever fire; long ones keep a hang visible as a hang.
		CommandTimeout: time.Minute,
		DataTimeout:    time.Minute,
		Now:            func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	sc := &fuzzConn{Conn: server}

	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.ServeConn(context.Background(), sc)
	}()
	replies := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		replies <- b
	}()
	go func() {
		_, _ = client.Write(script) // returns once the server has read it all, or closed
		sc.endInput()
	}()

	const limit = 10 * time.Second
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var out []byte
	select {
	case <-served:
	case <-timer.C:
		t.Fatalf("session still running %v after the script was sent (deadlock?)\nscript: %q\n%s", limit, script, fuzzStacks())
	}
	select {
	case out = <-replies:
	case <-timer.C:
		t.Fatalf("connection not closed %v after ServeConn returned\nscript: %q\n%s", limit, script, fuzzStacks())
	}
	_ = srv.Close()
	return out, logs.errors()
}

func fuzzStacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// fuzzConn is the server's end of the pipe. Once the client has written
// the whole script, endInput turns every further read into io.EOF, as if
// the client had half-closed the connection (net.Pipe cannot), so the
// server ends the session without waiting for a timeout and the client
// still reads every reply.
type fuzzConn struct {
	net.Conn
	mu  sync.Mutex
	eof bool
}

func (c *fuzzConn) ended() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eof
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	if c.ended() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.ended() {
		return n, io.EOF
	}
	return n, err
}

// SetReadDeadline keeps the deadline in the past once the input ended, so
// that a blocked or later Read wakes up.
func (c *fuzzConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.eof {
		t = time.Unix(1, 0)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *fuzzConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *fuzzConn) endInput() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eof = true
	_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
}

// fuzzLog records error-level log records: a recovered panic, an internal
// error answered with 451, a backend/server disagreement.
type fuzzLog struct {
	mu   sync.Mutex
	errs []string
}

func (h *fuzzLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h *fuzzLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	h.errs = append(h.errs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *fuzzLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *fuzzLog) WithGroup(string) slog.Handler      { return h }

func (h *fuzzLog) errors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.errs...)
}

// fuzzCheckReplies checks the server's output; it returns "" or what is
// wrong.
func fuzzCheckReplies(out []byte) string {
	if len(out) == 0 {
		return "no greeting"
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		return "output does not end in CRLF"
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n")
	var reply []string // lines of the reply being read
	code := 0
	n := 0 // replies seen
	closed := ""
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return "bare CR or LF in reply line " + fuzzQuote(l)
		}
		if len(l) < 4 || (l[3] != ' ' && l[3] != '-') {
			return "reply line " + fuzzQuote(l) + " is not 3 digits and a space or dash"
		}
		c, more, _, err := smtp.ParseReplyLine(l)
		if err != nil {
			return "reply line " + fuzzQuote(l) + ": " + err.Error()
		}
		if len(reply) > 0 && c != code {
			return "reply line " + fuzzQuote(l) + " changes the code of a multi-line reply"
		}
		if closed != "" {
			return "reply " + fuzzQuote(l) + " after the closing reply " + fuzzQuote(closed)
		}
		code = c
		reply = append(reply, l)
		if more {
			continue
		}
		if msg := fuzzCheckEnhanced(n, code, reply); msg != "" {
			return msg
		}
		if n == 0 && code != 220 {
			return "greeting " + fuzzQuote(l) + " is not 220"
		}
		if code == 221 || code == 421 {
			closed = l
		}
		n++
		reply = reply[:0]
	}
	if len(reply) > 0 {
		return "output ends inside a multi-line reply"
	}
	return ""
}

// fuzzCheckEnhanced checks the RFC 2034 rule on one complete reply, the
// n-th of the session.
func fuzzCheckEnhanced(n, code int, reply []string) string {
	_, _, first, _ := smtp.ParseReplyLine(reply[0])
	switch {
	case n == 0 && code == 220: // greeting
		return ""
	case code/100 == 3: // 354, 334: RFC 3463 has no class 3
		return ""
	case code == 250 && (strings.HasPrefix(first, fuzzHost+" greets ") || first == fuzzHost): // EHLO, HELO
		return ""
	}
	for _, l := range reply {
		_, _, text, _ := smtp.ParseReplyLine(l)
		if e, _ := smtp.SplitEnhanced(code, text); e.IsZero() {
			return "reply line " + fuzzQuote(l) + " has no enhanced status code of class " + strconv.Itoa(code/100)
		}
	}
	return ""
}

func fuzzQuote(s string) string {
	if len(s) > 120 {
		return strconv.Quote(s[:120]) + "..."
	}
	return strconv.Quote(s)
}

// The FuzzSession harness sees every reply, and its checker catches what it
// is meant to catch.
func TestFuzzSessionHarness(t *testing.T) {
	script := "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n" +
		"HELO again.example\r\nNOOP\r\nBOGUS\r\nQUIT\r\nNOOP\r\n"
	out, errs := fuzzRunSession(t, []byte(script))
	if len(errs) > 0 {
		t.Errorf("errors logged: %q", errs)
	}
	if msg := fuzzCheckReplies(out); msg != "" {
		t.Fatalf("%s\n%q", msg, out)
	}
	var codes []string
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
		if l[3] == ' ' {
			codes = append(codes, l[:3])
		}
	}
	if got, want := strings.Join(codes, " "), "220 250 250 250 354 250 250 250 500 221"; got != want {
		t.Errorf("reply codes %s, want %s\n%q", got, want, out)
	}

	// Without a QUIT the session ends at the end of the script.
	out, _ = fuzzRunSession(t, []byte("NOOP\r\nNOOP\r\n"))
	if got := strings.Count(string(out), "\r\n"); got != 3 {
		t.Errorf("NOOP NOOP: %d reply lines, want 3: %q", got, out)
	}

	for _, bad := range []string{
		"",
		"220 fuzz.example ESMTP\r\n250 OK\r\n", // no enhanced code
		"220 fuzz.example ESMTP\r\n250 5.0.0 OK\r\n",                 // class mismatch
		"220 fuzz.example ESMTP\r\n250-2.0.0 a\r\n250 b\r\n",         // missing on the last line
		"220 fuzz.example ESMTP\r\n250-2.0.0 a\r\n251 2.0.0 b\r\n",   // code changes
		"220 fuzz.example ESMTP\r\n250-2.0.0 a\r\n",                  // unfinished
		"220 fuzz.example ESMTP\r\n25 2.0.0 a\r\n",                   // two digits
		"220 fuzz.example ESMTP\r\n250_2.0.0 a\r\n",                  // separator
		"220 fuzz.example ESMTP\r\n250 2.0.0 a\nb\r\n",               // bare LF
		"220 fuzz.example ESMTP\r\n250 2.0.0 a",                      // no CRLF
		"220 fuzz.example ESMTP\r\n221 2.0.0 Bye\r\n250 2.0.0 x\r\n", // after 221
		"554 5.0.0 go away\r\n",                                      // greeting not 220
	} {
		if fuzzCheckReplies([]byte(bad)) == "" {
			t.Errorf("fuzzCheckReplies(%q) found nothing wrong", bad)
		}
	}
	good := "220 fuzz.example ESMTP\r\n250-fuzz.example greets x\r\n250 PIPELINING\r\n250 fuzz.example\r\n354 go\r\n250 2.0.0 OK\r\n421 4.7.0 bye\r\n"
	if msg := fuzzCheckReplies([]byte(good)); msg != "" {
		t.Errorf("fuzzCheckReplies(good): %s", msg)
	}
}
