// Package config holds the typed configuration of the petrel daemon
// (`petrel serve`), loaded from a TOML file.
//
// The defaults live in code ([Default]); a file only overlays the keys it
// names, and a key this package does not know is an error, so that a typo
// cannot silently leave a default in force. [Config.Validate] reports every
// problem at once, one line per problem, each naming its key.
//
// The limits follow RFC 5321 §4.5.3 (minimum sizes a server must accept) and
// §4.5.3.2 (timeouts). The MX listener never requires TLS: RFC 3207 §4 forbids
// that for a publicly referenced server, so there is deliberately no such key.
//
// The documentation of each field below is the user documentation of its key;
// example.toml in this directory lists every key with its default and is
// checked against [Default] by the tests.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the configuration of `petrel serve`. The TOML key of each field is
// given in its struct tag.
type Config struct {
	// Hostname is the name this server uses for itself in the SMTP greeting,
	// the EHLO reply and the Received header. It should be the name the MX
	// record points to, and the name in the TLS certificate.
	// Default: the system host name (os.Hostname), or "localhost" if that
	// fails or is not a valid DNS name.
	Hostname string `toml:"hostname"`

	// DataDir is the directory that holds the queue, the Maildirs and the
	// generated TLS certificate. It is created on first start.
	// Default: "./petrel-data".
	DataDir string `toml:"data_dir"`

	// Domains are the local domains: mail for these domains is delivered to
	// Maildirs under data_dir. They are compared case-insensitively and stored
	// lowercased without a trailing dot. Internationalized domains must be
	// written in their ASCII (xn--) form.
	// Default: ["localhost"].
	Domains []string `toml:"domains"`

	// TLS is the [tls] table: the server certificate.
	TLS TLS `toml:"tls"`

	// Listeners is the [listeners] table: the addresses to listen on.
	Listeners Listeners `toml:"listeners"`

	// Limits is the [limits] table: sizes and counts.
	Limits Limits `toml:"limits"`

	// Timeouts is the [timeouts] table.
	Timeouts Timeouts `toml:"timeouts"`

	// Auth is the [auth] table: SMTP AUTH on the submission listeners.
	Auth Auth `toml:"auth"`

	// Local is the [local] table: local recipients, aliases, LMTP.
	Local Local `toml:"local"`

	// Relay is the [relay] table: trusted networks.
	Relay Relay `toml:"relay"`

	// Delivery is the [delivery] table: how queued mail leaves.
	Delivery Delivery `toml:"delivery"`

	// Log is the [log] table.
	Log Log `toml:"log"`
}

// Delivery is the [delivery] table. Mail for the local domains goes to
// Maildir; other mail (from authenticated users only) goes by MX, or to a
// smarthost, with smtpclient's TLS levels (Postfix's meanings).
type Delivery struct {
	// TLS is the level for delivery by MX: "none", "may" (opportunistic:
	// STARTTLS when offered, else plaintext, and logged), "encrypt",
	// "verify" or "secure".
	// Default: "may".
	TLS string `toml:"tls"`

	// TLSPolicy overrides tls per destination domain, e.g.
	// { "example.org" = "verify" }. A mandatory level defers rather than
	// fall back to plaintext.
	// Default: {} (none).
	TLSPolicy map[string]string `toml:"tls_policy"`

	// Resolver is the DNS server ("host:port") for MX lookups instead of
	// the system's; it is also the validating resolver DANE will rely on.
	// Default: "" (the system's).
	Resolver string `toml:"resolver"`

	// Smarthost, when set ("host:port"), receives all non-local mail
	// instead of the MX hosts.
	// Default: "" (deliver by MX).
	Smarthost string `toml:"smarthost"`

	// SmarthostTLS is the level for the smarthost.
	// Default: "verify".
	SmarthostTLS string `toml:"smarthost_tls"`

	// SmarthostUser and SmarthostPasswordFile authenticate to the
	// smarthost (AUTH, only over verified TLS); the password is the file's
	// first line.
	// Default: "" (no AUTH).
	SmarthostUser         string `toml:"smarthost_user"`
	SmarthostPasswordFile string `toml:"smarthost_password_file"`

	// CAFile is a PEM file of extra trusted root certificates, added to
	// the system's, for the levels verify and secure (a smarthost or an
	// LMTP server with a private CA; Postfix's smtp_tls_CAfile).
	// Default: "" (the system's roots only).
	CAFile string `toml:"ca_file"`

	// Hold keeps accepted mail in the queue without delivering any of it
	// (for maintenance, or to queue a batch for a benchmark); start
	// without it to deliver what was held.
	// Default: false.
	Hold bool `toml:"hold"`

	// Port is the port of MX hosts. Change it only for test setups.
	// Default: 25.
	Port int `toml:"port"`
}

