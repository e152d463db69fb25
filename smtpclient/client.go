package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/quickack"
	"github.com/petrel-mta/petrel/smtp"
)

// Timeouts bound each step of a session. Zero fields take RFC 5321
// §4.5.3.2's values (Connect: 30 s, TLSHandshake: 30 s).
type Timeouts struct {
	Connect      time.Duration // connect (TCP, or a unix socket)
	Greeting     time.Duration // the 220 greeting, 5 min (§4.5.3.2.1)
	Command      time.Duration // each reply to EHLO, MAIL, RCPT, ..., 5 min (§4.5.3.2.2-3)
	TLSHandshake time.Duration // the TLS handshake
	DataStart    time.Duration // the 354 to DATA, 2 min (§4.5.3.2.4)
	DataBlock    time.Duration // each write of message data, 3 min (§4.5.3.2.5)
	DataEnd      time.Duration // the reply after the data, 10 min (§4.5.3.2.6); in LMTP, each per-recipient reply
}

func (t *Timeouts) setDefaults() {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.Command, 5*time.Minute)
	def(&t.TLSHandshake, 30*time.Second)
	def(&t.DataStart, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataEnd, 10*time.Minute)
}

// Options configure a Client.
type Options struct {
	// LocalName is the EHLO (or LHLO) argument; default: the host name,
	// or "localhost".
	LocalName string
	// LMTP speaks LMTP (RFC 2033) instead of SMTP, to deliver to a local
	// store such as Dovecot: LHLO instead of EHLO, with no HELO fallback
	// (§4.1), and after the end of the data one reply per recipient that
	// RCPT accepted (§4.2, §4.3), which SendMail reports in
	// Result.Rcpts. Everything else (STARTTLS and the levels, AUTH,
	// PIPELINING, CHUNKING, SIZE, 8BITMIME, SMTPUTF8, RSET) works as for
	// SMTP. LMTP must not be used on TCP port 25 (§5): Dial refuses it.
	LMTP bool
	// Network is "tcp" (the default; also "tcp4", "tcp6") or "unix", for
	// an LMTP server on a unix socket: Dial's addr is then the socket's
	// path. A unix socket never leaves the host, so TLS protects nothing
	// there that the kernel does not: at level May the client does not
	// try STARTTLS (plaintext, and Fallback stays empty: that is no
	// fallback); the mandatory levels still demand TLS and fail as over
	// TCP when the server offers no STARTTLS; Verify needs ServerName,
	// there being no host name to check the certificate against.
	Network string
	// TLS is the security level; the zero value is None, so callers say
	// what they want. MX delivery uses May by default; see Level.
	TLS Level
	// ImplicitTLS starts TLS on connect (RFC 8314, port 465) instead of
	// STARTTLS. The level still decides what is verified; None and May
	// are treated as Encrypt (TLS is never optional here).
	ImplicitTLS bool
	// ServerName is the reference identity checked at Verify and Secure
	// (RFC 6125 DNS-ID) and sent as SNI. At Verify it defaults to the host
	// of the address dialled; at Secure it must be set.
	ServerName string
	// TLSConfig is the base TLS configuration (RootCAs, client
	// certificates); it is cloned. Its verification settings are
	// replaced by the level's.
	TLSConfig *tls.Config
	// VerifyConnection, when set, decides at Verify and Secure whether the
	// TLS connection is authenticated, instead of the PKIX check: the
	// extension point for DANE (RFC 7672) and MTA-STS (RFC 8461). It
	// runs after the handshake (RFC 3207 §4.1).
	VerifyConnection func(cs tls.ConnectionState) error
	// AllowInsecureAuth permits AUTH without TLS, and only to a loopback
	// address or over a unix socket. Never set it for anything but tests.
	AllowInsecureAuth bool
	// NoPipelining, NoChunking: do not use PIPELINING or CHUNKING even
	// when offered.
	NoPipelining, NoChunking bool
	// NoQuickAck turns off the TCP_QUICKACK re-arming around the TLS
	// handshake (for measurements). It is never done over a unix socket.
	NoQuickAck bool
	// Timeouts bound each step.
	Timeouts Timeouts
	// Dialer dials the connection (Network, addr); nil uses a
	// net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// Logger gets one line per security-relevant event (STARTTLS
	// fallback, injection); nil discards.
	Logger *slog.Logger
	// Trace, when set, receives the protocol transcript, "C: " and "S: "
	// lines, with AUTH payloads redacted.
	Trace io.Writer
}

