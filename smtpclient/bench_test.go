package smtpclient_test

import (
	"context"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// BenchmarkSendMailReused is one 1 KiB message per iteration over one
// STARTTLS session (level encrypt) to a discarding Petrel server on
// loopback, with and without PIPELINING: the client's cost per message,
// including its check for unsolicited replies before each command group.
func BenchmarkSendMailReused(b *testing.B) {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: smtptest.Discard{}, TLSConfig: serverTLS})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	msg := []byte("Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 13))
	for _, pipelining := range []bool{true, false} {
		name := map[bool]string{true: "pipelining", false: "lockstep"}[pipelining]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			c, err := smtpclient.Dial(ctx, srv.Addr, smtpclient.Options{TLS: smtpclient.Encrypt, TLSConfig: clientTLS,
				LocalName: "client.test", NoPipelining: !pipelining})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			env := smtpclient.Envelope{From: "a@example.org", To: []string{"b@example.net"}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.SendMail(ctx, env, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
