package smtpserver_test

// Server lifecycle, limits, timeouts, backend errors and message data, all
// over real sockets on 127.0.0.1:0.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// Helpers shared by server_test.go, state_test.go, tls_test.go and
// transcript_test.go. Their names carry "engine" so that they do not clash
// with helpers of other test files of the package.

// engineHostname is the test server's name.
const engineHostname = "mx.example.test"

// startEngine starts a server on 127.0.0.1:0 with an in-memory backend,
// STARTTLS offered and a SIZE limit of 10485760; mod, when not nil, changes
// the options before the server starts. It returns the server (closed at
// the end of the test), its backend and a client TLS config that trusts it.
func startEngine(t testing.TB, mod func(*smtpserver.Options)) (*smtptest.Server, *smtptest.Backend, *tls.Config) {
	t.Helper()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	backend := &smtptest.Backend{}
	opts := smtpserver.Options{
		Hostname:        engineHostname,
		Backend:         backend,
		TLSConfig:       serverTLS,
		MaxMessageBytes: 10 << 20,
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := smtptest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, backend, clientTLS
}

// dialEngine connects to addr and reads the 220 greeting.
func dialEngine(t testing.TB, addr string) *smtptest.Client {
	t.Helper()
	c, err := smtptest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rep, err := c.ReadReply()
	if err != nil {
		t.Fatalf("greeting: %v (got %v)", err, rep)
	}
	if rep.Code != 220 {
		t.Fatalf("greeting: got %v, want 220", rep)
	}
	return c
}

// engineCmd sends line (nothing when line is empty) and reads the reply,
// whose last line must start with want ("250 2.1.0", "354 ").
func engineCmd(t testing.TB, c *smtptest.Client, line, want string) *smtptest.Reply {
	t.Helper()
	var rep *smtptest.Reply
	var err error
	if line == "" {
		rep, err = c.ReadReply()
	} else {
		rep, err = c.Cmd(line)
	}
	if err != nil {
		t.Fatalf("%q: %v (got %v)", line, err, rep)
	}
	if last := rep.Lines[len(rep.Lines)-1]; !strings.HasPrefix(last, want) {
		t.Fatalf("%q: got %q, want %q...", line, rep, want)
	}
	return rep
}

// engineEHLO sends EHLO and returns the extension keywords (the lines after
// the first).
func engineEHLO(t testing.TB, c *smtptest.Client, name string) []string {
	t.Helper()
	rep := engineCmd(t, c, "EHLO "+name, "250 ")
	return rep.Text()[1:]
}

// engineExpectClose checks that the server closes the connection without
// sending anything more.
func engineExpectClose(t testing.TB, c *smtptest.Client) {
	t.Helper()
	if err := c.ExpectClose(); err != nil {
		t.Fatal(err)
	}
}

// engineSend runs one transaction with DATA; body is sent as it is and must
// end in CRLF (the "." line is added). It returns DATA's final reply.
func engineSend(t testing.TB, c *smtptest.Client, from, to, body string) *smtptest.Reply {
	t.Helper()
	engineCmd(t, c, "MAIL FROM:<"+from+">", "250 ")
	engineCmd(t, c, "RCPT TO:<"+to+">", "250 ")
	engineCmd(t, c, "DATA", "354 ")
	if err := c.Write(body + ".\r\n"); err != nil {
		t.Fatal(err)
	}
	rep, err := c.ReadReply()
	if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	return rep
}

// waitListenerClosed dials addr until the connection is refused: the
// server has closed its listener, which Shutdown does first. Connections
// that still get through are closed at once. Bounded by 5 seconds.
func waitListenerClosed(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		_ = nc.Close()
	}
	t.Fatal("listener still accepting after 5s")
}

