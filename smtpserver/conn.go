package smtpserver

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
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/internal/wire"
	"github.com/petrel-mta/petrel/smtp"
)

// Command line limits. RFC 5321 §4.5.3.1.4 sets 512 octets with CRLF;
// SMTP extensions may add to it for MAIL and RCPT parameters, for which we
// allow maxParamLine, and for AUTH (RFC 4954 §4), for which we allow
// maxAuthLine plus CRLF. Lines longer than readLimit are read through and
// refused without being kept. The read buffer is smaller (readBufSize):
// wire.ReadLine gathers the rare longer line (AUTH, a MAIL with many
// parameters) in a temporary buffer, so an idle connection holds 1 KiB for
// reading, not 12 KiB; writeBufSize holds the longest reply (EHLO's) twice
// over. Idle TLS sessions are what a server holds most of (issue 5: at most
// 32 KiB each): these sizes save about 3 KiB per idle session (RSS, 1,000
// sessions with X25519MLKEM768) for about 5 % more time per 100 KiB message
// (BenchmarkMessageReused: 178 µs against 170 with 2 KiB, client included).
const (
	maxCommandLine = 512
	maxParamLine   = 1024
	readLimit      = maxAuthLine + 2
	readBufSize    = 1024
	writeBufSize   = 512
)

// conn is the server side of one connection. Everything in it is owned by
// the connection's goroutine, except raw (closed by Server.Close), and the
// atomics used for Shutdown.
type conn struct {
	s      *Server
	raw    net.Conn // the TCP connection: deadlines, Close
	nc     net.Conn // raw, or the *tls.Conn over it
	r      *bufio.Reader
	w      *bufio.Writer
	id     string
	log    *slog.Logger
	debug  bool // log the protocol trace (level debug)
	public Conn
	start  time.Time

	dataMode  bool // reads refresh the DataTimeout deadline
	dataStart time.Time
	dataRead  int64
	tlsState  *tls.ConnectionState
	helo      string
	esmtp     bool
	authUser  string // the AUTH user name; "" when not authenticated
	sess      Session
	tx        *transaction
	bdat      *bdatState
	errCount  int
	junk      int // junk commands since the last accepted message
	msgCount  int
	closeWhy  string
	shutdown  atomic.Bool
	idle      atomic.Bool
	replyBuf  []byte
	dataRd    wire.DataReader
}

type transaction struct {
	from  smtp.Path
	opts  MailOptions
	rcpts []smtp.Path
}

// netReader is what the bufio.Reader reads from: the current connection,
// with the data deadline refreshed on every read while message data flows.
type netReader struct{ c *conn }

func (r netReader) Read(p []byte) (int, error) {
	c := r.c
	if !c.dataMode {
		return c.nc.Read(p)
	}
	// Each read within DataTimeout, and the whole message at no less than
	// MinDataRate (Postfix's smtpd_min_data_rate): a client dripping
	// data cannot hold the connection for ever.
	deadline := time.Now().Add(c.s.opts.DataTimeout)
	if budget := c.dataBudget(); budget.Before(deadline) {
		deadline = budget
	}
	_ = c.raw.SetReadDeadline(deadline)
	n, err := c.nc.Read(p)
	c.dataRead += int64(n)
	return n, err
}

// dataBudget is when the message transfer must be over: DataTimeout plus
// one second per MinDataRate octets received.
func (c *conn) dataBudget() time.Time {
	return c.dataStart.Add(c.s.opts.DataTimeout + time.Duration(c.dataRead/c.s.opts.MinDataRate)*time.Second)
}

// startData enters data mode for DATA or a BDAT chunk.
func (c *conn) startData(first bool) {
	c.dataMode = true
	if first {
		c.dataStart = time.Now()
		c.dataRead = int64(c.r.Buffered())
	}
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, raw: nc, nc: nc, id: s.newID(), start: time.Now()}
	c.r = bufio.NewReaderSize(netReader{c}, readBufSize)
	c.w = bufio.NewWriterSize(nc, writeBufSize)
	c.log = s.log.With("cid", c.id, "peer", nc.RemoteAddr().String())
	c.debug = c.log.Enabled(context.Background(), slog.LevelDebug)
	c.public.c = c
	return c
}

