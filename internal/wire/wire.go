// Package wire reads the SMTP wire format strictly: command lines with a
// length limit, and message data with the RFC 5321 §4.5.2 transparency
// procedure, where only <CRLF>.<CRLF> ends the data (§4.1.1.4).
//
// Every reader here refuses what SMTP smuggling needs: a bare LF or a bare CR
// (RFC 5321 §2.3.8) is never a line terminator, and a message containing one
// is refused as a whole, after reading on to the real end of data, so the
// bytes after a fake end-of-data can never be taken as commands.
package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/petrel-mta/petrel/smtp"
)

// Errors for command lines. The server answers each and reads on.
var (
	ErrLineTooLong = errors.New("wire: line too long")
	ErrBareLF      = errors.New("wire: line ended by a bare LF")
	ErrBareCR      = errors.New("wire: bare CR in line")
)

// ReadLine reads one line ending in CRLF of at most max octets (CRLF
// included) and returns it without the CRLF. max may exceed r's buffer
// size: a line longer than the buffer (an AUTH line, RFC 4954 §4) is
// gathered in a temporary buffer, so r can stay small. A longer line is
// read through its end and ErrLineTooLong is returned; a line ending in a
// bare LF, or with a CR not followed by LF, is read and ErrBareLF or
// ErrBareCR is returned. With these three errors the result holds the start
// of the line (at most PrefixLen octets), so the caller can still see which
// command it was. Any other error is the reader's (io.EOF before any byte,
// io.ErrUnexpectedEOF in the middle of a line).
func ReadLine(r *bufio.Reader, max int) (string, error) {
	seg, err := r.ReadSlice('\n')
	if err == nil {
		return checkLine(seg, max)
	}
	if err != bufio.ErrBufferFull {
		if err == io.EOF && len(seg) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	// Longer than the buffer: gather it while it fits in max, else
	// consume through the LF and keep the start.
	var long []byte
	if len(seg) < max {
		long = append(make([]byte, 0, min(max, 2*len(seg))), seg...)
	}
	start := prefix(seg)
	for {
		seg, err = r.ReadSlice('\n')
		if long != nil {
			if len(long)+len(seg) > max {
				long = nil
			} else {
				long = append(long, seg...)
			}
		}
		switch err {
		case nil:
			if long == nil {
				return start, ErrLineTooLong
			}
			return checkLine(long, max)
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return "", io.ErrUnexpectedEOF
		default:
			return "", err
		}
	}
}

// checkLine checks a whole line, LF included.
func checkLine(seg []byte, max int) (string, error) {
	if len(seg) > max {
		return prefix(seg), ErrLineTooLong
	}
	n := len(seg)
	if n < 2 || seg[n-2] != '\r' {
		return prefix(seg[:n-1]), ErrBareLF
	}
	if bytes.IndexByte(seg[:n-2], '\r') >= 0 {
		return prefix(seg[:n-2]), ErrBareCR
	}
	return string(seg[:n-2]), nil
}

// PrefixLen bounds the start of a refused line that ReadLine returns.
const PrefixLen = 32

func prefix(b []byte) string {
	b = b[:min(len(b), PrefixLen)]
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Replies for refused message data.
var (
	// ErrDataBareNewline: RFC 5321 §2.3.8, the SMTP smuggling defence.
	ErrDataBareNewline = &smtp.Error{Code: smtp.C550MailboxUnavail, Enhanced: smtp.E552SyntaxError,
		Message: "Message refused: bare CR or LF in message data (RFC 5321 section 2.3.8)"}
	// ErrDataLineTooLong: RFC 5321 §4.5.3.1.6.
	ErrDataLineTooLong = &smtp.Error{Code: smtp.C552StorageExceeded, Enhanced: smtp.E552SyntaxError,
		Message: "Message refused: text line longer than 1000 octets (RFC 5321 section 4.5.3.1.6)"}
	// ErrDataTooBig: RFC 1870 §6.3.
	ErrDataTooBig = &smtp.Error{Code: smtp.C552StorageExceeded, Enhanced: smtp.E534MsgTooBig,
		Message: "Message size exceeds fixed maximum message size"}
)

// MaxTextLine is the RFC 5321 §4.5.3.1.6 limit on a text line, CRLF
// included, not counting a leading dot added for transparency.
const MaxTextLine = 1000

// DataReader reads message data after DATA's 354 up to the <CRLF>.<CRLF>
// that ends it, removing dot-stuffing. It returns io.EOF at the end of data.
// When the data breaks a rule (bare CR or LF, a line over MaxTextLine, more
// than the size limit) Read returns one of the ErrData* replies; Drain then
// reads on to the real end of data so the session stays in step.
type DataReader struct {
	r       *bufio.Reader
	max     int64 // size limit in octets; 0: none
	n       int64 // octets returned
	pending []byte
	lineLen int  // octets of the current line so far (partial segments)
	midLine bool // the last segment did not end a CRLF line
	lastCR  bool // the last segment ended in CR (for CR|LF split across segments)
	stuffed bool // current line started with a transparency dot
	done    bool
	err     error // sticky protocol error
	ioErr   error
}

// NewDataReader returns a reader of the message data that follows on r. max
// is the size limit (0: none).
func NewDataReader(r *bufio.Reader, max int64) *DataReader {
	return &DataReader{r: r, max: max}
}

// Reset makes d read a new message from r, reusing d.
func (d *DataReader) Reset(r *bufio.Reader, max int64) { *d = DataReader{r: r, max: max} }

// Size is the number of message octets read so far (after unstuffing).
func (d *DataReader) Size() int64 { return d.n }

// Err returns the protocol error met, if any (one of the ErrData* values).
func (d *DataReader) Err() error { return d.err }

// Read implements io.Reader.
func (d *DataReader) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.ioErr != nil {
			return 0, d.ioErr
		}
		if d.done {
			return 0, io.EOF
		}
		d.next()
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}

// next reads one segment (a line, or part of a long one) and sets pending,
// done, err or ioErr.
func (d *DataReader) next() {
	seg, err := d.r.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.ioErr = err
		return
	}
	atStart := !d.midLine
	if atStart && len(seg) == 3 && seg[0] == '.' && seg[1] == '\r' && seg[2] == '\n' {
		d.done = true // <CRLF>.<CRLF>, the only end of data (§4.1.1.4)
		return
	}
	if atStart {
		d.lineLen = 0
		d.stuffed = false
		if len(seg) > 0 && seg[0] == '.' {
			seg = seg[1:] // transparency, §4.5.2
			d.stuffed = true
		}
	}
	d.lineLen += len(seg)
	if err == bufio.ErrBufferFull {
		// Part of a line with no LF yet: a CR is bare unless it is the
		// very last byte (its LF may come next).
		body := seg
		if len(body) > 0 && body[len(body)-1] == '\r' {
			body = body[:len(body)-1]
		}
		if d.lastCR || bytes.IndexByte(body, '\r') >= 0 {
			d.fail(ErrDataBareNewline)
		}
		d.lastCR = len(seg) > 0 && seg[len(seg)-1] == '\r'
		d.midLine = true
	} else {
		n := len(seg)
		crlf := (n >= 2 && seg[n-2] == '\r') || (n == 1 && d.lastCR)
		body := seg[:n-1]
		if n >= 2 && seg[n-2] == '\r' {
			body = seg[:n-2]
		}
		if !crlf || bytes.IndexByte(body, '\r') >= 0 || (d.lastCR && n > 1) {
			d.fail(ErrDataBareNewline)
		}
		d.lastCR = false
		// A line that does not end in CRLF does not end: the next
		// segment is not at a line start, so no fake end of data.
		d.midLine = !crlf
	}
	if d.lineLen > MaxTextLine {
		d.fail(ErrDataLineTooLong)
	}
	if d.max > 0 && d.n+int64(len(seg)) > d.max {
		d.fail(ErrDataTooBig)
	}
	if d.err == nil {
		d.n += int64(len(seg))
		d.pending = seg
	}
}

func (d *DataReader) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// Drain reads and discards the rest of the data up to the end of data. It
// returns nil when the end was reached, or the I/O error that stopped it.
func (d *DataReader) Drain() error {
	d.pending = nil
	for !d.done && d.ioErr == nil {
		d.next()
		d.pending = nil
	}
	return d.ioErr
}

// NewlineChecker checks opaque message bytes (BDAT chunks, RFC 3030) for a
// bare CR or bare LF across chunk boundaries. Petrel does not offer
// BINARYMIME, so BDAT content is text whose lines end in CRLF.
type NewlineChecker struct {
	prevCR bool
}

// Check inspects the next bytes of the message and reports whether all
// line ends so far are CRLF.
func (c *NewlineChecker) Check(p []byte) bool {
	for len(p) > 0 {
		if c.prevCR {
			if p[0] != '\n' {
				return false
			}
			c.prevCR = false
			p = p[1:]
			continue
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			return true
		}
		if p[i] == '\n' {
			return false
		}
		c.prevCR = true
		p = p[i+1:]
	}
	return true
}

// End reports whether the message ended cleanly (not on a lone CR).
func (c *NewlineChecker) End() bool { return !c.prevCR }