// TestShutdownIdle: Shutdown answers an idle client, whatever its state,
// with "421 4.3.2" and closes it (RFC 5321 §3.8: 421 before closing, S-SMTP-03
// exception), then returns nil.
func TestShutdownIdle(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *smtptest.Client, clientTLS *tls.Config)
	}{
		{"after greeting", func(*testing.T, *smtptest.Client, *tls.Config) {}},
		{"after EHLO", func(t *testing.T, c *smtptest.Client, _ *tls.Config) { engineEHLO(t, c, "client.example") }},
		{"in transaction", func(t *testing.T, c *smtptest.Client, _ *tls.Config) {
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
			engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
		}},
		{"inside TLS", func(t *testing.T, c *smtptest.Client, clientTLS *tls.Config) {
			engineCmd(t, c, "STARTTLS", "220 ")
			if _, err := c.StartTLS(clientTLS); err != nil {
				t.Fatal(err)
			}
			engineEHLO(t, c, "client.example")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, clientTLS := startEngine(t, nil)
			c := dialEngine(t, srv.Addr)
			tt.setup(t, c, clientTLS)

			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done <- srv.Shutdown(ctx)
			}()
			engineCmd(t, c, "", "421 4.3.2 ")
			engineExpectClose(t, c)
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v, want nil", err)
			}
			if nc, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
				_ = nc.Close()
				t.Error("listener still accepts after Shutdown")
			}
		})
	}
}

// TestShutdownDuringData: Shutdown lets a client inside DATA finish its
// message (250), and only then answers 421 4.3.2 and closes.
func TestShutdownDuringData(t *testing.T) {
	srv, backend, _ := startEngine(t, nil)
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
	engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
	engineCmd(t, c, "DATA", "354 ")
	if err := c.Write("Subject: in flight\r\n\r\nfirst half\r\n"); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	waitListenerClosed(t, srv.Addr)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a client is inside DATA", err)
	default:
	}

	if err := c.Write("second half\r\n.\r\n"); err != nil {
		t.Fatal(err)
	}
	engineCmd(t, c, "", "250 2.0.0 ")
	engineCmd(t, c, "", "421 4.3.2 ")
	engineExpectClose(t, c)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v, want nil", err)
	}
	msgs := backend.Messages()
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages, want 1", len(msgs))
	}
	if got, want := string(msgs[0].Data), "Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
}

// TestShutdownContextExpires: a client that never finishes its DATA is cut
// when Shutdown's context ends, and Shutdown returns the context's error.
func TestShutdownContextExpires(t *testing.T) {
	srv, backend, _ := startEngine(t, nil)
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")
	engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
	engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
	engineCmd(t, c, "DATA", "354 ")
	if err := c.Write("Subject: never ends\r\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want context.DeadlineExceeded", err)
	}
	engineExpectClose(t, c)
	if n := len(backend.Messages()); n != 0 {
		t.Fatalf("%d messages stored from a cut DATA", n)
	}
}

// TestClose: Close closes the listener and every connection at once, idle
// or inside DATA, with no reply.
func TestClose(t *testing.T) {
	srv, backend, clientTLS := startEngine(t, nil)
	idle := dialEngine(t, srv.Addr)
	engineEHLO(t, idle, "idle.example")
	inData := dialEngine(t, srv.Addr)
	engineEHLO(t, inData, "data.example")
	engineCmd(t, inData, "MAIL FROM:<a@client.example>", "250 ")
	engineCmd(t, inData, "RCPT TO:<b@mx.example.test>", "250 ")
	engineCmd(t, inData, "DATA", "354 ")
	if err := inData.Write("Subject: cut\r\n"); err != nil {
		t.Fatal(err)
	}
	inTLS := dialEngine(t, srv.Addr)
	engineCmd(t, inTLS, "STARTTLS", "220 ")
	if _, err := inTLS.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	engineEHLO(t, inTLS, "tls.example")

	// The embedded server's Close: smtptest.Server.Close runs at cleanup.
	if err := srv.Server.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, c := range []*smtptest.Client{idle, inData, inTLS} {
		engineExpectClose(t, c)
	}
	if nc, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		_ = nc.Close()
		t.Error("listener still accepts after Close")
	}
	if n := len(backend.Messages()); n != 0 {
		t.Fatalf("%d messages stored from a cut DATA", n)
	}
	if made, closed := backend.Sessions(); made != closed {
		t.Fatalf("sessions: %d made, %d closed", made, closed)
	}
}

