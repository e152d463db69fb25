package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/queue"
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
	addr      string // the MX listener
	subAddr   string // the submission listener (AUTH required)
	clientTLS *tls.Config
	q         *queue.Spool
}

// passwords is a Verifier with fixed users.
type passwords map[string]string

func (p passwords) Verify(_ context.Context, name string, pw []byte) bool {
	want, ok := p[name]
	return ok && want == string(pw)
}

func (p passwords) Exists(name string) bool { _, ok := p[name]; return ok }

// start runs a relay backend over a queue in a temp dir (or over q) on two
// listeners: "mx" and "submission" (which offers AUTH to the users in
// passwords and requires it). The local domains are localhost and
// example.net; every local part exists unless modify says otherwise.
func start(t *testing.T, q relay.Queue, modify ...func(*relay.Options)) *env {
	t.Helper()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{clientTLS: clientTLS}
	e.q, err = queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.q.Close() })
	if q == nil {
		q = e.q
	}
	users := passwords{"alice": "secret-password"}
	opts := relay.Options{Domains: []string{"localhost", "example.net"}, Queue: q,
		Users: users, AuthListeners: []string{"submission"}, Local: relay.Local{AcceptAny: true, Users: users}}
	for _, m := range modify {
		m(&opts)
	}
	b := relay.New(opts)
	for _, name := range []string{"mx", "submission"} {
		srv, err := smtptest.NewServer(smtpserver.Options{Name: name, Hostname: "mx.test", Backend: b, TLSConfig: serverTLS,
			RequireTLS: name == "submission"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		if name == "mx" {
			e.addr = srv.Addr
		} else {
			e.subAddr = srv.Addr
		}
	}
	return e
}

// lastQueued returns the newest message in the queue and its body.
func lastQueued(t *testing.T, q *queue.Spool) (queue.Message, string) {
	t.Helper()
	ms, err := q.List(context.Background())
	if err != nil || len(ms) == 0 {
		t.Fatalf("queue: %v %v", ms, err)
	}
	m := ms[len(ms)-1]
	rc, err := q.Body(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return m, string(b)
}

// TestRelayDenied performs the classic relay-test battery against a real
// server, in plaintext and after STARTTLS: TLS is never authorisation (RFC
// 3207 §4, S-RELAY-01/02/03/04). An accepted trick is queued for a local
// address, never a foreign one.
func TestRelayDenied(t *testing.T) {
	e := start(t, nil)
	tests := []struct {
		rcpt   string
		code   int
		queued string // the recipient address queued when accepted
	}{
		{"<victim@foreign.example>", 554, ""},
		{"<victim@FOREIGN.example>", 554, ""},
		{"<victim@foreign.example.>", 501, ""},                                          // trailing dot: not a Domain
		{"<@localhost:victim@foreign.example>", 554, ""},                                // source route ignored, never used
		{"<victim@[192.0.2.25]>", 554, ""},                                              // address literal
		{"<victim@[127.0.0.1]>", 554, ""},                                               // even our own address
		{"<victim@foreign.example@localhost>", 501, ""},                                 // two @
		{"<victim%foreign.example@localhost>", 250, "victim%foreign.example@localhost"}, // %-hack stays local
		{"<foreign.example!victim@localhost>", 250, "foreign.example!victim@localhost"}, // bang path stays local
		{`<"victim@foreign.example"@localhost>`, 250, `"victim@foreign.example"@localhost`},
		{"<User@LOCALHOST>", 250, "User@LOCALHOST"},
		{"<Postmaster>", 250, "postmaster@localhost"},
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
			if code != 250 {
				c.cmd(250, "RSET")
				continue
			}
			c.cmd(354, "DATA")
			c.cmd(250, "Subject: relay test\r\n\r\nx\r\n.")
			if m, _ := lastQueued(t, e.q); len(m.Rcpts) != 1 || m.Rcpts[0].Addr != tt.queued {
				t.Errorf("tls=%v RCPT TO:%s queued %+v, want %s", withTLS, tt.rcpt, m.Rcpts, tt.queued)
			}
		}
		c.cmd(221, "QUIT")
	}
}

// TestAuthenticatedRelay: only a client that authenticated (inside TLS, on
// the submission listener) may use foreign recipients (RFC 4954, RFC 6409;
// S-SUB-11); its message is queued with the user recorded for delivery.
func TestAuthenticatedRelay(t *testing.T) {
	e := start(t, nil)
	c := dial(t, e.subAddr)
	c.cmd(250, "EHLO client.test")
	c.starttls(e.clientTLS)
	c.cmd(250, "EHLO client.test")
	// TLS alone: no. RFC 6409 §4.3: MAIL is refused before AUTH.
	if msg := c.cmd(530, "MAIL FROM:<alice@localhost>"); !strings.HasPrefix(msg, "5.7.0 Authentication required") {
		t.Errorf("MAIL before AUTH: %q", msg)
	}
	c.cmd(235, "AUTH PLAIN AGFsaWNlAHNlY3JldC1wYXNzd29yZA==") // \0alice\0secret-password
	c.cmd(250, "MAIL FROM:<alice@localhost>")
	c.cmd(250, "RCPT TO:<friend@foreign.example>")
	c.cmd(554, "RCPT TO:<friend@[192.0.2.25]>") // never by address literal
	c.cmd(354, "DATA")
	c.cmd(250, "Subject: out\r\n\r\nx\r\n.")
	m, _ := lastQueued(t, e.q)
	if len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "friend@foreign.example" || m.Attrs[queue.AttrAuthUser] != "alice" {
		t.Errorf("queued %+v attrs %v", m.Rcpts, m.Attrs)
	}
}

// TestQueuedByteExact checks the queued message is Petrel's Received header
// followed by exactly the client's message (RFC 5321 §4.4, §4.5.2), with
// every recipient, before the 250 that names its queue ID.
func TestQueuedByteExact(t *testing.T) {
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
	m, data := lastQueued(t, e.q)
	if !strings.Contains(msg, "queued as "+m.ID) {
		t.Errorf("reply %q does not name queue ID %s", msg, m.ID)
	}
	c.cmd(221, "QUIT")
	if len(m.Rcpts) != 2 || m.Rcpts[0].Addr != "alice@localhost" || m.Rcpts[1].Addr != "bob@example.net" || m.From != "a@example.org" {
		t.Errorf("envelope %+v", m)
	}
	if m.Attrs[queue.AttrBody] != "8BITMIME" || m.Attrs[queue.AttrClientIP] != "127.0.0.1" {
		t.Errorf("attrs %v", m.Attrs)
	}
	hdr, rest, ok := strings.Cut(data, "\r\n\t"+time.Now().Format("Mon, 02 Jan 2006"))
	if !ok {
		t.Fatalf("no Received date line in %q", data)
	}
	_, rest, _ = strings.Cut(rest, "\r\n")
	if want := strings.ReplaceAll(body, "\r\n..", "\r\n..."); rest != want {
		t.Errorf("body %q, want %q", rest, want)
	}
	if !strings.HasPrefix(hdr, "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Petrel) with ESMTPS id "+m.ID) {
		t.Errorf("Received header %q", hdr)
	}
	if strings.Contains(hdr, "for <") {
		t.Errorf("Received names a recipient of a two-recipient message: %q", hdr)
	}
}

// flakyQueue fails the first Put as a full disk would.
type flakyQueue struct {
	mu    sync.Mutex
	fails int
	inner relay.Queue
}

func (f *flakyQueue) Put(ctx context.Context, env queue.Envelope, r io.Reader) (string, error) {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		_, _ = io.Copy(io.Discard, r)
		return "", errors.New("write /spool/x: no space left on device")
	}
	return f.inner.Put(ctx, env, r)
}

