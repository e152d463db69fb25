package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/probe"
	"github.com/petrel-mta/petrel/smtp"
)

const checkHelp = `Usage: petrel check [flags] DOMAIN | HOST[:PORT]

Probes the STARTTLS side of SMTP servers: STARTTLS offered, TLS versions
1.0-1.3 each tried alone, the TLS 1.3 key-exchange groups X25519MLKEM768,
X25519, P-256 and P-384, the cipher suite a modern client gets, the
certificate chain and its validity for the host name, and the STARTTLS
command injection bug (CVE-2011-0411). Every test uses its own connection.

A name that has MX records is a mail domain: each of its MX hosts is probed
(--host probes the name itself). A name without MX records, a HOST:PORT or
an IP address is probed as one host.

Verdicts: FAIL for no STARTTLS, a failed handshake, TLS 1.0/1.1 accepted,
the injection bug, an unreachable host; WARN for what hurts only some
senders (an untrusted, mismatched or expiring certificate, no TLS 1.3, no
post-quantum group); --strict makes certificate problems FAIL.
Exit status: 0 every verdict OK or WARN; 1 some FAIL; 2 bad usage, or no
host could be reached.

Flags:
`

func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("petrel check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		asHost     = fs.Bool("host", false, "probe the name as a host even if it has MX records")
		port       = fs.Int("port", 25, "port `N` for MX hosts and for a host given without one")
		ehlo       = fs.String("ehlo", "", "EHLO `NAME` on every connection (default this host's name)")
		ca         = fs.String("ca", "", "PEM `FILE` of extra trusted root certificates, added to the system's")
		serverName = fs.String("servername", "", "`NAME` the certificate must be valid for, also sent as SNI (default the host name)")
		resolver   = fs.String("resolver", "", "DNS server `HOST:PORT` for MX and address lookups (default the system's)")
		timeout    = fs.Duration("timeout", 3*time.Minute, "give up after this `duration` in all")
		jsonOut    = fs.Bool("json", false, "print the report as JSON")
		strict     = fs.Bool("strict", false, "certificate problems FAIL instead of WARN (for submission servers, or domains with MTA-STS)")
	)
	fs.Usage = func() {}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel check: "+format+"\n", args...)
		return 2
	}
	// Flags may follow the target: parse, take the target, parse the rest.
	var targets []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stderr)
				fmt.Fprint(stderr, checkHelp)
				fs.PrintDefaults()
				return 0
			}
			return fail("%v; run 'petrel check -h' for the flags", err)
		}
		if fs.NArg() == 0 {
			break
		}
		targets = append(targets, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(targets) != 1 {
		return fail("give one DOMAIN or HOST[:PORT] to check (got %d); run 'petrel check -h' for help", len(targets))
	}
	if *port <= 0 || *port > 65535 {
		return fail("--port %d is not a TCP port", *port)
	}
	if *timeout <= 0 {
		return fail("--timeout must be positive, e.g. 30s or 2m")
	}
	opts := probe.Options{EHLO: *ehlo, ServerName: *serverName, Strict: *strict}
	if opts.EHLO == "" {
		opts.EHLO = localName()
	} else if !smtp.IsDomain(opts.EHLO, false) && !smtp.IsAddressLiteral(opts.EHLO) {
		return fail("--ehlo %q is not a domain name or address literal", *ehlo)
	}
	if *ca != "" {
		pool, err := loadRoots(*ca)
		if err != nil {
			return fail("--ca: %v", err)
		}
		opts.Roots = pool
	}
	res, err := dnsx.New(*resolver)
	if err != nil {
		return fail("--resolver: %v", err)
	}
	if *resolver != "" {
		opts.Dialer = &net.Dialer{Resolver: res}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	report := &probe.Report{Target: targets[0], Strict: *strict, Started: time.Now().UTC()}
	hosts, domain, err := checkTargets(ctx, res, targets[0], strconv.Itoa(*port), *asHost)
	if err != nil {
		return fail("%v", err)
	}
	report.Domain = domain
	if !*jsonOut {
		if domain != "" {
			fmt.Fprintf(stdout, "Checking %s: %d MX host(s)\n", domain, len(hosts))
		} else {
			fmt.Fprintf(stdout, "Checking %s\n", net.JoinHostPort(hosts[0].Name, hosts[0].Port))
		}
	}
	reached := 0
	for _, t := range hosts {
		h := probe.Host(ctx, t, opts)
		if h.Error == "" {
			reached++
		}
		report.Hosts = append(report.Hosts, h)
		if !*jsonOut {
			printHost(stdout, h)
		}
	}
	worst := report.Worst()
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return fail("writing the report: %v", err)
		}
	} else {
		printSummary(stdout, report)
	}
	switch {
	case ctx.Err() != nil:
		return fail("timed out after %v: raise --timeout", *timeout)
	case reached == 0:
		return fail("could not reach %s: %s", report.Hosts[0].Name, report.Hosts[0].Error)
	case worst == probe.FAIL:
		return 1
	}
	return 0
}

