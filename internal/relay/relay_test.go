package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/relay"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// client is a minimal SMTP client speaking raw lines over a real socket.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, conn: nc, tp: textproto.NewConn(nc)}
	t.Cleanup(func() { _ = c.tp.Close() })
	c.expect(220)
	return c
}

func (c *client) expect(code int) string {
	c.t.Helper()
	_, msg, err := c.tp.ReadResponse(code)
	if err != nil {
		c.t.Fatalf("want %d: %v", code, err)
	}
	return msg
}

func (c *client) cmd(code int, format string, args ...any) string {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(code)
}

func (c *client) starttls(cfg *tls.Config) {
	c.t.Helper()
	c.cmd(220, "STARTTLS")
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

type env struct {
	addr      string
	clientTLS *tls.Config
	root      string
	md        *maildir.Store
}

func start(t *testing.T, store relay.Store) *env {
	t.Helper()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{clientTLS: clientTLS, root: t.TempDir()}
	if store == nil {
		e.md, err = maildir.New(e.root)
		if err != nil {
			t.Fatal(err)
		}
		store = e.md
	}
	b := relay.New(relay.Options{Domains: []string{"localhost", "example.net"}, Store: store})
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: b, TLSConfig: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e.addr = srv.Addr
	return e
}

// TestRelayDenied performs the classic relay-test battery against a real
// server, in plaintext and after STARTTLS: TLS is never authorisation (RFC
// 3207 §4, S-RELAY-01/02/03/04).
func TestRelayDenied(t *testing.T) {
	e := start(t, nil)
	tests := []struct {
		rcpt    string
		code    int
		mailbox string // local mailbox when accepted
	}{
		{"<victim@foreign.example>", 554, ""},
		{"<victim@FOREIGN.example>", 554, ""},
		{"<victim@foreign.example.>", 501, ""},                                // trailing dot: not a Domain
		{"<@localhost:victim@foreign.example>", 554, ""},                      // source route ignored, never used
		{"<victim@[192.0.2.25]>", 554, ""},                                    // address literal
		{"<victim@[127.0.0.1]>", 554, ""},                                     // even our own address
		{"<victim@foreign.example@localhost>", 501, ""},                       // two @
		{"<victim%foreign.example@localhost>", 250, "victim%foreign.example"}, // %-hack stays local
		{"<foreign.example!victim@localhost>", 250, "foreign.example!victim"}, // bang path stays local
		{`<"victim@foreign.example"@localhost>`, 250, "victim@foreign.example"},
		{"<User@LOCALHOST>", 250, "user"},
		{"<Postmaster>", 250, "postmaster"},
	}
	for _, withTLS := range []bool{false, true} {
		c := dial(t, e.addr)
		c.cmd(250, "EHLO client.test")
		if withTLS {
			c.starttls(e.clientTLS)
			c.cmd(250, "EHLO client.test")
		}
		for _, tt := range tests {
			c.cmd(250, "MAIL FROM:<a@example.org>")
			if err := c.tp.PrintfLine("RCPT TO:%s", tt.rcpt); err != nil {
				t.Fatal(err)
			}
			code, msg, _ := c.tp.ReadResponse(0)
			if code != tt.code {
				t.Errorf("tls=%v RCPT TO:%s: got %d %s, want %d", withTLS, tt.rcpt, code, msg, tt.code)
			}
			if code == 554 && !strings.Contains(msg, "5.7.1 Relay access denied") {
				t.Errorf("tls=%v RCPT TO:%s: got %q, want 5.7.1 Relay access denied", withTLS, tt.rcpt, msg)
			}
			c.cmd(250, "RSET")
		}
		c.cmd(221, "QUIT")
	}
}

// TestDeliverByteExact checks the stored file is Petrel's Received header
// followed by exactly the client's message (RFC 5321 §4.4, §4.5.2), and
// that local parts map to their own Maildirs.
func TestDeliverByteExact(t *testing.T) {
	e := start(t, nil)
	c := dial(t, e.addr)
	c.cmd(250, "EHLO client.test")
	c.starttls(e.clientTLS)
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "MAIL FROM:<a@example.org> BODY=8BITMIME")
	c.cmd(250, "RCPT TO:<alice@localhost>")
	c.cmd(250, "RCPT TO:<bob@example.net>")
	c.cmd(354, "DATA")
	body := "Subject: t\r\n\r\n..leading dot\r\nUTF-8: h\u00e9\r\n"
	if _, err := io.WriteString(c.conn, strings.ReplaceAll(body, "\r\n..", "\r\n....")+".\r\n"); err != nil {
		t.Fatal(err)
	}
	msg := c.expect(250)
	if !strings.Contains(msg, "queued as ") {
		t.Errorf("reply %q lacks the queue ID", msg)
	}
	c.cmd(221, "QUIT")
	for _, mb := range []string{"alice", "bob"} {
		files, err := e.md.List(mb)
		if err != nil || len(files) != 1 {
			t.Fatalf("%s: %v %v", mb, files, err)
		}
		data, err := os.ReadFile(filepath.Join(e.root, mb, "new", files[0]))
		if err != nil {
			t.Fatal(err)
		}
		hdr, rest, ok := bytes.Cut(data, []byte("\r\n\t"+time.Now().Format("Mon, 02 Jan 2006")))
		if !ok {
			t.Fatalf("%s: no Received date line in %q", mb, data)
		}
		_, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		want := strings.ReplaceAll(body, "\r\n..", "\r\n...")
		if string(rest) != want {
			t.Errorf("%s: body %q, want %q", mb, rest, want)
		}
		if !bytes.HasPrefix(hdr, []byte("Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Petrel) with ESMTPS id ")) {
			t.Errorf("%s: Received header %q", mb, hdr)
		}
		if bytes.Contains(hdr, []byte("for <")) {
			t.Errorf("%s: Received names a recipient of a two-recipient message: %q", mb, hdr)
		}
	}
}

