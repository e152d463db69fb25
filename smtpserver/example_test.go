package smtpserver_test

import (
	"fmt"
	"log"
	"net/smtp"
	"strings"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// A server with STARTTLS and an in-memory backend, and a message sent to it
// over STARTTLS with the standard library's client.
func Example() {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		log.Fatal(err)
	}
	backend := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{
		Hostname:  "mx.example.org",
		Backend:   backend,
		TLSConfig: serverTLS,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	c, err := smtp.Dial(srv.Addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.StartTLS(clientTLS); err != nil {
		log.Fatal(err)
	}
	msg := "Subject: hello\r\n\r\nHello over TLS.\r\n"
	if err := c.Mail("alice@example.org"); err != nil {
		log.Fatal(err)
	}
	if err := c.Rcpt("bob@example.org"); err != nil {
		log.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprint(w, msg)
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	_ = c.Quit()

	m := backend.Messages()[0]
	fmt.Println(m.From, m.To, m.TLS)
	// net/smtp sends SMTPUTF8 when offered: RFC 6531's "UTF8SMTPS".
	fmt.Println(strings.Contains(m.Received, " with UTF8SMTPS id "))
	fmt.Printf("%q\n", m.Data)
	// Output:
	// alice@example.org [bob@example.org] true
	// true
	// "Subject: hello\r\n\r\nHello over TLS.\r\n"
}
