package relay_test

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/internal/relay"
)

// TestLocalRecipients checks, against a real server, which local recipients
// exist in "known" mode (users, mailboxes, aliases, postmaster; unknown →
// 550 5.1.1 at RCPT, so that no bounce is ever sent for them) and what is
// queued for them: aliases and catch-alls expanded, the original recipient
// kept as ORCPT (RFC 3461 §4.2), duplicates merged.
func TestLocalRecipients(t *testing.T) {
	e := start(t, nil, func(o *relay.Options) {
		o.Local = relay.Local{
			Users:     passwords{"alice": "x", "bob@example.net": "y"},
			Mailboxes: []string{"Abuse"},
			Delimiter: "+",
			Aliases: map[string][]string{
				"sales":                {"alice", "bob"},    // bob: only at example.net
				"info@example.net":     {"alice@localhost"}, // one domain
				"team":                 {"sales", "abuse"},  // nested
				"fwd":                  {"friend@foreign.example"},
				"self":                 {"self", "alice"}, // names its own mailbox
				"loop1":                {"loop2"},
				"loop2":                {"loop3"},
				"loop3":                {"loop1"},
				"deep0":                {"deep1"},
				"deep1":                {"deep2"},
				"deep2":                {"deep3"},
				"deep3":                {"deep4"},
				"deep4":                {"deep5"},
				"deep5":                {"deep6"},
				"deep6":                {"deep7"},
				"deep7":                {"deep8"},
				"deep8":                {"deep9"},
				"deep9":                {"deep10"},
				"deep10":               {"deep11"},
				"deep11":               {"alice"},
				"Mixed":                {"alice"},
				"@example.net":         {"abuse"},
				"postmaster@localhost": {"alice"},
			},
		}
	})
	type rc struct{ addr, orcpt string }
	tests := []struct {
		rcpt   string
		code   int
		queued []rc
	}{
		{"<alice@localhost>", 250, []rc{{"alice@localhost", ""}}},
		{"<ALICE@LocalHost>", 250, []rc{{"ALICE@LocalHost", ""}}},
		{"<alice+lists@localhost>", 250, []rc{{"alice+lists@localhost", ""}}}, // delivered to alice
		{"<bob@localhost>", 550, nil},                                         // bob is a user at example.net only
		{"<bob@example.net>", 250, []rc{{"bob@example.net", ""}}},
		{"<abuse@localhost>", 250, []rc{{"abuse@localhost", ""}}},
		{"<nobody@localhost>", 550, nil},
		{"<nobody+x@localhost>", 550, nil},
		{"<sales@localhost>", 550, nil}, // bob@localhost does not exist: the alias fails as a whole
		{"<sales@example.net>", 250, []rc{{"alice@example.net", "rfc822;sales@example.net"}, {"bob@example.net", "rfc822;sales@example.net"}}},
		{"<info@example.net>", 250, []rc{{"alice@localhost", "rfc822;info@example.net"}}},
		{"<team@example.net>", 250, []rc{{"alice@example.net", "rfc822;team@example.net"}, {"bob@example.net", "rfc822;team@example.net"}, {"abuse@example.net", "rfc822;team@example.net"}}},
		{"<fwd@localhost>", 250, []rc{{"friend@foreign.example", "rfc822;fwd@localhost"}}},
		{"<self@localhost>", 250, []rc{{"self@localhost", ""}, {"alice@localhost", "rfc822;self@localhost"}}},
		{"<loop1@localhost>", 250, []rc{{"loop1@localhost", ""}}}, // a loop ends at the address that closes it
		{"<deep0@localhost>", 550, nil},
		{"<mixed@localhost>", 250, []rc{{"alice@localhost", "rfc822;mixed@localhost"}}},
		{"<random@example.net>", 250, []rc{{"abuse@example.net", "rfc822;random@example.net"}}}, // catch-all of example.net
		{"<random@localhost>", 550, nil}, // no catch-all for localhost
		{"<Postmaster>", 250, []rc{{"alice@localhost", "rfc822;postmaster@localhost"}}},
		{"<postmaster@example.net>", 250, []rc{{"postmaster@example.net", ""}}}, // always exists (RFC 5321 §4.5.1)
		{`<"nobody@foreign.example"@localhost>`, 550, nil},
		{"<nobody%foreign.example@localhost>", 550, nil},
	}
	c := dial(t, e.addr)
	c.cmd(250, "EHLO client.test")
	for _, tt := range tests {
		c.cmd(250, "MAIL FROM:<a@example.org>")
		if err := c.tp.PrintfLine("RCPT TO:%s", tt.rcpt); err != nil {
			t.Fatal(err)
		}
		code, msg, _ := c.tp.ReadResponse(0)
		if code != tt.code {
			t.Errorf("RCPT TO:%s: got %d %s, want %d", tt.rcpt, code, msg, tt.code)
		}
		if code == 550 && tt.rcpt != "<deep0@localhost>" && !strings.Contains(msg, "5.1.1 <") {
			t.Errorf("RCPT TO:%s: %q, want 5.1.1 naming the address", tt.rcpt, msg)
		}
		if code != 250 {
			c.cmd(250, "RSET")
			continue
		}
		c.cmd(354, "DATA")
		c.cmd(250, "Subject: local\r\n\r\nx\r\n.")
		m, _ := lastQueued(t, e.q)
		var got []rc
		for _, r := range m.Rcpts {
			got = append(got, rc{r.Addr, r.ORCPT})
		}
		if !reflect.DeepEqual(got, tt.queued) {
			t.Errorf("RCPT TO:%s queued %v, want %v", tt.rcpt, got, tt.queued)
		}
	}
	// Two recipients that reach one mailbox: queued once.
	c.cmd(250, "MAIL FROM:<a@example.org>")
	c.cmd(250, "RCPT TO:<alice@example.net>")
	c.cmd(250, "RCPT TO:<sales@example.net>")
	c.cmd(354, "DATA")
	c.cmd(250, "Subject: dup\r\n\r\nx\r\n.")
	if m, _ := lastQueued(t, e.q); len(m.Rcpts) != 2 {
		t.Errorf("queued %+v, want alice and bob once each", m.Rcpts)
	}
	c.cmd(221, "QUIT")
}

