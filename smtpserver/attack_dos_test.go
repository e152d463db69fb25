package smtpserver_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// atkBody returns message data of exactly n octets (n >= 2) in CRLF lines
// of at most 101 octets.
func atkBody(n int) string {
	var b strings.Builder
	k, rem := n/100, n%100
	if rem == 1 {
		k--
		rem = 101
	}
	for range k {
		b.WriteString(strings.Repeat("a", 98) + "\r\n")
	}
	if rem > 0 {
		b.WriteString(strings.Repeat("b", rem-2) + "\r\n")
	}
	return b.String()
}

// TestAttackTooManyRecipients: S-SMTP-16/17. With MaxRecipients 100 (the
// RFC 5321 §4.5.3.1.8 minimum), 100 RCPTs are accepted, the 101st gets
// 452 4.5.3 (§4.5.3.1.10: not 552), and the transaction goes on with the
// 100.
func TestAttackTooManyRecipients(t *testing.T) {
	env := atkStart(t, smtpserver.Options{MaxRecipients: 100})
	c := atkGreeted(t, env.addr)
	c.ehlo()
	c.cmd("MAIL FROM:<a@example.org>", 250, "")
	var b strings.Builder
	for i := range 101 {
		fmt.Fprintf(&b, "RCPT TO:<r%d@example.org>\r\n", i)
	}
	c.send(b.String())
	for range 100 {
		c.expect(250, "2.1.5")
	}
	c.expect(452, "4.5.3")
	c.cmd("RCPT TO:<r101@example.org>", 452, "4.5.3")
	c.cmd("DATA", 354, "")
	c.send(atkMessage + ".\r\n")
	c.expect(250, "")
	c.cmd("QUIT", 221, "")
	env.stop()
	msgs := env.be.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 100 {
		t.Fatalf("want one message to 100 recipients, got %d messages", len(msgs))
	}
}

