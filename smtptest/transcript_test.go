package smtptest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
)

func TestMatchWildcard(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"250 OK", "250 OK", true},
		{"250 OK", "250 OK ", false},
		{"250 OK", "250 O", false},
		{"250 *", "250 2.0.0 OK", true},
		{"250 *", "250 ", true},
		{"250 *", "250", false},
		{"*", "", true},
		{"*", "anything", true},
		{"2*0 * OK", "250 2.0.0 OK", true},
		{"2*0 * OK", "250 2.0.0 OK!", false},
		{"*greets*", "250-mx greets client", true},
		{"*greets*", "250-mx greet client", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "acb", false},
		{"a*a", "a", false}, // prefix and suffix must not overlap
		{"ab*ba", "aba", false},
		{"**", "x", true},
		{"250-SIZE *", "250-SIZE 10485760", true},
		{"[x]?", "[x]?", true}, // no other special characters
	}
	for _, tt := range tests {
		if got := matchWildcard(tt.pattern, tt.s); got != tt.want {
			t.Errorf("matchWildcard(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestParseTranscript(t *testing.T) {
	script := "# comment\n" +
		"S: 220 *\n" +
		"\n" +
		"C: EHLO x  \r\n" +
		"C:\n" +
		"!raw \"DATA\\r\\n\"\n" +
		"  \n" +
		"!starttls\n" +
		"!eof\n"
	steps, err := parseTranscript(script)
	if err != nil {
		t.Fatal(err)
	}
	want := []step{
		{line: 2, kind: "S", text: "220 *"},
		{line: 4, kind: "C", text: "EHLO x  "},
		{line: 5, kind: "C", text: ""},
		{line: 6, kind: "raw", text: "DATA\r\n"},
		{line: 8, kind: "starttls"},
		{line: 9, kind: "eof"},
	}
	if len(steps) != len(want) {
		t.Fatalf("got %d steps, want %d: %+v", len(steps), len(want), steps)
	}
	for i, w := range want {
		g := steps[i]
		if g.line != w.line || g.kind != w.kind || g.text != w.text {
			t.Errorf("step %d: got line %d %s %q, want line %d %s %q", i, g.line, g.kind, g.text, w.line, w.kind, w.text)
		}
	}

	bad := []struct{ script, want string }{
		{"S: 220 *\nX: what\n", "transcript line 2: unknown step"},
		{"!raw DATA\\r\\n\n", "transcript line 1: !raw needs a Go quoted string"},
		{"\n\n!raw \"unterminated\n", "transcript line 3: !raw"},
		{"!eof now\n", "transcript line 1: unknown step"},
		{"c: lower case\n", "unknown step"},
	}
	for _, b := range bad {
		_, err := parseTranscript(b.script)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("parseTranscript(%q): %v, want an error containing %q", b.script, err, b.want)
		}
	}
}

// fakeServer accepts one connection on 127.0.0.1:0 and runs handle on it.
// It returns the address and a channel that delivers what handle returns.
func fakeServer(t *testing.T, handle func(nc net.Conn, r *bufio.Reader) string) (string, <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	out := make(chan string, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			out <- "accept: " + err.Error()
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		out <- handle(nc, bufio.NewReader(nc))
	}()
	return l.Addr().String(), out
}

// echoServer greets, then answers each line with "250 <line>" until QUIT,
// which gets 221 and a close.
func echoServer(nc net.Conn, r *bufio.Reader) string {
	_, _ = io.WriteString(nc, "220 fake ESMTP\r\n")
	return echoLines(nc, r)
}

// echoLines answers each line with "250 <line>" until QUIT, which gets 221
// and a close. It returns what it read.
func echoLines(nc net.Conn, r *bufio.Reader) string {
	var got strings.Builder
	for {
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil {
			return got.String()
		}
		if line == "QUIT\r\n" {
			_, _ = io.WriteString(nc, "221 bye\r\n")
			return got.String()
		}
		_, _ = io.WriteString(nc, "250 "+strings.TrimSuffix(line, "\r\n")+"\r\n")
	}
}

func TestRunTranscriptFake(t *testing.T) {
	tests := []struct {
		name    string
		server  func(nc net.Conn, r *bufio.Reader) string
		script  string
		wantErr string // "" for success
		wantIn  string // what the server must have received
	}{
		{
			name:   "pass",
			server: echoServer,
			script: "S: 220 *\nC: NOOP\nS: 250 NOOP\n!raw \"A\\r\\nB\\r\\n\"\nS: 250 A\nS: 250 *\nC: QUIT\nS: 221 bye\n!eof\n",
			wantIn: "NOOP\r\nA\r\nB\r\nQUIT\r\n",
		},
		{
			name:    "mismatch names its line",
			server:  echoServer,
			script:  "S: 220 *\n# two\nC: NOOP\nS: 250 RSET\n",
			wantErr: "transcript line 4 \"S: 250 RSET\": got \"250 NOOP\"",
		},
		{
			name: "server still open at !eof",
			server: func(nc net.Conn, r *bufio.Reader) string {
				_, _ = io.WriteString(nc, "220 fake\r\n")
				_, _ = r.ReadString('\n') // until the client closes
				return ""
			},
			script:  "S: 220 fake\n!eof\n",
			wantErr: "transcript line 2 \"!eof\": expected the connection to close",
		},
		{
			name: "data instead of close",
			server: func(nc net.Conn, r *bufio.Reader) string {
				_, _ = io.WriteString(nc, "220 fake\r\n421 bye\r\n")
				return ""
			},
			script:  "S: 220 fake\n!eof\n",
			wantErr: "expected the connection to close, got \"421 bye\\r\\n\"",
		},
		{
			name: "extra reply after the last step",
			server: func(nc net.Conn, r *bufio.Reader) string {
				_, _ = io.WriteString(nc, "220 fake\r\n250 extra\r\n")
				_, _ = r.ReadString('\n')
				return ""
			},
			script:  "S: 220 fake\n",
			wantErr: "unexpected server output after the last step: \"250 extra\\r\\n\"",
		},
		{
			name: "bare LF reply",
			server: func(nc net.Conn, r *bufio.Reader) string {
				_, _ = io.WriteString(nc, "220 fake\n")
				_, _ = r.ReadString('\n')
				return ""
			},
			script:  "S: 220 fake\n",
			wantErr: "transcript line 1 \"S: 220 fake\": read: reply line \"220 fake\\n\" does not end in CRLF",
		},
		{
			name: "connection closed before the reply",
			server: func(nc net.Conn, r *bufio.Reader) string {
				return ""
			},
			script:  "S: 220 *\n",
			wantErr: "transcript line 1 \"S: 220 *\": read: EOF",
		},
		{
			name:    "step after !eof",
			server:  echoServer,
			script:  "S: 220 *\nC: QUIT\nS: 221 *\n!eof\nC: NOOP\n",
			wantErr: "transcript line 5 \"C: NOOP\": step after !eof",
		},
		{
			name: "response injection before !starttls",
			server: func(nc net.Conn, r *bufio.Reader) string {
				_, _ = io.WriteString(nc, "220 fake\r\n")
				_, _ = r.ReadString('\n')
				_, _ = io.WriteString(nc, "220 go ahead\r\n250 injected\r\n")
				_, _ = r.ReadString('\n')
				return ""
			},
			script:  "S: 220 fake\nC: STARTTLS\nS: 220 go ahead\n!starttls\n",
			wantErr: "transcript line 4 \"!starttls\": 14 octets received before the TLS handshake: \"250 injected\\r\\n\"",
		},
		{
			name:    "parse error",
			server:  echoServer,
			script:  "S: 220 *\nbogus\n",
			wantErr: "transcript line 2: unknown step",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, got := fakeServer(t, tt.server)
			err := runTranscript(addr, nil, tt.script, 500*time.Millisecond)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tt.wantErr)
			}
			if tt.wantIn != "" {
				if in := <-got; in != tt.wantIn {
					t.Fatalf("server received %q, want %q", in, tt.wantIn)
				}
			}
		})
	}
}

