package delivery_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

const ioTimeout = 10 * time.Second

const testMsg = "From: <sender@example.org>\r\nTo: <rcpt@dest.test>\r\nSubject: test\r\n\r\nHello.\r\n"

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server starts a Petrel server on 127.0.0.1 with STARTTLS unless plain.
func server(t *testing.T, plain bool, setup func(*smtptest.Backend)) (*smtptest.Server, *smtptest.Backend, string) {
	t.Helper()
	be := &smtptest.Backend{}
	if setup != nil {
		setup(be)
	}
	opts := smtpserver.Options{Name: "mx", Hostname: "mx.dest.test", Backend: be}
	if !plain {
		scfg, _, err := smtptest.TLSConfigs()
		if err != nil {
			t.Fatal(err)
		}
		opts.TLSConfig = scfg
	}
	srv, err := smtptest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(srv.Addr)
	return srv, be, port
}

// countingDialer counts the connections made and records what the client
// wrote on them.
type countingDialer struct {
	n      atomic.Int64
	mu     sync.Mutex
	writes bytes.Buffer
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c, d: d}, nil
}

func (d *countingDialer) written() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes.String()
}

type recConn struct {
	net.Conn
	d *countingDialer
}

func (c *recConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	c.d.writes.Write(p)
	c.d.mu.Unlock()
	return c.Conn.Write(p)
}

type env struct {
	d      *delivery.Deliverer
	log    *logBuf
	dialer *countingDialer
}

func newDeliverer(t *testing.T, port string, dns *dnsxtest.Server, mod func(*delivery.Options)) env {
	t.Helper()
	r, err := dnsx.New(dns.Addr)
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuf{}
	cd := &countingDialer{}
	opts := delivery.Options{
		LocalName: "sender.test",
		Resolver:  r,
		Port:      port,
		Dialer:    cd,
		Timeouts: smtpclient.Timeouts{Connect: ioTimeout, Greeting: ioTimeout, Command: ioTimeout,
			TLSHandshake: ioTimeout, DataStart: ioTimeout, DataBlock: ioTimeout, DataEnd: ioTimeout},
		Logger: slog.New(slog.NewTextHandler(lb, nil)),
	}
	if mod != nil {
		mod(&opts)
	}
	d, err := delivery.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return env{d: d, log: lb, dialer: cd}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func message(id string, rcpts ...string) queue.Message {
	m := queue.Message{ID: id, From: "sender@example.org", Size: int64(len(testMsg))}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, queue.Recipient{Addr: r})
	}
	return m
}

func body() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(testMsg)), nil }

func byAddr(t *testing.T, rs []queue.Result) map[string]queue.Result {
	t.Helper()
	m := map[string]queue.Result{}
	for _, r := range rs {
		if _, dup := m[r.Addr]; dup {
			t.Errorf("two results for %s", r.Addr)
		}
		m[r.Addr] = r
	}
	return m
}

var mxRecords = []string{
	"dest.test. 300 IN MX 10 mx.dest.test.",
	"mx.dest.test. 300 IN A 127.0.0.1",
}

