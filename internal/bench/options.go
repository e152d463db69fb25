package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// Security is how a session gets TLS.
type Security int

// The ways to TLS.
const (
	Plaintext   Security = iota // no TLS
	StartTLS                    // STARTTLS after the first EHLO (RFC 3207); required: a server without it is a tls error
	ImplicitTLS                 // TLS from the first byte (RFC 8314)
)

func (s Security) String() string {
	switch s {
	case StartTLS:
		return "starttls"
	case ImplicitTLS:
		return "implicit-tls"
	}
	return "plaintext"
}

// Options configure Run and Hold. Server is required; zero values take the
// defaults given.
type Options struct {
	// Server is the address to connect to, "host:port".
	Server string
	// Security selects plaintext, STARTTLS or implicit TLS.
	Security Security

	// TLSMinVersion and TLSMaxVersion bound the TLS version; default TLS
	// 1.3 for both (the minimum follows a lower maximum), so that a bench
	// measures what modern peers do.
	TLSMinVersion, TLSMaxVersion uint16
	// Group, when not zero, is the only key-exchange group offered
	// (tls.Config.CurvePreferences); zero leaves Go's default preference
	// (X25519MLKEM768 first).
	Group tls.CurveID
	// Verify checks the server's certificate (PKIX and ServerName); a
	// failure is a tls error. Without it the certificate is not checked
	// on each handshake (that costs the load generator CPU), but the
	// first session's certificate is checked once and the outcome is in
	// the report.
	Verify bool
	// RootCAs are the trusted roots; nil means the system's.
	RootCAs *x509.CertPool
	// ServerName is sent as SNI (when not an IP address) and checked in
	// the certificate; default the host of Server.
	ServerName string
	// Resume lets sessions resume TLS sessions (a client session cache
	// shared by all connections); by default every session does a full
	// handshake, the worst case for the server.
	Resume bool
	// NoQuickAck turns off the TCP_QUICKACK re-arming around the TLS
	// handshake (internal/quickack, as smtpclient does). Without it, an
	// OpenSSL-based server such as Postfix waits ≈ 40 ms for this
	// client's delayed ACK in every new TLS session: the figures would
	// measure the stall, not the server. Only for showing that stall.
	NoQuickAck bool

	// Conns is the number of concurrent sessions (default 1).
	Conns int
	// MsgsPerConn is the number of messages sent on a session before
	// QUIT and a new session (default 1).
	MsgsPerConn int
	// Total stops the run after that many transactions, whether they
	// succeed or fail. Duration stops it after that time (the
	// transactions in progress finish). With neither, Total is 1000.
	Total    int
	Duration time.Duration
	// Rate, when positive, paces the transactions at that many per
	// second over all sessions (a steady load for soak tests); 0 sends
	// as fast as the sessions go.
	Rate float64
	// Size is the message size in octets (default 1024); see Message.
	Size int
	// Rcpts is the number of recipients per message (default 1).
	Rcpts int
	// From is the envelope sender (default bench@localhost); "<>" is the
	// null path.
	From string
	// To is the recipients' address template: "%d" in it is replaced by
	// the recipient's number in the message, from 1 (default
	// bench@localhost).
	To string
	// Pipelining sends each transaction's commands in one group when the
	// server offers PIPELINING (RFC 2920); with BDAT, the message goes
	// in the same group.
	Pipelining bool
	// BDAT sends the message with one BDAT LAST chunk when the server
	// offers CHUNKING (RFC 3030), instead of DATA.
	BDAT bool
	// EHLO is the EHLO argument (default the host name, or localhost).
	EHLO string
	// Timeout bounds connect, the TLS handshake, each reply and each
	// transaction (default 30 s).
	Timeout time.Duration
	// LocalAddrs, when set, are the local IP addresses that connections
	// are made from, in turn (for example several 127.0.0.x, to stay
	// under a server's per-client connection limit).
	LocalAddrs []net.IP

	// Idle (Hold only) is the number of sessions to open and hold.
	Idle int
	// IdleNoop (Hold only) is how often each held session sends NOOP;
	// zero never. Servers close sessions idle for longer than their
	// command timeout (5 minutes by RFC 5321 §4.5.3.2.7).
	IdleNoop time.Duration
	// Ramp (Hold only) is how many sessions are being opened at once
	// (default 32).
	Ramp int

	// Progress, when set, is called every ProgressEvery while the run
	// goes on (from another goroutine).
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Logger receives a line per failed session (at debug level); nil
	// discards.
	Logger *slog.Logger
	// Now is the clock for the message's Date header; nil is time.Now.
	Now func() time.Time
}

