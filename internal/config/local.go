package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/petrel-mta/petrel/smtp"
)

// Local is the [local] table: which recipients of the local domains exist,
// their aliases, and where their mail is stored. Mailboxes are per local
// part and shared by all local domains (as Postfix's local(8) with
// mydestination): alice@example.com and alice@example.org are one mailbox.
type Local struct {
	// Recipients says which local recipients are accepted at RCPT:
	// "known" accepts a local part that is a user of the users file (a
	// name without "@", or the whole address), one of mailboxes, an alias,
	// or postmaster (always, RFC 5321 §4.5.1), and refuses any other with
	// 550 5.1.1 at RCPT time, so that no bounce is ever sent for an unknown
	// user (Postfix's local_recipient_maps). "any" accepts every local part
	// (each gets its own Maildir, or the LMTP server decides at delivery).
	// Default: "known".
	Recipients string `toml:"recipients"`

	// Mailboxes are local parts that exist without being users (no
	// password, no AUTH): role addresses such as "abuse" or "info".
	// Default: [] (none).
	Mailboxes []string `toml:"mailboxes"`

	// Aliases rewrite a recipient to one or more others when the message
	// is accepted (Postfix's virtual_alias_maps): the key is a local part
	// ("sales", any local domain), an address of a local domain
	// ("sales@example.org") or a domain's catch-all ("@example.org"); the
	// value is an address or a list of them, where a bare local part means
	// that local part in the recipient's domain. A target may be another
	// alias (expanded up to 10 levels) or a remote address (forwarding).
	// The original recipient is kept as the ORCPT of the DSNs (RFC 3461).
	// Default: {} (none).
	Aliases map[string]Targets `toml:"aliases"`

	// CatchAll, when set, receives the mail for local parts of every local
	// domain that match nothing else: a local part or an address.
	// Default: "" (unknown recipients are refused).
	CatchAll string `toml:"catch_all"`

	// RecipientDelimiter, when set (e.g. "+"), makes alice+lists@ the
	// mailbox alice: the part from the delimiter on is ignored when the
	// recipient is looked up and delivered.
	// Default: "" (none).
	RecipientDelimiter string `toml:"recipient_delimiter"`

	// LMTP, when set, delivers local mail by LMTP (RFC 2033) to a message
	// store such as Dovecot instead of to Maildirs under data_dir:
	// "unix:/run/dovecot/lmtp" or "host:port". Recipients are given as
	// whole addresses after alias expansion; the LMTP server's reply for
	// each one decides its fate.
	// Default: "" (Maildirs).
	LMTP string `toml:"lmtp"`

	// LMTPTLS is the TLS level for LMTP over TCP (not used on a unix
	// socket).
	// Default: "none" (as Postfix's lmtp_tls_security_level).
	LMTPTLS string `toml:"lmtp_tls"`

	// DeliverOnAccept delivers a message whose recipients are all local
	// Maildir mailboxes while its client waits for the final reply: the
	// 250 comes once the message is fsynced in every Maildir, and it is
	// never queued (its body is written to disk once, not twice). A
	// message it cannot deliver so (a remote recipient, LMTP, a failure,
	// more than 1 MiB, --hold) is queued as usual. false queues every
	// message first.
	// Default: true.
	DeliverOnAccept bool `toml:"deliver_on_accept"`
}

// Relay is the [relay] table: who may send mail to non-local domains
// besides authenticated users.
type Relay struct {
	// TrustedNetworks are the client networks (CIDR prefixes or single
	// addresses) whose mail to any domain is accepted on the MX listener
	// without AUTH (Postfix's mynetworks). Loopback is not included unless
	// listed: a local proxy must not turn Petrel into an open relay. The
	// submission listeners require AUTH from everyone (RFC 6409 §4.3).
	// Default: [] (none).
	TrustedNetworks []string `toml:"trusted_networks"`
}

// Targets is the value of an alias: one address, or a list.
type Targets []string

// UnmarshalTOML implements toml.Unmarshaler: a string or an array of
// strings.
func (t *Targets) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*t = Targets{v}
		return nil
	case []any:
		out := make(Targets, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("alias target %v is not a string", e)
			}
			out = append(out, s)
		}
		*t = out
		return nil
	}
	return fmt.Errorf("alias value %v is neither a string nor an array of strings", v)
}

