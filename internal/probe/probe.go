// Package probe examines the STARTTLS side of an SMTP server, the way a
// postmaster would with openssl s_client and a checklist: it is the library
// behind `petrel check`.
//
// For one server it finds the greeting and whether STARTTLS is offered
// (RFC 3207), which TLS versions are accepted (1.0 and 1.1 must not be: RFC
// 8996, RFC 8997; 1.2 must and 1.3 should be: RFC 9325 §3.1.1), which
// key-exchange groups TLS 1.3 accepts (the hybrid post-quantum
// X25519MLKEM768 among them), the cipher suite a modern client gets, the
// certificate chain and its PKIX validity for the server's name (RFC 6125,
// RFC 7817), and whether the server has the STARTTLS plaintext command
// injection bug (CVE-2011-0411: commands pipelined behind STARTTLS executed
// inside TLS; requirement S-INJ-01).
//
// Every test runs on its own fresh TCP connection, with the same EHLO name,
// one after the other (a server that limits connections per client is not
// hammered). The results go into a Report (JSON-tagged), with one Finding
// per check and a verdict (OK, WARN, FAIL) decided by the policy in
// verdict.go. The Report has places for the MTA-STS (RFC 8461) and DANE
// (RFC 7672) results that later work adds.
package probe

import (
	"context"
	"crypto/x509"
	"net"
	"time"
)

