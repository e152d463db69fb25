// Package probetest is a small, scriptable SMTP server on 127.0.0.1 for
// tests of SMTP clients and of the STARTTLS probe: unlike smtpserver it can
// be told to misbehave. It can refuse commands with chosen replies, offer
// AUTH, leave out STARTTLS, accept old TLS versions (through its
// tls.Config), and — with Vulnerable — keep its plaintext read buffer
// across STARTTLS, so that commands pipelined behind STARTTLS are executed
// inside TLS: the CVE-2011-0411 command injection bug, on purpose.
//
// It is test code: never use it to receive real mail.
package probetest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options script a Server. Replies are full reply lines without CRLF
// ("451 4.3.0 try later"); multi-line replies are not needed here.
type Options struct {
	// Hostname is the name in the greeting; default "probetest.test".
	Hostname string
	// Greeting replaces the "220 <hostname> ESMTP probetest" greeting.
	Greeting string
	// TLSConfig enables STARTTLS (or, with ImplicitTLS, TLS from the first
	// byte). It is used as given: no minimum version is imposed.
	TLSConfig   *tls.Config
	ImplicitTLS bool
	// Vulnerable keeps the buffered reader across STARTTLS (the bug).
	Vulnerable bool
	// AuthUser and AuthPass, when set, make the server offer AUTH PLAIN
	// LOGIN after TLS and accept these credentials.
	AuthUser, AuthPass string
	// Mail, Rcpt and Data, when set, return the reply to MAIL FROM, to
	// each RCPT TO (given the address without brackets) and to the end of
	// the message; an empty string means the default 250.
	Mail func(from string) string
	Rcpt func(to string) string
	Data func(msg []byte) string
}

// Message is one message the server accepted.
type Message struct {
	From string
	To   []string
	Data []byte // as received, dot-unstuffed, with CRLF line ends
	TLS  bool
}

// Server is a running fake server.
type Server struct {
	// Addr is the listening "127.0.0.1:port".
	Addr string

	opts Options
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]bool
	commands []string
	messages []Message
}

// Start starts a server that stops when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "probetest.test"
	}
	if opts.Greeting == "" {
		opts.Greeting = "220 " + opts.Hostname + " ESMTP probetest"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("probetest: %v", err)
	}
	s := &Server{Addr: ln.Addr().String(), opts: opts, ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its connections to end.
func (s *Server) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Commands returns every command line received, in order, over all
// connections (AUTH payloads included: the server sees them).
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Messages returns the messages accepted.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[nc] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				_ = nc.Close()
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
			}()
			_ = nc.SetDeadline(time.Now().Add(time.Minute))
			s.serve(nc)
		}()
	}
}

// session is one connection. cur is the connection reads and writes go
// to: the TCP connection, then the TLS one.
type session struct {
	s     *Server
	cur   net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	tls   bool
	authd bool
	msg   *Message
}

// Read reads from the current connection; a Vulnerable server's reader
// reads through it, so its buffer outlives the switch to TLS.
func (ss *session) Read(p []byte) (int, error) { return ss.cur.Read(p) }

func (ss *session) reply(line string) {
	_, _ = ss.w.WriteString(line + "\r\n")
	_ = ss.w.Flush()
}

func (s *Server) serve(nc net.Conn) {
	ss := &session{s: s, cur: nc}
	if s.opts.ImplicitTLS {
		tc := tls.Server(nc, s.opts.TLSConfig)
		if tc.Handshake() != nil {
			return
		}
		ss.cur, ss.tls = tc, true
	}
	ss.r = bufio.NewReader(ss)
	ss.w = bufio.NewWriter(ss.cur)
	ss.reply(s.opts.Greeting)
	if !strings.HasPrefix(s.opts.Greeting, "220") {
		return
	}
	for {
		line, err := ss.r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.commands = append(s.commands, line)
		s.mu.Unlock()
		verb, arg, _ := strings.Cut(line, " ")
		if !ss.command(strings.ToUpper(verb), arg) {
			return
		}
	}
}