// TestSubmissionRequiresAuth: on a submission listener MAIL is refused with
// 530 5.7.0 until the client authenticated, for local recipients too and
// from a trusted network too (RFC 6409 §4.3, RFC 4954 §6; S-SUB-11).
func TestSubmissionRequiresAuth(t *testing.T) {
	e := start(t, nil, func(o *relay.Options) {
		o.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	c := dial(t, e.subAddr)
	c.cmd(250, "EHLO client.test")
	c.cmd(530, "MAIL FROM:<a@example.org>") // before TLS: STARTTLS first
	c.starttls(e.clientTLS)
	c.cmd(250, "EHLO client.test")
	if msg := c.cmd(530, "MAIL FROM:<a@example.org>"); !strings.HasPrefix(msg, "5.7.0 Authentication required") {
		t.Errorf("MAIL without AUTH: %q", msg)
	}
	c.cmd(503, "RCPT TO:<alice@localhost>")
	c.cmd(535, "AUTH PLAIN AGFsaWNlAHdyb25n") // \0alice\0wrong
	c.cmd(530, "MAIL FROM:<a@example.org>")
	c.cmd(235, "AUTH PLAIN AGFsaWNlAHNlY3JldC1wYXNzd29yZA==")
	c.cmd(250, "MAIL FROM:<alice@localhost>")
	c.cmd(250, "RCPT TO:<bob@localhost>")
	c.cmd(221, "QUIT")
}

// TestTrustedNetworks: a client in relay.trusted_networks relays on the MX
// listener without AUTH (Postfix's mynetworks); one outside does not, and
// by default nothing is trusted, not even loopback (S-RELAY-05).
func TestTrustedNetworks(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		code    int
	}{
		{"default: loopback not trusted", nil, 554},
		{"other network", []string{"192.0.2.0/24", "::1/128"}, 554},
		{"loopback trusted", []string{"127.0.0.0/8"}, 250},
		{"single address", []string{"127.0.0.1/32"}, 250},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, nil, func(o *relay.Options) {
				for _, s := range tt.trusted {
					o.Trusted = append(o.Trusted, netip.MustParsePrefix(s))
				}
			})
			c := dial(t, e.addr)
			c.cmd(250, "EHLO client.test")
			c.cmd(250, "MAIL FROM:<a@example.org>")
			c.cmd(tt.code, "RCPT TO:<friend@foreign.example>")
			c.cmd(554, "RCPT TO:<friend@[192.0.2.25]>") // never by address literal
			if tt.code != 250 {
				return
			}
			c.cmd(354, "DATA")
			c.cmd(250, "Subject: t\r\n\r\nx\r\n.")
			m, _ := lastQueued(t, e.q)
			if len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "friend@foreign.example" || m.Attrs[queue.AttrAuthUser] != "" {
				t.Errorf("queued %+v %v", m.Rcpts, m.Attrs)
			}
		})
	}
}
