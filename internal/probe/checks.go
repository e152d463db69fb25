package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// prober runs the tests against one server.
type prober struct {
	opts Options
	addr string // "host:port"; after the first connection, "ip:port"
	name string // reference identity and SNI
}

// Versions and groups tried, in the order reported.
var (
	versions = []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13}
	groups   = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}
)

// injectedCommand is pipelined behind STARTTLS: harmless in every state.
const injectedCommand = "NOOP"

func (p *prober) run(ctx context.Context, h *HostReport) {
	s, greeting, ext, err := p.dial(ctx, p.addr)
	h.Greeting = greeting
	if err != nil {
		h.Error = err.Error()
		return
	}
	// Every later connection goes to the same address.
	h.Address = s.raw.RemoteAddr().String()
	p.addr = h.Address
	h.Extensions = ext
	h.STARTTLS = hasExt(ext, "STARTTLS")
	s.quit()
	if !h.STARTTLS {
		return
	}
	t := &TLSReport{}
	h.TLS = t
	p.defaultSession(ctx, t)
	for _, v := range versions {
		cfg := p.config()
		cfg.MinVersion, cfg.MaxVersion = v, v
		if v < tls.VersionTLS13 {
			cfg.CipherSuites = allSuites()
		}
		t.Versions = append(t.Versions, p.try(ctx, tls.VersionName(v), cfg, func(st tls.ConnectionState) error {
			if st.Version != v {
				return fmt.Errorf("negotiated %s instead", tls.VersionName(st.Version))
			}
			return nil
		}))
	}
	tls13 := len(t.Versions) == 4 && t.Versions[3].Accepted
	for _, g := range groups {
		if !tls13 {
			t.Groups = append(t.Groups, Support{Name: smtp.GroupName(g), Inconclusive: true, Detail: "TLS 1.3 not accepted"})
			continue
		}
		cfg := p.config()
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
		cfg.CurvePreferences = []tls.CurveID{g}
		t.Groups = append(t.Groups, p.try(ctx, smtp.GroupName(g), cfg, func(st tls.ConnectionState) error {
			if st.CurveID != g {
				return fmt.Errorf("negotiated %s instead", smtp.GroupName(st.CurveID))
			}
			return nil
		}))
	}
	h.Injection = p.injection(ctx)
}

// config is the base client configuration. The certificate is not checked
// in the handshake: the probe must see servers with any certificate. The
// default session records the PKIX result through VerifyConnection.
func (p *prober) config() *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if !isIPLiteral(p.name) {
		cfg.ServerName = p.name
	}
	return cfg
}

// allSuites offers every TLS 1.0-1.2 suite Go has, weak ones included, so
// that "version not accepted" is about the version, not the suites.
func allSuites() []uint16 {
	var ids []uint16
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		ids = append(ids, cs.ID)
	}
	return ids
}

// defaultSession runs STARTTLS as a modern client would, and records what
// was negotiated, the chain, its PKIX validity and the EHLO inside TLS.
func (p *prober) defaultSession(ctx context.Context, t *TLSReport) {
	cfg := p.config()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		t.PKIX = p.verify(cs)
		return nil // recorded; graded in evaluate
	}
	s, _, _, err := p.dial(ctx, p.addr)
	if err != nil {
		t.Error = err.Error()
		return
	}
	st, err := s.startTLS(ctx, cfg)
	if err != nil {
		t.Error = err.Error()
		s.close()
		return
	}
	defer s.quit()
	t.Version = tls.VersionName(st.Version)
	t.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
	t.Group = smtp.GroupName(st.CurveID)
	now := p.opts.Now()
	for _, c := range st.PeerCertificates {
		t.Certificates = append(t.Certificates, describeCert(c, now))
	}
	if ext, err := s.ehlo(p.opts.EHLO); err == nil {
		t.ExtensionsAfterTLS = ext
	}
}