// command runs one command and reports whether the session goes on.
func (ss *session) command(verb, arg string) bool {
	o := ss.s.opts
	switch verb {
	case "EHLO", "HELO":
		ss.msg = nil
		lines := []string{o.Hostname + " hello " + arg, "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 10485760"}
		if o.TLSConfig != nil && !ss.tls {
			lines = append(lines, "STARTTLS")
		}
		if o.AuthUser != "" && ss.tls {
			lines = append(lines, "AUTH PLAIN LOGIN")
		}
		if verb == "HELO" {
			lines = lines[:1]
		}
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			_, _ = ss.w.WriteString("250" + sep + l + "\r\n")
		}
		_ = ss.w.Flush()
	case "STARTTLS":
		if o.TLSConfig == nil || ss.tls {
			ss.reply("502 5.5.1 STARTTLS not available")
			return true
		}
		ss.reply("220 2.0.0 Ready to start TLS")
		tc := tls.Server(ss.cur, o.TLSConfig)
		if err := tc.Handshake(); err != nil {
			return false
		}
		ss.cur, ss.tls, ss.msg = tc, true, nil
		ss.w.Reset(tc)
		if !o.Vulnerable {
			// The fix: drop whatever plaintext was buffered.
			ss.r = bufio.NewReader(ss)
		}
	case "AUTH":
		return ss.auth(arg)
	case "MAIL":
		rep := "250 2.1.0 OK"
		from := addr(arg)
		if o.Mail != nil {
			if r := o.Mail(from); r != "" {
				rep = r
			}
		}
		if strings.HasPrefix(rep, "250") {
			ss.msg = &Message{From: from, TLS: ss.tls}
		}
		ss.reply(rep)
	case "RCPT":
		if ss.msg == nil {
			ss.reply("503 5.5.1 MAIL first")
			return true
		}
		rep := "250 2.1.5 OK"
		to := addr(arg)
		if o.Rcpt != nil {
			if r := o.Rcpt(to); r != "" {
				rep = r
			}
		}
		if strings.HasPrefix(rep, "250") {
			ss.msg.To = append(ss.msg.To, to)
		}
		ss.reply(rep)
	case "DATA":
		if ss.msg == nil || len(ss.msg.To) == 0 {
			ss.reply("554 5.5.1 no valid recipients")
			return true
		}
		ss.reply("354 go ahead")
		data, err := readData(ss.r)
		if err != nil {
			return false
		}
		rep := "250 2.0.0 OK queued as PROBETEST1"
		if o.Data != nil {
			if r := o.Data(data); r != "" {
				rep = r
			}
		}
		if strings.HasPrefix(rep, "250") {
			m := *ss.msg
			m.Data = data
			ss.s.mu.Lock()
			ss.s.messages = append(ss.s.messages, m)
			ss.s.mu.Unlock()
		}
		ss.msg = nil
		ss.reply(rep)
	case "RSET":
		ss.msg = nil
		ss.reply("250 2.0.0 OK")
	case "NOOP":
		ss.reply("250 2.0.0 OK")
	case "QUIT":
		ss.reply("221 2.0.0 bye")
		return false
	default:
		ss.reply("502 5.5.2 command not recognised")
	}
	return true
}

func (ss *session) auth(arg string) bool {
	o := ss.s.opts
	if o.AuthUser == "" || !ss.tls || ss.authd {
		ss.reply("503 5.5.1 AUTH not available")
		return true
	}
	mech, initial, _ := strings.Cut(arg, " ")
	var user, pass string
	switch strings.ToUpper(mech) {
	case "PLAIN":
		if initial == "" {
			ss.reply("334 ")
			l, err := ss.r.ReadString('\n')
			if err != nil {
				return false
			}
			initial = strings.TrimRight(l, "\r\n")
		}
		b, _ := base64.StdEncoding.DecodeString(initial)
		parts := strings.Split(string(b), "\x00")
		if len(parts) == 3 {
			user, pass = parts[1], parts[2]
		}
	case "LOGIN":
		for i, p := range []*string{&user, &pass} {
			ss.reply("334 " + base64.StdEncoding.EncodeToString([]byte([]string{"Username:", "Password:"}[i])))
			l, err := ss.r.ReadString('\n')
			if err != nil {
				return false
			}
			b, _ := base64.StdEncoding.DecodeString(strings.TrimRight(l, "\r\n"))
			*p = string(b)
		}
	default:
		ss.reply("504 5.5.4 mechanism not supported")
		return true
	}
	if user != o.AuthUser || pass != o.AuthPass {
		ss.reply("535 5.7.8 authentication credentials invalid")
		return true
	}
	ss.authd = true
	ss.reply("235 2.7.0 authenticated")
	return true
}

// addr returns the address inside the angle brackets of "FROM:<a> ...".
func addr(arg string) string {
	i, j := strings.IndexByte(arg, '<'), strings.IndexByte(arg, '>')
	if i < 0 || j < i {
		return ""
	}
	return arg[i+1 : j]
}

// readData reads message data up to the line ".", unstuffing dots.
func readData(r *bufio.Reader) ([]byte, error) {
	var buf bytes.Buffer
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("probetest: reading data: %w", err)
		}
		if bytes.Equal(line, []byte(".\r\n")) {
			return buf.Bytes(), nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		buf.Write(line)
	}
}
