package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/quickack"
	"github.com/petrel-mta/petrel/smtp"
)

// session is one connection of the lean client: a bufio.Reader and
// bufio.Writer over the TCP or TLS connection, strict replies, pipelined
// writes. It is used by one goroutine.
type session struct {
	raw     net.Conn       // the TCP connection: deadlines, Close
	qa      *quickack.Conn // raw, re-arming quick ACKs while armed; nil with NoQuickAck
	qaTLS   int64          // qa's re-arms when the handshake ended
	conn    net.Conn       // raw (or qa), or the *tls.Conn over it
	r       *bufio.Reader
	w       *bufio.Writer
	ext     extensions
	timeout time.Duration

	tls     TLSParams // zero in plaintext
	resumed bool
	setup   time.Duration // from connect to the last EHLO reply
	unwatch func() bool   // stops the interruption of I/O when ctx is done
}

// extensions are the EHLO keywords the bench cares about.
type extensions uint8

const (
	extPipelining extensions = 1 << iota
	extChunking
	extSize
	extStartTLS
)

const (
	maxReplyLines = 100
	readBuf       = 4096
	writeBuf      = 16 << 10
	idleReadBuf   = 1024 // Hold: many sessions, little traffic
	idleWriteBuf  = 512
)

// open connects and sets the session up: greeting, EHLO, and TLS as asked
// (STARTTLS and EHLO again, or implicit TLS first). n numbers the
// connection, to choose its local address.
func (r *runner) open(ctx context.Context, n uint64, idle bool) (*session, *Error) {
	start := time.Now()
	raw, err := r.dialer.dial(ctx, r.opts.Server, n)
	if err != nil {
		return nil, &Error{Kind: KindConnect, Err: err}
	}
	rb, wb := readBuf, writeBuf
	if idle {
		rb, wb = idleReadBuf, idleWriteBuf
	}
	s := &session{raw: raw, conn: raw, timeout: r.opts.Timeout}
	if r.opts.Security != Plaintext && !r.opts.NoQuickAck {
		s.qa = quickack.New(raw)
		s.conn = s.qa
	}
	s.r, s.w = bufio.NewReaderSize(s.conn, rb), bufio.NewWriterSize(s.conn, wb)
	// Once ctx is done, every blocked read or write fails at once.
	s.unwatch = context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	serr := s.start(ctx, r)
	s.quickAck(false) // the handshake and the first replies inside TLS are done
	if serr == nil && s.qa != nil && s.qa.Rearms() > s.qaTLS {
		// The first replies inside TLS, with the server's session
		// tickets before them, were read with quick ACKs re-armed.
		r.quickAcked.Add(1)
	}
	if serr != nil {
		s.unwatch()
		_ = raw.Close()
		return nil, serr
	}
	s.setup = time.Since(start)
	return s, nil
}

func (s *session) start(ctx context.Context, r *runner) *Error {
	if r.opts.Security == ImplicitTLS {
		if err := s.handshake(ctx, r.tlsConfig); err != nil {
			return err
		}
	}
	if err := s.deadline(ctx); err != nil {
		return err
	}
	code, text, err := s.reply(nil)
	if err != nil {
		return err
	}
	if code != smtp.C220ServiceReady {
		return failf(KindGreeting, "greeting: %d %s", code, text)
	}
	if err := s.hello(ctx, r.opts.EHLO); err != nil {
		return err
	}
	if r.opts.Security != StartTLS {
		return nil
	}
	if s.ext&extStartTLS == 0 {
		return failf(KindTLS, "the server does not offer STARTTLS")
	}
	code, text, err = s.cmd(ctx, "STARTTLS")
	if err != nil {
		return err
	}
	if code != smtp.C220ServiceReady {
		return failf(KindTLS, "STARTTLS: %d %s", code, text)
	}
	if n := s.r.Buffered(); n > 0 {
		// RFC 3207 §4.1 and the NO STARTTLS study: data after the 220
		// would be read as if it came through TLS.
		return failf(KindProtocol, "the server sent %d octets after its 220 to STARTTLS", n)
	}
	if err := s.handshake(ctx, r.tlsConfig); err != nil {
		return err
	}
	return s.hello(ctx, r.opts.EHLO) // RFC 3207 §4.2: forget and ask again
}

// quickAck arms or disarms the re-arming of quick ACKs (internal/quickack):
// armed from the ClientHello to the first EHLO reply inside TLS, where an
// OpenSSL server's session tickets come in separate segments.
func (s *session) quickAck(on bool) {
	if s.qa != nil {
		s.qa.Arm(on)
	}
}

