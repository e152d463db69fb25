package smtpserver_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// benchConn is a lean client: it writes pipelined commands and reads the
// replies it is owed.
type benchConn struct {
	nc net.Conn
	br *bufio.Reader
}

func (c *benchConn) replies(b *testing.B, n int) {
	for range n {
		for {
			line, err := c.br.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) < 4 || (line[0] != '2' && line[0] != '3') {
				b.Fatalf("reply %q", line)
			}
			if line[3] == ' ' {
				break
			}
		}
	}
}

func (c *benchConn) send(b *testing.B, s string, replies int) {
	c.sendBytes(b, []byte(s), replies)
}

func (c *benchConn) sendBytes(b *testing.B, p []byte, replies int) {
	if _, err := c.nc.Write(p); err != nil {
		b.Fatal(err)
	}
	c.replies(b, replies)
}

func benchServer(b *testing.B) (addr string, clientTLS *tls.Config) {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		b.Fatal(err)
	}
	clientTLS.CurvePreferences = []tls.CurveID{tls.X25519}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: smtptest.Discard{}, TLSConfig: serverTLS})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return srv.Addr, clientTLS
}

// dialTLS connects, reads the greeting, says EHLO, STARTTLS, handshakes and
// says EHLO again (RFC 3207).
func dialTLS(b *testing.B, addr string, cfg *tls.Config) *benchConn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchConn{nc: nc, br: bufio.NewReader(nc)}
	c.replies(b, 1)
	c.send(b, "EHLO client.test\r\n", 1)
	c.send(b, "STARTTLS\r\n", 1)
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	c.send(b, "EHLO client.test\r\n", 1)
	return c
}

func message(size int) string {
	var sb strings.Builder
	sb.WriteString("Subject: bench\r\n\r\n")
	for sb.Len() < size {
		sb.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	return sb.String()
}

// BenchmarkSessionSTARTTLS is one whole session per iteration over
// loopback: connect, EHLO, STARTTLS (TLS 1.3, X25519, ECDSA P-256), EHLO,
// one pipelined 1 KiB message, QUIT. Client and server share the CPU.
func BenchmarkSessionSTARTTLS(b *testing.B) {
	addr, cfg := benchServer(b)
	tx := "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
	msg := message(1024) + ".\r\n"
	b.ReportAllocs()
	for b.Loop() {
		c := dialTLS(b, addr, cfg)
		c.send(b, tx, 3)
		c.send(b, msg, 1)
		c.send(b, "QUIT\r\n", 1)
		_ = c.nc.Close()
	}
}

// BenchmarkMessageReused is one message per iteration on a long TLS
// session (pipelined MAIL, RCPT, DATA; then the data), for 1 KiB and
// 100 KiB messages.
func BenchmarkMessageReused(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			addr, cfg := benchServer(b)
			c := dialTLS(b, addr, cfg)
			defer c.nc.Close()
			tx := []byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
			msg := []byte(message(size) + ".\r\n")
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				c.sendBytes(b, tx, 3)
				c.sendBytes(b, msg, 1)
			}
		})
	}
}

// BenchmarkTLSHandshake is the machine's ceiling for new TLS sessions: one
// full TLS 1.3 handshake per iteration, client and server in this process
// over an in-memory pipe (no SMTP, no sockets), ECDSA P-256 certificate,
// with each key-exchange group, and a resumed one (session ticket, with
// X25519). `petrel bench --msgs-per-conn 1` is judged against it.
func BenchmarkTLSHandshake(b *testing.B) {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		group  tls.CurveID
		resume bool
	}{
		{"X25519", tls.X25519, false},
		{"X25519MLKEM768", tls.X25519MLKEM768, false},
		{"P-256", tls.CurveP256, false},
		{"X25519-resumed", tls.X25519, true},
	} {
		b.Run(tt.name, func(b *testing.B) {
			cc := clientTLS.Clone()
			cc.CurvePreferences = []tls.CurveID{tt.group}
			cc.MinVersion = tls.VersionTLS13
			if tt.resume {
				cc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			sc := serverTLS.Clone()
			b.ReportAllocs()
			for b.Loop() {
				c1, c2 := net.Pipe()
				done := make(chan error, 1)
				go func() {
					s := tls.Server(c2, sc)
					err := s.Handshake()
					if err == nil && tt.resume {
						// Let the client read its session ticket.
						_, err = s.Write([]byte{0})
					}
					done <- err
				}()
				c := tls.Client(c1, cc)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				if tt.resume {
					if _, err := c.Read(make([]byte, 1)); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				_ = c1.Close()
				_ = c2.Close()
			}
		})
	}
}