// Client is a connection to an SMTP server. It is not safe for concurrent
// use.
type Client struct {
	opts     Options
	host     string // host part of the address dialled
	raw      net.Conn
	rawSys   syscall.RawConn // raw's, for the receive-queue check; may be nil
	conn     net.Conn        // raw, or the *tls.Conn over it
	qa       *quickack.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	ext      map[string]string // EHLO keywords (upper case) and their parameters
	esmtp    bool
	greeting string
	tls      *TLSInfo
	fallback string // why a May session is in plaintext
	log      *slog.Logger
	inTx     bool
	unix     bool // over a unix socket
}

// Dial connects to addr ("host:port", or a socket's path when
// Options.Network is "unix"), reads the greeting, says EHLO (LHLO in LMTP)
// and negotiates TLS as the level demands. At level May, when the TLS
// handshake fails (or the server injects data after its 220), the
// connection is closed and made again without TLS, as Postfix does;
// Fallback then says why.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	c, err := dial(ctx, addr, opts)
	var te *TLSError
	if err != nil && opts.TLS == May && !opts.ImplicitTLS && errors.As(err, &te) && te.retryPlain {
		logger(opts).Warn("TLS failed at level may; retrying in plaintext", "addr", addr, "err", err)
		plain := opts
		plain.TLS = None
		c, err2 := dial(ctx, addr, plain)
		if err2 != nil {
			return nil, err2
		}
		c.opts.TLS = May
		c.fallback = err.Error()
		return c, nil
	}
	return c, err
}

func logger(o Options) *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	opts.Timeouts.setDefaults()
	network := opts.Network
	switch network {
	case "":
		network = "tcp"
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("smtpclient: unknown Options.Network %q (want tcp or unix)", network)
	}
	// host is the default reference identity at level Verify: none for
	// a socket's path.
	host := ""
	if network != "unix" {
		h, port, err := net.SplitHostPort(addr)
		if err != nil {
			h = addr
		}
		if opts.LMTP && (port == "25" || port == "smtp") {
			return nil, errors.New("smtpclient: LMTP must not be used on TCP port 25 (RFC 2033 section 5)")
		}
		host = h
	}
	d := opts.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	dctx, cancel := context.WithTimeout(ctx, opts.Timeouts.Connect)
	defer cancel()
	nc, err := d.DialContext(dctx, network, addr)
	if err != nil {
		return nil, &NetError{Op: "connect", Err: err}
	}
	c, err := New(ctx, nc, host, opts)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// New runs the start of a session on an established connection: greeting,
