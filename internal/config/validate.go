package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// RFC minimums that Validate enforces.
const (
	// minMessageSize is RFC 5321 §4.5.3.1.7: at least 64k octets of content.
	minMessageSize = 64 << 10
	// minRecipients is RFC 5321 §4.5.3.1.8: at least 100 recipients.
	minRecipients = 100
	// minCommandTimeout guards against a typo such as "5" (nanoseconds)
	// or "5ms" for "5m".
	minCommandTimeout = time.Second
)

// Validate checks c and returns every problem found, joined with
// errors.Join: one line per problem, each starting with the key it concerns,
// for example
//
//	limits.max_recipients: 50 is below the RFC 5321 minimum of 100
//
// It returns nil if c is usable. Validate does not modify c and does not
// touch the file system (a missing certificate file is reported when it is
// loaded). Domains are checked case-insensitively and may end with a dot.
func (c *Config) Validate() error {
	return errors.Join(c.problems()...)
}

func (c *Config) problems() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}

	switch {
	case c.Hostname == "":
		add("hostname", "must not be empty")
	default:
		if err := checkDomain(strings.TrimSuffix(c.Hostname, ".")); err != nil {
			add("hostname", "%q is not a valid host name: %v", c.Hostname, err)
		}
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	for i, d := range c.Domains {
		if err := checkDomain(strings.TrimSuffix(d, ".")); err != nil {
			add(fmt.Sprintf("domains[%d]", i), "%q is not a valid domain name: %v", d, err)
		}
	}

	switch {
	case c.TLS.Cert != "" && c.TLS.Key == "":
		add("tls.key", "must be set when tls.cert is set")
	case c.TLS.Cert == "" && c.TLS.Key != "":
		add("tls.cert", "must be set when tls.key is set")
	}

	errs = append(errs, c.Listeners.problems()...)

	l := c.Limits
	if l.MaxMessageSize < minMessageSize {
		add("limits.max_message_size", "%d is below the RFC 5321 minimum of %d", l.MaxMessageSize, minMessageSize)
	}
	if l.MaxRecipients < minRecipients {
		add("limits.max_recipients", "%d is below the RFC 5321 minimum of %d", l.MaxRecipients, minRecipients)
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"limits.max_errors", l.MaxErrors},
		{"limits.max_connections", l.MaxConnections},
		{"limits.max_connections_per_ip", l.MaxConnectionsPerIP},
		{"limits.max_tls_handshakes", l.MaxTLSHandshakes},
	} {
		if v.n < 1 {
			add(v.key, "must be at least 1, got %d", v.n)
		}
	}
	if l.MaxConnections >= 1 && l.MaxConnectionsPerIP > l.MaxConnections {
		add("limits.max_connections_per_ip", "%d exceeds limits.max_connections (%d)", l.MaxConnectionsPerIP, l.MaxConnections)
	}

	t := c.Timeouts
	if t.Command.Duration < minCommandTimeout {
		add("timeouts.command", "%v is below the minimum of %v", t.Command.Duration, minCommandTimeout)
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{
		{"timeouts.data", t.Data.Duration},
		{"timeouts.tls_handshake", t.TLSHandshake.Duration},
		{"timeouts.shutdown", t.Shutdown.Duration},
	} {
		if v.d <= 0 {
			add(v.key, "must be positive, got %v", v.d)
		}
	}

	errs = append(errs, c.localProblems()...)

	dl := c.Delivery
	for key, v := range map[string]string{"delivery.tls": dl.TLS, "delivery.smarthost_tls": dl.SmarthostTLS} {
		if !isLevel(v) {
			add(key, "%q is not one of none, may, encrypt, verify, secure", v)
		}
	}
	for d, v := range dl.TLSPolicy {
		if err := checkDomain(strings.TrimSuffix(d, ".")); err != nil {
			add("delivery.tls_policy", "%q is not a valid domain name: %v", d, err)
		}
		if !isLevel(v) {
			add("delivery.tls_policy", "%s: %q is not one of none, may, encrypt, verify, secure", d, v)
		}
	}
	for key, v := range map[string]string{"delivery.resolver": dl.Resolver, "delivery.smarthost": dl.Smarthost} {
		if v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			add(key, "%q is not host:port", v)
		}
	}
	if (dl.SmarthostUser == "") != (dl.SmarthostPasswordFile == "") {
		add("delivery.smarthost_user", "smarthost_user and smarthost_password_file go together")
	}
	if dl.Port < 1 || dl.Port > 65535 {
		add("delivery.port", "%d is not a port number", dl.Port)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of \"debug\", \"info\", \"warn\", \"error\"", c.Log.Level)
	}
	if c.Log.Pprof != "" {
		if _, port, err := net.SplitHostPort(c.Log.Pprof); err != nil || port == "" {
			add("log.pprof", "%q is not host:port", c.Log.Pprof)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of \"text\", \"json\"", c.Log.Format)
	}
	return errs
}

func isLevel(s string) bool {
	switch s {
	case "none", "may", "encrypt", "verify", "secure":
		return true
	}
	return false
}

// listener is one enabled listener address, split.
type listener struct {
	key, addr, host, port string
}

func (ls Listeners) problems() []error {
	var errs []error
	var ok []listener
	enabled := 0
	for _, l := range []listener{
		{key: "listeners.mx", addr: ls.MX},
		{key: "listeners.submission", addr: ls.Submission},
		{key: "listeners.submissions", addr: ls.Submissions},
	} {
		if l.addr == "" {
			continue
		}
		enabled++
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a host:port address: %v", l.key, l.addr, err))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
			errs = append(errs, fmt.Errorf("%s: port %q is not a number from 0 to 65535", l.key, port))
			continue
		}
		if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				if derr := checkDomain(host); derr != nil {
					errs = append(errs, fmt.Errorf("%s: host %q is neither an IP address nor a valid host name", l.key, host))
					continue
				}
			}
		}
		l.host, l.port = host, port
		for _, prev := range ok {
			if l.port != "0" && l.port == prev.port && sameHost(l.host, prev.host) {
				errs = append(errs, fmt.Errorf("%s: %q conflicts with %s (%q)", l.key, l.addr, prev.key, prev.addr))
			}
		}
		ok = append(ok, l)
	}
	if enabled == 0 {
		errs = append(errs, errors.New("listeners: every listener is disabled; set at least one of mx, submission, submissions"))
	}
	return errs
}

// sameHost reports whether listening on a and on b (with the same port)
// would collide. An empty host and "::" listen on every address (Go listens
// dual-stack); "0.0.0.0" on every IPv4 address.
func sameHost(a, b string) bool {
	if a == "" || a == "::" || b == "" || b == "::" {
		return true
	}
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.EqualFold(a, b)
	}
	pa, pb = pa.Unmap(), pb.Unmap()
	if pa.Is4() && pb.Is4() && (pa.IsUnspecified() || pb.IsUnspecified()) {
		return true
	}
	return pa == pb
}

// checkDomain reports whether s is a syntactically valid DNS host name in
// ASCII (RFC 1035 §2.3.1 with RFC 1123 §2.1 digits): dot-separated labels of
// letters, digits and hyphens, 1 to 63 octets each, not starting or ending
// with a hyphen, 253 octets in all. The last label must not be all digits, so
// that an IP address is not taken for a name. s must not end with a dot.
func checkDomain(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 octets")
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q is longer than 63 octets", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			switch {
			case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-':
			case b >= 0x80:
				return errors.New("not ASCII; write an internationalized name in its xn-- form")
			default:
				return fmt.Errorf("character %q is not allowed", b)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("the last label is all digits")
	}
	return nil
}
