package smtpclient_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpclient"
)

// FuzzClientSession feeds arbitrary server output to the client (greeting,
// EHLO reply, replies to a whole SendMail) over net.Pipe, in SMTP or in
// LMTP mode (RFC 2033: LHLO, one reply per accepted recipient after the
// data). Properties: no panic, no hang (bounded by the context), the
// client never writes a line that is not CRLF-terminated or carries a bare
// CR or LF (RFC 5321 §2.3.8), whatever the server says, and in LMTP it
// never says EHLO or HELO (RFC 2033 §4.1).
func FuzzClientSession(f *testing.F) {
	seeds := []string{
		"220 x ESMTP\r\n250-x\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
		"220 x\r\n502 no\r\n250 x\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n",
		"220 x\r\n250-x\r\n250 CHUNKING\r\n250 ok\r\n250 ok\r\n250 ok\r\n",
		"220 x\r\n250 x\r\n550 5.1.1 no\r\n",
		"220-x\r\n220 x\r\n250-x\r\n251 mixed\r\n",
		"220 x\r\n250 x\r\n250 2.1.0 ok\r\n452 4.5.3 later\r\n",
		"554 go away\r\n",
		"220 x\r\n250-x\r\n250 SIZE 10\r\n",
		"220 x\n250 x\n",
		"2",
		"",
	}
	lmtpSeeds := []string{
		// Both recipients delivered; one delivered, one over quota.
		"220 x LMTP\r\n250-x\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 b\r\n250 2.0.0 c\r\n221 bye\r\n",
		"220 x LMTP\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 b\r\n452 4.2.2 full\r\n",
		// One RCPT refused: one reply owed, and an excess one.
		"220 x LMTP\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n250-2.0.0 c\r\n250 2.0.0 c\r\n250 extra\r\n",
		// BDAT LAST; the connection ends after the first reply.
		"220 x LMTP\r\n250-x\r\n250-CHUNKING\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 b\r\n",
		// All refused, DATA answered 354 all the same; LHLO refused.
		"220 x LMTP\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n550 no\r\n550 no\r\n354 go\r\n",
		"220 x LMTP\r\n500 5.5.1 LHLO?\r\n",
		"220 x LMTP\r\n250 x\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n354 again\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
	}
	for _, s := range lmtpSeeds {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, script []byte, lmtp bool) {
		server, client := net.Pipe()
		written := &bytes.Buffer{}
		done := make(chan struct{})
		copied := make(chan struct{})
		// Read what the client writes, and answer with the script.
		go func() { _, _ = io.Copy(written, server); close(copied) }()
		go func() {
			defer close(done)
			_, _ = server.Write(script)
			_ = server.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		opts := smtpclient.Options{LocalName: "fuzz.example", TLS: smtpclient.None, NoQuickAck: true, LMTP: lmtp,
			Timeouts: smtpclient.Timeouts{Greeting: time.Second, Command: time.Second, DataStart: time.Second, DataBlock: time.Second, DataEnd: time.Second}}
		c, err := smtpclient.New(ctx, client, "fuzz.example", opts)
		if err == nil {
			_, _ = c.SendMail(ctx, smtpclient.Envelope{From: "a@example.org", To: []string{"b@example.org", "c@example.org"}},
				[]byte("Subject: x\n\n.dot\r\nbare\rcr\n"))
			_ = c.Quit(ctx)
		}
		_ = client.Close()
		<-done
		<-copied
		for _, line := range bytes.SplitAfter(written.Bytes(), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if !bytes.HasSuffix(line, []byte("\r\n")) && len(line) > 0 && line[len(line)-1] == '\n' {
				t.Fatalf("client wrote a bare LF line %q", line)
			}
			if i := bytes.IndexByte(line[:max(0, len(line)-2)], '\r'); i >= 0 {
				t.Fatalf("client wrote a bare CR in %q", line)
			}
			if lmtp && (bytes.HasPrefix(line, []byte("EHLO ")) || bytes.HasPrefix(line, []byte("HELO "))) {
				t.Fatalf("client in LMTP mode wrote %q", line)
			}
		}
	})
}