// checkTargets decides what to probe: one host (HOST:PORT, an IP literal,
// --host, or a name without MX records) or the MX hosts of a domain.
func checkTargets(ctx context.Context, res dnsx.Resolver, arg, port string, asHost bool) ([]probe.Target, string, error) {
	if host, p, err := net.SplitHostPort(arg); err == nil {
		if host == "" {
			return nil, "", fmt.Errorf("%q has no host", arg)
		}
		return []probe.Target{{Name: host, Port: p}}, "", nil
	}
	name := strings.TrimSuffix(strings.Trim(arg, "[]"), ".")
	if _, err := netip.ParseAddr(name); err == nil || asHost {
		return []probe.Target{{Name: name, Port: port}}, "", nil
	}
	if !smtp.IsDomain(name, false) {
		return nil, "", fmt.Errorf("%q is neither a domain, a HOST:PORT nor an IP address", arg)
	}
	mx, err := dnsx.MX(ctx, res, name)
	switch {
	case errors.Is(err, dnsx.ErrNullMX):
		return nil, "", fmt.Errorf("%s publishes a null MX (RFC 7505): it receives no mail; use --host to probe the host %s itself", name, name)
	case err != nil:
		return nil, "", fmt.Errorf("cannot look up the MX records of %s: %v; check --resolver, or use --host to probe %s directly", name, err, name)
	case len(mx) == 0:
		return []probe.Target{{Name: name, Port: port}}, "", nil
	}
	var ts []probe.Target
	for _, h := range mx {
		pref := h.Preference
		ts = append(ts, probe.Target{Name: h.Name, Port: port, Preference: &pref})
	}
	return ts, strings.ToLower(name), nil
}

// printHost prints one host: information lines indented, then one line
// per finding with its verdict.
func printHost(w io.Writer, h probe.HostReport) {
	fmt.Fprintln(w)
	title := h.Name
	if h.Address != "" {
		title += " [" + h.Address + "]"
	}
	if h.Preference != nil {
		title += fmt.Sprintf(" (MX preference %d)", *h.Preference)
	}
	fmt.Fprintln(w, title)
	if h.Greeting != "" {
		fmt.Fprintf(w, "      greeting: 220 %s\n", h.Greeting)
	}
	if h.TLS != nil {
		for i, c := range h.TLS.Certificates {
			fmt.Fprintf(w, "      certificate %d: %s; names: %s; issuer: %s; %s to %s (%d days left); %s\n", i, c.Subject,
				strings.Join(c.SANs, " "), c.Issuer, c.NotBefore.Format("2006-01-02"), c.NotAfter.Format("2006-01-02"), c.DaysLeft, c.PublicKey)
		}
	}
	if in := h.Injection; in != nil && in.Vulnerable {
		fmt.Fprintf(w, "      injection: %q, never sent inside TLS, was answered there: %s\n", in.Command, in.Reply)
	}
	for _, f := range h.Findings {
		fmt.Fprintf(w, "%-5s %s\n", f.Verdict, f.Message)
	}
}

func printSummary(w io.Writer, r *probe.Report) {
	n := map[probe.Verdict]int{}
	for _, f := range r.Findings {
		n[f.Verdict]++
	}
	for _, h := range r.Hosts {
		for _, f := range h.Findings {
			n[f.Verdict]++
		}
	}
	fmt.Fprintf(w, "\nResult: %s (%d FAIL, %d WARN, %d OK)\n", r.Worst(), n[probe.FAIL], n[probe.WARN], n[probe.OK])
}

// localName is this host's name for EHLO, or "localhost" when it is not a
// domain name.
func localName() string {
	h, err := os.Hostname()
	if err != nil || !smtp.IsDomain(h, false) {
		return "localhost"
	}
	return h
}