// handshake runs the TLS client handshake within the timeout and moves
// the reader and writer onto TLS.
func (s *session) handshake(ctx context.Context, cfg *tls.Config) *Error {
	s.quickAck(true)
	tc := tls.Client(s.conn, cfg)
	if err := s.deadline(ctx); err != nil {
		return err
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		if ne := netFail(err); ne.Kind == KindTimeout {
			return ne
		}
		return &Error{Kind: KindTLS, Err: err}
	}
	if s.qa != nil {
		s.qaTLS = s.qa.Rearms()
	}
	st := tc.ConnectionState()
	s.tls = TLSParams{Version: smtp.TLSVersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite), Group: smtp.GroupName(st.CurveID)}
	s.resumed = st.DidResume
	s.conn = tc
	s.r.Reset(tc)
	s.w.Reset(tc)
	return nil
}

// deadline sets the connection's deadline one timeout ahead; it fails
// once ctx is done, so that a deadline set after the cancellation's cannot
// undo it.
func (s *session) deadline(ctx context.Context) *Error {
	_ = s.raw.SetDeadline(time.Now().Add(s.timeout))
	if err := ctx.Err(); err != nil {
		_ = s.raw.SetDeadline(time.Unix(1, 0))
		return &Error{Kind: KindIO, Err: err}
	}
	return nil
}

// hello sends EHLO and records the extensions.
func (s *session) hello(ctx context.Context, name string) *Error {
	if err := s.deadline(ctx); err != nil {
		return err
	}
	s.ext = 0
	_, _ = s.w.WriteString("EHLO " + name + "\r\n")
	if err := s.flush(); err != nil {
		return err
	}
	code, text, err := s.reply(func(i int, line string) {
		if i == 0 {
			return
		}
		kw, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(kw) {
		case "PIPELINING":
			s.ext |= extPipelining
		case "CHUNKING":
			s.ext |= extChunking
		case "SIZE":
			s.ext |= extSize
		case "STARTTLS":
			s.ext |= extStartTLS
		}
	})
	if err != nil {
		return err
	}
	if code != smtp.C250OK {
		return failf(KindEHLO, "EHLO: %d %s", code, text)
	}
	return s.alone()
}

// alone checks that nothing follows the replies the client asked for: an
// unsolicited reply would shift every later one.
func (s *session) alone() *Error {
	if n := s.r.Buffered(); n > 0 {
		return failf(KindProtocol, "the server sent %d unexpected octets after its reply", n)
	}
	return nil
}

// cmd sends one command and reads its reply, within the timeout.
func (s *session) cmd(ctx context.Context, line string) (int, string, *Error) {
	if err := s.deadline(ctx); err != nil {
		return 0, "", err
	}
	_, _ = s.w.WriteString(line)
	_, _ = s.w.WriteString("\r\n")
	if err := s.flush(); err != nil {
		return 0, "", err
	}
	code, text, err := s.reply(nil)
	if err == nil {
		err = s.alone()
	}
	return code, text, err
}

func (s *session) flush() *Error {
	if err := s.w.Flush(); err != nil {
		return netFail(err)
	}
	return nil
}