// TestConnectionLimits: S-DOS-01 (RFC 5321 §4.3.2 421 reply): over
// MaxConnsPerIP or MaxConns a new connection gets "421 4.7.0" and is
// closed; the connections already there keep working, and once one of them
// ends a new one is accepted again.
func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*smtpserver.Options)
	}{
		{"MaxConnsPerIP", func(o *smtpserver.Options) { o.MaxConnsPerIP = 2 }},
		{"MaxConns", func(o *smtpserver.Options) { o.MaxConns = 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, _ := startEngine(t, tt.mod)
			first := dialEngine(t, srv.Addr)
			second := dialEngine(t, srv.Addr)

			third, err := smtptest.Dial(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer third.Close()
			engineCmd(t, third, "", "421 4.7.0 ")
			engineExpectClose(t, third)

			engineCmd(t, first, "NOOP", "250 ")
			engineCmd(t, second, "NOOP", "250 ")
			engineCmd(t, first, "QUIT", "221 ")
			engineExpectClose(t, first)

			// The server frees the slot just after closing the socket, so
			// a dial right after the EOF may still meet the limit: retry,
			// each attempt a full round trip, for at most 5 seconds.
			deadline := time.Now().Add(5 * time.Second)
			for {
				c, err := smtptest.Dial(srv.Addr)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := c.ReadReply()
				if err != nil {
					t.Fatal(err)
				}
				if rep.Code == 220 {
					engineCmd(t, c, "NOOP", "250 ")
					_ = c.Close()
					break
				}
				_ = c.Close()
				if rep.Code != 421 || time.Now().After(deadline) {
					t.Fatalf("after a connection ended: got %v, want 220", rep)
				}
			}
			engineCmd(t, second, "NOOP", "250 ")
		})
	}
}

// TestConnLimiterShared: S-DOS-01 across listeners: two Servers sharing
// one ConnLimiter enforce one bound, so the connection over it is refused
// with 421 4.7.0 on whichever listener it arrives.
func TestConnLimiterShared(t *testing.T) {
	limiter := smtpserver.NewConnLimiter(10, 2)
	share := func(o *smtpserver.Options) { o.ConnLimiter = limiter }
	mx, _, _ := startEngine(t, share)
	sub, _, _ := startEngine(t, share)
	dialEngine(t, mx.Addr)
	dialEngine(t, sub.Addr)
	for _, addr := range []string{mx.Addr, sub.Addr} {
		c, err := smtptest.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		engineCmd(t, c, "", "421 4.7.0 ")
		engineExpectClose(t, c)
		_ = c.Close()
	}
}

// TestCommandTimeout: S-DOS-03 (RFC 5321 §4.5.3.2.7): a client that sends
// no command within CommandTimeout gets "421 4.4.2" and the connection is
// closed, in every state.
func TestCommandTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name  string
		setup func(t *testing.T, c *smtptest.Client, clientTLS *tls.Config)
	}{
		{"after greeting", func(*testing.T, *smtptest.Client, *tls.Config) {}},
		{"after EHLO", func(t *testing.T, c *smtptest.Client, _ *tls.Config) { engineEHLO(t, c, "client.example") }},
		{"in transaction", func(t *testing.T, c *smtptest.Client, _ *tls.Config) {
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
		}},
		{"inside TLS", func(t *testing.T, c *smtptest.Client, clientTLS *tls.Config) {
			engineCmd(t, c, "STARTTLS", "220 ")
			if _, err := c.StartTLS(clientTLS); err != nil {
				t.Fatal(err)
			}
		}},
		{"half a command line", func(t *testing.T, c *smtptest.Client, _ *tls.Config) {
			if err := c.Write("NOO"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, clientTLS := startEngine(t, func(o *smtpserver.Options) { o.CommandTimeout = timeout })
			c := dialEngine(t, srv.Addr)
			tt.setup(t, c, clientTLS)
			start := time.Now()
			engineCmd(t, c, "", "421 4.4.2 ")
			engineExpectClose(t, c)
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("timeout took %v with CommandTimeout %v", d, timeout)
			}
		})
	}
}