// TestAttackMessageSize: S-SIZE-01..03. Over Options.MaxMessageBytes a
// message is refused with 552 5.3.4, declared (MAIL SIZE=) or not, by DATA
// or BDAT; the backend stores nothing and the session goes on. A message
// of exactly the limit is accepted.
func TestAttackMessageSize(t *testing.T) {
	const limit = 64 << 10 // RFC 5321 §4.5.3.1.7 minimum
	tests := []struct {
		name string
		// run sends the transaction after EHLO/MAIL/RCPT and returns
		// the final reply.
		run    func(c *atkConn) atkReply
		stored bool
	}{
		{"DATA exactly the limit", func(c *atkConn) atkReply {
			c.cmd("DATA", 354, "")
			c.send(atkBody(limit) + ".\r\n")
			return c.expect(250, "")
		}, true},
		{"DATA one octet over", func(c *atkConn) atkReply {
			c.cmd("DATA", 354, "")
			c.send(atkBody(limit+1) + ".\r\n")
			return c.expect(552, "5.3.4")
		}, false},
		{"DATA 1 MiB", func(c *atkConn) atkReply {
			c.cmd("DATA", 354, "")
			c.send(atkBody(1<<20) + ".\r\n")
			return c.expect(552, "5.3.4")
		}, false},
		{"BDAT one chunk over", func(c *atkConn) atkReply {
			body := atkBody(limit + 1)
			c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			return c.expect(552, "5.3.4")
		}, false},
		{"BDAT chunks adding up to over", func(c *atkConn) atkReply {
			body := atkBody(limit/2 + 100)
			c.send(fmt.Sprintf("BDAT %d\r\n%sBDAT %d\r\n%sBDAT %d LAST\r\n%s", len(body), body, len(body), body, len(body), body))
			c.expect(250, "")
			c.expect(552, "5.3.4") // one reply per chunk
			return c.expect(552, "5.3.4")
		}, false},
		{"BDAT exactly the limit", func(c *atkConn) atkReply {
			body := atkBody(limit)
			c.send(fmt.Sprintf("BDAT %d\r\n%sBDAT 0 LAST\r\n", len(body), body))
			c.expect(250, "")
			return c.expect(250, "")
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := atkStart(t, smtpserver.Options{MaxMessageBytes: limit})
			c := atkGreeted(t, env.addr)
			r := c.ehlo()
			if !strings.Contains(strings.Join(r.lines, "\n"), fmt.Sprintf("SIZE %d", limit)) {
				t.Errorf("EHLO does not advertise SIZE %d: %v", limit, r)
			}
			c.cmd("MAIL FROM:<a@example.org>", 250, "")
			c.cmd("RCPT TO:<b@example.org>", 250, "")
			tt.run(c)
			c.cmd("NOOP", 250, "") // the session survives
			c.cmd("MAIL FROM:<a@example.org>", 250, "")
			c.cmd("RSET", 250, "")
			c.cmd("QUIT", 221, "")
			env.stop()
			if got := len(env.be.Messages()); tt.stored != (got == 1) || got > 1 {
				t.Fatalf("stored %d messages, want stored=%v", got, tt.stored)
			}
		})
	}

	t.Run("MAIL SIZE over the limit", func(t *testing.T) {
		env := atkStart(t, smtpserver.Options{MaxMessageBytes: limit})
		c := atkGreeted(t, env.addr)
		c.ehlo()
		c.cmd(fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", limit+1), 552, "5.3.4")
		c.cmd("MAIL FROM:<a@example.org> SIZE=99999999999999999999999", 501, "")
		c.cmd(fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", limit), 250, "")
	})
}

// TestAttackBDATSize: S-DOS-06. A chunk size the server cannot read, or
// one over any limit, is refused without the server allocating it; a
// malformed size closes the connection (421) rather than reading chunk
// data as commands, and the server goes on serving others.
func TestAttackBDATSize(t *testing.T) {
	t.Parallel()
	env := atkStart(t, smtpserver.Options{MaxMessageBytes: 64 << 10})

	alive := func(t *testing.T) {
		t.Helper()
		c := atkGreeted(t, env.addr)
		c.ehlo()
		c.cmd("NOOP", 250, "")
		c.cmd("QUIT", 221, "")
	}

	t.Run("20 digits", func(t *testing.T) {
		c := atkGreeted(t, env.addr)
		c.openTx()
		c.send("BDAT 99999999999999999999 LAST\r\n")
		r, err := c.readReply()
		if err != nil {
			t.Fatal(err)
		}
		if r.code/100 != 4 && r.code/100 != 5 {
			t.Fatalf("got %v, want a refusal", r)
		}
		_ = c.raw.Close()
		alive(t)
	})

	// Over the limit but readable: the server must read (and drop) the
	// chunk to stay in step, never allocate it. The client gives up.
	for _, size := range []string{"9223372036854775807", "65537", "4294967296"} {
		t.Run("readable "+size, func(t *testing.T) {
			c := atkGreeted(t, env.addr)
			c.openTx()
			c.send("BDAT " + size + " LAST\r\n" + atkMessage + atkSmuggled)
			c.silent(200 * time.Millisecond) // still inside the chunk
			_ = c.raw.Close()
			alive(t)
		})
	}

	for _, arg := range []string{
		"999999999999999999999", // 21 digits
		"abc", "-1", "+5", "0x10", "1e3", "", " 10", "10  LAST", "10 LASTX", "10 LAST extra", "10 last\x00",
	} {
		for _, inTx := range []bool{true, false} {
			t.Run(fmt.Sprintf("%q/tx=%v", arg, inTx), func(t *testing.T) {
				c := atkGreeted(t, env.addr)
				if inTx {
					c.openTx()
				} else {
					c.ehlo()
				}
				// What follows would be chunk data; a server that read it
				// as commands would run the smuggled transaction.
				c.send("BDAT " + arg + "\r\n" + atkSmuggled + ".\r\nQUIT\r\n")
				rs := c.repliesUntilClose()
				if len(rs) != 1 || rs[0].code != 421 {
					t.Fatalf("want one 421 and close, got %v", rs)
				}
			})
		}
	}
	alive(t)
	env.stop()
	env.checkNoSpoof(t, 0)
	if n := len(env.be.Messages()); n != 0 {
		t.Errorf("stored %d messages", n)
	}
}

// atkDrip writes s one byte every interval until it is done, the write
// fails or stop is closed.
func atkDrip(c *atkConn, s string, interval time.Duration, stop <-chan struct{}) {
	for i := 0; i < len(s); i++ {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		_ = c.raw.SetWriteDeadline(time.Now().Add(atkIO))
		if _, err := c.raw.Write([]byte{s[i]}); err != nil {
			return
		}
	}
}

// TestAttackSlowloris: S-DOS-03. A client dripping one byte of a command
// every 100 ms is cut off by CommandTimeout (500 ms), which bounds the
// whole line, not each read: disconnected well before 5 s, with 421 4.4.2.
func TestAttackSlowloris(t *testing.T) {
	t.Parallel()
	env := atkStart(t, smtpserver.Options{CommandTimeout: 500 * time.Millisecond})
	for _, tt := range []struct{ name, pre string }{
		{"first command", ""},
		{"after EHLO", "EHLO client.test.example\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := atkGreeted(t, env.addr)
			if tt.pre != "" {
				c.send(tt.pre)
				c.expect(250, "")
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				atkDrip(c, "NOOP "+strings.Repeat("z", 200)+"\r\n", 100*time.Millisecond, stop)
			}()
			defer func() { close(stop); wg.Wait() }()
			start := time.Now()
			rs := c.repliesUntilClose()
			took := time.Since(start)
			if took > 5*time.Second {
				t.Fatalf("still connected after %v", took)
			}
			// The 421 may be lost to the reset the server's close causes
			// (the dripped bytes after the deadline are never read).
			if len(rs) > 1 || len(rs) == 1 && (rs[0].code != 421 || rs[0].enh() != "4.4.2") {
				t.Errorf("want at most 421 4.4.2 before the close, got %v", rs)
			}
			t.Logf("disconnected after %v with %v", took.Round(time.Millisecond), rs)
		})
	}
}

// TestAttackIdleTimeout: S-DOS-03. An idle client gets 421 4.4.2 and is
// disconnected: waiting for a command, inside DATA, and inside a BDAT
// chunk; an interrupted message is not stored.
func TestAttackIdleTimeout(t *testing.T) {
	t.Parallel()
	env := atkStart(t, smtpserver.Options{CommandTimeout: 300 * time.Millisecond, DataTimeout: 300 * time.Millisecond})
	for _, tt := range []struct {
		name  string
		setup func(c *atkConn)
	}{
		{"before EHLO", func(*atkConn) {}},
		{"after EHLO", func(c *atkConn) { c.ehlo() }},
		{"in a transaction", func(c *atkConn) { c.openTx() }},
		{"in DATA", func(c *atkConn) {
			c.openTx()
			c.cmd("DATA", 354, "")
			c.send(atkMessage)
		}},
		{"in DATA mid-line", func(c *atkConn) {
			c.openTx()
			c.cmd("DATA", 354, "")
			c.send(atkMessage + "half a line")
		}},
		{"in a BDAT chunk", func(c *atkConn) {
			c.openTx()
			c.send("BDAT 1000 LAST\r\n" + atkMessage)
		}},
		{"between BDAT chunks", func(c *atkConn) {
			c.openTx()
			c.send(fmt.Sprintf("BDAT %d\r\n%s", len(atkMessage), atkMessage))
			c.expect(250, "")
		}},
		{"half a command", func(c *atkConn) { c.send("NOOP") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := atkGreeted(t, env.addr)
			tt.setup(c)
			start := time.Now()
			rs := c.repliesUntilClose()
			if len(rs) != 1 || rs[0].code != 421 || rs[0].enh() != "4.4.2" {
				t.Fatalf("want 421 4.4.2 and close, got %v", rs)
			}
			t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
		})
	}
	env.stop()
	if n := len(env.be.Messages()); n != 0 {
		t.Errorf("stored %d interrupted messages", n)
	}
}

// TestAttackSlowReader: S-DOS-03, the write side. A client that pipelines
// commands without ever reading the replies fills the socket buffers; the
// server must give up within its timeouts (replies are written under a
// deadline) instead of blocking forever in a write, holding the client's
// connection slot. With MaxConnsPerIP 1, the slot coming back while the
// attacker still holds its socket open shows the server gave up. Also
// inside TLS, where the handshake clears the connection's deadlines.
func TestAttackSlowReader(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		useTLS bool
		within time.Duration
	}{
		{false, 10 * time.Second},
		// The tight bound on the TLS close: TestAttackSlowReaderTLSClose.
		{true, 15 * time.Second},
	} {
		t.Run(fmt.Sprintf("TLS=%v", tt.useTLS), func(t *testing.T) {
			t.Parallel()
			took := atkSlowReader(t, tt.useTLS, tt.within)
			t.Logf("slot freed after %v", took.Round(time.Millisecond))
		})
	}
}