func TestDeliverMXWithSTARTTLS(t *testing.T) {
	_, be, port := server(t, false, func(b *smtptest.Backend) {
		b.RejectRcpt = func(to smtp.Path) error {
			switch to.Local {
			case "nobody":
				return &smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user"}
			case "busy":
				return &smtp.Error{Code: 450, Enhanced: smtp.EnhancedCode{Class: 4, Subject: 2, Detail: 1}, Message: "Mailbox busy"}
			}
			return nil
		}
	})
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q1", "alice@dest.test", "nobody@dest.test", "busy@dest.test"), body))
	if len(res) != 3 {
		t.Fatalf("results: %+v", res)
	}
	if r := res["alice@dest.test"]; r.State != queue.Delivered || !strings.HasPrefix(r.Reply, "250") || r.RemoteMTA != "mx.dest.test" {
		t.Errorf("alice: %+v", r)
	}
	if r := res["nobody@dest.test"]; r.State != queue.Failed || r.Reply != "550 5.1.1 No such user" {
		t.Errorf("nobody: %+v", r)
	}
	if r := res["busy@dest.test"]; r.State != queue.Deferred || r.Reply != "450 4.2.1 Mailbox busy" {
		t.Errorf("busy: %+v", r)
	}
	msgs := be.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || !strings.Contains(m.Received, "ESMTPS") {
		t.Errorf("not over TLS: TLS=%v Received=%q", m.TLS, m.Received)
	}
	if string(m.Data) != testMsg {
		t.Errorf("data %q", m.Data)
	}
	if m.Hello != "sender.test" || m.From.String() != "sender@example.org" {
		t.Errorf("hello %q from %q", m.Hello, m.From)
	}
	log := e.log.String()
	for _, want := range []string{"id=Q1", "mx=mx.dest.test", `tls="TLS 1.3"`, "cipher=TLS_", "rcpt=nobody@dest.test", `reply="550 5.1.1 No such user"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if s := e.d.Stats(); s.Delivered != 1 || s.Failed != 1 || s.Deferred != 1 || s.TLSFallbacks != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestMXFallback(t *testing.T) {
	_, be, port := server(t, false, nil)
	// mx1 (preferred) is 127.0.0.2, where nothing listens on the port.
	dns := dnsxtest.NewServer(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"dest.test. 300 IN MX 20 mx2.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.2",
		"mx2.dest.test. 300 IN A 127.0.0.1",
	)
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q2", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Delivered || r.RemoteMTA != "mx2.dest.test" {
		t.Errorf("alice: %+v\n%s", r, e.log.String())
	}
	if len(be.Messages()) != 1 {
		t.Errorf("server got %d messages", len(be.Messages()))
	}
	if n := e.dialer.n.Load(); n != 2 {
		t.Errorf("%d dials, want 2", n)
	}
	if !strings.Contains(e.log.String(), "mx=mx1.dest.test") {
		t.Errorf("failed attempt to mx1 not logged:\n%s", e.log.String())
	}
}

func TestAllMXDown(t *testing.T) {
	dns := dnsxtest.NewServer(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.2",
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q3", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "451 4.4.1") {
		t.Errorf("alice: %+v", r)
	}
}

func TestNullMX(t *testing.T) {
	dns := dnsxtest.NewServer(t, "dest.test. 300 IN MX 0 .")
	e := newDeliverer(t, "25", dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q4", "a@dest.test", "b@dest.test"), body))
	for _, a := range []string{"a@dest.test", "b@dest.test"} {
		r := res[a]
		if r.State != queue.Failed || !strings.Contains(r.Reply, "5.1.10") || !strings.Contains(r.Reply, "null MX") {
			t.Errorf("%s: %+v", a, r)
		}
	}
	if n := e.dialer.n.Load(); n != 0 {
		t.Errorf("%d dials", n)
	}
}

func TestNoSuchDomain(t *testing.T) {
	dns := dnsxtest.NewServer(t, "other.test. 300 IN A 127.0.0.1")
	e := newDeliverer(t, "25", dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q4b", "a@nowhere.test"), body))
	if r := res["a@nowhere.test"]; r.State != queue.Failed || !strings.HasPrefix(r.Reply, "550 5.1.2") {
		t.Errorf("%+v", r)
	}
}

func TestDNSFailureDefers(t *testing.T) {
	dns := dnsxtest.NewServer(t)
	dns.ServFail("dest.test.")
	e := newDeliverer(t, "25", dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q4c", "a@dest.test"), body))
	if r := res["a@dest.test"]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "451 4.4.3") {
		t.Errorf("%+v", r)
	}
}

func TestImplicitMX(t *testing.T) {
	_, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, "dest.test. 300 IN A 127.0.0.1")
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q5", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Delivered || r.RemoteMTA != "dest.test" {
		t.Errorf("alice: %+v", r)
	}
	if len(be.Messages()) != 1 {
		t.Errorf("server got %d messages", len(be.Messages()))
	}
}

func TestEncryptWithoutSTARTTLSDefers(t *testing.T) {
	_, be, port := server(t, true, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) {
		o.TLS.Domains = map[string]smtpclient.Level{"dest.test": smtpclient.Encrypt}
	})
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q6", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "4") {
		t.Errorf("alice: %+v", r)
	}
	if len(be.Messages()) != 0 {
		t.Error("message delivered in plaintext")
	}
	if w := e.dialer.written(); strings.Contains(w, "MAIL FROM") || strings.Contains(w, "RCPT") {
		t.Errorf("client sent a transaction:\n%s", w)
	}
	if s := e.d.Stats(); s.TLSFailures != 1 || s.TLSFallbacks != 0 {
		t.Errorf("stats %+v", s)
	}
	if n := e.dialer.n.Load(); n != 1 {
		t.Errorf("%d dials, want 1 (no plaintext retry)", n)
	}
}

func TestMayWithoutSTARTTLSDeliversPlaintext(t *testing.T) {
	_, be, port := server(t, true, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q7", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Delivered {
		t.Errorf("alice: %+v", r)
	}
	msgs := be.Messages()
	if len(msgs) != 1 || msgs[0].TLS {
		t.Fatalf("messages %+v", msgs)
	}
	log := e.log.String()
	if !strings.Contains(log, "tls=none") || !strings.Contains(log, "plaintext") || !strings.Contains(log, "STARTTLS") {
		t.Errorf("plaintext fallback not logged:\n%s", log)
	}
	if s := e.d.Stats(); s.TLSFallbacks != 1 {
		t.Errorf("stats %+v", s)
	}
}

// A server whose TLS handshake fails: at level may the client retries in
// plaintext on a new connection, and that is counted.
func TestMayHandshakeFailureFallsBack(t *testing.T) {
	be := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.dest.test", Backend: be,
		GetTLSConfig: func(context.Context) (*tls.Config, error) {
			// No certificate: every handshake fails.
			return &tls.Config{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(srv.Addr)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q7b", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Delivered {
		t.Fatalf("alice: %+v\n%s", r, e.log.String())
	}
	if s := e.d.Stats(); s.TLSFallbacks != 1 || s.ConnsOpened != 1 {
		t.Errorf("stats %+v", s)
	}
	if n := e.dialer.n.Load(); n != 2 {
		t.Errorf("%d dials, want 2 (TLS, then plaintext)", n)
	}
	if !strings.Contains(e.log.String(), "plaintext") {
		t.Errorf("fallback not logged:\n%s", e.log.String())
	}

	// Under encrypt the same failure defers.
	e2 := newDeliverer(t, port, dns, func(o *delivery.Options) { o.TLS.Level = new(smtpclient.Encrypt) })
	res = byAddr(t, e2.d.Deliver(ctxT(t), message("Q7c", "bob@dest.test"), body))
	if r := res["bob@dest.test"]; r.State != queue.Deferred {
		t.Errorf("bob: %+v", r)
	}
	if n := e2.dialer.n.Load(); n != 1 {
		t.Errorf("%d dials under encrypt, want 1", n)
	}
	if len(be.Messages()) != 1 {
		t.Errorf("server got %d messages", len(be.Messages()))
	}
}

func TestLocalDelivery(t *testing.T) {
	dir := t.TempDir()
	store, err := maildir.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"Local.Test"}
		o.Local = store
	})
	res := byAddr(t, e.d.Deliver(ctxT(t), message("Q8", "Alice@local.test", "bob@LOCAL.test", "carol@dest.test"), body))
	for _, a := range []string{"Alice@local.test", "bob@LOCAL.test", "carol@dest.test"} {
		if r := res[a]; r.State != queue.Delivered {
			t.Errorf("%s: %+v", a, r)
		}
	}
	for _, mb := range []string{"alice", "bob"} {
		names, err := store.List(mb)
		if err != nil || len(names) != 1 {
			t.Fatalf("%s: %v %v", mb, names, err)
		}
		d, _ := store.Dir(mb)
		got, err := os.ReadFile(filepath.Join(d, "new", names[0]))
		if err != nil || string(got) != testMsg {
			t.Errorf("%s: %q %v", mb, got, err)
		}
	}
	if len(be.Messages()) != 1 {
		t.Errorf("remote got %d", len(be.Messages()))
	}
	if s := e.d.Stats(); s.LocalMessages != 1 {
		t.Errorf("stats %+v", s)
	}
}

// DeliverNow delivers at once only when every recipient is a local Maildir
// mailbox, and then durably to each; otherwise it delivers nothing.
func TestDeliverNow(t *testing.T) {
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, "25", dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
		o.Mailbox = func(addr string) (string, error) {
			if strings.HasPrefix(addr, "nobody@") {
				return "", errors.New("no such mailbox")
			}
			local, _, _ := strings.Cut(strings.ToLower(addr), "@")
			return local, nil
		}
	})
	for _, tc := range []struct {
		name  string
		rcpts []string
		want  bool
	}{
		{"local", []string{"alice@local.test", "Bob@LOCAL.test"}, true},
		{"a remote recipient", []string{"alice@local.test", "carol@dest.test"}, false},
		{"an unknown mailbox", []string{"alice@local.test", "nobody@local.test"}, false},
		{"postmaster without a domain", []string{"postmaster"}, false},
		{"no recipient", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string]int{}
			for _, mb := range []string{"alice", "bob"} {
				names, _ := store.List(mb)
				before[mb] = len(names)
			}
			if got := e.d.DeliverNow(ctxT(t), message("Q"+tc.name, tc.rcpts...), []byte(testMsg)); got != tc.want {
				t.Fatalf("DeliverNow = %v, want %v", got, tc.want)
			}
			added := 0
			if tc.want {
				added = 1
			}
			for _, mb := range []string{"alice", "bob"} {
				names, _ := store.List(mb)
				if want := before[mb] + added; len(names) != want && (mb == "alice" || tc.want) {
					t.Errorf("%s: %d messages, want %d", mb, len(names), want)
				}
			}
		})
	}
	if s := e.d.Stats(); s.DirectMessages != 1 || s.Delivered != 2 {
		t.Errorf("stats %+v: want 1 direct message, 2 recipients delivered", s)
	}
	lm := newDeliverer(t, "25", dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
		o.LMTP = &delivery.LMTP{Network: "unix", Addr: "/nonexistent/lmtp"}
	})
	if lm.d.DeliverNow(ctxT(t), message("QL", "alice@local.test"), []byte(testMsg)) {
		t.Error("DeliverNow delivered with LMTP configured (mail for LMTP goes through the queue)")
	}
}

func TestOnlyDueRecipients(t *testing.T) {
	_, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	m := message("Q9", "a@dest.test", "b@dest.test", "c@dest.test")
	m.Rcpts[0].State = queue.Delivered
	m.Rcpts[1].State = queue.Deferred
	m.Rcpts[2].State = queue.Failed
	res := e.d.Deliver(ctxT(t), m, body)
	if len(res) != 1 || res[0].Addr != "b@dest.test" || res[0].State != queue.Delivered {
		t.Errorf("%+v", res)
	}
	if msgs := be.Messages(); len(msgs) != 1 || len(msgs[0].To) != 1 {
		t.Errorf("%+v", msgs)
	}
}

func TestConnectionReuse(t *testing.T) {
	_, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	for _, id := range []string{"R1", "R2", "R3"} {
		res := byAddr(t, e.d.Deliver(ctxT(t), message(id, "alice@dest.test"), body))
		if r := res["alice@dest.test"]; r.State != queue.Delivered {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	msgs := be.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs[1:] {
		if m.ConnID != msgs[0].ConnID {
			t.Errorf("messages on connections %q and %q", msgs[0].ConnID, m.ConnID)
		}
		if !m.TLS {
			t.Error("reused connection without TLS")
		}
	}
	if n := e.dialer.n.Load(); n != 1 {
		t.Errorf("%d TCP connections", n)
	}
	if s := e.d.Stats(); s.ConnsOpened != 1 || s.ConnsReused != 2 {
		t.Errorf("stats %+v", s)
	}
	// Close quits the idle connection.
	_ = e.d.Close()
	deadline := time.Now().Add(ioTimeout)
	for {
		made, closed := be.Sessions()
		if made == closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions made %d closed %d after Close", made, closed)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReuseOffAndMaxMessages(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*delivery.Options)
		conns int64
	}{
		{"reuse off", func(o *delivery.Options) { o.IdleTimeout = -1 }, 4},
		{"two per connection", func(o *delivery.Options) { o.MaxMessagesPerConn = 2 }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, be, port := server(t, false, nil)
			dns := dnsxtest.NewServer(t, mxRecords...)
			e := newDeliverer(t, port, dns, tc.mod)
			for i := range 4 {
				res := e.d.Deliver(ctxT(t), message("L"+string(rune('0'+i)), "alice@dest.test"), body)
				if len(res) != 1 || res[0].State != queue.Delivered {
					t.Fatalf("%+v", res)
				}
			}
			if n := e.dialer.n.Load(); n != tc.conns {
				t.Errorf("%d connections, want %d", n, tc.conns)
			}
			if len(be.Messages()) != 4 {
				t.Errorf("%d messages", len(be.Messages()))
			}
		})
	}
}

// In plaintext the client's commands can be read: RSET before the second
// transaction on a cached connection.
func TestReuseSendsRSET(t *testing.T) {
	_, be, port := server(t, true, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) { o.TLS.Level = new(smtpclient.None) })
	for _, id := range []string{"P1", "P2"} {
		if res := e.d.Deliver(ctxT(t), message(id, "alice@dest.test"), body); res[0].State != queue.Delivered {
			t.Fatalf("%+v", res)
		}
	}
	w := e.dialer.written()
	if strings.Count(w, "MAIL FROM") != 2 || !strings.Contains(w, "RSET\r\nMAIL FROM") || strings.Contains(w, "STARTTLS") {
		t.Errorf("client wrote:\n%s", w)
	}
	if msgs := be.Messages(); len(msgs) != 2 || msgs[0].ConnID != msgs[1].ConnID {
		t.Errorf("%+v", msgs)
	}
	if !strings.Contains(e.log.String(), "plaintext_reason=\"level none\"") {
		t.Errorf("log:\n%s", e.log.String())
	}
}

func TestIdleTimeout(t *testing.T) {
	_, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) { o.IdleTimeout = 50 * time.Millisecond })
	e.d.Deliver(ctxT(t), message("I1", "alice@dest.test"), body)
	deadline := time.Now().Add(ioTimeout)
	for {
		made, closed := be.Sessions()
		if made > 0 && made == closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle connection not closed: made %d closed %d", made, closed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.d.Deliver(ctxT(t), message("I2", "alice@dest.test"), body)
	if n := e.dialer.n.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A cached connection the server has closed is replaced transparently.
func TestReuseAfterServerClosed(t *testing.T) {
	srv, be, port := server(t, false, nil)
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, nil)
	e.d.Deliver(ctxT(t), message("S1", "alice@dest.test"), body)
	// Restart the server on the same port: the cached connection dies.
	_ = srv.Close()
	be2 := &smtptest.Backend{}
	scfg, _, _ := smtptest.TLSConfigs()
	s2, err := smtpserver.New(smtpserver.Options{Hostname: "mx.dest.test", Backend: be2, TLSConfig: scfg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Skip("port not free again:", err)
	}
	go func() { _ = s2.Serve(ln) }()
	t.Cleanup(func() { _ = s2.Close() })
	res := e.d.Deliver(ctxT(t), message("S2", "alice@dest.test"), body)
	if len(res) != 1 || res[0].State != queue.Delivered {
		t.Fatalf("%+v\n%s", res, e.log.String())
	}
	if len(be.Messages()) != 1 || len(be2.Messages()) != 1 {
		t.Errorf("messages %d %d", len(be.Messages()), len(be2.Messages()))
	}
}

func TestConcurrencyLimit(t *testing.T) {
	var cur, peak atomic.Int64
	_, be, port := server(t, false, func(b *smtptest.Backend) {
		b.DataErr = func() error {
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
			cur.Add(-1)
			return nil
		}
	})
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) { o.MaxPerDomain = 2; o.MaxConns = 10 })
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			res := e.d.Deliver(ctxT(t), message("C"+string(rune('0'+i)), "alice@dest.test"), body)
			if len(res) != 1 || res[0].State != queue.Delivered {
				t.Errorf("%+v", res)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
	if len(be.Messages()) != 8 {
		t.Errorf("%d messages", len(be.Messages()))
	}
	if n := e.dialer.n.Load(); n > 2 {
		t.Errorf("%d connections for 2 concurrent slots", n)
	}
}

func TestTotalLimitAndContext(t *testing.T) {
	release := make(chan struct{})
	_, _, port := server(t, false, func(b *smtptest.Backend) {
		b.DataErr = func() error { <-release; return nil }
	})
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, port, dns, func(o *delivery.Options) { o.MaxConns = 1 })
	done := make(chan []queue.Result)
	go func() { done <- e.d.Deliver(ctxT(t), message("T1", "alice@dest.test"), body) }()
	// Wait until the first delivery holds the only slot.
	deadline := time.Now().Add(ioTimeout)
	for e.d.Stats().Attempts == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res := e.d.Deliver(ctx, message("T2", "bob@dest.test"), body)
	if len(res) != 1 || res[0].State != queue.Deferred || !strings.HasPrefix(res[0].Reply, "451 4.4.5") {
		t.Errorf("%+v", res)
	}
	close(release)
	if r := <-done; len(r) != 1 || r[0].State != queue.Delivered {
		t.Errorf("%+v", r)
	}
}

func TestBodyError(t *testing.T) {
	dns := dnsxtest.NewServer(t, mxRecords...)
	e := newDeliverer(t, "25", dns, nil)
	res := e.d.Deliver(ctxT(t), message("B1", "a@dest.test"), func() (io.ReadCloser, error) { return nil, io.ErrUnexpectedEOF })
	if len(res) != 1 || res[0].State != queue.Deferred {
		t.Errorf("%+v", res)
	}
}

func TestSmarthostVerifyAndAuth(t *testing.T) {
	scfg, ccfg, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	be := &smtptest.Backend{Users: map[string]string{"relay": "s3cret"}}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "smarthost.test", Backend: be, TLSConfig: scfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	dns := dnsxtest.NewServer(t) // no records: the smarthost needs no DNS
	e := newDeliverer(t, "1", dns, func(o *delivery.Options) {
		o.Smarthost = &delivery.Smarthost{Addr: srv.Addr, User: "relay", Password: "s3cret"}
		o.TLS.TLSConfig = ccfg
	})
	res := byAddr(t, e.d.Deliver(ctxT(t), message("H1", "a@one.test", "b@two.test"), body))
	for _, a := range []string{"a@one.test", "b@two.test"} {
		if r := res[a]; r.State != queue.Delivered {
			t.Errorf("%s: %+v\n%s", a, r, e.log.String())
		}
	}
	for _, m := range be.Messages() {
		if !m.TLS || m.AuthUser != "relay" {
			t.Errorf("message TLS=%v auth=%q", m.TLS, m.AuthUser)
		}
	}
	if len(be.Messages()) != 2 {
		t.Errorf("%d messages", len(be.Messages()))
	}
	if !strings.Contains(e.log.String(), "cert=verified:127.0.0.1") {
		t.Errorf("log:\n%s", e.log.String())
	}
	if len(dns.Queries()) != 0 {
		t.Errorf("DNS queries %v", dns.Queries())
	}

	// Without the CA the smarthost's certificate does not verify: defer,
	// never plaintext.
	e2 := newDeliverer(t, "1", dns, func(o *delivery.Options) {
		o.Smarthost = &delivery.Smarthost{Addr: srv.Addr, User: "relay", Password: "s3cret"}
	})
	res = byAddr(t, e2.d.Deliver(ctxT(t), message("H2", "c@one.test"), body))
	if r := res["c@one.test"]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "4") {
		t.Errorf("unverified smarthost: %+v", r)
	}
	if len(be.Messages()) != 2 {
		t.Errorf("%d messages", len(be.Messages()))
	}
	if e2.d.Stats().TLSFailures != 1 {
		t.Errorf("stats %+v", e2.d.Stats())
	}
}

func TestIPv6MX(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	be := &smtptest.Backend{}
	scfg, _, _ := smtptest.TLSConfigs()
	srv, err := smtpserver.New(smtpserver.Options{Hostname: "mx6.dest.test", Backend: be, TLSConfig: scfg})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dns := dnsxtest.NewServer(t,
		"dest.test. 300 IN MX 10 mx6.dest.test.",
		"mx6.dest.test. 300 IN AAAA ::1",
	)
	e := newDeliverer(t, port, dns, nil)
	res := byAddr(t, e.d.Deliver(ctxT(t), message("V6", "alice@dest.test"), body))
	if r := res["alice@dest.test"]; r.State != queue.Delivered {
		t.Fatalf("%+v\n%s", r, e.log.String())
	}
	if !strings.Contains(e.log.String(), "addr=[::1]:"+port) {
		t.Errorf("log:\n%s", e.log.String())
	}
}

func TestPerDomainVerify(t *testing.T) {
	scfg, ccfg, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	be := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.dest.test", Backend: be, TLSConfig: scfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(srv.Addr)
	dns := dnsxtest.NewServer(t, append(mxRecords,
		"other.test. 300 IN MX 10 mx.dest.test.")...)
	// The test certificate is for "localhost": dest.test is configured
	// with that name and gets verified TLS; other.test, at verify with
	// the MX host name, does not match and is deferred.
	e := newDeliverer(t, port, dns, func(o *delivery.Options) {
		o.TLS.Domains = map[string]smtpclient.Level{"dest.test": smtpclient.Secure, "other.test": smtpclient.Verify}
		o.TLS.ServerNames = map[string]string{"dest.test": "localhost"}
		o.TLS.TLSConfig = ccfg
	})
	res := byAddr(t, e.d.Deliver(ctxT(t), message("V1", "a@dest.test", "b@other.test"), body))
	if r := res["a@dest.test"]; r.State != queue.Delivered {
		t.Errorf("a: %+v", r)
	}
	if r := res["b@other.test"]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "454 4.7.0") {
		t.Errorf("b: %+v", r)
	}
	if !strings.Contains(e.log.String(), "cert=verified:localhost") {
		t.Errorf("log:\n%s", e.log.String())
	}
	if msgs := be.Messages(); len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0].Domain != "dest.test" {
		t.Errorf("%+v", msgs)
	}
}

func TestLocalUnknownMailbox(t *testing.T) {
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dns := dnsxtest.NewServer(t)
	e := newDeliverer(t, "25", dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
		o.Mailbox = func(addr string) (string, error) {
			if strings.HasPrefix(addr, "postmaster@") {
				return "alice", nil // an alias
			}
			if strings.HasPrefix(addr, "alice@") {
				return "alice", nil
			}
			return "", errors.New("no such user")
		}
	})
	res := byAddr(t, e.d.Deliver(ctxT(t), message("U1", "alice@local.test", "postmaster@local.test", "ghost@local.test"), body))
	if r := res["ghost@local.test"]; r.State != queue.Failed || !strings.HasPrefix(r.Reply, "550 5.1.1") {
		t.Errorf("ghost: %+v", r)
	}
	for _, a := range []string{"alice@local.test", "postmaster@local.test"} {
		if r := res[a]; r.State != queue.Delivered {
			t.Errorf("%s: %+v", a, r)
		}
	}
	// One copy for the mailbox that two recipients map to.
	if names, _ := store.List("alice"); len(names) != 1 {
		t.Errorf("alice has %v", names)
	}
	if len(dns.Queries()) != 0 {
		t.Errorf("DNS for local mail: %v", dns.Queries())
	}
}

func TestPostmasterWithoutDomain(t *testing.T) {
	store, err := maildir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dns := dnsxtest.NewServer(t)
	e := newDeliverer(t, "25", dns, func(o *delivery.Options) {
		o.LocalDomains = []string{"local.test"}
		o.Local = store
	})
	res := e.d.Deliver(ctxT(t), message("PM", "Postmaster"), body)
	if len(res) != 1 || res[0].State != queue.Delivered {
		t.Fatalf("%+v", res)
	}
	if names, _ := store.List("postmaster"); len(names) != 1 {
		t.Errorf("postmaster has %v", names)
	}
	// Without a local transport it cannot be delivered.
	e2 := newDeliverer(t, "25", dns, nil)
	if res := e2.d.Deliver(ctxT(t), message("PM2", "Postmaster"), body); len(res) != 1 || res[0].State != queue.Failed {
		t.Errorf("%+v", res)
	}
}