// TestCommandTimeoutDrip: S-DOS-03 (slowloris): a command line dripped one
// octet at a time, each faster than CommandTimeout, is cut when
// CommandTimeout has passed since the wait for the line began; the octets
// do not extend it.
func TestCommandTimeoutDrip(t *testing.T) {
	const (
		timeout  = 300 * time.Millisecond
		interval = 40 * time.Millisecond
		octets   = 100 // 4 seconds of dripping
	)
	srv, _, _ := startEngine(t, func(o *smtpserver.Options) { o.CommandTimeout = timeout })
	c := dialEngine(t, srv.Addr)
	engineEHLO(t, c, "client.example")

	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		line := "NOOP " + strings.Repeat("x", octets)
		for i := 0; i < len(line); i++ {
			if _, err := c.Raw.Write([]byte{line[i]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	engineCmd(t, c, "", "421 4.4.2 ")
	elapsed := time.Since(start)
	engineExpectClose(t, c)
	if elapsed < timeout-50*time.Millisecond || elapsed > 2*time.Second {
		t.Fatalf("dripping client cut after %v, want about %v (the drip lasts %v)",
			elapsed, timeout, octets*interval)
	}
}

// TestMaxErrors: S-DOS-04: after MaxErrors error replies (4xx or 5xx, any
// command) the server answers 421 4.7.0 and closes; successful commands
// in between do not reset the count.
func TestMaxErrors(t *testing.T) {
	bad := []struct{ cmd, want string }{
		{"FOO", "500 5.5.1 "},
		{"RCPT TO:<b@mx.example.test>", "503 5.5.1 "},
		{"MAIL FROM:<not an address>", "501 5.5.4 "},
		{"DATA", "503 5.5.1 "},
		{"EXPN x", "502 5.5.1 "},
	}
	for _, max := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			t.Parallel()
			srv, _, _ := startEngine(t, func(o *smtpserver.Options) { o.MaxErrors = max })
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			for i := 0; i < max; i++ {
				b := bad[i%len(bad)]
				engineCmd(t, c, b.cmd, b.want)
				if i < max-1 {
					engineCmd(t, c, "NOOP", "250 ")
				}
			}
			engineCmd(t, c, "", "421 4.7.0 ")
			engineExpectClose(t, c)
		})
	}
}

// secretError is a backend error whose text must never reach the client.
const secretError = "xyzzy-backend-secret: disk /var/spool/petrel on fire"

// TestBackendErrors: style.md §10.9, one typed error→reply path: an
// *smtp.Error from the backend is the reply exactly; any other error is
// "451 4.3.0" and its text never reaches the client.
func TestBackendErrors(t *testing.T) {
	tests := []struct {
		name    string
		backend func(b *smtptest.Backend)
		useBDAT bool
		rcpt    string // want RCPT reply (full line, or prefix ending in a space)
		data    string // want reply to the end of data
	}{
		{
			name:    "Data plain error",
			backend: func(b *smtptest.Backend) { b.DataErr = func() error { return errors.New(secretError) } },
			rcpt:    "250 2.1.5 Recipient OK", data: "451 4.3.0 ",
		},
		{
			name:    "Data plain error BDAT",
			backend: func(b *smtptest.Backend) { b.DataErr = func() error { return errors.New(secretError) } },
			useBDAT: true,
			rcpt:    "250 2.1.5 Recipient OK", data: "451 4.3.0 ",
		},
		{
			name: "Data wrapped smtp.Error",
			backend: func(b *smtptest.Backend) {
				b.DataErr = func() error {
					return fmt.Errorf("queue: %w", &smtp.Error{Code: 452, Enhanced: smtp.E431SystemFull, Message: "Queue full"})
				}
			},
			rcpt: "250 2.1.5 Recipient OK", data: "452 4.3.1 Queue full",
		},
		{
			name: "Data smtp.Error BDAT",
			backend: func(b *smtptest.Backend) {
				b.DataErr = func() error { return &smtp.Error{Code: 554, Enhanced: smtp.E571DeliveryNotAuth, Message: "Spam"} }
			},
			useBDAT: true,
			rcpt:    "250 2.1.5 Recipient OK", data: "554 5.7.1 Spam",
		},
		{
			name: "Rcpt smtp.Error",
			backend: func(b *smtptest.Backend) {
				b.RejectRcpt = func(smtp.Path) error {
					return &smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user here"}
				}
			},
			rcpt: "550 5.1.1 No such user here",
		},
		{
			name:    "Rcpt plain error",
			backend: func(b *smtptest.Backend) { b.RejectRcpt = func(smtp.Path) error { return errors.New(secretError) } },
			rcpt:    "451 4.3.0 ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, func(o *smtpserver.Options) {
				tt.backend(o.Backend.(*smtptest.Backend))
			})
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
			replies := []*smtptest.Reply{engineCmd(t, c, "RCPT TO:<b@mx.example.test>", tt.rcpt)}
			if tt.data != "" {
				const body = "Subject: x\r\n\r\nbody\r\n"
				if tt.useBDAT {
					if err := c.Write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body)); err != nil {
						t.Fatal(err)
					}
					replies = append(replies, engineCmd(t, c, "", tt.data))
				} else {
					engineCmd(t, c, "DATA", "354 ")
					if err := c.Write(body + ".\r\n"); err != nil {
						t.Fatal(err)
					}
					replies = append(replies, engineCmd(t, c, "", tt.data))
				}
			}
			for i, want := range []string{tt.rcpt, tt.data}[:len(replies)] {
				got := replies[i].String()
				if !strings.HasSuffix(want, " ") && got != want {
					t.Errorf("got %q, want exactly %q", got, want)
				}
				if strings.Contains(got, "xyzzy") || strings.Contains(got, "spool") {
					t.Errorf("reply %q discloses the backend's error text", got)
				}
			}
			// The session goes on in step.
			engineCmd(t, c, "RSET", "250 ")
			engineCmd(t, c, "QUIT", "221 ")
			if n := len(backend.Messages()); n != 0 {
				t.Errorf("%d messages stored despite the error", n)
			}
		})
	}
}

