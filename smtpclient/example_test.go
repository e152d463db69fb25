package smtpclient_test

import (
	"context"
	"fmt"
	"log"

	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// Sending a message with TLS required and the certificate checked against
// the configured name (level secure), then reading what the session got.
func Example() {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		log.Fatal(err)
	}
	backend := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.example.org", Backend: backend, TLSConfig: serverTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := smtpclient.Dial(ctx, srv.Addr, smtpclient.Options{
		LocalName:  "client.example.org",
		TLS:        smtpclient.Secure,
		ServerName: "localhost", // the name in the server's certificate
		TLSConfig:  clientTLS,   // trusts the test CA
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Quit(ctx)
	res, err := c.SendMail(ctx, smtpclient.Envelope{From: "alice@example.org", To: []string{"bob@example.org"}},
		[]byte("Subject: hi\n\n.a line that starts with a dot\n"))
	if err != nil {
		log.Fatal(err)
	}
	info := c.TLS()
	fmt.Println(res.Accepted, info.Verified, info.Group)
	fmt.Printf("%q\n", backend.Messages()[0].Data)
	// Output:
	// 1 true X25519MLKEM768
	// "Subject: hi\r\n\r\n.a line that starts with a dot\r\n"
}
