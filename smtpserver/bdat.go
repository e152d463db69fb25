package smtpserver

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/wire"
	"github.com/petrel-mta/petrel/smtp"
)

// errBadBDAT ends the connection: without a readable chunk size the server
// cannot tell the chunk's octets from commands, so going on would execute
// message data as commands.
var errBadBDAT = &smtp.Error{Code: smtp.C421ServiceUnavailable, Enhanced: smtp.EnhancedCode{Class: 4, Subject: 5, Detail: 2},
	Message: "Malformed BDAT command, cannot find the end of the chunk; closing connection"}

// errBDATAborted is what the backend's reader returns when the client
// abandons a BDAT transfer (RSET, EHLO, QUIT, STARTTLS, disconnect).
var errBDATAborted = errors.New("smtpserver: BDAT transfer abandoned by the client")

// bdatState is a BDAT transfer in progress (RFC 3030). The backend's Data
// runs in its own goroutine reading a pipe that each chunk is copied into;
// the connection goroutine waits for it whenever it ends, so Session
// methods never overlap.
type bdatState struct {
	pw      *io.PipeWriter
	done    chan error
	size    int64
	nl      wire.NewlineChecker
	failed  error // reply for every further chunk until LAST
	dataErr error // the backend's result, once known
	ended   bool
}

// parseBDAT parses "chunk-size [SP end-marker]" (RFC 3030 §2).
func parseBDAT(arg string) (size int64, last bool, ok bool) {
	n, rest, _ := strings.Cut(arg, " ")
	size, ok = smtp.ParseSize(n)
	if !ok {
		return 0, false, false
	}
	switch {
	case rest == "":
	case strings.EqualFold(rest, "LAST"):
		last = true
	default:
		return 0, false, false
	}
	return size, last, true
}

// discardChunk reads and drops the chunk announced by arg, then returns
// reply, so that a refused BDAT never leaves chunk octets to be read as
// commands.
func (c *conn) discardChunk(arg string, reply error) error {
	size, _, ok := parseBDAT(arg)
	if !ok {
		return &closeReply{reply: errBadBDAT}
	}
	if err := c.copyChunk(io.Discard, size); err != nil {
		return c.readFailed(err)
	}
	return reply
}

// copyChunk copies size octets of chunk data to w, refreshing the data
// deadline as it reads.
func (c *conn) copyChunk(w io.Writer, size int64) error {
	c.startData(c.bdat == nil || c.bdat.size == 0)
	defer func() { c.dataMode = false }()
	// A chunk already buffered with its BDAT line never reaches the
	// deadline that netReader sets, so check the budget here too.
	if time.Now().After(c.dataBudget()) {
		return os.ErrDeadlineExceeded
	}
	_, err := io.CopyN(w, c.r, size)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// chunkWriter feeds chunk octets to the backend, checking line ends and the
// size limit. After the first failure it swallows the rest.
type chunkWriter struct {
	c *conn
	b *bdatState
}

func (w chunkWriter) Write(p []byte) (int, error) {
	b := w.b
	if b.failed != nil {
		return len(p), nil
	}
	b.size += int64(len(p))
	switch {
	case b.size > w.c.s.opts.MaxMessageBytes:
		b.fail(wire.ErrDataTooBig)
	case !b.nl.Check(p):
		b.fail(wire.ErrDataBareNewline)
	default:
		if _, err := b.pw.Write(p); err != nil {
			// The backend stopped reading: its result is the reply.
			b.wait()
			b.failed = b.dataErr
			if b.failed == nil {
				b.failed = errors.New("smtpserver: backend returned before the end of the message")
			}
		}
	}
	return len(p), nil
}

func (b *bdatState) fail(reply error) {
	b.failed = reply
	b.pw.CloseWithError(reply)
	b.wait()
}

// wait waits for the backend's Data to return.
func (b *bdatState) wait() {
	if !b.ended {
		b.dataErr = <-b.done
		b.ended = true
	}
}

// handleBDAT: RFC 3030 §2. Each chunk gets a reply; the last one's is the
// message's. After a failed chunk the rest of the transfer is read and
// refused (§2: "MUST be prepared to accept and discard additional BDAT
// chunks").
func (c *conn) handleBDAT(ctx context.Context, arg string) error {
	size, last, ok := parseBDAT(arg)
	if !ok {
		return &closeReply{reply: errBadBDAT}
	}
	if c.bdat == nil {
		if err := c.checkDataSequence(); err != nil {
			return c.discardChunk(arg, err)
		}
		pr, pw := io.Pipe()
		b := &bdatState{pw: pw, done: make(chan error, 1)}
		sess := c.sess
		log := c.log
		go func() {
			var err error
			defer func() {
				if v := recover(); v != nil {
					log.Error("panic in Session.Data", "panic", v, "stack", string(debug.Stack()))
					err = errors.New("smtpserver: panic in Session.Data")
				}
				pr.CloseWithError(errBDATAborted)
				b.done <- err
			}()
			err = sess.Data(ctx, pr)
		}()
		c.bdat = b
	}
	b := c.bdat
	if err := c.copyChunk(chunkWriter{c, b}, size); err != nil {
		c.abortBDAT()
		c.rset(ctx)
		return c.readFailed(err)
	}
	if !last {
		if b.failed != nil {
			return b.failed
		}
		return c.ok(smtp.C250OK, smtp.E200Undefined, strconv.FormatInt(size, 10)+" octets received")
	}
	if b.failed == nil && !b.nl.End() {
		b.fail(wire.ErrDataBareNewline)
	}
	var perr error
	if b.failed != nil {
		perr = b.failed
		var se *smtp.Error
		if !errors.As(perr, &se) || se.Code/100 == 2 {
			// The backend's own failure, not a protocol error.
			perr = nil
		}
	} else {
		_ = b.pw.Close()
	}
	b.wait()
	c.bdat = nil
	derr := b.dataErr
	if perr == nil && b.failed != nil && derr == nil {
		derr = b.failed
	}
	return c.endTransaction(ctx, perr, derr, b.size)
}

// abortBDAT abandons a BDAT transfer in progress and waits for the
// backend's Data to return.
func (c *conn) abortBDAT() {
	if c.bdat == nil {
		return
	}
	c.bdat.pw.CloseWithError(errBDATAborted)
	c.bdat.wait()
	c.bdat = nil
}
