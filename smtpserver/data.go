package smtpserver

import (
	"context"
	"errors"

	"github.com/petrel-mta/petrel/smtp"
)

var (
	errNoValidRcpt    = &smtp.Error{Code: smtp.C554TransactionFailed, Enhanced: smtp.E551InvalidCommand, Message: "No valid recipients"}
	errDataAfterBDAT  = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "DATA not allowed after BDAT in the same transaction (RFC 3030 section 2)"}
	errBDATInProgress = &smtp.Error{Code: smtp.C503BadSequence, Enhanced: smtp.E551InvalidCommand, Message: "BDAT transfer in progress"}
	errDataSyntax     = &smtp.Error{Code: smtp.C501ArgSyntaxError, Enhanced: smtp.E554InvalidArgs, Message: "Syntax: DATA (no parameters)"}
	errAccepted       = &smtp.Error{Code: smtp.C250OK, Enhanced: smtp.E200Undefined, Message: "Message accepted for delivery"}
)

// checkDataSequence is the state check shared by DATA and BDAT.
func (c *conn) checkDataSequence() error {
	switch {
	case c.tx == nil:
		return errNeedMail
	case len(c.tx.rcpts) == 0:
		// RFC 2920 §3.2 (2): no 354 without a valid recipient.
		return errNoValidRcpt
	}
	return nil
}

// handleDATA: RFC 5321 §4.1.1.4. Only <CRLF>.<CRLF> ends the data; a bare
// CR or LF refuses the message (SMTP smuggling), after reading to the real
// end of data.
func (c *conn) handleDATA(ctx context.Context, arg string) error {
	if arg != "" {
		return errDataSyntax
	}
	if c.bdat != nil {
		return errDataAfterBDAT
	}
	if err := c.checkDataSequence(); err != nil {
		return err
	}
	c.writeReplyLines(smtp.C354StartData, smtp.NoEnhancedCode, "Start mail input; end with <CRLF>.<CRLF>")
	if err := c.flush(); err != nil {
		return c.readFailed(err)
	}
	c.startData(true)
	dr := &c.dataRd
	dr.Reset(c.r, c.s.opts.MaxMessageBytes)
	derr := c.sess.Data(ctx, dr)
	drainErr := dr.Drain()
	c.dataMode = false
	if drainErr != nil {
		c.rset(ctx)
		return c.readFailed(drainErr)
	}
	return c.endTransaction(ctx, dr.Err(), derr, dr.Size())
}

// endTransaction replies to the end of DATA or the last BDAT chunk. A
// protocol error in the data (perr) wins over what the backend said.
func (c *conn) endTransaction(ctx context.Context, perr, derr error, size int64) error {
	c.rset(ctx)
	if perr != nil {
		if derr == nil {
			c.log.Error("backend accepted a message the server refused; check the Session.Data implementation", "err", perr)
		}
		c.log.Info("message refused", "reason", perr.Error(), "size", size)
		return perr
	}
	if derr != nil {
		var se *smtp.Error
		if errors.As(derr, &se) && se.Code/100 == 2 {
			c.msgCount++
			c.junk, c.errCount = 0, 0
			return c.ok(se.Code, se.Enhanced, se.Message)
		}
		return derr
	}
	c.msgCount++
	c.junk, c.errCount = 0, 0 // the limits count errors without delivering mail
	c.writeReply(errAccepted)
	return nil
}