// errClose ends the connection without a further reply.
var errClose = errors.New("smtpserver: close connection")

// closeReply ends the connection after sending a final reply.
type closeReply struct{ reply *smtp.Error }

func (e *closeReply) Error() string { return "close after " + e.reply.Error() }

var (
	errShuttingDown = &smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.E432NotAccepting, Message: "Service shutting down, try again later"}
	errTimeout      = &smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.EnhancedCode{Class: 4, Subject: 4, Detail: 2}, Message: "Timeout, closing connection"}
	errTooManyErrs  = &smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.E470Security, Message: "Too many errors, closing connection"}
	errUnrecognized = &smtp.Error{Code: smtp.C500SyntaxError, Enhanced: smtp.E551InvalidCommand, Message: "Command unrecognized"}
	errLineTooLong  = &smtp.Error{Code: smtp.C500SyntaxError, Enhanced: smtp.E552SyntaxError, Message: "Line too long (RFC 5321 section 4.5.3.1.4)"}

	errCmdBareNewline = &smtp.Error{Code: smtp.C500SyntaxError, Enhanced: smtp.E552SyntaxError, Message: "Command lines must end in CRLF (RFC 5321 section 2.3.8)"}
)

// junkCommands may be repeated junkLimit times between accepted messages
// before each counts as an error (Postfix's smtpd_junk_command_limit).
// EHLO and HELO count too: repeating them resets the transaction and makes
// no progress.
var junkCommands = map[string]bool{"NOOP": true, "RSET": true, "VRFY": true, "HELP": true, "ETRN": true, "EHLO": true, "HELO": true}

const junkLimit = 100

func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.log.Info("connect", "local", c.raw.LocalAddr().String())
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("panic serving connection", "panic", v, "stack", string(debug.Stack()))
			c.closeWhy = "internal error"
			c.writeReply(&smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.E430SystemOther, Message: "Internal error, closing connection"})
			_ = c.flush()
		}
		c.abortBDAT()
		if c.sess != nil {
			if err := c.sess.Close(); err != nil {
				c.log.Warn("session close", "err", err)
			}
		}
		if tc, ok := c.nc.(*tls.Conn); ok {
			// close_notify (RFC 8314 §3.4), but a client that does not
			// read cannot hold the connection: crypto/tls allows the
			// write 5 s, we allow 1 s.
			t := time.AfterFunc(time.Second, func() { _ = c.raw.Close() })
			_ = tc.Close()
			t.Stop()
		} else {
			_ = c.raw.Close()
		}
		c.log.Info("disconnect", "reason", c.closeWhy, "messages", c.msgCount,
			"duration", time.Since(c.start).Round(time.Millisecond))
	}()

	if c.s.opts.ImplicitTLS {
		if !c.handshake(ctx, c.s.opts.TLSConfig, true) {
			return
		}
	}
	if err := c.newSession(ctx); err != nil {
		c.finish(err)
		return
	}
	c.writeReplyLines(smtp.C220ServiceReady, smtp.NoEnhancedCode, c.s.opts.Hostname+" ESMTP Petrel")
	for {
		if err := c.command(ctx); err != nil {
			c.finish(err)
			return
		}
	}
}

// finish sends the final reply an ending error carries and records why.
func (c *conn) finish(err error) {
	var cr *closeReply
	var se *smtp.Error
	switch {
	case errors.As(err, &cr):
		c.writeReply(cr.reply)
		_ = c.flush()
		if c.closeWhy == "" {
			c.closeWhy = cr.reply.Message
		}
	case errors.As(err, &se):
		c.writeReply(se)
		_ = c.flush()
		if c.closeWhy == "" {
			c.closeWhy = se.Message
		}
	case errors.Is(err, errClose):
		_ = c.flush()
	default:
		c.log.Error("session setup failed", "err", err)
		c.writeReply(&smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.E430SystemOther, Message: "Service not available, closing connection (" + c.id + ")"})
		_ = c.flush()
	}
}

func (c *conn) newSession(ctx context.Context) error {
	sess, err := c.s.opts.Backend.NewSession(ctx, &c.public)
	if err != nil {
		var se *smtp.Error
		if errors.As(err, &se) {
			return &closeReply{reply: se}
		}
		return err
	}
	c.sess = sess
	return nil
}

