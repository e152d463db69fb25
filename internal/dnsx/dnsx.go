// Package dnsx finds the hosts that receive mail for a domain (RFC 5321
// §5.1): its MX records in preference order, or, without any, the domain
// itself (the "implicit MX"), and the null MX of RFC 7505 that says a domain
// receives no mail at all.
//
// The resolver is injected (a Resolver, usually a *net.Resolver) so that the
// CLI can point it at a chosen server (New) and tests at a fake one. The
// DNSSEC "authentic data" bit that DANE (RFC 7672) needs is not carried by
// net.Resolver; it comes with the DANE work, behind the same interface.
package dnsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
)

// Resolver is the part of *net.Resolver this package uses.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// New returns a resolver that sends every query to addr ("host:port", UDP
// and TCP), using Go's own DNS client. An empty addr returns
// net.DefaultResolver, which follows the system's configuration.
func New(addr string) (*net.Resolver, error) {
	if addr == "" {
		return net.DefaultResolver, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "53")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("dnsx: bad resolver address %q: want HOST:PORT", addr)
		}
	}
	var d net.Dialer
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}, nil
}

// ErrNullMX: the domain publishes a null MX (RFC 7505 §3: a single MX
// record "0 ."): it accepts no mail, and a sender must not try its A or
// AAAA records. Mail to it fails permanently (RFC 7505 §4.1).
var ErrNullMX = errors.New("dnsx: the domain publishes a null MX (RFC 7505): it accepts no mail")

// ErrNoHost: the domain has neither MX nor address records. The failure is
// permanent.
var ErrNoHost = errors.New("dnsx: the domain has no MX and no address records")

// Host is one host that receives mail for a domain.
type Host struct {
	// Name is the host name, without a trailing dot.
	Name string
	// Preference is the MX preference (lower first).
	Preference uint16
	// Implicit: the domain has no MX records, and Name is the domain
	// itself (RFC 5321 §5.1).
	Implicit bool
}

// MailHosts returns the hosts to try for mail to domain, in the order to try
// them: its MX hosts by preference (net.Resolver already shuffles equal
// preferences, as RFC 5321 §5.1 asks), or the domain itself when it has no
// MX records but has an address. It returns ErrNullMX for a null MX and
// ErrNoHost when the domain does not exist; other errors (a timeout, a
// SERVFAIL) are temporary and wrap the resolver's *net.DNSError.
func MailHosts(ctx context.Context, r Resolver, domain string) ([]Host, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if domain == "" {
		return nil, errors.New("dnsx: empty domain")
	}
	hosts, err := MX(ctx, r, domain)
	if err != nil {
		return nil, err
	}
	if len(hosts) > 0 {
		return hosts, nil
	}
	// No MX records: the domain itself is the implicit MX, if it has an
	// address.
	addrs, err := r.LookupIPAddr(ctx, domain+".")
	if err != nil {
		if IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s", ErrNoHost, domain)
		}
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoHost, domain)
	}
	return []Host{{Name: domain, Implicit: true}}, nil
}

// MX returns the domain's MX hosts in preference order; an empty list (and
// no error) when it has none. It returns ErrNullMX for a null MX. Null MX
// records mixed with real ones are ignored (RFC 7505 §3 says a domain with a
// null MX has no other MX records).
func MX(ctx context.Context, r Resolver, domain string) ([]Host, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	recs, err := r.LookupMX(ctx, domain+".")
	if err != nil && len(recs) == 0 {
		if IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var hosts []Host
	null := false
	seen := map[string]bool{}
	for _, mx := range recs {
		name := strings.TrimSuffix(strings.ToLower(mx.Host), ".")
		if name == "" {
			null = true
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		hosts = append(hosts, Host{Name: name, Preference: mx.Pref})
	}
	if len(hosts) == 0 && null {
		return nil, fmt.Errorf("%w: %s", ErrNullMX, domain)
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Preference < hosts[j].Preference })
	return hosts, nil
}

// IsNotFound reports whether err says the name does not exist or has no
// records of the type asked (NXDOMAIN or NODATA): a permanent answer, unlike
// a timeout or a server failure.
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