// Auth is the [auth] table. AUTH (RFC 4954, PLAIN and LOGIN) is offered on
// the submission and submissions listeners only, and only inside TLS;
// there is deliberately no key to allow it without TLS.
type Auth struct {
	// UsersFile is the users file that `petrel user add|passwd|del|list`
	// manages (argon2id or bcrypt hashes). It is read at start and again on
	// SIGHUP; a missing file means no users, and AUTH then always fails.
	// Default: "" (data_dir/users).
	UsersFile string `toml:"users_file"`
}

// TLS is the [tls] table.
type TLS struct {
	// Cert is the path of the PEM certificate chain, leaf first. It is
	// reloaded without a restart. Cert and key are both set or both empty.
	// Default: "" (a self-signed certificate is generated in data_dir/tls on
	// first start; peers that verify certificates will not accept it).
	Cert string `toml:"cert"`

	// Key is the path of the PEM private key that matches cert.
	// Default: "" (see cert).
	Key string `toml:"key"`
}

// Listeners is the [listeners] table. Each value is a "host:port" address
// as accepted by net.Listen; an empty host listens on all addresses, and an
// empty string disables that listener. At least one listener must be enabled.
type Listeners struct {
	// MX receives mail from other servers (port 25 in production). STARTTLS
	// is offered but never required (RFC 3207 §4).
	// Default: "127.0.0.1:2525".
	MX string `toml:"mx"`

	// Submission receives mail from users (port 587 in production, RFC 6409).
	// STARTTLS is required before authentication.
	// Default: "127.0.0.1:2587".
	Submission string `toml:"submission"`

	// Submissions receives mail from users over implicit TLS (port 465 in
	// production, RFC 8314).
	// Default: "127.0.0.1:2465".
	Submissions string `toml:"submissions"`
}

// Limits is the [limits] table.
type Limits struct {
	// MaxMessageSize is the largest message accepted, in bytes; it is
	// announced in the EHLO SIZE keyword (RFC 1870). It must be at least
	// 65536 (RFC 5321 §4.5.3.1.7).
	// Default: 36700160 (35 MiB).
	MaxMessageSize int64 `toml:"max_message_size"`

	// MaxRecipients is the largest number of RCPT TO commands accepted in one
	// transaction. It must be at least 100 (RFC 5321 §4.5.3.1.8).
	// Default: 1000.
	MaxRecipients int `toml:"max_recipients"`

	// MaxErrors is the number of failed commands after which a session is
	// closed with 421 (Postfix's smtpd_hard_error_limit).
	// Default: 20.
	MaxErrors int `toml:"max_errors"`

	// MaxConnections is the largest number of simultaneous connections over
	// all listeners.
	// Default: 1000.
	MaxConnections int `toml:"max_connections"`

	// MaxConnectionsPerIP is the largest number of simultaneous connections
	// from one IP address. It must not exceed max_connections.
	// Default: 20.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`

	// MaxTLSHandshakes is the largest number of TLS handshakes in progress at
	// once; it bounds the CPU an attacker can make the server spend.
	// Default: 64.
	MaxTLSHandshakes int `toml:"max_tls_handshakes"`
}