// command reads and runs one command. A non-nil result ends the connection.
func (c *conn) command(ctx context.Context) error {
	line, err := c.readCommand()
	var lineErr *smtp.Error
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrLineTooLong):
		lineErr = errLineTooLong
	case errors.Is(err, wire.ErrBareLF), errors.Is(err, wire.ErrBareCR):
		lineErr = errCmdBareNewline
	case errors.Is(err, errShuttingDown):
		c.closeWhy = "shutdown"
		return &closeReply{reply: errShuttingDown}
	default:
		return c.readFailed(err)
	}
	// With a refused line, line holds its start: enough for the verb.
	verb, arg, ok := smtp.ParseCommand(line)
	if c.debug {
		c.traceCommand(verb, line)
	}
	if ok && isHTTPVerb(verb) {
		// Cross-protocol attack (ALPACA) or a lost web client: say nothing.
		c.log.Warn("HTTP request on SMTP port; closing", "verb", verb)
		c.closeWhy = "HTTP verb"
		return errClose
	}
	if lineErr == nil && len(line)+2 > maxCommandLine && !(len(line)+2 <= maxParamLine && (verb == "MAIL" || verb == "RCPT")) && verb != "AUTH" {
		lineErr = errLineTooLong
	}
	if lineErr == errLineTooLong && verb == "AUTH" {
		lineErr = errAuthLineLength // RFC 4954 §4: over maxAuthLine
	}
	if lineErr != nil {
		if verb == "BDAT" {
			// The chunk size cannot be trusted: its octets would be
			// read as commands.
			return &closeReply{reply: errBadBDAT}
		}
		return c.replyErr(ctx, verb, lineErr)
	}
	if !ok {
		return c.replyErr(ctx, "", errUnrecognized)
	}
	if junkCommands[verb] || (verb == "BDAT" && isEmptyChunk(arg)) {
		// Postfix's smtpd_junk_command_limit: a client that only
		// idles with NOOP/RSET/VRFY cannot hold a connection forever.
		if c.junk++; c.junk > junkLimit {
			c.errCount++
			if c.errCount >= c.s.opts.MaxErrors {
				c.closeWhy = "too many junk commands"
				return &closeReply{reply: errTooManyErrs}
			}
		}
	}
	h, known := handlers[verb]
	if !known {
		return c.replyErr(ctx, verb, errUnrecognized)
	}
	if c.bdat != nil && h.endsBDAT {
		// The transfer and its transaction end together, even if the
		// command is then refused: never a message without the chunks
		// already acknowledged.
		c.rset(ctx)
	}
	if c.s.opts.RequireTLS && c.tlsState == nil && !h.beforeTLS {
		err := error(&smtp.Error{Code: smtp.C530AuthRequired, Enhanced: smtp.E570Security, Message: "Must issue a STARTTLS command first"})
		if verb == "BDAT" {
			err = c.discardChunk(arg, err)
		}
		return c.replyErr(ctx, verb, err)
	}
	return c.replyErr(ctx, verb, h.fn(c, ctx, arg))
}

// readCommand flushes pending replies when no further pipelined command is
// waiting (RFC 2920 §3.2), then reads one command line within
// CommandTimeout.
func (c *conn) readCommand() (string, error) {
	if c.r.Buffered() == 0 {
		if err := c.flush(); err != nil {
			return "", err
		}
	}
	return c.readLine(readLimit)
}

// readLine reads one line of at most limit octets (CRLF included) within
// CommandTimeout; a shutdown ends the wait with errShuttingDown.
func (c *conn) readLine(limit int) (string, error) {
	_ = c.raw.SetReadDeadline(time.Now().Add(c.s.opts.CommandTimeout))
	c.idle.Store(true)
	defer c.idle.Store(false)
	if c.shutdown.Load() {
		return "", errShuttingDown
	}
	line, err := wire.ReadLine(c.r, limit)
	if err != nil && c.shutdown.Load() && isTimeout(err) {
		return "", errShuttingDown
	}
	return line, err
}