// TestAttackSlowReaderTLSClose: the close_notify (RFC 8314 §3.4) sent to
// a TLS client that never reads is bounded to 1 s. tls.Conn.Close sets its
// own 5 s write deadline, so a deadline set before it does not hold; this
// test found that (fixed in a860718: the socket is closed under it after
// 1 s). With the bug the slot came back only after >= 5.5 s; fixed ~2 s.
func TestAttackSlowReaderTLSClose(t *testing.T) {
	t.Parallel()
	atkSlowReader(t, true, 5*time.Second)
}

// atkSlowReader floods EHLOs (CommandTimeout 500 ms, MaxConnsPerIP 1)
// without reading, and returns how long until a new connection is
// greeted; it fails the test after within.
func atkSlowReader(t *testing.T, useTLS bool, within time.Duration) time.Duration {
	t.Helper()
	env := atkStart(t, smtpserver.Options{MaxConnsPerIP: 1, CommandTimeout: 500 * time.Millisecond})
	c := atkDial(t, env.addr)
	// A small receive window, so the server's writes block soon.
	if err := c.raw.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	c.expect(220, "")
	if useTLS {
		c.ehlo()
		c.cmd("STARTTLS", 220, "")
		if err := c.startTLS(env.clientTLS); err != nil {
			t.Fatal(err)
		}
	}
	c.ehlo()
	_ = c.nc.SetWriteDeadline(time.Time{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// EHLO: a long reply for a short command, to fill the buffers
		// fast.
		flood := []byte(strings.Repeat("EHLO x\r\n", 10000))
		for {
			// Blocks while the buffers are full; fails once the server
			// closes, or when the test closes the socket.
			if _, err := c.nc.Write(flood); err != nil {
				return
			}
		}
	}()
	defer func() { _ = c.raw.Close(); wg.Wait() }()
	start := time.Now()
	for !atkGreetedOK(env.addr) {
		if time.Since(start) > within {
			t.Fatalf("a client that never reads still holds its connection after %v (CommandTimeout 500 ms)", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestAttackSessionCap: S-DOS-03 asks for a cap on the whole, besides the
// per-command and per-read timeouts. DataTimeout bounds each read of
// message data, so before a860718 a client dripping one octet every 100 ms
// held the connection (and its MaxConnsPerIP/MaxConns slot) for ever. Now
// the message as a whole must arrive within DataTimeout plus one second
// per MinDataRate octets (Postfix's smtpd_min_data_rate): the drip is cut
// off within 5 s, here for DATA and for a BDAT chunk.
func TestAttackSessionCap(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, start string }{
		{"DATA", "DATA\r\n"},
		{"BDAT", "BDAT 100000 LAST\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			atkDripData(t, tt.start)
		})
	}

	// One-octet chunks, each written together with its BDAT line: the
	// chunk is already buffered when the data phase starts, so the
	// MinDataRate deadline (set on socket reads in data mode) is never
	// checked, and the command reads in between only have CommandTimeout.
	t.Run("BDAT 1-octet chunks", func(t *testing.T) {
		t.Parallel()
		env := atkStart(t, smtpserver.Options{CommandTimeout: 500 * time.Millisecond, DataTimeout: 500 * time.Millisecond})
		c := atkGreeted(t, env.addr)
		c.openTx()
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			if err := c.write("BDAT 1\r\nx"); err != nil {
				t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
				return
			}
			r, err := c.readReply()
			if err != nil || r.code != 250 {
				t.Logf("closed after %v with %v, %v", time.Since(start).Round(time.Millisecond), r, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("a client trickling 1-octet BDAT chunks (5 octets/s) is still connected after 5 s (10x DataTimeout)")
	})
}

// atkDripData opens a transaction, sends start (DATA or BDAT) and drips
// message data one octet every 100 ms; the server must cut it off within
// 5 s (DataTimeout 500 ms, MinDataRate default).
func atkDripData(t *testing.T, start string) {
	env := atkStart(t, smtpserver.Options{CommandTimeout: 500 * time.Millisecond, DataTimeout: 500 * time.Millisecond})
	c := atkGreeted(t, env.addr)
	c.openTx()
	c.send(start)
	if start == "DATA\r\n" {
		c.expect(354, "")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		atkDrip(c, strings.Repeat("slow\r\n", 1000), 100*time.Millisecond, stop)
	}()
	defer func() { close(stop); wg.Wait() }()
	got, closed := c.readAllRaw(5 * time.Second)
	if !closed {
		t.Fatalf("a client dripping message data is still connected after 5 s (10x DataTimeout)")
	}
	t.Logf("closed with %q", got)
	env.stop()
	if n := len(env.be.Messages()); n != 0 {
		t.Errorf("stored %d messages", n)
	}
}

// TestAttackConnectionFlood: S-DOS-01. Over MaxConnsPerIP or MaxConns a
// new connection gets 421 4.7.0 and is closed at once, never hangs;
// sessions already open keep working; a freed slot is usable again. On an
// implicit-TLS listener the refusal sends nothing in plaintext.
func TestAttackConnectionFlood(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts smtpserver.Options
	}{
		{"MaxConnsPerIP", smtpserver.Options{MaxConnsPerIP: 3}},
		{"MaxConns", smtpserver.Options{MaxConns: 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := atkStart(t, tt.opts)
			open := make([]*atkConn, 3)
			for i := range open {
				open[i] = atkGreeted(t, env.addr)
			}
			// The flood: 20 more at once.
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- atkRefused(env.addr)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			// An open session still works, a whole message through.
			c := open[0]
			c.openTx()
			c.cmd("DATA", 354, "")
			c.send(atkMessage + ".\r\n")
			c.expect(250, "")
			c.cmd("QUIT", 221, "")
			// Its slot comes back.
			deadline := time.Now().Add(atkIO)
			for {
				if atkGreetedOK(env.addr) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("a freed connection slot never became usable")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}

	t.Run("ConnLimiter shared by two listeners", func(t *testing.T) {
		lim := smtpserver.NewConnLimiter(0, 2)
		env1 := atkStart(t, smtpserver.Options{ConnLimiter: lim})
		env2 := atkStart(t, smtpserver.Options{ConnLimiter: lim})
		a := atkGreeted(t, env1.addr)
		b := atkGreeted(t, env2.addr)
		for _, addr := range []string{env1.addr, env2.addr} {
			if err := atkRefused(addr); err != nil {
				t.Error(err)
			}
		}
		a.ehlo()
		b.ehlo()
	})

	t.Run("implicit TLS", func(t *testing.T) {
		env := atkStart(t, smtpserver.Options{MaxConnsPerIP: 1, ImplicitTLS: true})
		c := atkDial(t, env.addr)
		if err := c.startTLS(env.clientTLS); err != nil {
			t.Fatal(err)
		}
		c.expect(220, "")
		c2 := atkDial(t, env.addr)
		got, closed := c2.readAllRaw(atkIO)
		if !closed || len(got) != 0 {
			t.Fatalf("over-limit implicit-TLS connection: got %q, closed=%v; want no plaintext and a close", got, closed)
		}
		c.ehlo()
	})
}

// atkRefused dials and expects "421 4.7.0" then the close, within atkIO.
func atkRefused(addr string) error {
	nc, err := net.DialTimeout("tcp", addr, atkIO)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := &atkConn{raw: nc, nc: nc, br: bufio.NewReader(nc)} // no t: not on the test goroutine
	r, err := c.readReply()
	if err != nil {
		return fmt.Errorf("over the limit: %v", err)
	}
	if r.code != 421 || r.enh() != "4.7.0" {
		return fmt.Errorf("over the limit: got %v, want 421 4.7.0", r)
	}
	_ = nc.SetReadDeadline(time.Now().Add(atkIO))
	if n, err := c.br.Read(make([]byte, 1)); n != 0 || !atkClosed(err) {
		return fmt.Errorf("over the limit: connection not closed after 421: %v", err)
	}
	return nil
}

// atkGreetedOK reports whether a new connection gets a 220 greeting.
func atkGreetedOK(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, atkIO)
	if err != nil {
		return false
	}
	defer nc.Close()
	c := &atkConn{raw: nc, nc: nc, br: bufio.NewReader(nc)}
	r, err := c.readReply()
	return err == nil && r.code == 220
}

// TestAttackHTTPVerbs: ALPACA / cross-protocol (requirements §5.2 and
// style.md §10.10). An HTTP request on the SMTP port is closed with no
// reply at all, so a browser or SSRF'd HTTP client cannot use the server,
// and nothing of the request is reflected.
func TestAttackHTTPVerbs(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	post := "POST / HTTP/1.1\r\nHost: mx.test.example:25\r\nContent-Type: text/plain\r\nContent-Length: 120\r\n\r\n" +
		"EHLO x\r\n" + atkSmuggled + ".\r\nQUIT\r\n"
	tests := []struct{ name, req string }{
		{"GET", "GET / HTTP/1.1\r\nHost: mx.test.example\r\n\r\n"},
		{"POST with SMTP body", post},
		{"CONNECT", "CONNECT mx.test.example:25 HTTP/1.1\r\nHost: mx.test.example:25\r\n\r\n"},
		{"PUT", "PUT /x HTTP/1.1\r\nHost: mx.test.example\r\n\r\n"},
		{"HEAD", "HEAD / HTTP/1.0\r\n\r\n"},
		{"OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: mx.test.example\r\n\r\n"},
		{"DELETE", "DELETE / HTTP/1.1\r\n\r\n"},
		{"TRACE", "TRACE / HTTP/1.1\r\n\r\n"},
		{"PATCH", "PATCH / HTTP/1.1\r\n\r\n"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"lower case get", "get / HTTP/1.1\r\n\r\n"},
		{"GET with a 600-octet URL", "GET /" + strings.Repeat("u", 600) + " HTTP/1.1\r\n\r\n"},
	}
	for _, tt := range tests {
		for _, afterEHLO := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/afterEHLO=%v", tt.name, afterEHLO), func(t *testing.T) {
				c := atkGreeted(t, env.addr)
				if afterEHLO {
					c.ehlo()
				}
				c.send(tt.req)
				got, closed := c.readAllRaw(atkIO)
				if !closed {
					t.Fatalf("connection still open after %v", atkIO)
				}
				if len(got) != 0 {
					t.Fatalf("server answered an HTTP request: %q", got)
				}
			})
		}
	}
	env.stop()
	env.checkNoSpoof(t, 0)
}

// TestAttackHTTPLongRequestLine: ALPACA / HTML-form cross-protocol attack.
// Before a860718 the HTTP check looked only at lines read whole: a request
// line over the 4096-octet read limit was just "line too long", the header
// lines cost one error each (well under MaxErrors), and the SMTP commands
// in the POST body ran, so a browser or an SSRF'd HTTP client could send
// mail from the victim's address. The verb of a refused line is now
// checked too (wire.ReadLine returns its start).
func TestAttackHTTPLongRequestLine(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	c := atkGreeted(t, env.addr)
	body := "EHLO x\r\n" + atkSmuggled + ".\r\nQUIT\r\n"
	c.send("POST /" + strings.Repeat("u", 5000) + " HTTP/1.1\r\nHost: mx.test.example:25\r\n" +
		"User-Agent: Mozilla/5.0\r\nAccept: */*\r\nOrigin: http://evil.example\r\n" +
		fmt.Sprintf("Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(body)) + body)
	got, closed := c.readAllRaw(atkIO)
	if !closed {
		t.Fatalf("connection still open after %v", atkIO)
	}
	env.stop()
	env.checkNoSpoof(t, 0)
	if len(got) != 0 {
		t.Errorf("server answered an HTTP request: %q", got)
	}
}

// TestAttackTooManyErrors: S-DOS-04. After MaxErrors error replies the
// server answers 421 4.7.0 and closes; whatever the client sends next is
// not executed.
func TestAttackTooManyErrors(t *testing.T) {
	const maxErrors = 5
	env := atkStart(t, smtpserver.Options{MaxErrors: maxErrors})
	for _, tt := range []struct {
		name string
		line string
		code int
	}{
		{"unknown command", "XYZZY", 500},
		{"bare LF", "NOOP\n", 500},
		{"bare CR", "NO\rOP", 500},
		{"RCPT without MAIL", "RCPT TO:<a@example.org>", 503},
		{"too long", "NOOP " + strings.Repeat("x", 600), 500},
		{"not implemented", "EXPN list", 502},
		{"bad MAIL", "MAIL FROM:<<>>", 501},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := atkGreeted(t, env.addr)
			c.ehlo()
			line := tt.line
			if !strings.HasSuffix(line, "\n") {
				line += "\r\n"
			}
			for range maxErrors - 1 {
				c.send(line)
				c.expect(tt.code, "")
			}
			c.send(line)
			rs := c.repliesUntilClose()
			if len(rs) != 2 || rs[0].code != tt.code || rs[1].code != 421 || rs[1].enh() != "4.7.0" {
				t.Fatalf("want [%d, 421 4.7.0] and close, got %v", tt.code, rs)
			}
			// The server has closed; anything more is not executed.
			_ = c.write("MAIL FROM:<spoof@victim.example>\r\n")
		})
	}
	env.stop()
	env.checkNoSpoof(t, 0)
}

// TestAttackJunkCommands: S-DOS-04 (command flooding) and S-DOS-03. A
// client that only idles with commands that always succeed must not hold a
// connection for ever: after 100 such commands with no message accepted
// (Postfix's smtpd_junk_command_limit) each one counts as an error, so the
// session ends with 421 4.7.0 after MaxErrors more. A client that delivers
// mail between its NOOPs is never cut off. Each unit is sent and answered
// in turn, up to 300.
func TestAttackJunkCommands(t *testing.T) {
	const maxErrors = 5
	const limit = 100 + maxErrors // junk limit, then MaxErrors errors
	env := atkStart(t, smtpserver.Options{MaxErrors: maxErrors})
	for _, tt := range []struct {
		name    string
		inTx    bool   // open a transaction first
		unit    string // one round of the flood
		replies int    // replies to one unit
		bug     string
	}{
		{name: "NOOP", unit: "NOOP\r\n", replies: 1},
		{name: "RSET", unit: "RSET\r\n", replies: 1},
		{name: "VRFY", unit: "VRFY postmaster\r\n", replies: 1},
		{name: "HELP", unit: "HELP\r\n", replies: 1},
		{name: "MAIL RSET", unit: "MAIL FROM:<a@example.org>\r\nRSET\r\n", replies: 2},
		{name: "EHLO", unit: "EHLO client.test.example\r\n", replies: 1},
		{name: "HELO", unit: "HELO client.test.example\r\n", replies: 1},
		{name: "MAIL EHLO", unit: "MAIL FROM:<a@example.org>\r\nEHLO client.test.example\r\n", replies: 2},
		{name: "BDAT 0", inTx: true, unit: "BDAT 0\r\n", replies: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.bug != "" {
				t.Skip("BUG: " + tt.bug)
			}
			c := atkGreeted(t, env.addr)
			if tt.inTx {
				c.openTx()
			} else {
				c.ehlo()
			}
			for i := 1; i <= 300; i++ {
				c.send(tt.unit)
				for j := 0; j < tt.replies; j++ {
					r, err := c.readReply()
					if err != nil {
						t.Fatalf("unit %d: %v", i, err)
					}
					if r.code == 421 {
						if r.enh() != "4.7.0" || i > limit {
							t.Errorf("unit %d: got %v, want 421 4.7.0 by unit %d", i, r, limit)
						}
						if rs := c.repliesUntilClose(); len(rs) != 0 {
							t.Errorf("replies after the 421: %v", rs)
						}
						t.Logf("closed at unit %d", i)
						return
					}
					if r.code/100 != 2 {
						t.Fatalf("unit %d: got %v", i, r)
					}
				}
			}
			t.Fatalf("300 units of %q answered, connection still open", tt.unit)
		})
	}

	t.Run("mail between the NOOPs", func(t *testing.T) {
		c := atkGreeted(t, env.addr)
		c.ehlo()
		for range 4 {
			c.send(strings.Repeat("NOOP\r\n", 90))
			for range 90 {
				c.expect(250, "2.0.0")
			}
			c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
			c.expect(250, "")
			c.expect(250, "")
			c.expect(354, "")
			c.send(atkMessage + ".\r\n")
			c.expect(250, "")
		}
		c.cmd("QUIT", 221, "")
	})
}

// TestAttackBDATRefusedLine: S-BDAT-02 / S-SMUG. A BDAT command on a line
// the server refuses (bare LF, bare CR, too long) announces a chunk whose
// size cannot be trusted; answering 500 and reading on would run the
// chunk's octets as commands (here a smuggled transaction). The server
// must close with 421 instead (fixed in a860718; before, a bare-LF BDAT
// line got 500 and the smuggled MAIL ran).
func TestAttackBDATRefusedLine(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	chunk := atkSmuggled + ".\r\n"
	n := len(chunk)
	for _, line := range []string{
		fmt.Sprintf("BDAT %d LAST\n", n),
		fmt.Sprintf("BDAT %d\n", n),
		fmt.Sprintf("bdat %d last\n", n),
		fmt.Sprintf("BDAT %d\rLAST\r\n", n),
		fmt.Sprintf("BDAT %d LAST%s\r\n", n, strings.Repeat(" ", 600)),
		fmt.Sprintf("BDAT %d LAST%s\r\n", n, strings.Repeat(" ", 5000)),
	} {
		for _, inTx := range []bool{true, false} {
			t.Run(fmt.Sprintf("%.20q/tx=%v", line, inTx), func(t *testing.T) {
				c := atkGreeted(t, env.addr)
				if inTx {
					c.openTx()
				} else {
					c.ehlo()
				}
				c.send(line + chunk + "QUIT\r\n")
				rs := c.repliesUntilClose()
				if len(rs) != 1 || rs[0].code != 421 {
					t.Fatalf("want one 421 and close, got %v", rs)
				}
			})
		}
	}
	env.stop()
	env.checkNoSpoof(t, 0)
	if k := len(env.be.Messages()); k != 0 {
		t.Errorf("stored %d messages", k)
	}
}

// TestAttackBackendPanic: a panic in Session.Data (a backend or filter
// bug a message can trigger) is contained to its connection, for DATA
// (recovered by conn.serve: 421, close) and for BDAT, whose Data runs in a
// goroutine of its own (recovered there since e13c555: 451 4.3.0). The
// reply does not leak the panic value, and the server goes on serving. The
// attack runs in a child process, so that a regression cannot take the
// rest of the package's tests down with it.
func TestAttackBackendPanic(t *testing.T) {
	t.Parallel()
	if mode := os.Getenv("PETREL_ATTACK_CHILD"); mode != "" {
		atkPanicChild(t, mode)
		return
	}
	for _, mode := range []string{"DATA", "BDAT"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAttackBackendPanic$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "PETREL_ATTACK_CHILD="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("a backend panic in %s: %v\n%s", mode, err, out)
			}
		})
	}
}

// atkPanicChild is the child of TestAttackBackendPanic: it sends one
// message whose Data panics and checks the reply and that the server still
// serves.
func atkPanicChild(t *testing.T, mode string) {
	be := &smtptest.Backend{DataErr: func() error { panic("secret-internal-path /var/db/x") }}
	env := atkStart(t, smtpserver.Options{Backend: be})
	c := atkGreeted(t, env.addr)
	c.openTx()
	if mode == "DATA" {
		c.cmd("DATA", 354, "")
		c.send(atkMessage + ".\r\n")
	} else {
		c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(atkMessage), atkMessage))
	}
	r, err := c.readReply()
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 421 && r.code != 451 {
		t.Errorf("got %v, want 421 or 451", r)
	}
	atkNoLeak(t, r)
	_ = c.raw.Close()
	c2 := atkGreeted(t, env.addr)
	c2.openTx()
	c2.cmd("QUIT", 221, "")
	env.stop()
	if n := len(be.Messages()); n != 0 {
		t.Errorf("stored %d messages", n)
	}
}