// Timeouts is the [timeouts] table. Each value is a Go duration string such
// as "30s", "5m" or "1h30m", and must be positive.
type Timeouts struct {
	// Command is how long the server waits for the next command
	// (RFC 5321 §4.5.3.2.7 asks for at least 5 minutes). It must be at
	// least 1s.
	// Default: "5m".
	Command Duration `toml:"command"`

	// Data is how long each read may take while a message is received with
	// DATA or BDAT.
	// Default: "3m".
	Data Duration `toml:"data"`

	// TLSHandshake is how long a TLS handshake may take.
	// Default: "30s".
	TLSHandshake Duration `toml:"tls_handshake"`

	// Shutdown is how long `petrel serve` waits for sessions to finish after
	// SIGINT or SIGTERM before it closes them.
	// Default: "30s".
	Shutdown Duration `toml:"shutdown"`
}

// Log is the [log] table.
type Log struct {
	// Level is the lowest level logged: "debug" (includes the SMTP protocol
	// trace, with AUTH payloads redacted), "info", "warn" or "error".
	// Default: "info".
	Level string `toml:"level"`

	// Format is the log format: "text" (logfmt-like key=value) or "json".
	// Default: "text".
	Format string `toml:"format"`

	// Pprof, when set ("127.0.0.1:6060"), serves Go's runtime profiles
	// (net/http/pprof: CPU, heap, goroutines) on that address, for
	// performance analysis. Keep it on loopback: anyone who reaches it can
	// read the process's memory statistics and stacks.
	// Default: "" (off).
	Pprof string `toml:"pprof"`
}

// Duration is a time.Duration written in TOML as a Go duration string
// ("5m", "30s").
type Duration struct {
	time.Duration
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a value such as \"30s\" or \"5m\")", text)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// Default returns the configuration used when no file is given. Each call
// returns a new value that the caller may modify.
func Default() Config {
	return Config{
		Hostname: defaultHostname(),
		DataDir:  "./petrel-data",
		Domains:  []string{"localhost"},
		Listeners: Listeners{
			MX:          "127.0.0.1:2525",
			Submission:  "127.0.0.1:2587",
			Submissions: "127.0.0.1:2465",
		},
		Limits: Limits{
			MaxMessageSize:      35 << 20,
			MaxRecipients:       1000,
			MaxErrors:           20,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			MaxTLSHandshakes:    64,
		},
		Timeouts: Timeouts{
			Command:      Duration{5 * time.Minute},
			Data:         Duration{3 * time.Minute},
			TLSHandshake: Duration{30 * time.Second},
			Shutdown:     Duration{30 * time.Second},
		},
		Local: Local{
			Recipients: "known",
			Mailboxes:  []string{},
			Aliases:    map[string]Targets{},
			LMTPTLS:    "none",

			DeliverOnAccept: true,
		},
		Relay: Relay{TrustedNetworks: []string{}},
		Delivery: Delivery{
			TLS:          "may",
			TLSPolicy:    map[string]string{},
			SmarthostTLS: "verify",
			Port:         25,
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
	}
}

func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	h = strings.TrimSuffix(h, ".")
	if checkDomain(h) != nil {
		return "localhost"
	}
	return h
}

// Load reads the TOML file at path over [Default], normalizes it (domains
// lowercased, without trailing dot, duplicates removed) and validates it.
//
// A syntax or type error is reported with its line (the error wraps a
// toml.ParseError; its ErrorWithPosition method shows the offending line).
// Keys this package does not know are errors. Validation problems are all
// reported at once, one line each, as by [Config.Validate]. On error the
// zero Config is returned.
func Load(path string) (Config, error) {
	c := Default()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", path, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		errs := make([]error, 0, len(keys))
		for _, k := range keys {
			errs = append(errs, fmt.Errorf("config: %s: unknown key %q", path, k.String()))
		}
		return Config{}, errors.Join(errs...)
	}
	c.normalize()
	if problems := c.problems(); len(problems) > 0 {
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = fmt.Errorf("config: %s: %w", path, p)
		}
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// normalize lowercases the local domains, strips a trailing dot and drops
// duplicates, keeping the first occurrence.
func (c *Config) normalize() {
	seen := make(map[string]bool, len(c.Domains))
	out := c.Domains[:0]
	for _, d := range c.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if seen[d] {
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	c.Domains = out
}
