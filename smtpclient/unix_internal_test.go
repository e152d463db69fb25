//go:build linux

package smtpclient

// Over a unix socket (Options.Network "unix", for LMTP): no TCP_QUICKACK
// wrapping (there is no TCP), and the receive-queue check that catches
// replies sent while no command is outstanding (C-INJ-02) works there too:
// SIOCINQ counts a unix stream socket's unread octets as it does a TCP
// socket's.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestUnixSocketSession(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "smtpclient") // short: a socket path has 108 octets
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const unsolicited = "250 2.0.0 unsolicited\r\n"
	send := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(nc)
		_, _ = io.WriteString(nc, "220 fake.example LMTP\r\n")
		if l, err := r.ReadString('\n'); err != nil || l != "LHLO client.example\r\n" {
			t.Errorf("first command %q, %v", l, err)
			return
		}
		_, _ = io.WriteString(nc, "250-fake.example\r\n250 PIPELINING\r\n")
		<-send
		_, _ = io.WriteString(nc, unsolicited)
		_, _ = io.Copy(io.Discard, r)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, Options{LMTP: true, Network: "unix", LocalName: "client.example", TLS: May})
	if err != nil {
		t.Fatal(err)
	}
	if !c.unix || c.qa != nil || c.rawSys == nil {
		t.Errorf("unix %v, quickack.Conn %v, raw socket %v: want a unix socket, unwrapped, with its raw socket", c.unix, c.qa, c.rawSys)
	}
	if c.TLS() != nil || c.Fallback() != "" {
		t.Errorf("TLS %v, Fallback %q: want plaintext, and no fallback, at May over a unix socket", c.TLS(), c.Fallback())
	}
	close(send)
	deadline := time.Now().Add(10 * time.Second)
	for pendingInput(c.rawSys) != len(unsolicited) {
		if time.Now().After(deadline) {
			t.Fatalf("SIOCINQ says %d octets pending, want %d", pendingInput(c.rawSys), len(unsolicited))
		}
		time.Sleep(time.Millisecond)
	}
	var pe *ProtocolError
	if err := c.Noop(ctx); !errors.As(err, &pe) {
		t.Errorf("NOOP after an unsolicited reply: %v, want a ProtocolError", err)
	}
	c.Close()
	<-done
}