// TestStorageError: a storage failure answers 452 4.3.1, says nothing of the
// cause, and the session goes on (design.md, Durability).
func TestStorageError(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	e := start(t, &flakyQueue{fails: 1, inner: q})
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
	if ms, _ := q.List(context.Background()); len(ms) != 1 {
		t.Errorf("want exactly the second message queued, got %d", len(ms))
	}
}

// fakeDirect is a relay.Direct that records what it is offered and
// delivers when accept says so.
type fakeDirect struct {
	mu      sync.Mutex
	accept  bool
	offered []queue.Message
	data    []string
}

func (f *fakeDirect) DeliverNow(_ context.Context, msg queue.Message, data []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offered = append(f.offered, msg)
	f.data = append(f.data, string(data))
	return f.accept
}

// sendOne sends one message of body to rcpt and returns the final reply's
// text.
func sendOne(t *testing.T, addr, rcpt, body string) string {
	t.Helper()
	c := dial(t, addr)
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "MAIL FROM:<a@example.org>")
	c.cmd(250, "RCPT TO:<%s>", rcpt)
	c.cmd(354, "DATA")
	if _, err := io.WriteString(c.conn, body+".\r\n"); err != nil {
		t.Fatal(err)
	}
	msg := c.expect(250)
	c.cmd(221, "QUIT")
	return msg
}

// Options.Direct: a message it delivers is never queued and the 250 says
// "delivered as" its ID, with the same Received header and body the queue
// would have stored; a message it declines is queued whole; one larger
// than DirectMax is queued whole without being offered.
func TestDirect(t *testing.T) {
	d := &fakeDirect{accept: true}
	e := start(t, nil, func(o *relay.Options) { o.Direct = d })
	body := "Subject: direct\r\n\r\nhello\r\n"
	msg := sendOne(t, e.addr, "alice@localhost", body)
	if len(d.offered) != 1 {
		t.Fatalf("offered %d messages, want 1", len(d.offered))
	}
	m := d.offered[0]
	if msg != "2.0.0 OK: delivered as "+m.ID {
		t.Errorf("reply %q, want delivered as %s", msg, m.ID)
	}
	if len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "alice@localhost" || m.From != "a@example.org" || m.Size != int64(len(d.data[0])) {
		t.Errorf("offered %+v", m)
	}
	if !strings.HasPrefix(d.data[0], "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Petrel) with ESMTP id "+m.ID) || !strings.HasSuffix(d.data[0], "\r\n"+body) {
		t.Errorf("offered data %q", d.data[0])
	}
	if ms, _ := e.q.List(context.Background()); len(ms) != 0 {
		t.Errorf("a message delivered at once was queued too: %v", ms)
	}

	d.accept = false
	msg = sendOne(t, e.addr, "bob@localhost", body)
	qm, data := lastQueued(t, e.q)
	if msg != "2.0.0 OK: queued as "+qm.ID || len(d.offered) != 2 || d.offered[1].ID != qm.ID || data != d.data[1] {
		t.Errorf("declined: reply %q, queued %s %q, offered %d", msg, qm.ID, data, len(d.offered))
	}

	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", relay.DirectMax/1000+10)
	d.accept = true
	msg = sendOne(t, e.addr, "carol@localhost", big)
	qm, data = lastQueued(t, e.q)
	if msg != "2.0.0 OK: queued as "+qm.ID || len(d.offered) != 2 || !strings.HasSuffix(data, "\r\n"+big) || qm.Size != int64(len(data)) {
		t.Errorf("over DirectMax: reply %q, offered %d, queued %d octets (size %d), want %d after the header", msg, len(d.offered), len(data), qm.Size, len(big))
	}
}