// EHLO (LHLO) and TLS as for Dial (without the May retry, which needs a new
// connection). host is the server's host name or address, the default
// reference identity at level Verify. A connection whose address is a
// *net.UnixAddr is taken as a unix socket (see Options.Network).
func New(ctx context.Context, nc net.Conn, host string, opts Options) (*Client, error) {
	opts.Timeouts.setDefaults()
	if opts.LocalName == "" {
		opts.LocalName = localName()
	}
	if strings.ContainsAny(opts.LocalName, " \r\n") {
		return nil, errors.New("smtpclient: LocalName must be one domain or address literal")
	}
	if opts.TLS == Secure && opts.ServerName == "" {
		return nil, errors.New("smtpclient: level secure needs Options.ServerName")
	}
	c := &Client{opts: opts, host: host, raw: nc, conn: nc, log: logger(opts), unix: isUnix(nc)}
	if c.unix && opts.TLS == Verify && opts.ServerName == "" {
		return nil, errors.New("smtpclient: level verify over a unix socket needs Options.ServerName")
	}
	if sc, ok := nc.(syscall.Conn); ok {
		// On Linux, the receive-queue check (SIOCINQ) works on TCP and
		// unix stream sockets alike.
		c.rawSys, _ = sc.SyscallConn()
	}
	if !opts.NoQuickAck && !c.unix {
		c.qa = quickack.New(nc)
		c.conn = c.qa
	}
	c.r = bufio.NewReaderSize(c.conn, 4096)
	c.w = bufio.NewWriterSize(c.conn, 4096)
	if opts.ImplicitTLS {
		if err := c.handshake(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.readGreeting(ctx); err != nil {
		return nil, err
	}
	if err := c.hello(ctx); err != nil {
		return nil, err
	}
	if c.tls == nil && opts.TLS > None {
		if err := c.startTLS(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	if c.qa != nil {
		// The handshake and the first replies inside TLS are done.
		c.qa.Arm(false)
	}
	return c, nil
}

// peer names the server in log lines: the host dialled, or else (a unix
// socket) its address.
func (c *Client) peer() string {
	if c.host != "" && !c.unix {
		return c.host
	}
	if a := c.raw.RemoteAddr(); a != nil {
		return a.String()
	}
	return c.host
}

// isUnix reports whether nc is a unix socket.
func isUnix(nc net.Conn) bool {
	_, r := nc.RemoteAddr().(*net.UnixAddr)
	_, l := nc.LocalAddr().(*net.UnixAddr)
	return r || l
}

func localName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || !smtp.IsDomain(h, false) {
		return "localhost"
	}
	return h
}

// NetError is a failure below SMTP: connect, read or write. It is always
// temporary.
type NetError struct {
	Op  string
	Err error
}

func (e *NetError) Error() string { return "smtpclient: " + e.Op + ": " + e.Err.Error() }
func (e *NetError) Unwrap() error { return e.Err }

// ProtocolError is a server that broke the protocol: a malformed reply,
// unsolicited data. It is temporary (the next attempt may reach a sane
// server).
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "smtpclient: protocol error: " + e.Msg }

// ReplyError is a failure reply to a command. errors.As finds the
// *smtp.Error in it.
type ReplyError struct {
	Command string // the command's verb, "greeting" for the 220
	Reply   *smtp.Error
}

func (e *ReplyError) Error() string { return e.Command + ": " + e.Reply.Error() }
func (e *ReplyError) Unwrap() error { return e.Reply }

// Temporary reports whether err is a temporary failure: a 4xx reply, a
// network or protocol failure, or a TLS failure (which defers delivery
// under a mandatory level). Permanent failures are 5xx replies and errors
// the client finds before sending (an address the server cannot take).
func Temporary(err error) bool {
	var te *TLSError
	if errors.As(err, &te) {
		// Even a 5xx to STARTTLS: a man in the middle must not be able
		// to make mail bounce that a mandatory level would defer.
		return true
	}
	var se *smtp.Error
	if errors.As(err, &se) {
		return se.Temporary()
	}
	return err != nil
}

// Extension reports whether the server offered an EHLO (LHLO) keyword and
// its parameters. After STARTTLS only the keywords of the EHLO inside TLS
// count.
func (c *Client) Extension(name string) (bool, string) {
	p, ok := c.ext[strings.ToUpper(name)]
	return ok, p
}

// Greeting is the text of the server's 220 greeting.
func (c *Client) Greeting() string { return c.greeting }

// TLS describes the TLS session, or is nil in plaintext.
func (c *Client) TLS() *TLSInfo { return c.tls }

// Fallback says why a session at level May runs in plaintext: STARTTLS not
// offered, refused, or failed (then the connection was made again). It is
// empty when TLS is in use or was not tried.
func (c *Client) Fallback() string { return c.fallback }

// Level is the security level the client was asked for.
func (c *Client) Level() Level { return c.opts.TLS }

// LMTP reports whether the session speaks LMTP (Options.LMTP).
func (c *Client) LMTP() bool { return c.opts.LMTP }

// RemoteAddr is the server's address.
func (c *Client) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

func (c *Client) trace(dir, line string) {
	if c.opts.Trace != nil {
		fmt.Fprintf(c.opts.Trace, "%s %s\n", dir, line)
	}
}

// reply is one server reply.
type reply struct {
	code  int
	lines []string
}

func (r reply) err(cmd string) error {
	enh, first := smtp.SplitEnhanced(r.code, r.lines[0])
	msg := first
	for _, l := range r.lines[1:] {
		_, l = smtp.SplitEnhanced(r.code, l)
		msg += "\n" + l
	}
	return &ReplyError{Command: cmd, Reply: &smtp.Error{Code: r.code, Enhanced: enh, Message: msg}}
}

func (r reply) text() string { return strings.Join(r.lines, "\n") }

const (
	maxReplyLine  = 2048 // generous: RFC 5321 §4.5.3.1.5 says 512
	maxReplyLines = 100
)

// setDeadline sets the read (or write) deadline for a step of at most d,
// never beyond ctx's deadline, and returns ctx.Err() once ctx is done, so
// that no step's deadline can undo a cancellation.
func (c *Client) setDeadline(ctx context.Context, read bool, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	set := c.raw.SetWriteDeadline
	if read {
		set = c.raw.SetReadDeadline
	}
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	_ = set(t)
	if err := ctx.Err(); err != nil {
		_ = set(time.Now())
		return err
	}
	return nil
}

// ctxTimeout marks a timeout that ctx's deadline caused, so that
// errors.Is(err, context.DeadlineExceeded) holds even when the connection's
// timer fired before ctx's.
func ctxTimeout(ctx context.Context, err error) error {
	if dl, ok := ctx.Deadline(); ok && isTimeout(err) && !time.Now().Before(dl) {
		return fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
	}
	return err
}

// interrupt makes blocked reads and writes return when ctx is done; call
// the returned stop function when the operation ends.
func (c *Client) interrupt(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = c.raw.SetDeadline(time.Now()) })
}