// TrustedPrefixes parses relay.trusted_networks (validated already).
func (r Relay) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(r.TrustedNetworks))
	for _, s := range r.TrustedNetworks {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, errors.New("write IPv4 networks in IPv4 form")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// LMTPAddr splits local.lmtp into a network ("unix" or "tcp") and an
// address; both are "" when LMTP is off.
func (l Local) LMTPAddr() (network, addr string) {
	switch {
	case l.LMTP == "":
		return "", ""
	case strings.HasPrefix(l.LMTP, "unix:"):
		return "unix", strings.TrimPrefix(l.LMTP, "unix:")
	}
	return "tcp", l.LMTP
}

// checkLocalPart reports whether s is a valid dot-string local part.
func checkLocalPart(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.Contains(s, "@") {
		return errors.New("a local part has no @")
	}
	if _, err := smtp.ParseMailbox(s+"@localhost", true); err != nil {
		return errors.New("not a valid local part")
	}
	return nil
}

// checkTarget reports whether s is a valid alias target: a local part or an
// address.
func checkTarget(s string) error {
	if !strings.Contains(s, "@") {
		return checkLocalPart(s)
	}
	if _, err := smtp.ParseMailbox(s, true); err != nil {
		return errors.New("not a valid address")
	}
	return nil
}

func (c *Config) localProblems() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	l := c.Local
	switch l.Recipients {
	case "known", "any":
	default:
		add("local.recipients", "%q is not one of \"known\", \"any\"", l.Recipients)
	}
	for i, m := range l.Mailboxes {
		if err := checkLocalPart(m); err != nil {
			add(fmt.Sprintf("local.mailboxes[%d]", i), "%q: %v", m, err)
		}
	}
	local := func(dom string) bool {
		return slices.Contains(c.Domains, strings.ToLower(strings.TrimSuffix(dom, ".")))
	}
	keys := make([]string, 0, len(l.Aliases))
	for k := range l.Aliases {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := fmt.Sprintf("local.aliases.%q", k)
		lp, dom, hasAt := strings.Cut(k, "@")
		switch {
		case !hasAt:
			if err := checkLocalPart(k); err != nil {
				add(key, "%v", err)
			}
		case lp == "":
			if !local(dom) {
				add(key, "a catch-all must be for one of the local domains")
			}
		default:
			if err := checkTarget(k); err != nil {
				add(key, "%v", err)
			} else if !local(dom) {
				add(key, "%q is not in a local domain", k)
			}
		}
		if len(l.Aliases[k]) == 0 {
			add(key, "needs at least one target")
		}
		for _, t := range l.Aliases[k] {
			if err := checkTarget(t); err != nil {
				add(key, "target %q: %v", t, err)
			}
		}
	}
	if l.CatchAll != "" {
		if err := checkTarget(l.CatchAll); err != nil {
			add("local.catch_all", "%q: %v", l.CatchAll, err)
		}
	}
	if d := l.RecipientDelimiter; d != "" && (len(d) != 1 || !strings.Contains("+-_=.", d)) {
		add("local.recipient_delimiter", "%q is not one of + - _ = .", d)
	}
	switch network, addr := l.LMTPAddr(); network {
	case "unix":
		if !filepath.IsAbs(addr) {
			add("local.lmtp", "%q: the socket path must be absolute (unix:/run/dovecot/lmtp)", l.LMTP)
		}
	case "tcp":
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			add("local.lmtp", "%q is neither unix:/path nor host:port", l.LMTP)
		}
	}
	if !isLevel(l.LMTPTLS) {
		add("local.lmtp_tls", "%q is not one of none, may, encrypt, verify, secure", l.LMTPTLS)
	}
	for i, s := range c.Relay.TrustedNetworks {
		key := fmt.Sprintf("relay.trusted_networks[%d]", i)
		p, err := parsePrefix(s)
		switch {
		case err != nil:
			add(key, "%q is not a network (192.0.2.0/24, 2001:db8::/48) or an address: %v", s, err)
		case p.Bits() == 0:
			add(key, "%q trusts every address: that would make Petrel an open relay", s)
		}
	}
	return errs
}