// TestRunTranscriptTLS runs !starttls against fake TLS servers: STARTTLS
// after a 220, and implicit TLS when !starttls is the first step.
func TestRunTranscriptTLS(t *testing.T) {
	serverTLS, clientTLS, err := TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		implicit bool
		script   string
	}{
		{"STARTTLS", false, "S: 220 fake\nC: STARTTLS\nS: 220 go ahead\n!starttls\nC: EHLO x\nS: 250 EHLO x\nC: QUIT\nS: 221 *\n!eof\n"},
		{"implicit", true, "!starttls\nS: 220 fake ESMTP\nC: EHLO x\nS: 250 EHLO x\nC: QUIT\nS: 221 bye\n!eof\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := fakeServer(t, func(nc net.Conn, r *bufio.Reader) string {
				if !tt.implicit {
					_, _ = io.WriteString(nc, "220 fake\r\n")
					if line, _ := r.ReadString('\n'); line != "STARTTLS\r\n" {
						return "no STARTTLS"
					}
					_, _ = io.WriteString(nc, "220 go ahead\r\n")
				}
				tc := tls.Server(nc, serverTLS)
				defer tc.Close()
				if tt.implicit {
					return echoServer(tc, bufio.NewReader(tc))
				}
				return echoLines(tc, bufio.NewReader(tc))
			})
			RunTranscript(t, addr, clientTLS, tt.script)
		})
	}
}