// Options configure a probe.
type Options struct {
	// EHLO is the name sent with EHLO on every connection; default
	// "localhost".
	EHLO string
	// Roots are the trusted roots for the PKIX check; nil means the
	// system's.
	Roots *x509.CertPool
	// ServerName, when set, is the name the certificate is checked against
	// and sent as SNI, instead of the target's name.
	ServerName string
	// Strict makes certificate problems (not PKIX-valid for the name,
	// expiring soon) and TLS 1.0/1.1 acceptance FAIL instead of WARN; see
	// verdict.go.
	Strict bool
	// Timeout bounds each probe connection, from connect to close;
	// default 30 s.
	Timeout time.Duration
	// InjectionWait is how long the injection test listens inside TLS for
	// an unsolicited reply; default 1.5 s.
	InjectionWait time.Duration
	// Dialer makes the TCP connections; nil is a net.Dialer. Give it a
	// Resolver to resolve host names with a chosen DNS server.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// Now is the clock for certificate validity; nil is time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.EHLO == "" {
		o.EHLO = "localhost"
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.InjectionWait == 0 {
		o.InjectionWait = 1500 * time.Millisecond
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Verdict grades a finding.
type Verdict string

// Verdicts, best first.
const (
	OK   Verdict = "OK"
	WARN Verdict = "WARN"
	FAIL Verdict = "FAIL"
)

func (v Verdict) rank() int {
	switch v {
	case WARN:
		return 1
	case FAIL:
		return 2
	}
	return 0
}

// Finding is one graded result.
type Finding struct {
	Verdict Verdict `json:"verdict"`
	// Check names the check: "starttls", "tls-version", "group",
	// "cipher", "certificate", "pkix", "injection", "connect".
	Check   string `json:"check"`
	Message string `json:"message"`
}

// Report is the result of `petrel check`: one HostReport per server
// probed.
type Report struct {
	// Target is what was asked for: a domain, a host, or host:port.
	Target string `json:"target"`
	// Domain is set when Target was taken as a mail domain and its MX
	// hosts were probed.
	Domain string `json:"domain,omitempty"`
	// Strict: certificate problems are failures (Options.Strict).
	Strict bool `json:"strict"`
	// Started is when the probe began.
	Started time.Time `json:"started"`
	// Hosts are the servers probed, in MX preference order.
	Hosts []HostReport `json:"hosts"`
	// Findings about the domain as a whole (for example, no MX records).
	Findings []Finding `json:"findings,omitempty"`
	// MTASTS is the domain's MTA-STS policy check (RFC 8461); nil until
	// that check exists.
	MTASTS *PolicyCheck `json:"mta_sts,omitempty"`
}

// PolicyCheck is the result of a transport-security policy check (MTA-STS
// for a domain, DANE for a host). Reserved: the checks come with the
// MTA-STS and DANE work, which will add what they need here.
type PolicyCheck struct {
	// Found: the domain or host publishes a policy.
	Found bool `json:"found"`
	// Mode is the policy's mode ("enforce", "testing", "none" for
	// MTA-STS; "dane-only" style summaries for DANE).
	Mode string `json:"mode,omitempty"`
	// Valid: the server satisfies the policy.
	Valid    bool      `json:"valid"`
	Detail   string    `json:"detail,omitempty"`
	Findings []Finding `json:"findings,omitempty"`
}

// HostReport is what was found about one SMTP server.
type HostReport struct {
	// Name is the host name (an MX host, or the host given) or IP literal.
	Name string `json:"name"`
	// Preference is the MX preference when Name came from an MX record.
	Preference *uint16 `json:"preference,omitempty"`
	// Address is the "ip:port" probed.
	Address string `json:"address,omitempty"`
	// Error says why the host could not be probed at all.
	Error string `json:"error,omitempty"`
	// Greeting is the 220 greeting text.
	Greeting string `json:"greeting,omitempty"`
	// Extensions are the EHLO keywords offered in plaintext.
	Extensions []string `json:"extensions,omitempty"`
	// STARTTLS: the plaintext EHLO offers STARTTLS.
	STARTTLS bool `json:"starttls"`
	// TLS is the STARTTLS session; nil when STARTTLS is not offered.
	TLS *TLSReport `json:"tls,omitempty"`
	// Injection is the CVE-2011-0411 test; nil when not run.
	Injection *Injection `json:"injection,omitempty"`
	// DANE is the host's DANE check (RFC 7672, TLSA at
	// _25._tcp.<host>); nil until that check exists.
	DANE *PolicyCheck `json:"dane,omitempty"`
	// Findings grade all of the above.
	Findings []Finding `json:"findings"`
}

// TLSReport describes TLS after STARTTLS.
type TLSReport struct {
	// Error says why STARTTLS with a default client failed (refused, or
	// the handshake failed); the fields below it are then empty.
	Error string `json:"error,omitempty"`
	// Version, CipherSuite and Group are what a default Go client (TLS
	// 1.2-1.3, default suites and groups) negotiated.
	Version     string `json:"version,omitempty"`
	CipherSuite string `json:"cipher_suite,omitempty"`
	Group       string `json:"group,omitempty"`
	// ExtensionsAfterTLS are the EHLO keywords offered inside TLS.
	ExtensionsAfterTLS []string `json:"extensions_after_tls,omitempty"`
	// Versions: TLS 1.0, 1.1, 1.2, 1.3, each tried alone.
	Versions []Support `json:"versions"`
	// Groups: X25519MLKEM768, X25519, P-256, P-384, each tried alone with
	// TLS 1.3.
	Groups []Support `json:"groups"`
	// Certificates is the chain the server sent, leaf first.
	Certificates []Certificate `json:"certificates,omitempty"`
	// PKIX is the chain's validity for the server's name.
	PKIX *PKIX `json:"pkix,omitempty"`
}

// Support says whether the server accepted one TLS version or group.
type Support struct {
	Name     string `json:"name"`
	Accepted bool   `json:"accepted"`
	// Inconclusive: the test could not run (the connection failed before
	// the handshake, or a prerequisite is missing); Accepted is false.
	Inconclusive bool   `json:"inconclusive,omitempty"`
	Detail       string `json:"detail,omitempty"`
}

// Certificate describes one certificate of the chain.
type Certificate struct {
	Subject   string    `json:"subject"`
	SANs      []string  `json:"sans,omitempty"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DaysLeft  int       `json:"days_left"`
	PublicKey string    `json:"public_key"`
	// SHA256 is the certificate's fingerprint (hex), as DANE 3 0 1 uses.
	SHA256 string `json:"sha256"`
}

// PKIX is the result of verifying the chain against the trusted roots for
// Name (RFC 6125 DNS-ID, or an IP address SAN for an IP literal).
type PKIX struct {
	Name  string `json:"name"`
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
}

// Injection is the STARTTLS command injection test (CVE-2011-0411): the
// probe sends "STARTTLS\r\n" and Command in one write, completes the
// handshake, and listens inside TLS before sending anything.
type Injection struct {
	Command    string `json:"command"`
	Vulnerable bool   `json:"vulnerable"`
	// Outcome: "answered" (vulnerable: a reply arrived unsolicited inside
	// TLS), "silent", "closed" (before or during the handshake, or after
	// it), "refused" (STARTTLS not answered 220), "plaintext" (the server
	// answered the injected command before TLS), "error" (the test could
	// not run).
	Outcome string `json:"outcome"`
	// Reply is what the server sent unsolicited.
	Reply  string `json:"reply,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Target is one server to probe.
type Target struct {
	// Name is the host name or IP literal; unless Options.ServerName is
	// set, also the name the certificate is checked against.
	Name string
	// Port is the TCP port, e.g. "25".
	Port string
	// Preference is the MX preference, when Name came from an MX record.
	Preference *uint16
}

// Worst returns the worst verdict of the report (OK when empty).
func (r *Report) Worst() Verdict {
	worst := OK
	see := func(fs []Finding) {
		for _, f := range fs {
			if f.Verdict.rank() > worst.rank() {
				worst = f.Verdict
			}
		}
	}
	see(r.Findings)
	for _, h := range r.Hosts {
		see(h.Findings)
	}
	return worst
}

// Host probes one server and grades what it found. It always returns a
// report; HostReport.Error says when the server could not be reached.
func Host(ctx context.Context, t Target, opts Options) HostReport {
	opts.setDefaults()
	h := HostReport{Name: t.Name, Preference: t.Preference}
	p := &prober{opts: opts, addr: net.JoinHostPort(t.Name, t.Port), name: t.Name}
	if opts.ServerName != "" {
		p.name = opts.ServerName
	}
	p.run(ctx, &h)
	h.Findings = evaluate(&h, opts)
	return h
}