// readReply reads one reply within timeout.
func (c *Client) readReply(ctx context.Context, timeout time.Duration) (reply, error) {
	var rep reply
	if err := c.setDeadline(ctx, true, timeout); err != nil {
		return rep, err
	}
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				return rep, &ProtocolError{Msg: "reply line too long"}
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return rep, &NetError{Op: "read", Err: ctxTimeout(ctx, err)}
		}
		if len(line) > maxReplyLine {
			return rep, &ProtocolError{Msg: "reply line too long"}
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
		c.trace("S:", s)
		code, more, text, perr := smtp.ParseReplyLine(s)
		if perr != nil {
			return rep, &ProtocolError{Msg: fmt.Sprintf("malformed reply %q", truncate(s))}
		}
		if rep.code != 0 && code != rep.code {
			return rep, &ProtocolError{Msg: fmt.Sprintf("reply code changed within a reply: %q", truncate(s))}
		}
		rep.code = code
		rep.lines = append(rep.lines, text)
		if len(rep.lines) > maxReplyLines {
			return rep, &ProtocolError{Msg: "reply with too many lines"}
		}
		if !more {
			return rep, nil
		}
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// expectAlone checks that nothing follows a reply the client did not ask
// for with pipelining: an unsolicited reply would shift every later reply
// by one (requirement C-INJ-02).
func (c *Client) expectAlone() error {
	if c.r.Buffered() > 0 {
		return &ProtocolError{Msg: fmt.Sprintf("server sent %d unexpected octets after its reply", c.r.Buffered())}
	}
	return nil
}

// checkIdle fails when the server sent something while no command was
// outstanding (C-INJ-02): a reply the client did not ask for, which would
// shift every later reply by one. In plaintext, where a man in the middle
// can inject, it looks at the read buffer and the socket's receive queue
// (exact and free, on Linux). Inside TLS the receive queue also holds
// records that are not replies (TLS 1.3 session tickets), and crypto/tls
// may already have read records from it, so the client peeks through TLS:
// for at most idlePeek when the socket holds bytes, else with a deadline
// already past, which decrypts what crypto/tls holds without a read system
// call or a wait on a timer (a timer wait costs about a millisecond per
// command group on an idle machine).
func (c *Client) checkIdle(ctx context.Context) error {
	n := c.r.Buffered()
	if n == 0 && c.tls == nil && c.rawSys != nil {
		n = pendingInput(c.rawSys)
	}
	if n == 0 && c.tls != nil {
		wait := idlePeek
		if c.rawSys != nil && pendingInput(c.rawSys) == 0 {
			wait = 0
		}
		if err := c.setDeadline(ctx, true, wait); err != nil {
			return err
		}
		if _, err := c.r.Peek(1); err == nil {
			n = c.r.Buffered()
		} else if !isTimeout(err) {
			return &NetError{Op: "read", Err: err}
		}
	}
	if n > 0 {
		return &ProtocolError{Msg: fmt.Sprintf("server sent %d octets while no command was outstanding", n)}
	}
	return nil
}

// idlePeek bounds the wait for unsolicited data inside TLS.
const idlePeek = 50 * time.Microsecond

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cmd sends one command and reads its reply.
func (c *Client) cmd(ctx context.Context, timeout time.Duration, format string, args ...any) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	if err := c.checkIdle(ctx); err != nil {
		return reply{}, err
	}
	if err := c.writeLine(fmt.Sprintf(format, args...)); err != nil {
		return reply{}, err
	}
	stop := c.interrupt(ctx)
	defer stop()
	if err := c.flush(ctx); err != nil {
		return reply{}, err
	}
	rep, err := c.readReply(ctx, timeout)
	if err != nil {
		return rep, err
	}
	return rep, c.expectAlone()
}