// TestRecipients: S-SMTP-16 (RFC 5321 §4.5.3.1.8: "The minimum total number
// of recipients that MUST be buffered is 100 recipients") and S-SMTP-17
// (§4.5.3.1.10: too many recipients is 452, not 552): with MaxRecipients
// 100, 100 RCPTs are accepted, the 101st gets 452 4.5.3, and the message
// goes to the 100.
func TestRecipients(t *testing.T) {
	tests := []struct {
		name      string
		max       int // Options.MaxRecipients; 0 is the default (1000)
		rcpts     int
		wantStore int
	}{
		{"100 with the default limit", 0, 100, 100},
		{"100 with limit 100", 100, 100, 100},
		{"101 with limit 100", 100, 101, 100},
		{"1001 with the default limit", 0, 1001, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, func(o *smtpserver.Options) { o.MaxRecipients = tt.max })
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example>", "250 ")
			// Pipelined (RFC 2920): all RCPTs in one write.
			var b strings.Builder
			for i := range tt.rcpts {
				fmt.Fprintf(&b, "RCPT TO:<r%d@mx.example.test>\r\n", i)
			}
			if err := c.Write(b.String()); err != nil {
				t.Fatal(err)
			}
			for i := range tt.rcpts {
				want := "250 2.1.5 "
				if i >= tt.wantStore {
					want = "452 4.5.3 "
				}
				engineCmd(t, c, "", want)
			}
			engineCmd(t, c, "DATA", "354 ")
			if err := c.Write("Subject: many\r\n\r\n.\r\n"); err != nil {
				t.Fatal(err)
			}
			engineCmd(t, c, "", "250 2.0.0 ")
			msgs := backend.Messages()
			if len(msgs) != 1 || len(msgs[0].To) != tt.wantStore {
				t.Fatalf("stored %d messages, want 1 with %d recipients", len(msgs), tt.wantStore)
			}
			if got := msgs[0].To[tt.wantStore-1].String(); got != fmt.Sprintf("r%d@mx.example.test", tt.wantStore-1) {
				t.Errorf("last recipient %q", got)
			}
		})
	}
}