// try makes one STARTTLS handshake with cfg and reports whether the server
// accepted it; check may refuse what was negotiated.
func (p *prober) try(ctx context.Context, name string, cfg *tls.Config, check func(tls.ConnectionState) error) Support {
	sup := Support{Name: name}
	s, _, _, err := p.dial(ctx, p.addr)
	if err != nil {
		sup.Inconclusive, sup.Detail = true, err.Error()
		return sup
	}
	st, err := s.startTLS(ctx, cfg)
	var he *handshakeError
	switch {
	case errors.As(err, &he):
		sup.Detail = he.err.Error()
		s.close()
	case err != nil:
		sup.Inconclusive, sup.Detail = true, err.Error()
		s.close()
	default:
		if err := check(st); err != nil {
			sup.Detail = err.Error()
		} else {
			sup.Accepted = true
			sup.Detail = tls.CipherSuiteName(st.CipherSuite)
		}
		s.quit()
	}
	return sup
}

// injection runs the CVE-2011-0411 test: "STARTTLS\r\nNOOP\r\n" in one
// write; after the 220 and the handshake, listen before sending anything.
// A server that kept the NOOP buffered across the handshake answers it
// inside TLS, unasked.
func (p *prober) injection(ctx context.Context) *Injection {
	in := &Injection{Command: injectedCommand}
	s, _, _, err := p.dial(ctx, p.addr)
	if err != nil {
		in.Outcome, in.Detail = "error", err.Error()
		return in
	}
	if err := s.write("STARTTLS\r\n" + injectedCommand + "\r\n"); err != nil {
		in.Outcome, in.Detail = "error", err.Error()
		s.close()
		return in
	}
	code, lines, err := s.readReply()
	switch {
	case err != nil:
		in.Outcome, in.Detail = "closed", "no reply to STARTTLS: "+err.Error()
		s.close()
		return in
	case code != 220:
		in.Outcome, in.Detail = "refused", fmt.Sprintf("%d %s", code, strings.Join(lines, " / "))
		s.quit()
		return in
	case s.r.Buffered() > 0:
		// Answered in plaintext, before TLS: not the CVE, but broken.
		l, _ := s.r.Peek(min(s.r.Buffered(), 200))
		in.Outcome, in.Reply = "plaintext", truncate(string(l))
		s.close()
		return in
	}
	if _, err := s.handshake(ctx, p.config()); err != nil {
		in.Outcome, in.Detail = "closed", err.Error()
		s.close()
		return in
	}
	_ = s.raw.SetReadDeadline(time.Now().Add(p.opts.InjectionWait))
	buf := make([]byte, 512)
	n, err := s.conn.Read(buf)
	var ne net.Error
	switch {
	case n > 0:
		in.Vulnerable, in.Outcome = true, "answered"
		in.Reply = truncate(string(buf[:n]))
		s.close()
	case errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil:
		in.Outcome = "silent"
		s.quit()
	default:
		in.Outcome = "closed"
		if err != nil {
			in.Detail = "after the handshake: " + err.Error()
		}
		s.close()
	}
	return in
}

// verify checks the chain against the roots for the reference name.
func (p *prober) verify(cs tls.ConnectionState) *PKIX {
	pk := &PKIX{Name: p.name}
	if len(cs.PeerCertificates) == 0 {
		pk.Error = "no certificate"
		return pk
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         p.opts.Roots,
		Intermediates: inter,
		DNSName:       strings.Trim(p.name, "[]"),
		CurrentTime:   p.opts.Now(),
	})
	pk.Valid = err == nil
	if err != nil {
		pk.Error = err.Error()
	}
	return pk
}

func describeCert(c *x509.Certificate, now time.Time) Certificate {
	sum := sha256.Sum256(c.Raw)
	d := Certificate{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		DaysLeft:  int(math.Floor(c.NotAfter.Sub(now).Hours() / 24)),
		SHA256:    hex.EncodeToString(sum[:]),
	}
	d.SANs = append(d.SANs, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		d.SANs = append(d.SANs, ip.String())
	}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		d.PublicKey = fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		d.PublicKey = "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		d.PublicKey = "Ed25519"
	default:
		d.PublicKey = c.PublicKeyAlgorithm.String()
	}
	return d
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}