func (c *Client) writeLine(line string) error {
	if strings.ContainsAny(line, "\r\n") {
		return errors.New("smtpclient: a command must not contain CR or LF")
	}
	if strings.HasPrefix(line, "AUTH ") {
		verb, _, _ := strings.Cut(line[5:], " ")
		c.trace("C:", "AUTH "+verb+" [redacted]")
	} else {
		c.trace("C:", line)
	}
	return c.writeRaw(line)
}

// writeSecret writes a line of an AUTH exchange, redacted in the trace.
func (c *Client) writeSecret(line string) error {
	if strings.ContainsAny(line, "\r\n") {
		return errors.New("smtpclient: a command must not contain CR or LF")
	}
	c.trace("C:", "[redacted]")
	return c.writeRaw(line)
}

func (c *Client) writeRaw(line string) error {
	_, _ = c.w.WriteString(line)
	_, err := c.w.WriteString("\r\n")
	return err
}

func (c *Client) flush(ctx context.Context) error {
	if err := c.setDeadline(ctx, false, c.opts.Timeouts.Command); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return &NetError{Op: "write", Err: ctxTimeout(ctx, err)}
	}
	return nil
}

func (c *Client) readGreeting(ctx context.Context) error {
	stop := c.interrupt(ctx)
	defer stop()
	rep, err := c.readReply(ctx, c.opts.Timeouts.Greeting)
	if err != nil {
		return err
	}
	if rep.code != smtp.C220ServiceReady {
		return rep.err("greeting")
	}
	c.greeting = rep.text()
	return c.expectAlone()
}

// hello sends EHLO, falling back to HELO when EHLO is refused in
// plaintext, and records the extensions. In LMTP it sends LHLO, and a
// refusal is final: LMTP has no HELO (RFC 2033 §4.1).
func (c *Client) hello(ctx context.Context) error {
	c.ext = map[string]string{}
	verb := "EHLO"
	if c.opts.LMTP {
		verb = "LHLO"
	}
	rep, err := c.cmd(ctx, c.opts.Timeouts.Command, "%s %s", verb, c.opts.LocalName)
	if err != nil {
		return err
	}
	if rep.code == smtp.C250OK {
		c.esmtp = true
		for _, l := range rep.lines[1:] {
			kw, params, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(kw)] = params
		}
		return nil
	}
	if c.opts.LMTP || c.tls != nil || rep.code/100 != 5 {
		return rep.err(verb)
	}
	rep, err = c.cmd(ctx, c.opts.Timeouts.Command, "HELO %s", c.opts.LocalName)
	if err != nil {
		return err
	}
	if rep.code != smtp.C250OK {
		return rep.err("HELO")
	}
	c.esmtp = false
	return nil
}

// Noop sends NOOP.
func (c *Client) Noop(ctx context.Context) error {
	rep, err := c.cmd(ctx, c.opts.Timeouts.Command, "NOOP")
	if err != nil {
		return err
	}
	if rep.code != smtp.C250OK {
		return rep.err("NOOP")
	}
	return nil
}

// Reset sends RSET, abandoning a transaction so that the connection can
// carry another message.
func (c *Client) Reset(ctx context.Context) error {
	rep, err := c.cmd(ctx, c.opts.Timeouts.Command, "RSET")
	if err != nil {
		return err
	}
	c.inTx = false
	if rep.code != smtp.C250OK {
		return rep.err("RSET")
	}
	return nil
}

// Quit sends QUIT and closes the connection. Once the server has answered
// QUIT, an error closing (a TLS close_notify the server no longer reads:
// over a unix socket its write fails at once with EPIPE) is not reported.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.cmd(ctx, 10*time.Second, "QUIT")
	cerr := c.Close()
	if err != nil {
		return err
	}
	if c.tls != nil {
		return nil
	}
	return cerr
}

// Close closes the connection without QUIT.
func (c *Client) Close() error {
	if tc, ok := c.conn.(*tls.Conn); ok {
		_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		return tc.Close()
	}
	return c.raw.Close()
}

// size parses the SIZE parameter; 0 means no limit announced.
func (c *Client) maxSize() int64 {
	ok, p := c.Extension("SIZE")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(p, 10, 64)
	return n
}