func (c *conn) startShutdown() {
	c.shutdown.Store(true)
	if c.idle.Load() {
		_ = c.raw.SetReadDeadline(time.Now())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// readFailed turns a read error into the end of the connection.
func (c *conn) readFailed(err error) error {
	switch {
	case isTimeout(err):
		c.closeWhy = "timeout"
		return &closeReply{reply: errTimeout}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		if c.closeWhy == "" {
			c.closeWhy = "client closed connection"
		}
	default:
		c.closeWhy = "read error: " + err.Error()
	}
	return errClose
}

// replyErr answers a handler's result: nil means the handler replied
// itself; *smtp.Error is sent as it is; errClose and *closeReply end the
// connection; anything else is logged and answered with a generic 451 4.3.0
// carrying only the connection ID. It counts error replies and ends the
// connection after MaxErrors of them.
func (c *conn) replyErr(ctx context.Context, verb string, err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.Error
	var cr *closeReply
	switch {
	case errors.As(err, &cr), errors.Is(err, errClose):
		return err
	case errors.As(err, &se):
	default:
		c.log.Error("command failed", "cmd", verb, "err", err)
		se = &smtp.Error{Code: smtp.C451LocalError, Enhanced: smtp.E430SystemOther,
			Message: "Local error in processing, try again later (" + c.id + ")"}
	}
	c.writeReply(se)
	// 452 4.5.3 (too many recipients) is flow control, not an error: the
	// client sends the rest in another transaction (RFC 5321 §4.5.3.1.10).
	if se.Code >= 400 && se != errTooManyRcpt {
		c.errCount++
		if c.errCount >= c.s.opts.MaxErrors {
			c.closeWhy = "too many errors"
			return &closeReply{reply: errTooManyErrs}
		}
	}
	return nil
}

// writeReply queues a reply; it is sent at the next flush.
func (c *conn) writeReply(e *smtp.Error) {
	if !strings.Contains(e.Message, "\n") {
		c.writeReplyLines(e.Code, e.Enhanced, e.Message) // no Lines() slice
		return
	}
	c.writeReplyLines(e.Code, e.Enhanced, e.Lines()...)
}

func (c *conn) writeReplyLines(code int, enh smtp.EnhancedCode, lines ...string) {
	c.replyBuf = smtp.AppendReply(c.replyBuf[:0], code, enh, lines...)
	if len(c.replyBuf) > c.w.Available() {
		// The buffer writes to the connection now, not at flush: with
		// a fresh deadline, not the one of the last flush (a pipelined
		// burst after a long pause would meet a stale one). A write
		// error stays in c.w for the next flush.
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.opts.CommandTimeout))
	}
	_, _ = c.w.Write(c.replyBuf)
	if c.debug {
		c.log.Debug("S: " + strings.ReplaceAll(strings.TrimSuffix(string(c.replyBuf), "\r\n"), "\r\n", "\\r\\n"))
	}
}

// traceCommand logs a command line at level debug, with AUTH's initial
// response redacted (AUTH's continuation lines are never logged).
func (c *conn) traceCommand(verb, line string) {
	if verb == "AUTH" {
		if f := strings.Fields(line); len(f) > 2 {
			line = f[0] + " " + f[1] + " [redacted]"
		}
	}
	c.log.Debug("C: " + strings.ToValidUTF8(line, "\uFFFD"))
}

func (c *conn) ok(code int, enh smtp.EnhancedCode, text string) error {
	c.writeReplyLines(code, enh, text)
	return nil
}

func (c *conn) flush() error {
	if c.w.Buffered() == 0 {
		return nil
	}
	_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.opts.CommandTimeout))
	return c.w.Flush()
}

// rset clears the mail transaction (RFC 5321 §4.1.1.5): RSET, EHLO/HELO,
// and the end of every transaction.
func (c *conn) rset(ctx context.Context) {
	c.abortBDAT()
	if c.tx != nil {
		c.tx = nil
		c.sess.Reset(ctx)
	}
}

// resetSession is the RFC 3207 §4.2 reset after the TLS handshake: the
// server "MUST discard any knowledge obtained from the client, such as the
// argument to the EHLO command, which was not obtained from the TLS
// negotiation itself". The backend Session is closed and a new one made, so
// nothing learnt in plaintext survives; the client must send EHLO again.
func (c *conn) resetSession(ctx context.Context) error {
	c.abortBDAT()
	c.tx = nil
	c.helo = ""
	c.esmtp = false
	c.authUser = "" // S-AUTH-01
	if c.sess != nil {
		if err := c.sess.Close(); err != nil {
			c.log.Warn("session close", "err", err)
		}
		c.sess = nil
	}
	return c.newSession(ctx)
}