// TestRunTranscriptServer runs a transcript against the real server.
func TestRunTranscriptServer(t *testing.T) {
	serverTLS, clientTLS, err := TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	backend := &Backend{}
	srv, err := NewServer(smtpserver.Options{Hostname: "mx.example.test", Backend: backend, TLSConfig: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	RunTranscript(t, srv.Addr, clientTLS, `
S: 220 mx.example.test ESMTP Petrel
C: STARTTLS
S: 220 2.0.0 *
!starttls
C: EHLO client.example
S: 250-mx.example.test greets client.example
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250 CHUNKING
C: MAIL FROM:<a@client.example>
S: 250 2.1.0 *
C: RCPT TO:<b@mx.example.test>
S: 250 2.1.5 *
!raw "BDAT 6 LAST\r\nhello\n"
S: 550 5.5.2 *
C: QUIT
S: 221 *
!eof
`)
	if n := len(backend.Messages()); n != 0 {
		t.Fatalf("%d messages stored, want none (bare LF)", n)
	}
}

// TestClientReadReply checks the multi-line reply parser.
func TestClientReadReply(t *testing.T) {
	tests := []struct {
		wire    string
		code    int
		lines   int
		wantErr string
	}{
		{"250 OK\r\n", 250, 1, ""},
		{"250-a\r\n250-b\r\n250 c\r\n", 250, 3, ""},
		{"250\r\n", 250, 1, ""},
		{"250-a\r\n251 b\r\n", 0, 0, "continues a 250 reply"},
		{"2x0 OK\r\n", 0, 0, "malformed reply line"},
		{"199 OK\r\n", 0, 0, "malformed reply line"},
		{"250_OK\r\n", 0, 0, "malformed reply line"},
		{"250 OK\n", 0, 0, "does not end in CRLF"},
		{"250-a\r\n", 0, 0, "EOF"},
	}
	for _, tt := range tests {
		a, b := net.Pipe()
		go func() {
			_, _ = io.WriteString(b, tt.wire)
			_ = b.Close()
		}()
		c := NewClient(a)
		rep, err := c.ReadReply()
		_ = a.Close()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tt.wire, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: error %v, want %q", tt.wire, err, tt.wantErr)
		case tt.wantErr == "" && (rep.Code != tt.code || len(rep.Lines) != tt.lines):
			t.Errorf("%q: got %d with %d lines", tt.wire, rep.Code, len(rep.Lines))
		}
	}
}
