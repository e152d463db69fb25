package smtpclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/petrel-mta/petrel/smtp"
)

// Envelope is what SendMail sends a message with.
type Envelope struct {
	// From is the reverse-path mailbox; "" is the null path <>.
	From string
	// To are the recipients' mailboxes.
	To []string
	// DSN parameters (RFC 3461), sent only when the server offers DSN.
	Ret    string   // "FULL" or "HDRS"
	EnvID  string   // xtext-encoded by the caller
	Notify []string // per message: NEVER, or SUCCESS/FAILURE/DELAY
}

// RcptResult is one recipient's outcome.
type RcptResult struct {
	To string
	// Err is nil when the recipient was accepted; a *ReplyError when
	// refused. In SMTP it is RCPT's outcome (a failure at the end of the
	// data is SendMail's error, shared by all). In LMTP it is the final
	// outcome: nil only when this recipient's reply to the end of the
	// data was 2xx (RFC 2033 §4.2); see SendMail.
	Err error
	// Reply is the text (without the basic code, lines joined by "\n",
	// as Result.Reply) of the reply to the end of the data for this
	// recipient: in LMTP its own reply, success or failure; in SMTP the
	// shared reply, when it accepted the message. Empty when there was
	// none for it (RCPT refused, the data not accepted in SMTP, or the
	// connection lost first).
	Reply string
}

// Result is the outcome of SendMail.
type Result struct {
	// Rcpts has one entry per envelope recipient, in order, once the
	// replies to RCPT are in.
	Rcpts []RcptResult
	// Reply is the server's reply to the end of the message (its text
	// often has the queue ID), empty when the message was not sent. In
	// LMTP, where each recipient has its own, it is the first 2xx one.
	Reply string
	// Accepted counts the recipients the message was delivered for: in
	// LMTP those whose reply to the end of the data was 2xx.
	Accepted int
}

// Errors found before anything is sent: the server lacks an extension the
// message needs. They are permanent (5xx).
var (
	ErrNeedsSMTPUTF8 = &smtp.Error{Code: smtp.C553MailboxNameInvalid, Enhanced: smtp.E567NonASCIIAddr,
		Message: "Non-ASCII address, and the server does not offer SMTPUTF8 (RFC 6531 section 3.2)"}
	ErrNeeds8BitMIME = &smtp.Error{Code: smtp.C554TransactionFailed, Enhanced: smtp.EnhancedCode{Class: 5, Subject: 6, Detail: 3},
		Message: "8-bit message, and the server does not offer 8BITMIME (RFC 6152); conversion not supported"}
	ErrTooBig = &smtp.Error{Code: smtp.C552StorageExceeded, Enhanced: smtp.E534MsgTooBig,
		Message: "Message larger than the server's SIZE limit (RFC 1870)"}
)

func formatPath(addr string, utf8 bool) (string, error) {
	if addr == "" {
		return "<>", nil
	}
	p, err := smtp.ParseMailbox(addr, utf8)
	if err != nil {
		return "", fmt.Errorf("smtpclient: bad address %q: %w", addr, err)
	}
	return p.Bracketed(), nil
}

