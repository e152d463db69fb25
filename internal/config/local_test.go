package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// An alias value is a string or an array of strings; neither leaves an
// undecoded key behind.
func TestLoadLocal(t *testing.T) {
	path := writeConfig(t, `
domains = ["example.org", "example.net"]

[local]
mailboxes = ["abuse", "info"]
catch_all = "alice"
recipient_delimiter = "+"
lmtp = "unix:/run/dovecot/lmtp"

[local.aliases]
postmaster = "alice"
sales = ["alice", "bob@example.com"]
"@example.net" = "carol"

[relay]
trusted_networks = ["192.0.2.0/24", "2001:db8::1", "10.1.2.3/8"]
`)
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Targets{"postmaster": {"alice"}, "sales": {"alice", "bob@example.com"}, "@example.net": {"carol"}}
	if !reflect.DeepEqual(got.Local.Aliases, want) {
		t.Errorf("aliases %v, want %v", got.Local.Aliases, want)
	}
	if n, a := got.Local.LMTPAddr(); n != "unix" || a != "/run/dovecot/lmtp" {
		t.Errorf("LMTPAddr = %q %q", n, a)
	}
	prefixes := got.Relay.TrustedPrefixes()
	wantP := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("10.0.0.0/8")}
	if !reflect.DeepEqual(prefixes, wantP) {
		t.Errorf("trusted %v, want %v", prefixes, wantP)
	}
}

func TestValidateLocal(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings, one per problem
	}{
		{"recipients", func(c *Config) { c.Local.Recipients = "all" }, []string{`local.recipients: "all" is not one of`}},
		{"mailbox with @", func(c *Config) { c.Local.Mailboxes = []string{"ok", "a@b"} }, []string{`local.mailboxes[1]: "a@b": a local part has no @`}},
		{"mailbox syntax", func(c *Config) { c.Local.Mailboxes = []string{"a..b"} }, []string{`local.mailboxes[0]: "a..b": not a valid local part`}},
		{"alias for a foreign domain", func(c *Config) {
			c.Local.Aliases = map[string]Targets{"x@elsewhere.example": {"alice"}}
		}, []string{`local.aliases."x@elsewhere.example": "x@elsewhere.example" is not in a local domain`}},
		{"catch-all of a foreign domain", func(c *Config) {
			c.Local.Aliases = map[string]Targets{"@elsewhere.example": {"alice"}}
		}, []string{`a catch-all must be for one of the local domains`}},
		{"empty alias and bad target", func(c *Config) {
			c.Local.Aliases = map[string]Targets{"a": {}, "b": {"bad target"}}
		}, []string{`local.aliases."a": needs at least one target`, `local.aliases."b": target "bad target"`}},
		{"catch_all", func(c *Config) { c.Local.CatchAll = "@x" }, []string{`local.catch_all: "@x": not a valid address`}},
		{"delimiter", func(c *Config) { c.Local.RecipientDelimiter = "++" }, []string{`local.recipient_delimiter`}},
		{"lmtp relative socket", func(c *Config) { c.Local.LMTP = "unix:lmtp" }, []string{`local.lmtp: "unix:lmtp": the socket path must be absolute`}},
		{"lmtp not host:port", func(c *Config) { c.Local.LMTP = "dovecot" }, []string{`local.lmtp: "dovecot" is neither`}},
		{"lmtp_tls", func(c *Config) { c.Local.LMTPTLS = "dane" }, []string{`local.lmtp_tls: "dane"`}},
		// S-RELAY-05: nothing trusts the whole Internet by accident.
		{"trusted everything", func(c *Config) { c.Relay.TrustedNetworks = []string{"0.0.0.0/0", "::/0"} }, []string{
			`relay.trusted_networks[0]: "0.0.0.0/0" trusts every address`, `relay.trusted_networks[1]: "::/0" trusts every address`}},
		{"trusted garbage", func(c *Config) { c.Relay.TrustedNetworks = []string{"localhost", "::ffff:1.2.3.4/120"} }, []string{
			`relay.trusted_networks[0]: "localhost" is not a network`, `relay.trusted_networks[1]`}},
		{"valid", func(c *Config) {
			c.Domains = []string{"example.org"}
			c.Local.Aliases = map[string]Targets{"a": {"b", "c@remote.example"}, "@example.org": {"alice"}, "x@EXAMPLE.org": {"y"}}
			c.Local.LMTP = "127.0.0.1:24"
			c.Relay.TrustedNetworks = []string{"127.0.0.1"}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			problems := c.problems()
			if len(problems) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d", len(problems), problems, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(problems[i].Error(), w) {
					t.Errorf("problem %d %q does not contain %q", i, problems[i], w)
				}
			}
		})
	}
}