// reply reads one reply strictly (RFC 5321 §4.2, with smtp.ParseReplyLine):
// CRLF line ends, the same code on every line, at most maxReplyLines lines.
// It returns the code and the first line's text; line, when set, sees
// every line's text.
func (s *session) reply(line func(i int, text string)) (code int, text string, err *Error) {
	for i := 0; ; i++ {
		b, rerr := s.r.ReadSlice('\n')
		if rerr != nil {
			if rerr == bufio.ErrBufferFull {
				return 0, "", failf(KindProtocol, "reply line longer than %d octets", s.r.Size())
			}
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			return 0, "", netFail(rerr)
		}
		n := len(b)
		if n < 2 || b[n-2] != '\r' {
			return 0, "", failf(KindProtocol, "reply line not ended by CRLF: %q", truncate(b))
		}
		c, more, t, perr := smtp.ParseReplyLine(string(b[:n-2]))
		if perr != nil {
			return 0, "", failf(KindProtocol, "malformed reply %q", truncate(b))
		}
		if i == 0 {
			code, text = c, t
		} else if c != code {
			return 0, "", failf(KindProtocol, "reply code changed within a reply: %q", truncate(b))
		}
		if line != nil {
			line(i, t)
		}
		if !more {
			return code, text, nil
		}
		if i+1 >= maxReplyLines {
			return 0, "", failf(KindProtocol, "reply of more than %d lines", maxReplyLines)
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// quit sends QUIT, reads the 221 and closes. A failure is returned for
// counting; the connection is closed in any case.
func (s *session) quit(ctx context.Context) *Error {
	code, text, err := s.cmd(ctx, "QUIT")
	if err == nil && code != smtp.C221Closing {
		err = failf(KindProtocol, "QUIT: %d %s", code, text)
	}
	s.close()
	return err
}

// close closes the connection (a TLS close_notify first, within a
// second).
func (s *session) close() {
	s.unwatch()
	_ = s.raw.SetDeadline(time.Now().Add(time.Second))
	_ = s.conn.Close()
}

// job is what every transaction sends, made once per run.
type job struct {
	msg     []byte
	dataEnd []byte      // msg and the end of data, ".\r\n": what follows DATA's 354
	env     [2][]byte   // MAIL and every RCPT, without and with SIZE=
	cmds    [2][][]byte // env's commands one by one
	bdat    []byte      // "BDAT <size> LAST\r\n"
	rcpts   int
}

func newJob(o *Options) (*job, error) {
	msg, err := Message(o.Size, strings.Trim(o.From, "<>"), rcptAddr(o.To, 1), o.Now())
	if err != nil {
		return nil, err
	}
	j := &job{msg: msg, rcpts: o.Rcpts}
	j.dataEnd = append(append(make([]byte, 0, len(msg)+3), msg...), ".\r\n"...)
	from := "<" + strings.Trim(o.From, "<>") + ">"
	mail := [2]string{"MAIL FROM:" + from + "\r\n", "MAIL FROM:" + from + " SIZE=" + strconv.Itoa(len(msg)) + "\r\n"}
	for v := range mail {
		j.cmds[v] = append(j.cmds[v], []byte(mail[v]))
		j.env[v] = append(j.env[v], mail[v]...)
		for i := 1; i <= o.Rcpts; i++ {
			rcpt := "RCPT TO:<" + rcptAddr(o.To, i) + ">\r\n"
			j.cmds[v] = append(j.cmds[v], []byte(rcpt))
			j.env[v] = append(j.env[v], rcpt...)
		}
	}
	j.bdat = []byte("BDAT " + strconv.Itoa(len(msg)) + " LAST\r\n")
	return j, nil
}

// txResult is the outcome of one transaction.
type txResult struct {
	ok         bool          // the final reply was 250
	alive      bool          // the session can carry another transaction
	final, all time.Duration // latencies: end of data to final reply, MAIL to final reply
	pipelined  bool
	chunked    bool
}

// tx is the state of one transaction while its replies come in.
type tx struct {
	r        *runner
	mailOK   bool
	accepted int
	closing  bool // a 421: the server closes the session
}

// envelope checks the reply to MAIL (i == 0) or to the i-th RCPT, and
// counts a refusal.
func (t *tx) envelope(ctx context.Context, i, code int, text string) {
	if code == smtp.C421ServiceUnavailable {
		t.closing = true
	}
	switch {
	case i == 0 && code == smtp.C250OK:
		t.mailOK = true
	case i == 0:
		t.r.count(ctx, failf(KindMail, "MAIL: %d %s", code, text))
	case !t.mailOK:
		// Refused for want of MAIL, which is already counted.
	case code == smtp.C250OK || code == smtp.C251UserNotLocal:
		t.accepted++
	case code >= 400 && code < 600:
		t.r.count(ctx, failf(replyKind(KindRcpt4xx, code), "RCPT: %d %s", code, text))
	default:
		t.r.count(ctx, failf(KindProtocol, "RCPT: unexpected reply %d %s", code, text))
		t.closing = true
	}
}

// data counts a refusal of DATA or of the end of the data, when the
// transaction had got that far.
func (t *tx) data(ctx context.Context, what string, code int, text string) {
	if code == smtp.C421ServiceUnavailable {
		t.closing = true
	}
	if t.mailOK && t.accepted > 0 {
		t.r.count(ctx, failf(replyKind(KindData4xx, code), "%s: %d %s", what, code, text))
	}
}

// transaction sends one message: MAIL, the RCPTs, DATA and the message, or
// BDAT LAST with it; in one group when pipelining is asked for and
// offered (RFC 2920; BDAT may be pipelined, RFC 3030 §4.2). It counts
// every refusal and failure in r, and sends RSET after a failed
// transaction so that the session can go on.
func (s *session) transaction(ctx context.Context, r *runner) txResult {
	o := &r.opts
	j := r.job
	res := txResult{
		pipelined: o.Pipelining && s.ext&extPipelining != 0,
		chunked:   o.BDAT && s.ext&extChunking != 0,
	}
	v := 0
	if s.ext&extSize != 0 {
		v = 1
	}
	fail := func(err *Error) txResult {
		r.count(ctx, err)
		return res // the session is broken
	}
	if err := s.deadline(ctx); err != nil {
		return fail(err)
	}
	t := tx{r: r}
	start := time.Now()
	var endData time.Time
	var code int
	var text string
	if res.pipelined {
		_, _ = s.w.Write(j.env[v])
		if res.chunked {
			_, _ = s.w.Write(j.bdat)
			_, _ = s.w.Write(j.msg)
		} else {
			_, _ = s.w.WriteString("DATA\r\n")
		}
		if err := s.flush(); err != nil {
			return fail(err)
		}
		endData = time.Now()
		for i := range 1 + j.rcpts + 1 {
			var err *Error
			code, text, err = s.reply(nil)
			if err != nil {
				return fail(err)
			}
			if i <= j.rcpts {
				t.envelope(ctx, i, code, text)
			} else if !res.chunked && code != smtp.C354StartData {
				t.data(ctx, "DATA", code, text)
			}
			if t.closing {
				return res
			}
		}
		if err := s.alone(); err != nil {
			return fail(err)
		}
		if !res.chunked {
			// code is DATA's reply.
			if code != smtp.C354StartData {
				return s.abandon(ctx, r, res)
			}
			if t.accepted == 0 {
				// 354 without a recipient (RFC 2920 §3.2 (3)):
				// send an empty message's end, which it refuses.
				code, _, err := s.cmd(ctx, ".")
				if err != nil {
					return fail(err)
				}
				if code == smtp.C250OK {
					return fail(failf(KindProtocol, "the server accepted a message without recipients"))
				}
				return s.abandon(ctx, r, res)
			}
			_, _ = s.w.Write(j.dataEnd)
			if err := s.flush(); err != nil {
				return fail(err)
			}
			endData = time.Now()
			var err *Error
			if code, text, err = s.reply(nil); err != nil {
				return fail(err)
			}
		}
	} else {
		for i, c := range j.cmds[v] {
			_, _ = s.w.Write(c)
			if err := s.flush(); err != nil {
				return fail(err)
			}
			code, text, err := s.reply(nil)
			if err == nil {
				err = s.alone()
			}
			if err != nil {
				return fail(err)
			}
			t.envelope(ctx, i, code, text)
			if t.closing {
				return res
			}
			if !t.mailOK {
				return s.abandon(ctx, r, res)
			}
		}
		if t.accepted == 0 {
			return s.abandon(ctx, r, res)
		}
		if res.chunked {
			_, _ = s.w.Write(j.bdat)
			_, _ = s.w.Write(j.msg)
		} else {
			code, text, err := s.cmd(ctx, "DATA")
			if err != nil {
				return fail(err)
			}
			if code != smtp.C354StartData {
				if t.data(ctx, "DATA", code, text); t.closing {
					return res
				}
				return s.abandon(ctx, r, res)
			}
			_, _ = s.w.Write(j.dataEnd)
		}
		if err := s.flush(); err != nil {
			return fail(err)
		}
		endData = time.Now()
		var err *Error
		if code, text, err = s.reply(nil); err != nil {
			return fail(err)
		}
	}
	end := time.Now()
	if err := s.alone(); err != nil {
		return fail(err)
	}
	switch {
	case code == smtp.C250OK && t.accepted > 0:
		res.ok, res.alive = true, true
		res.final, res.all = end.Sub(endData), end.Sub(start)
		return res
	case code == smtp.C250OK:
		return fail(failf(KindProtocol, "the server accepted a message without recipients"))
	case code < 400 || code >= 600:
		return fail(failf(KindProtocol, "unexpected reply %d %s to the end of the data", code, text))
	}
	if t.data(ctx, "end of data", code, text); t.closing {
		return res
	}
	return s.abandon(ctx, r, res)
}

// abandon ends a failed transaction with RSET, so the session can go on.
func (s *session) abandon(ctx context.Context, r *runner, res txResult) txResult {
	code, text, err := s.cmd(ctx, "RSET")
	if err != nil {
		r.count(ctx, err)
		return res
	}
	if code != smtp.C250OK {
		r.count(ctx, failf(KindProtocol, "RSET: %d %s", code, text))
		return res
	}
	res.alive = true
	return res
}