// isEmptyChunk reports a "BDAT 0" that is not the last chunk: it moves
// nothing, so it counts as a junk command.
func isEmptyChunk(arg string) bool {
	n, last, ok := parseBDAT(arg)
	return ok && n == 0 && !last
}

func isHTTPVerb(v string) bool {
	switch v {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI":
		return true
	}
	return false
}

// handler describes one verb.
type handler struct {
	fn        func(c *conn, ctx context.Context, arg string) error
	beforeTLS bool // allowed before STARTTLS where TLS is required (RFC 3207 §4)
	endsBDAT  bool // abandons a BDAT transfer in progress
}

var handlers = map[string]handler{
	"EHLO":     {fn: (*conn).handleEHLO, beforeTLS: true, endsBDAT: true},
	"HELO":     {fn: (*conn).handleHELO, beforeTLS: true, endsBDAT: true},
	"STARTTLS": {fn: (*conn).handleSTARTTLS, beforeTLS: true},
	"NOOP":     {fn: (*conn).handleNOOP, beforeTLS: true},
	"RSET":     {fn: (*conn).handleRSET, beforeTLS: true, endsBDAT: true},
	"QUIT":     {fn: (*conn).handleQUIT, beforeTLS: true, endsBDAT: true},
	"MAIL":     {fn: (*conn).handleMAIL},
	"RCPT":     {fn: (*conn).handleRCPT},
	"DATA":     {fn: (*conn).handleDATA},
	"BDAT":     {fn: (*conn).handleBDAT},
	"VRFY":     {fn: (*conn).handleVRFY},
	"EXPN":     {fn: notImplemented},
	"HELP":     {fn: (*conn).handleHELP},
	"AUTH":     {fn: (*conn).handleAUTH},
	"ETRN":     {fn: notImplemented},
	"TURN":     {fn: notImplemented},
	"ATRN":     {fn: notImplemented},
}

func notImplemented(*conn, context.Context, string) error {
	return smtp.Errorf(smtp.C502NotImplemented, smtp.E551InvalidCommand, "Command not implemented")
}

// Conn is what a Backend and its Sessions see of a connection. Its methods
// may be called only from within Backend.NewSession and Session methods.
type Conn struct{ c *conn }

// ID is the connection's ID, as in the server's logs.
func (p *Conn) ID() string { return p.c.id }

// Hostname is the server's name.
func (p *Conn) Hostname() string { return p.c.s.opts.Hostname }

// Listener is Options.Name.
func (p *Conn) Listener() string { return p.c.s.opts.Name }

// RemoteAddr is the client's address.
func (p *Conn) RemoteAddr() net.Addr { return p.c.raw.RemoteAddr() }

// LocalAddr is the server's address.
func (p *Conn) LocalAddr() net.Addr { return p.c.raw.LocalAddr() }

// TLS is the TLS connection state, nil while the session is in plaintext.
func (p *Conn) TLS() *tls.ConnectionState { return p.c.tlsState }

// Hello returns the EHLO or HELO argument and whether it was EHLO; empty
// before the client greeted (again, after STARTTLS).
func (p *Conn) Hello() (name string, esmtp bool) { return p.c.helo, p.c.esmtp }

// AuthUser is the user name the client authenticated as with AUTH (RFC
// 4954), as it sent it; "" when it did not authenticate in this session.
// It is forgotten at STARTTLS, with the Session.
func (p *Conn) AuthUser() string { return p.c.authUser }

// Logger is the connection's logger (with its ID and peer).
func (p *Conn) Logger() *slog.Logger { return p.c.log }

// Now is the server's clock (Options.Now).
func (p *Conn) Now() time.Time { return p.c.s.opts.Now() }

// Recipients are the accepted recipients of the current transaction.
func (p *Conn) Recipients() []smtp.Path {
	if p.c.tx == nil {
		return nil
	}
	return p.c.tx.rcpts
}

// String describes the connection for logs.
func (p *Conn) String() string {
	return fmt.Sprintf("%s %s", p.c.id, p.c.raw.RemoteAddr())
}