// Progress is a snapshot of a run, for progress lines.
type Progress struct {
	Elapsed  time.Duration
	Messages uint64  // accepted so far
	Failed   uint64  // transactions that failed
	Rate     float64 // messages/s since the previous snapshot
	Sessions uint64  // sessions set up
	Errors   uint64  // errors of all kinds
	Open     int     // Hold: sessions open now
	Target   int     // Hold: sessions wanted
}

// withDefaults checks o and fills in the defaults.
func (o Options) withDefaults(idle bool) (Options, error) {
	if o.Server == "" {
		return o, errors.New("--server HOST:PORT is required")
	}
	host, port, err := net.SplitHostPort(o.Server)
	if err != nil || host == "" || port == "" {
		return o, fmt.Errorf("--server %q: want HOST:PORT, e.g. 127.0.0.1:2526", o.Server)
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.Conns, 1)
	def(&o.MsgsPerConn, 1)
	def(&o.Size, 1024)
	def(&o.Rcpts, 1)
	def(&o.Ramp, 32)
	if o.Total == 0 && o.Duration == 0 && !idle {
		o.Total = 1000
	}
	switch {
	case o.Rate < 0, o.Conns < 0, o.MsgsPerConn < 0, o.Total < 0, o.Rcpts < 0, o.Size < 0, o.Idle < 0, o.Ramp < 0,
		o.Duration < 0, o.Timeout < 0, o.IdleNoop < 0:
		return o, errors.New("counts, sizes and durations must not be negative")
	case idle && o.Idle == 0:
		return o, errors.New("--idle N: give the number of sessions to hold")
	case o.Rcpts > 1000:
		return o, fmt.Errorf("--rcpts %d: at most 1000 recipients per message", o.Rcpts)
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.TLSMaxVersion == 0 {
		o.TLSMaxVersion = tls.VersionTLS13
	}
	if o.TLSMinVersion == 0 {
		o.TLSMinVersion = min(tls.VersionTLS13, o.TLSMaxVersion)
	}
	if o.TLSMinVersion > o.TLSMaxVersion {
		return o, errors.New("the minimum TLS version is above the maximum: check --tls-min and --tls-max")
	}
	if o.ServerName == "" {
		o.ServerName = host
	}
	if o.From == "" {
		o.From = "bench@localhost"
	}
	if o.To == "" {
		o.To = "bench@localhost"
	}
	if o.From != "<>" {
		if _, err := smtp.ParseMailbox(o.From, false); err != nil {
			return o, fmt.Errorf("--from %q is not an ASCII mailbox: %v", o.From, err)
		}
	}
	if strings.Count(o.To, "%") != strings.Count(o.To, "%d") {
		return o, fmt.Errorf("--to %q: the only template verb is %%d", o.To)
	}
	if _, err := smtp.ParseMailbox(rcptAddr(o.To, 1), false); err != nil {
		return o, fmt.Errorf("--to %q does not make an ASCII mailbox: %v", o.To, err)
	}
	if o.EHLO == "" {
		o.EHLO = "localhost"
		if h, err := os.Hostname(); err == nil && smtp.IsDomain(h, false) {
			o.EHLO = h
		}
	} else if !smtp.IsDomain(o.EHLO, false) && !smtp.IsAddressLiteral(o.EHLO) {
		return o, fmt.Errorf("--ehlo %q is not a domain name or address literal", o.EHLO)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress != nil && o.ProgressEvery <= 0 {
		o.Progress = nil
	}
	return o, nil
}

// rcptAddr is the address of the i-th recipient (from 1).
func rcptAddr(tmpl string, i int) string {
	return strings.ReplaceAll(tmpl, "%d", strconv.Itoa(i))
}

// ParseGroup maps a key-exchange group's IANA name (X25519,
// X25519MLKEM768, P-256, P-384, P-521; case-insensitive) to its ID.
func ParseGroup(name string) (tls.CurveID, error) {
	for _, g := range []tls.CurveID{tls.X25519, tls.X25519MLKEM768, tls.CurveP256, tls.CurveP384, tls.CurveP521} {
		if strings.EqualFold(name, smtp.GroupName(g)) || strings.EqualFold(name, g.String()) {
			return g, nil
		}
	}
	return 0, fmt.Errorf("unknown TLS group %q (want X25519, X25519MLKEM768 or P-256)", name)
}

// ParseTLSVersion maps "1.2" or "1.3" to the version.
func ParseTLSVersion(s string) (uint16, error) {
	switch strings.TrimPrefix(strings.ToLower(s), "tlsv") {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown TLS version %q (want 1.2 or 1.3)", s)
}

// dialer makes the TCP connections, from LocalAddrs in turn.
type dialer struct {
	timeout time.Duration
	locals  []net.IP
}

func (d *dialer) dial(ctx context.Context, addr string, n uint64) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.locals) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.locals[n%uint64(len(d.locals))]}
	}
	return nd.DialContext(ctx, "tcp", addr)
}