func needsUTF8(env Envelope) bool {
	for _, a := range append([]string{env.From}, env.To...) {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

func has8Bit(msg []byte) bool {
	for _, b := range msg {
		if b >= 0x80 {
			return true
		}
	}
	return false
}

// SendMail sends one message in one transaction: MAIL, RCPT for each
// recipient, then DATA or BDAT, pipelined when the server offers
// PIPELINING (RFC 2920). The message is a complete RFC 5322 message; bare CR
// and LF in it are sent as CRLF (RFC 5321 §2.3.8), and it is dot-stuffed for
// DATA, so no smuggling sequence can leave this client. It returns the
// per-recipient results; err is non-nil when the message was not accepted
// for any recipient. The connection can carry another message afterwards.
//
// In LMTP (Options.LMTP), after the end of the data (the final "." of DATA,
// or the BDAT LAST chunk) the client reads one reply per recipient that
// RCPT accepted, in RCPT order, each within Timeouts.DataEnd, and no more:
// a refused RCPT is owed none (RFC 2033 §4.2, §4.3). Each recipient's
// outcome is then Rcpts[i]: Err nil and Reply its text for a 2xx, a
// *ReplyError (Temporary tells 4xx from 5xx) for a failure, as for a
// refused RCPT. A failure that leaves accepted recipients without a reply
// of their own (DATA refused, the connection lost, a timeout, a malformed
// reply) becomes their Err (a refused DATA's *ReplyError, or a temporary
// error); those answered before keep their outcome. When the replies
// cannot all be read, or more come than are owed, the connection is
// closed: it is out of step. As in SMTP, err is nil when the message was
// delivered for at least one recipient (Accepted > 0); otherwise it is
// the first refusal of the phase that failed: of RCPT when RCPT refused
// every recipient, else of the first accepted recipient at the end of the
// data.
func (c *Client) SendMail(ctx context.Context, env Envelope, msg []byte) (*Result, error) {
	res := &Result{}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	utf8 := needsUTF8(env)
	if ok, _ := c.Extension("SMTPUTF8"); utf8 && !ok {
		return res, &ReplyError{Command: "MAIL", Reply: ErrNeedsSMTPUTF8}
	}
	eight := has8Bit(msg)
	if ok, _ := c.Extension("8BITMIME"); eight && !ok {
		return res, &ReplyError{Command: "MAIL", Reply: ErrNeeds8BitMIME}
	}
	body := normalize(msg)
	if max := c.maxSize(); max > 0 && int64(len(body)) > max {
		return res, &ReplyError{Command: "MAIL", Reply: ErrTooBig}
	}
	from, err := formatPath(env.From, utf8)
	if err != nil {
		return res, err
	}
	dsn, _ := c.Extension("DSN")
	var b strings.Builder
	b.WriteString("MAIL FROM:" + from)
	if ok, _ := c.Extension("SIZE"); ok {
		b.WriteString(" SIZE=" + strconv.Itoa(len(body)))
	}
	if eight {
		b.WriteString(" BODY=8BITMIME")
	}
	if utf8 {
		b.WriteString(" SMTPUTF8")
	}
	if dsn && env.Ret != "" {
		b.WriteString(" RET=" + env.Ret)
	}
	if dsn && env.EnvID != "" {
		b.WriteString(" ENVID=" + env.EnvID)
	}
	cmds := []string{b.String()}
	for _, to := range env.To {
		p, err := formatPath(to, utf8)
		if err != nil {
			return res, err
		}
		line := "RCPT TO:" + p
		if dsn && len(env.Notify) > 0 {
			line += " NOTIFY=" + strings.Join(env.Notify, ",")
		}
		cmds = append(cmds, line)
	}
	chunking, _ := c.Extension("CHUNKING")
	chunking = chunking && !c.opts.NoChunking
	pipelining, _ := c.Extension("PIPELINING")
	pipelining = pipelining && !c.opts.NoPipelining
	if !chunking {
		cmds = append(cmds, "DATA")
	}

	// Send the commands, as one group when pipelining, and read the
	// replies in order (RFC 2920 §3.1: DATA ends the group).
	replies := make([]reply, 0, len(cmds))
	stop := c.interrupt(ctx)
	defer stop()
	send := func(group []string) error {
		if err := c.checkIdle(ctx); err != nil {
			return err
		}
		for _, l := range group {
			if err := c.writeLine(l); err != nil {
				return err
			}
		}
		if err := c.flush(ctx); err != nil {
			return err
		}
		for i := range group {
			t := c.opts.Timeouts.Command
			if group[i] == "DATA" {
				t = c.opts.Timeouts.DataStart
			}
			rep, err := c.readReply(ctx, t)
			if err != nil {
				return err
			}
			replies = append(replies, rep)
		}
		return c.expectAlone()
	}
	if pipelining {
		if err := send(cmds); err != nil {
			return res, err
		}
	} else {
		for i, l := range cmds {
			if err := send([]string{l}); err != nil {
				return res, err
			}
			if i == 0 && replies[0].code != smtp.C250OK {
				break // MAIL refused: no RCPT
			}
		}
	}
	c.inTx = true
	if replies[0].code != smtp.C250OK {
		c.abort(ctx, replies, len(cmds))
		return res, replies[0].err("MAIL")
	}
	for i, to := range env.To {
		r := RcptResult{To: to}
		if i+1 < len(replies) && replies[i+1].code != smtp.C250OK && replies[i+1].code != smtp.C251UserNotLocal {
			r.Err = replies[i+1].err("RCPT")
		}
		if r.Err == nil {
			res.Accepted++
		}
		res.Rcpts = append(res.Rcpts, r)
	}
	if res.Accepted == 0 {
		c.abort(ctx, replies, len(cmds))
		return res, firstRcptErr(res)
	}
	if !chunking {
		dataRep := replies[len(replies)-1]
		if dataRep.code != smtp.C354StartData {
			c.inTx = false
			_ = c.Reset(ctx)
			return res, c.failAccepted(res, dataRep.err("DATA"))
		}
	}
	if err := c.writeData(ctx, body, chunking); err != nil {
		return res, c.failAccepted(res, err)
	}
	if c.opts.LMTP {
		verb := "DATA"
		if chunking {
			verb = "BDAT"
		}
		return res, c.lmtpReplies(ctx, res, verb)
	}
	final, err := c.readReply(ctx, c.opts.Timeouts.DataEnd)
	if err != nil {
		return res, c.failAccepted(res, err)
	}
	c.inTx = false
	if final.code != smtp.C250OK {
		return res, c.failAccepted(res, final.err("DATA"))
	}
	res.Reply = final.text()
	for i := range res.Rcpts {
		if res.Rcpts[i].Err == nil {
			res.Rcpts[i].Reply = res.Reply
		}
	}
	return res, nil
}

// failAccepted records a failure after RCPT that ends the transaction for
// every recipient RCPT accepted, and returns it as SendMail's error. In
// SMTP it is only that error (Rcpts keeps RCPT's outcomes); in LMTP it is
// also each such recipient's outcome.
func (c *Client) failAccepted(res *Result, err error) error {
	res.Accepted = 0
	if c.opts.LMTP {
		for i := range res.Rcpts {
			if res.Rcpts[i].Err == nil {
				res.Rcpts[i].Err = err
			}
		}
	}
	return err
}

// lmtpReplies reads the replies to the end of the data in LMTP: one for
// each recipient that RCPT accepted, in RCPT order (RFC 2033 §4.2; §4.3
// for BDAT LAST), each within Timeouts.DataEnd (RFC 5321 §4.5.3.2.6), and
// records them in res. A multi-line reply is one reply (§4.2). It never
// reads a reply that is not owed. When a reply cannot be read, the
// recipients still waiting for theirs fail with that (temporary) error, and
// the connection, now out of step, is closed; so it is when more data
// follows the last reply owed. It returns SendMail's error.
func (c *Client) lmtpReplies(ctx context.Context, res *Result, verb string) error {
	c.inTx = false
	res.Accepted = 0
	var broken, first error
	for i := range res.Rcpts {
		r := &res.Rcpts[i]
		if r.Err != nil {
			continue // refused at RCPT: no reply owed
		}
		if broken == nil {
			rep, err := c.readReply(ctx, c.opts.Timeouts.DataEnd)
			switch {
			case err != nil:
				broken = err
			case rep.code/100 == 2:
				r.Reply = rep.text()
				if res.Accepted == 0 {
					res.Reply = r.Reply
				}
				res.Accepted++
				continue
			case rep.code/100 == 3:
				// Not a completion reply: the server is lost.
				broken = &ProtocolError{Msg: fmt.Sprintf("intermediate reply %d to the end of the data", rep.code)}
			default:
				r.Reply = rep.text()
				r.Err = rep.err(verb)
			}
		}
		if broken != nil {
			r.Err = broken
		}
		if first == nil {
			first = r.Err
		}
	}
	if broken == nil {
		// More replies than recipients accepted: which is whose is
		// unknowable from here on (C-INJ-02).
		broken = c.expectAlone()
	}
	if broken != nil {
		c.log.Warn("LMTP replies to the end of the data broken off or in excess; closing the connection",
			"server", c.peer(), "delivered", res.Accepted, "err", broken)
		c.closeLost()
	}
	if res.Accepted > 0 {
		return nil
	}
	return first
}

// closeLost closes a connection that is out of step with the server, and
// drops what was read ahead, so that every later command fails as on a
// closed connection.
func (c *Client) closeLost() {
	_ = c.Close()
	c.r.Reset(c.conn)
}

func firstRcptErr(res *Result) error {
	for _, r := range res.Rcpts {
		if r.Err != nil {
			return r.Err
		}
	}
	return errors.New("smtpclient: no recipients")
}

// abort ends a transaction that cannot go on: when DATA was pipelined and
// answered 354 anyway, it sends an empty message's end so the server
// refuses it (RFC 2920 §3.2 (3)), then RSET. An LMTP server must refuse
// that DATA with 503 (RFC 2033 §4.2); one that says 354 would owe an
// unknowable number of replies to the end of the data, so the connection is
// closed instead.
func (c *Client) abort(ctx context.Context, replies []reply, sent int) {
	if len(replies) == sent && replies[len(replies)-1].code == smtp.C354StartData {
		if c.opts.LMTP {
			c.log.Warn("LMTP server answered DATA with 354 without a recipient; closing the connection", "server", c.peer())
			c.inTx = false
			c.closeLost()
			return
		}
		_, _ = c.w.WriteString(".\r\n")
		if c.flush(ctx) == nil {
			_, _ = c.readReply(ctx, c.opts.Timeouts.DataEnd)
		}
	}
	c.inTx = false
	_ = c.Reset(ctx)
}

// writeData sends the message: dot-stuffed with its end after DATA's 354,
// or as one BDAT LAST chunk (RFC 3030).
func (c *Client) writeData(ctx context.Context, body []byte, chunking bool) error {
	if !chunking {
		return c.writeBody(ctx, stuff(body))
	}
	if err := c.writeLine("BDAT " + strconv.Itoa(len(body)) + " LAST"); err != nil {
		return err
	}
	return c.writeBody(ctx, body)
}

func (c *Client) writeBody(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), 64<<10)
		if err := c.setDeadline(ctx, false, c.opts.Timeouts.DataBlock); err != nil {
			return err
		}
		if _, err := c.w.Write(p[:n]); err != nil {
			return &NetError{Op: "write", Err: err}
		}
		p = p[n:]
	}
	if err := c.setDeadline(ctx, false, c.opts.Timeouts.DataBlock); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return &NetError{Op: "write", Err: err}
	}
	return nil
}

// normalize returns msg with every line ending a CRLF: a bare LF becomes
// CRLF, a bare CR becomes CRLF (RFC 5321 §2.3.8), and a final line without
// an ending gets one.
func normalize(msg []byte) []byte {
	if !bytes.ContainsAny(msg, "\r\n") {
		if len(msg) == 0 {
			return msg
		}
		return append(append([]byte(nil), msg...), '\r', '\n')
	}
	out := make([]byte, 0, len(msg)+len(msg)/50+2)
	for i := 0; i < len(msg); i++ {
		switch b := msg[i]; b {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(msg) && msg[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b)
		}
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// stuff dot-stuffs a normalized message (RFC 5321 §4.5.2) and appends the
// end of data.
func stuff(body []byte) []byte {
	out := make([]byte, 0, len(body)+len(body)/100+5)
	start := true
	for _, b := range body {
		if start && b == '.' {
			out = append(out, '.')
		}
		out = append(out, b)
		start = b == '\n'
	}
	return append(out, ".\r\n"...)
}
