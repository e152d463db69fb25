//go:build linux

package smtpclient

// TCP_QUICKACK re-arming (internal/quickack): on while the client waits for
// the TLS handshake and the first replies inside TLS, off before and after,
// and not at all with Options.NoQuickAck. The timing it saves is measured
// against Postfix in postfix_test.go (logged, not asserted).

import (
	"context"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

func TestQuickAckRearming(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	starttls, err := smtptest.NewServer(smtpserver.Options{Backend: &smtptest.Backend{}, TLSConfig: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer starttls.Close()
	implicit, err := smtptest.NewServer(smtpserver.Options{Backend: &smtptest.Backend{}, TLSConfig: serverTLS, ImplicitTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer implicit.Close()

	for _, tc := range []struct {
		name       string
		addr       string
		opts       Options
		wantRearms bool
	}{
		{"STARTTLS", starttls.Addr, Options{TLS: Verify}, true},
		{"implicit", implicit.Addr, Options{TLS: Verify, ImplicitTLS: true}, true},
		{"plaintext", starttls.Addr, Options{TLS: None}, false},
		{"NoQuickAck", starttls.Addr, Options{TLS: Verify, NoQuickAck: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			opts := tc.opts
			opts.LocalName = "client.example"
			opts.ServerName = "localhost"
			opts.TLSConfig = clientTLS
			c, err := Dial(ctx, tc.addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.opts.NoQuickAck {
				if c.qa != nil {
					t.Fatal("NoQuickAck: the connection is wrapped all the same")
				}
			} else if c.qa == nil {
				t.Fatal("the connection is not wrapped in a quickack.Conn")
			}
			var n int64
			if c.qa != nil {
				n = c.qa.Rearms()
				if c.qa.Armed() {
					t.Error("still armed after Dial: the window must close after the first replies in TLS")
				}
			}
			if tc.wantRearms != (n > 0) {
				t.Errorf("%d re-arms after Dial, want some: %v", n, tc.wantRearms)
			}
			t.Logf("%d TCP_QUICKACK re-arms during the handshake and the EHLO inside TLS", n)
			// Later replies are read without re-arming.
			if _, err := c.SendMail(ctx, Envelope{From: "a@example.org", To: []string{"b@example.org"}}, []byte("Subject: x\r\n\r\ny\r\n")); err != nil {
				t.Fatal(err)
			}
			if c.qa != nil && c.qa.Rearms() != n {
				t.Errorf("re-arms went from %d to %d during the transaction", n, c.qa.Rearms())
			}
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}
