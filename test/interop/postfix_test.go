package interop

import (
	"bytes"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/postfixtest"
)

// postfixDeliveryTimeout bounds the wait for Postfix to relay the message.
const postfixDeliveryTimeout = 60 * time.Second

// TestPostfixSTARTTLS uses Postfix as the sending MTA: a throw-away Postfix
// instance (internal/postfixtest) on loopback relays everything to Petrel's
// MX port with smtp_tls_security_level = encrypt, so it must use STARTTLS
// (RFC 3207) or defer the message. The message is injected into Postfix's
// own smtpd in plaintext with net/smtp, and must arrive in Petrel's Maildir
// over TLS: Petrel's Received field, then Postfix's, then the message byte
// for byte (postfixtest tells Postfix not to rewrite or add headers).
func TestPostfixSTARTTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	// Petrel's certificate as the CA file: Postfix then logs "Trusted TLS
	// connection" (encrypt does not require it).
	pf := postfixtest.Start(t, postfixtest.Config{
		RelayHost:   "[127.0.0.1]:" + Port(t, d.MX),
		RelayCAFile: d.CertFile(),
		MainCF:      map[string]string{"smtp_tls_security_level": "encrypt"},
	})

	msg := testMessage(t, "u6@localhost")
	if err := inject(pf.Addr, "a@example.org", "u6@localhost", msg); err != nil {
		t.Fatalf("injecting into Postfix at %s: %v", pf.Addr, err)
	}

	// Postfix's queue manager sends at once; a flush after a while covers a
	// deferred first attempt (postfixtest configures short backoff times).
	dir := d.Mailbox("u6")
	deadline := time.Now().Add(postfixDeliveryTimeout)
	nextFlush := time.Now().Add(5 * time.Second)
	for len(listFiles(dir)) == 0 && time.Now().Before(deadline) {
		if time.Now().After(nextFlush) {
			if out, err := pf.Command("flush"); err != nil {
				t.Logf("postfix flush: %v\n%s", err, out)
			}
			nextFlush = time.Now().Add(5 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := d.waitMessage(t, "u6", time.Second)

	// Petrel's Received field first, then Postfix's, then the message.
	field, rest, ok := splitHeaderField(got)
	if !ok {
		t.Fatalf("delivered file has no complete first header field:\n%s", quoteHead(got))
	}
	pfField, body, ok := splitHeaderField(rest)
	if !ok || !bytes.HasPrefix(pfField, []byte("Received: from ")) || !bytes.Contains(pfField, []byte("(Postfix)")) {
		t.Fatalf("want Postfix's Received field after Petrel's, got:\n%s", quoteHead(rest))
	}
	recv := checkDelivered(t, append(append([]byte{}, field...), body...), msg)
	t.Logf("Petrel's Received field:\n%sPostfix's:\n%s", recv, pfField)

	// postlogd writes the maillog a moment after the event; WaitLog fails
	// the test if status=sent never shows.
	log := pf.WaitLog(t, "status=sent", 10*time.Second)
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "TLS connection established") || strings.Contains(l, "status=") {
			t.Logf("Postfix: %s", l)
		}
	}
	if !strings.Contains(log, "TLS connection established to 127.0.0.1[127.0.0.1]:"+Port(t, d.MX)) {
		t.Errorf("Postfix's log does not show a TLS connection to Petrel")
	}
}

// inject sends msg to the SMTP server at addr in plaintext with net/smtp,
// which dot-stuffs it.
func inject(addr, from, to string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.localhost"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}