// TestMessageData: the stored message is byte-exact. DATA removes exactly
// the transparency dot (S-SMTP-15, RFC 5321 §4.5.2: "..x" is stored as
// ".x", ".." as ".", ". x" as " x"), and only <CRLF>.<CRLF> ends it; BDAT
// is opaque (RFC 3030 §2: no unstuffing). A 64 KiB message is accepted
// (S-SMTP-19, RFC 5321 §4.5.3.1.7: "at least 64K octets").
func TestMessageData(t *testing.T) {
	big := func() string {
		var b strings.Builder
		line := strings.Repeat("0123456789", 9) + "\r\n" // 92 octets
		for b.Len() < 64<<10 {
			b.WriteString(line)
		}
		return b.String()
	}()
	dots := "Subject: dots\r\n\r\n..x\r\n..\r\n. x\r\n...\r\nx.\r\n x\r\n.x.\r\nend\r\n"
	tests := []struct {
		name    string
		wire    string // what the client sends after DATA's 354 or as BDAT chunks
		bdat    bool
		want    string
		minSize int
	}{
		{"plain", "Subject: a\r\n\r\nhello\r\n", false, "Subject: a\r\n\r\nhello\r\n", 0},
		{"dot-stuffed lines", dots, false,
			"Subject: dots\r\n\r\n.x\r\n.\r\n x\r\n..\r\nx.\r\n x\r\nx.\r\nend\r\n", 0},
		{"empty body", "", false, "", 0},
		{"64 KiB", big, false, big, 64 << 10},
		{"BDAT keeps dots", dots, true, dots, 0},
		{"BDAT 64 KiB", big, true, big, 64 << 10},
		{"8-bit", "Subject: \xc3\xa9t\xc3\xa9\r\n\r\n\xe2\x82\xac\r\n", false, "Subject: \xc3\xa9t\xc3\xa9\r\n\r\n\xe2\x82\xac\r\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, backend, _ := startEngine(t, nil)
			c := dialEngine(t, srv.Addr)
			engineEHLO(t, c, "client.example")
			engineCmd(t, c, "MAIL FROM:<a@client.example> BODY=8BITMIME", "250 ")
			engineCmd(t, c, "RCPT TO:<b@mx.example.test>", "250 ")
			if tt.bdat {
				// Two chunks, split in the middle of a line.
				half := len(tt.wire) / 2
				msg := fmt.Sprintf("BDAT %d\r\n%sBDAT %d LAST\r\n%s",
					half, tt.wire[:half], len(tt.wire)-half, tt.wire[half:])
				if err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				engineCmd(t, c, "", fmt.Sprintf("250 2.0.0 %d octets", half))
			} else {
				engineCmd(t, c, "DATA", "354 ")
				if err := c.Write(tt.wire + ".\r\n"); err != nil {
					t.Fatal(err)
				}
			}
			engineCmd(t, c, "", "250 2.0.0 ")
			engineCmd(t, c, "QUIT", "221 ")
			engineExpectClose(t, c)
			msgs := backend.Messages()
			if len(msgs) != 1 {
				t.Fatalf("stored %d messages, want 1", len(msgs))
			}
			if got := string(msgs[0].Data); got != tt.want {
				t.Fatalf("stored %d octets %.200q..., want %d octets %.200q...", len(got), got, len(tt.want), tt.want)
			}
			if len(msgs[0].Data) < tt.minSize {
				t.Fatalf("message of %d octets, want at least %d", len(msgs[0].Data), tt.minSize)
			}
		})
	}
}

// TestNewSessionError: a Backend that refuses the connection with an
// *smtp.Error has that reply sent instead of the greeting, then the
// connection is closed; any other error becomes a generic 421 4.3.0 with
// none of its text.
func TestNewSessionError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"smtp.Error", &smtp.Error{Code: 554, Enhanced: smtp.E571DeliveryNotAuth, Message: "Go away"}, "554 5.7.1 Go away"},
		{"plain error", errors.New(secretError), "421 4.3.0 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, _ := startEngine(t, func(o *smtpserver.Options) {
				o.Backend = smtpserver.BackendFunc(func(context.Context, *smtpserver.Conn) (smtpserver.Session, error) {
					return nil, tt.err
				})
			})
			c, err := smtptest.Dial(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rep := engineCmd(t, c, "", tt.want)
			if strings.Contains(rep.String(), "xyzzy") {
				t.Errorf("reply %q discloses the backend's error text", rep)
			}
			engineExpectClose(t, c)
		})
	}
}