// flakyStore fails the first delivery as a full disk would.
type flakyStore struct {
	mu    sync.Mutex
	fails int
	inner relay.Store
}

func (f *flakyStore) Deliver(ctx context.Context, mbs []string, r io.Reader) (string, int64, error) {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		_, _ = io.Copy(io.Discard, r)
		return "", 0, errors.New("write /spool/x: no space left on device")
	}
	return f.inner.Deliver(ctx, mbs, r)
}

// TestStorageError: a storage failure answers 452 4.3.1, says nothing of the
// cause, and the session goes on (design.md, Durability).
func TestStorageError(t *testing.T) {
	md, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, &flakyStore{fails: 1, inner: md})
	c := dial(t, e.addr)
	c.cmd(250, "EHLO client.test")
	for i, want := range []int{452, 250} {
		c.cmd(250, "MAIL FROM:<a@example.org>")
		c.cmd(250, "RCPT TO:<alice@localhost>")
		c.cmd(354, "DATA")
		if _, err := io.WriteString(c.conn, "Subject: x\r\n\r\nx\r\n.\r\n"); err != nil {
			t.Fatal(err)
		}
		msg := c.expect(want)
		if i == 0 && (!strings.HasPrefix(msg, "4.3.1 ") || strings.Contains(msg, "space")) {
			t.Errorf("storage error reply %q: want 4.3.1 without the cause", msg)
		}
	}
	c.cmd(250, "NOOP")
	if files, _ := md.List("alice"); len(files) != 1 {
		t.Errorf("want exactly the second message stored, got %v", files)
	}
}

func TestNewIDUniqueSortable(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	now := time.Now()
	for i := range 1000 {
		id := relay.NewID(now.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 16 || seen[id] {
			t.Fatalf("bad or duplicate ID %q", id)
		}
		if id[:8] < prev {
			t.Fatalf("IDs not sortable by time: %q after %q", id, prev)
		}
		prev = id[:8]
		seen[id] = true
	}
}
