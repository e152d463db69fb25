package dnsx_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/dnsx/dnsxtest"
)

func resolver(t *testing.T, records ...string) (dnsx.Resolver, *dnsxtest.Server) {
	t.Helper()
	srv := dnsxtest.NewServer(t, records...)
	r, err := dnsx.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return r, srv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestMailHosts: RFC 5321 §5.1 (MX by preference, then the implicit MX)
// and RFC 7505 (null MX), requirement C-SMTP-03.
func TestMailHosts(t *testing.T) {
	r, srv := resolver(t,
		"example.test. 300 IN MX 20 mx2.example.test.",
		"example.test. 300 IN MX 10 MX1.example.test.",
		"example.test. 300 IN MX 30 mx1.example.test.", // duplicate host: tried once
		"mx1.example.test. 300 IN A 127.0.0.1",
		"implicit.test. 300 IN A 127.0.0.1",
		"null.test. 300 IN MX 0 .",
		"null.test. 300 IN A 127.0.0.1", // must not be used
		"txtonly.test. 300 IN TXT \"hello\"",
	)
	srv.ServFail("broken.test.")

	got, err := dnsx.MailHosts(ctx(t), r, "Example.Test.")
	if err != nil {
		t.Fatal(err)
	}
	want := []dnsx.Host{{Name: "mx1.example.test", Preference: 10}, {Name: "mx2.example.test", Preference: 20}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MX hosts %+v, want %+v", got, want)
	}

	got, err = dnsx.MailHosts(ctx(t), r, "implicit.test")
	if err != nil || len(got) != 1 || got[0] != (dnsx.Host{Name: "implicit.test", Implicit: true}) {
		t.Errorf("implicit MX: %+v %v", got, err)
	}

	if _, err := dnsx.MailHosts(ctx(t), r, "null.test"); !errors.Is(err, dnsx.ErrNullMX) {
		t.Errorf("null MX: %v, want ErrNullMX", err)
	}
	for _, d := range []string{"nowhere.test", "txtonly.test"} {
		if _, err := dnsx.MailHosts(ctx(t), r, d); !errors.Is(err, dnsx.ErrNoHost) {
			t.Errorf("%s: %v, want ErrNoHost", d, err)
		}
	}
	_, err = dnsx.MailHosts(ctx(t), r, "broken.test")
	if err == nil || errors.Is(err, dnsx.ErrNoHost) || errors.Is(err, dnsx.ErrNullMX) || dnsx.IsNotFound(err) {
		t.Errorf("SERVFAIL: %v, want a temporary error", err)
	}

	// MX alone: no fallback to the address.
	if hosts, err := dnsx.MX(ctx(t), r, "implicit.test"); err != nil || len(hosts) != 0 {
		t.Errorf("MX of a domain without MX: %v %v", hosts, err)
	}
}

func TestNewAddress(t *testing.T) {
	for _, a := range []string{"", "127.0.0.1:5353", "127.0.0.1", "::1", "[::1]:53"} {
		if _, err := dnsx.New(a); err != nil {
			t.Errorf("New(%q): %v", a, err)
		}
	}
}
