package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
)

// Exit statuses of petrel send, from sysexits(3), as sendmail and swaks'
// callers expect.
const (
	exUsage       = 64 // EX_USAGE: bad flags or unreadable input files
	exUnavailable = 69 // EX_UNAVAILABLE: permanent failure (5xx, null MX)
	exTempFail    = 75 // EX_TEMPFAIL: 4xx, network, TLS, timeout
)

const sendHelp = `Usage: petrel send --to ADDR [--to ADDR]... [flags]

Sends one message over SMTP and shows what happened, like swaks: to --server,
or else to the MX hosts of the first recipient's domain (RFC 5321 §5.1).
The message is --body FILE, or standard input when it is not a terminal and
not empty, or a generated test message; --size N makes one of N bytes.

Output: the server, the TLS session (or why it is plaintext), one line per
recipient (accepted, or refused with the reply) and the server's final reply.
Exit status: 0 delivered to every recipient; 75 temporary failure (4xx,
network, TLS failure at a level that requires TLS, timeout); 69 permanent
failure (5xx, null MX); 64 bad usage. Some recipients refused: 75 if any
refusal is temporary, else 69.

Flags:
`

// sendFlags are the parsed flags of petrel send.
type sendFlags struct {
	server, from, level, authUser, authPassFile, ehlo, ca, serverName string
	body, resolver                                                    string
	to                                                                stringList
	port                                                              int
	implicitTLS, verbose                                              bool
	size                                                              int64
	timeout                                                           time.Duration
	set                                                               map[string]bool // flags given
}

func parseSendFlags(args []string, stderr io.Writer) (*sendFlags, error) {
	f := &sendFlags{set: map[string]bool{}}
	fs := flag.NewFlagSet("petrel send", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.server, "server", "", "SMTP server `HOST[:PORT]`; default: the MX hosts of the first recipient's domain")
	fs.IntVar(&f.port, "port", 0, "port `N` when --server has none, and for MX hosts (default 25; 465 with --implicit-tls)")
	fs.StringVar(&f.from, "from", "", "envelope sender `ADDR`; \"\" is the null sender <> (default petrel@<this host>)")
	fs.Var(&f.to, "to", "recipient `ADDR` (repeatable, at least one)")
	fs.StringVar(&f.level, "tls", "", "TLS `level`: none, may, encrypt, verify, secure (default may; encrypt with --implicit-tls; verify with --auth-user)")
	fs.BoolVar(&f.implicitTLS, "implicit-tls", false, "TLS from the first byte (RFC 8314, port 465) instead of STARTTLS")
	fs.StringVar(&f.authUser, "auth-user", "", "authenticate as `USER` (AUTH PLAIN or LOGIN, only over TLS)")
	fs.StringVar(&f.authPassFile, "auth-pass-file", "", "`FILE` whose first line is the password for --auth-user")
	fs.StringVar(&f.ehlo, "ehlo", "", "EHLO `NAME` (default this host's name)")
	fs.StringVar(&f.ca, "ca", "", "PEM `FILE` of extra trusted root certificates, added to the system's")
	fs.StringVar(&f.serverName, "servername", "", "`NAME` the certificate must carry, also sent as SNI (required with --tls secure)")
	fs.StringVar(&f.body, "body", "", "message `FILE` (a complete RFC 5322 message); - reads standard input")
	fs.Int64Var(&f.size, "size", 0, "send a generated message of exactly `N` bytes (headers and lines of text)")
	fs.StringVar(&f.resolver, "resolver", "", "DNS server `HOST:PORT` for the MX lookup (default the system's)")
	fs.BoolVar(&f.verbose, "v", false, "print the SMTP transcript on standard error (AUTH redacted)")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this `duration` in all")
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprint(stderr, sendHelp)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%v; run 'petrel send -h' for the flags", err)
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; recipients are given with --to", fs.Arg(0))
	}
	return f, nil
}

// sendJob is what the flags resolve to.
type sendJob struct {
	env   smtpclient.Envelope
	opts  smtpclient.Options
	msg   []byte
	pass  string
	first smtp.Path // the first recipient, for the MX lookup
}

