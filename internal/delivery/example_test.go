package delivery_test

import (
	"context"
	"log"
	"log/slog"

	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtpclient"
)

// How the daemon wires the queue, local Maildirs and MX delivery together.
func Example() {
	ctx := context.Background()
	q, err := queue.Open("/var/lib/petrel/spool", queue.Options{})
	if err != nil {
		log.Fatal(err)
	}
	store, err := maildir.New("/var/lib/petrel/mail")
	if err != nil {
		log.Fatal(err)
	}
	resolver, err := dnsx.New("") // or --resolver HOST:PORT
	if err != nil {
		log.Fatal(err)
	}
	d, err := delivery.New(delivery.Options{
		LocalName:    "mx.example.org",
		LocalDomains: []string{"example.org"},
		Local:        store,
		Resolver:     resolver,
		TLS: delivery.TLSPolicy{
			// Default level may; one partner must verify.
			Domains: map[string]smtpclient.Level{"partner.example": smtpclient.Verify},
		},
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	loop := &delivery.Loop{Queue: q, Deliverer: d, ReportingMTA: "mx.example.org"}
	_ = loop.Run(ctx) // until ctx ends
}
