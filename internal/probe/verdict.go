package probe

import (
	"fmt"
	"strings"
)

// The grading policy. FAIL is for what is broken for every sender or is
// an attack surface; WARN for what only some senders are hurt by, or what
// falls short of current recommendations; OK otherwise.
//
//	FAIL  the server cannot be reached; STARTTLS not offered; STARTTLS
//	      offered but refused or no handshake completes; the command
//	      injection bug (CVE-2011-0411).
//	WARN  TLS 1.0 or 1.1 accepted (RFC 8996 forbids them; but for an MX,
//	      where TLS is opportunistic, refusing them sends old senders to
//	      plaintext, which is why Postfix accepts them by default: FAIL
//	      with Strict); TLS 1.2 or 1.3 not accepted (RFC 9325 §3.1.1); X25519MLKEM768,
//	      X25519 or P-256 not accepted with TLS 1.3; a TLS 1.2 suite
//	      without ECDHE and AEAD negotiated by a modern client; a test
//	      that could not run; and, unless Strict, every certificate
//	      problem: not valid for the name (untrusted, self-signed, wrong
//	      name, expired) or expiring within 14 days. Mail to an MX is
//	      opportunistic by default (RFC 3207 §4, RFC 7435): a sender at
//	      Postfix's "may" or "encrypt" still delivers over TLS; senders
//	      that verify (MTA-STS enforce, Postfix "verify"/"secure") do not.
//	      With Strict (a submission server, or a domain that publishes
//	      MTA-STS) certificate problems FAIL.
//	OK    the rest; P-384 is optional either way.
const expiryWarnDays = 14

func evaluate(h *HostReport, o Options) []Finding {
	fs := []Finding{}
	add := func(v Verdict, check, format string, args ...any) {
		fs = append(fs, Finding{Verdict: v, Check: check, Message: fmt.Sprintf(format, args...)})
	}
	if h.Error != "" {
		add(FAIL, "connect", "cannot probe %s: %s", h.Name, h.Error)
		return fs
	}
	if !h.STARTTLS {
		add(FAIL, "starttls", "STARTTLS not offered: all mail to this server travels in plaintext (RFC 3207)")
		return fs
	}
	add(OK, "starttls", "STARTTLS offered")
	t := h.TLS
	if t.Error != "" {
		add(FAIL, "starttls", "STARTTLS with a default TLS 1.2/1.3 client failed: %s", t.Error)
	}
	for _, v := range t.Versions {
		switch {
		case v.Inconclusive:
			add(WARN, "tls-version", "%s: could not test: %s", v.Name, v.Detail)
		case (v.Name == "TLS 1.0" || v.Name == "TLS 1.1") && v.Accepted:
			verdict := WARN
			if o.Strict {
				verdict = FAIL
			}
			add(verdict, "tls-version", "%s accepted: RFC 8996 deprecates it (a sender that refuses it still gets TLS 1.2+; --strict makes this FAIL)", v.Name)
		case v.Name == "TLS 1.0" || v.Name == "TLS 1.1":
			add(OK, "tls-version", "%s refused", v.Name)
		case v.Accepted:
			add(OK, "tls-version", "%s accepted", v.Name)
		case v.Name == "TLS 1.2":
			add(WARN, "tls-version", "TLS 1.2 not accepted: senders without TLS 1.3 cannot use TLS (RFC 9325 §3.1.1: MUST support 1.2)")
		default:
			add(WARN, "tls-version", "%s not accepted (RFC 9325 §3.1.1: SHOULD support TLS 1.3)", v.Name)
		}
	}
	for _, g := range t.Groups {
		switch {
		case g.Inconclusive && g.Detail == "TLS 1.3 not accepted":
			// Reported once, as the TLS 1.3 finding.
		case g.Inconclusive:
			add(WARN, "group", "key exchange %s: could not test: %s", g.Name, g.Detail)
		case g.Accepted && g.Name == "X25519MLKEM768":
			add(OK, "group", "key exchange X25519MLKEM768 accepted (hybrid post-quantum)")
		case g.Accepted:
			add(OK, "group", "key exchange %s accepted", g.Name)
		case g.Name == "X25519MLKEM768":
			add(WARN, "group", "key exchange X25519MLKEM768 not accepted: no post-quantum protection of recorded sessions")
		case g.Name == "P-384":
			add(OK, "group", "key exchange P-384 not accepted (optional)")
		default:
			add(WARN, "group", "key exchange %s not accepted with TLS 1.3: some senders will need a second round trip or fail", g.Name)
		}
	}
	if t.Version != "" {
		switch {
		case t.Version == "TLS 1.3":
			add(OK, "cipher", "a default client negotiates %s %s %s", t.Version, t.CipherSuite, t.Group)
		case strings.Contains(t.CipherSuite, "ECDHE") && (strings.Contains(t.CipherSuite, "GCM") || strings.Contains(t.CipherSuite, "CHACHA20")):
			add(OK, "cipher", "a default client negotiates %s %s %s", t.Version, t.CipherSuite, t.Group)
		default:
			add(WARN, "cipher", "a default client negotiates %s %s: prefer ECDHE with AEAD (RFC 9325 §4.2)", t.Version, t.CipherSuite)
		}
	}
	certVerdict := WARN
	if o.Strict {
		certVerdict = FAIL
	}
	if len(t.Certificates) > 0 {
		leaf := t.Certificates[0]
		now := o.Now()
		switch {
		case now.Before(leaf.NotBefore):
			add(certVerdict, "certificate", "certificate not valid before %s", leaf.NotBefore.Format("2006-01-02 15:04 MST"))
		case leaf.DaysLeft < 0:
			add(certVerdict, "certificate", "certificate expired on %s", leaf.NotAfter.Format("2006-01-02"))
		case leaf.DaysLeft < expiryWarnDays:
			add(certVerdict, "certificate", "certificate expires in %d days (%s): renew it", leaf.DaysLeft, leaf.NotAfter.Format("2006-01-02"))
		default:
			add(OK, "certificate", "certificate valid until %s (%d days)", leaf.NotAfter.Format("2006-01-02"), leaf.DaysLeft)
		}
	}
	if t.PKIX != nil {
		if t.PKIX.Valid {
			add(OK, "pkix", "certificate chain valid for %s (PKIX)", t.PKIX.Name)
		} else {
			add(certVerdict, "pkix", "certificate not valid for %s: %s; senders that verify (MTA-STS, Postfix verify/secure) will not deliver (--ca FILE trusts a private CA)",
				t.PKIX.Name, t.PKIX.Error)
		}
	}
	if in := h.Injection; in != nil {
		switch in.Outcome {
		case "answered":
			add(FAIL, "injection", "STARTTLS command injection: server answered an injected command after STARTTLS (CVE-2011-0411)")
		case "silent":
			add(OK, "injection", "STARTTLS command injection: not vulnerable (no reply to the injected %s)", in.Command)
		case "closed":
			add(OK, "injection", "STARTTLS command injection: not vulnerable (the server closed the connection)")
		case "refused":
			add(OK, "injection", "STARTTLS command injection: not vulnerable (pipelined STARTTLS refused: %s)", in.Detail)
		case "plaintext":
			add(WARN, "injection", "the server answered the command pipelined behind STARTTLS before TLS (%q): STARTTLS must end a pipelined group (RFC 3207 §4)", in.Reply)
		default:
			add(WARN, "injection", "STARTTLS command injection: could not test: %s", in.Detail)
		}
	}
	return fs
}