// usage errors: one line, exit 64.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func (f *sendFlags) job(stdin io.Reader, stderr io.Writer) (*sendJob, error) {
	j := &sendJob{}
	if len(f.to) == 0 {
		return nil, usagef("no recipient: give at least one --to ADDR")
	}
	for _, to := range f.to {
		p, err := smtp.ParseMailbox(strings.Trim(to, "<>"), true)
		if err != nil {
			return nil, usagef("bad --to address %q: %v", to, err)
		}
		if len(j.env.To) == 0 {
			j.first = p
		}
		j.env.To = append(j.env.To, p.String())
	}
	from := "petrel@" + localName()
	if f.set["from"] {
		from = strings.Trim(f.from, "<>")
	}
	if from != "" {
		p, err := smtp.ParseMailbox(from, true)
		if err != nil {
			return nil, usagef("bad --from address %q: %v (use --from '' for the null sender)", f.from, err)
		}
		from = p.String()
	}
	j.env.From = from

	level := smtpclient.May
	switch {
	case f.authUser != "":
		// Credentials go only to a verified server (RFC 8314 §5).
		level = smtpclient.Verify
	case f.implicitTLS:
		level = smtpclient.Encrypt
	}
	if f.set["tls"] {
		var err error
		if level, err = smtpclient.ParseLevel(f.level); err != nil {
			return nil, usagef("--tls: %v", err)
		}
	}
	if f.implicitTLS && level == smtpclient.None {
		return nil, usagef("--implicit-tls cannot be combined with --tls none: drop one of them")
	}
	if level == smtpclient.Secure && f.serverName == "" {
		return nil, usagef("--tls secure needs --servername NAME, the name the server's certificate must carry")
	}
	if (f.authUser == "") != (f.authPassFile == "") {
		return nil, usagef("--auth-user and --auth-pass-file go together (the password is never given on the command line)")
	}
	if f.authUser != "" {
		if level < smtpclient.Verify {
			return nil, usagef("--auth-user needs a verified server certificate: use --tls verify or secure (with --ca FILE for a private CA)")
		}
		b, err := os.ReadFile(f.authPassFile)
		if err != nil {
			return nil, usagef("cannot read --auth-pass-file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		j.pass = strings.TrimSuffix(line, "\r")
		if j.pass == "" {
			return nil, usagef("--auth-pass-file %s: the first line (the password) is empty", f.authPassFile)
		}
	}
	if f.timeout <= 0 {
		return nil, usagef("--timeout must be positive, e.g. 30s or 2m")
	}
	if f.set["port"] && (f.port <= 0 || f.port > 65535) {
		return nil, usagef("--port %d is not a TCP port", f.port)
	}
	if f.ehlo != "" && !smtp.IsDomain(f.ehlo, false) && !smtp.IsAddressLiteral(f.ehlo) {
		return nil, usagef("--ehlo %q is not a domain name or address literal", f.ehlo)
	}
	j.opts = smtpclient.Options{
		LocalName: f.ehlo, TLS: level, ImplicitTLS: f.implicitTLS, ServerName: f.serverName,
	}
	if f.ca != "" {
		pool, err := loadRoots(f.ca)
		if err != nil {
			return nil, usagef("--ca: %v", err)
		}
		j.opts.TLSConfig = &tls.Config{RootCAs: pool}
	}
	if f.verbose {
		j.opts.Trace = stderr
		j.opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	var err error
	j.msg, err = f.message(stdin, j.env)
	return j, err
}

// loadRoots returns the system's roots plus the certificates in the PEM
// file.
func loadRoots(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// message returns the message to send: --size, --body, standard input, or
// a generated test message.
func (f *sendFlags) message(stdin io.Reader, env smtpclient.Envelope) ([]byte, error) {
	switch {
	case f.set["size"] && f.body != "":
		return nil, usagef("--size and --body exclude each other: choose one")
	case f.set["size"]:
		return synthetic(env, time.Now(), f.size)
	case f.body == "-":
		if stdin == nil {
			return nil, usagef("--body -: no standard input")
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, usagef("reading standard input: %v", err)
		}
		return b, nil
	case f.body != "":
		b, err := os.ReadFile(f.body)
		if err != nil {
			return nil, usagef("cannot read --body: %v", err)
		}
		return b, nil
	}
	if stdin != nil && !isTerminal(stdin) {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, usagef("reading standard input: %v (give the message with --body FILE)", err)
		}
		if len(b) > 0 {
			return b, nil
		}
	}
	return testMessage(env, time.Now(), ""), nil
}

// isTerminal reports whether r is a character device (a terminal, or
// /dev/null): no message to read there.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err != nil || st.Mode()&os.ModeCharDevice != 0
}

// testMessage is the generated message: its header and a line of text.
// pad is appended to the Subject (synthetic uses it to hit a size).
func testMessage(env smtpclient.Envelope, now time.Time, pad string) []byte {
	date := now.Format(time.RFC1123Z)
	from := env.From
	if from == "" {
		from = "MAILER-DAEMON@" + localName()
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	var b bytes.Buffer
	fmt.Fprintf(&b, "Date: %s\r\nFrom: <%s>\r\nTo: <%s>\r\nSubject: petrel send test %s%s\r\nMessage-ID: <%s@%s>\r\n\r\n",
		date, from, strings.Join(env.To, ">, <"), date, pad, hex.EncodeToString(id), localName())
	if pad == "" {
		b.WriteString("This is a test message sent by petrel send.\r\n")
	}
	return b.Bytes()
}

// synthetic returns a message of exactly size bytes: the test header, then
// lines of text of at most 78 characters, each ending in CRLF.
func synthetic(env smtpclient.Envelope, now time.Time, size int64) ([]byte, error) {
	head := testMessage(env, now, " (synthetic)")
	if size < int64(len(head)) {
		return nil, usagef("--size %d is smaller than the message header (%d bytes)", size, len(head))
	}
	rest := size - int64(len(head))
	if rest == 1 {
		// No line fits in one byte: lengthen the Subject instead.
		head = testMessage(env, now, " (synthetic).")
		rest = 0
	}
	const text = "petrel send synthetic body: the quick brown fox jumps over the lazy dog 0123456789"
	out := make([]byte, 0, size)
	out = append(out, head...)
	for n := 1; rest > 0; n++ {
		ll := min(int64(78), rest-2)
		if rest-(ll+2) == 1 {
			ll-- // never leave a single byte
		}
		line := fmt.Sprintf("%06d %s", n, text)
		for int64(len(line)) < ll {
			line += " " + text
		}
		out = append(out, line[:ll]...)
		out = append(out, '\r', '\n')
		rest -= ll + 2
	}
	return out, nil
}

// destination is one server to try.
type destination struct {
	name string // host name or address, for messages
	addr string // host:port to dial
}

// destinations returns the servers to try, in order.
func (f *sendFlags) destinations(ctx context.Context, res dnsx.Resolver, first smtp.Path) ([]destination, error) {
	port := strconv.Itoa(f.port)
	if !f.set["port"] {
		port = "25"
		if f.implicitTLS {
			port = "465"
		}
	}
	if f.server != "" {
		host, p, err := net.SplitHostPort(f.server)
		if err != nil {
			host, p = strings.Trim(f.server, "[]"), port
		}
		if host == "" {
			return nil, usagef("--server %q has no host", f.server)
		}
		return []destination{{host, net.JoinHostPort(host, p)}}, nil
	}
	if first.IsLiteral() {
		ip := strings.TrimPrefix(strings.Trim(first.Domain, "[]"), "IPv6:")
		return []destination{{ip, net.JoinHostPort(ip, port)}}, nil
	}
	hosts, err := dnsx.MailHosts(ctx, res, first.Domain)
	if err != nil {
		return nil, err
	}
	var ds []destination
	for _, h := range hosts {
		ds = append(ds, destination{h.Name, net.JoinHostPort(h.Name, port)})
	}
	return ds, nil
}

func send(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f, err := parseSendFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fail := func(code int, format string, args ...any) int {
		msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " / ")
		fmt.Fprintln(stderr, "petrel send: "+strings.ReplaceAll(msg, "smtpclient: ", ""))
		return code
	}
	if err != nil {
		return fail(exUsage, "%v", err)
	}
	j, err := f.job(stdin, stderr)
	if err != nil {
		return fail(exUsage, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	res, err := dnsx.New(f.resolver)
	if err != nil {
		return fail(exUsage, "--resolver: %v", err)
	}
	if f.resolver != "" {
		j.opts.Dialer = &net.Dialer{Resolver: res}
	}
	dests, err := f.destinations(ctx, res, j.first)
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		return fail(exUsage, "%v", err)
	case errors.Is(err, dnsx.ErrNullMX):
		return fail(exUnavailable, "%s publishes a null MX (RFC 7505): it accepts no mail; check the recipient's address", j.first.Domain)
	case errors.Is(err, dnsx.ErrNoHost):
		return fail(exUnavailable, "%s has no MX and no address records: it cannot receive mail; check the recipient's address", j.first.Domain)
	case err != nil:
		return fail(exTempFail, "cannot look up the MX hosts of %s: %v; check --resolver, or give --server", j.first.Domain, err)
	}

	var c *smtpclient.Client
	var dest destination
	for i, d := range dests {
		c, err = smtpclient.Dial(ctx, d.addr, j.opts)
		if err == nil {
			dest = d
			break
		}
		if i < len(dests)-1 {
			fmt.Fprintf(stderr, "petrel send: %s: %s; trying the next MX host\n", d.name, strings.TrimPrefix(err.Error(), "smtpclient: "))
		} else {
			return fail(exitStatus(ctx, err), "%s: %v%s", d.name, err, hint(ctx, err, f))
		}
	}
	fmt.Fprintf(stdout, "server: %s [%s]\n", dest.name, c.RemoteAddr())
	fmt.Fprintf(stdout, "tls: %s\n", describeTLS(c))
	if f.authUser != "" {
		if err := c.Auth(ctx, f.authUser, j.pass); err != nil {
			_ = c.Quit(ctx)
			return fail(exitStatus(ctx, err), "authentication as %s failed: %v%s", f.authUser, err, hint(ctx, err, f))
		}
		fmt.Fprintf(stdout, "auth: authenticated as %s\n", f.authUser)
	}
	result, err := c.SendMail(ctx, j.env, j.msg)
	code := 0
	for i, to := range j.env.To {
		rerr := err // a failure of the whole transaction
		if result != nil && i < len(result.Rcpts) && result.Rcpts[i].Err != nil {
			rerr = result.Rcpts[i].Err
		}
		if rerr == nil {
			fmt.Fprintf(stdout, "accepted: %s\n", to)
			continue
		}
		fmt.Fprintf(stdout, "refused: %s: %s\n", to, strings.TrimPrefix(rerr.Error(), "smtpclient: "))
		code = worse(code, exitStatus(ctx, rerr))
	}
	if err != nil {
		_ = c.Quit(ctx)
		return fail(code, "message not delivered: %v%s", err, hint(ctx, err, f))
	}
	fmt.Fprintf(stdout, "reply: 250 %s\n", strings.ReplaceAll(result.Reply, "\n", " / "))
	_ = c.Quit(ctx)
	return code
}

// worse returns the worse exit status: temporary beats permanent (the
// message will be retried for someone), both beat success.
func worse(a, b int) int {
	if a == exTempFail || b == exTempFail {
		return exTempFail
	}
	return max(a, b)
}

// exitStatus maps an error to 75 (temporary) or 69 (permanent).
func exitStatus(ctx context.Context, err error) int {
	var se *smtp.Error
	switch {
	case ctx.Err() != nil:
		return exTempFail
	case errors.As(err, &se):
		if se.Temporary() {
			return exTempFail
		}
		return exUnavailable
	case errors.Is(err, smtpclient.ErrAuthNoMechanism):
		return exUnavailable
	}
	return exTempFail // network, protocol, TLS
}

// hint says what to do about err, as "; ..." or "".
func hint(ctx context.Context, err error, f *sendFlags) string {
	var te *smtpclient.TLSError
	var ne *smtpclient.NetError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("; timed out after %v: raise --timeout", f.timeout)
	case errors.Is(err, smtpclient.ErrAuthNotTLS):
		return "; the server's certificate was not verified: use --tls verify (with --ca FILE for a private CA)"
	case errors.Is(err, smtpclient.ErrAuthNoMechanism):
		return "; check that this server offers submission with AUTH"
	case errors.As(err, &te) && strings.Contains(te.Reason, "certificate"):
		return "; nothing was sent: check --servername and --ca, or use --tls encrypt to skip the certificate check"
	case errors.As(err, &te) && strings.Contains(te.Reason, "not offered"):
		return "; nothing was sent: use --tls may to allow plaintext"
	case errors.As(err, &te):
		return "; nothing was sent: use --tls may to allow a plaintext fallback, or check the port (--implicit-tls for 465)"
	case errors.As(err, &ne) && ne.Op == "connect":
		return "; is the server running, and is the port right?"
	}
	return ""
}

// describeTLS is the "tls:" line.
func describeTLS(c *smtpclient.Client) string {
	info := c.TLS()
	if info == nil {
		if c.Level() == smtpclient.None {
			return "plaintext: TLS not requested (--tls none)"
		}
		return "plaintext: " + strings.TrimPrefix(c.Fallback(), "smtpclient: ")
	}
	s := fmt.Sprintf("%s %s %s", tls.VersionName(info.Version), tls.CipherSuiteName(info.CipherSuite), smtp.GroupName(info.Group))
	if info.Implicit {
		s += ", implicit TLS"
	}
	if info.Verified {
		return s + ", certificate verified for " + info.ServerName
	}
	return s + ", certificate not verified (" + strings.TrimPrefix(fmt.Sprint(info.VerifyError), "x509: ") + ")"
}
