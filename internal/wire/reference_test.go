package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing/iotest"

	"github.com/petrel-mta/petrel/internal/wire"
)

// This file holds simple whole-input reference implementations of the
// rules the streaming readers apply, and a harness that runs the readers
// over different buffer sizes and read patterns. Unit tests and fuzz
// targets compare the two.

// refData is the reference for DataReader, working on the whole input at
// once (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8): the data ends at the first
// <CRLF>.<CRLF>, where the first CRLF may be the one that ended the DATA
// command; the lines before it, split at CRLF, lose one leading dot each; a
// bare CR or LF anywhere in them refuses the message, as does a line over
// 1000 octets (CRLF included, transparency dot not) or content over max.
type refResult struct {
	found    bool   // the end of data is in the input
	consumed int    // octets up to and including the end-of-data line
	content  []byte // unstuffed content, when found
	bare     bool   // a bare CR or LF before the end
	long     bool   // a line over wire.MaxTextLine
	big      bool   // content over max (max > 0)
}

func (r refResult) refused() bool { return r.bare || r.long || r.big }

func refData(in []byte, max int64) refResult {
	s := append([]byte("\r\n"), in...)
	i := bytes.Index(s, []byte("\r\n.\r\n"))
	if i < 0 {
		return refResult{}
	}
	r := refResult{found: true, consumed: i + 3, content: []byte{}}
	body := in[:i] // empty, or CRLF-terminated lines
	for len(body) > 0 {
		j := bytes.Index(body, []byte("\r\n"))
		line := body[:j]
		body = body[j+2:]
		if len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		if bytes.ContainsAny(line, "\r\n") {
			r.bare = true
		}
		if len(line)+2 > wire.MaxTextLine {
			r.long = true
		}
		r.content = append(r.content, line...)
		r.content = append(r.content, '\r', '\n')
	}
	if max > 0 && int64(len(r.content)) > max {
		r.big = true
	}
	return r
}

// allows reports whether err is a refusal the reference expects for r.
func (r refResult) allows(err error) bool {
	switch {
	case errors.Is(err, wire.ErrDataBareNewline):
		return r.bare
	case errors.Is(err, wire.ErrDataLineTooLong):
		return r.long
	case errors.Is(err, wire.ErrDataTooBig):
		return r.big
	}
	return false
}

// readConfig is one way of feeding bytes to the readers.
type readConfig struct {
	name       string
	bufSize    int  // bufio.Reader size (16 is bufio's minimum)
	oneByteIn  bool // the network gives one byte per Read
	oneByteOut bool // the consumer reads the DataReader one byte at a time
}

var readConfigs = []readConfig{
	{name: "bulk", bufSize: 4096},
	{name: "buf16", bufSize: 16},
	{name: "buf17", bufSize: 17},
	{name: "buf16-onebyte-in", bufSize: 16, oneByteIn: true},
	{name: "bulk-onebyte-in-out", bufSize: 4096, oneByteIn: true, oneByteOut: true},
	{name: "buf16-half-in", bufSize: 16},
}

func (c readConfig) reader(in []byte) *bufio.Reader {
	var r io.Reader = bytes.NewReader(in)
	switch {
	case c.oneByteIn:
		r = iotest.OneByteReader(r)
	case c.name == "buf16-half-in":
		r = iotest.HalfReader(r)
	}
	return bufio.NewReaderSize(r, c.bufSize)
}

// dataResult is what a DataReader did with an input.
type dataResult struct {
	content  []byte
	readErr  error // from reading to the end (nil at io.EOF)
	drainErr error
	errAfter error // Err() after Drain
	size     int64
	rest     []byte // what the bufio.Reader still holds after Drain
}

func runData(in []byte, max int64, c readConfig) dataResult {
	br := c.reader(in)
	d := wire.NewDataReader(br, max)
	var r io.Reader = d
	if c.oneByteOut {
		r = iotest.OneByteReader(d)
	}
	var res dataResult
	res.content, res.readErr = io.ReadAll(r)
	res.drainErr = d.Drain()
	res.errAfter = d.Err()
	res.size = d.Size()
	res.rest, _ = io.ReadAll(br)
	return res
}

// compareData returns a description of how res disagrees with the
// reference, or "".
func compareData(in []byte, max int64, res dataResult) string {
	ref := refData(in, max)
	switch {
	case !ref.found:
		if !errors.Is(res.drainErr, io.ErrUnexpectedEOF) {
			return "no end of data, but Drain returned " + errString(res.drainErr)
		}
		if res.readErr == nil {
			return "no end of data, but the content read to io.EOF"
		}
		anyRefusal := refResult{bare: true, long: true, big: true}
		if !errors.Is(res.readErr, io.ErrUnexpectedEOF) && !anyRefusal.allows(res.readErr) {
			return "no end of data; read error " + errString(res.readErr)
		}
		if len(res.rest) != 0 {
			return "no end of data, but bytes were left"
		}
		return ""
	case res.drainErr != nil:
		return "Drain returned " + errString(res.drainErr)
	case !bytes.Equal(res.rest, in[ref.consumed:]):
		return "left " + quote(res.rest) + ", want " + quote(in[ref.consumed:])
	case ref.refused():
		if res.readErr == nil || !ref.allows(res.readErr) {
			return "read error " + errString(res.readErr) + ", want a refusal"
		}
		if res.errAfter != res.readErr {
			return "Err() = " + errString(res.errAfter) + ", read error " + errString(res.readErr)
		}
		return ""
	case res.readErr != nil || res.errAfter != nil:
		return "read error " + errString(res.readErr) + ", want none"
	case !bytes.Equal(res.content, ref.content):
		return "content " + quote(res.content) + ", want " + quote(ref.content)
	case res.size != int64(len(ref.content)):
		return "Size() wrong"
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func quote(b []byte) string {
	if len(b) > 200 {
		return quoteShort(b[:100]) + "..." + quoteShort(b[len(b)-100:])
	}
	return quoteShort(b)
}

func quoteShort(b []byte) string { return strconv.Quote(string(b)) }

// refLines is the reference for ReadLine with max <= the bufio size
// bufSize: the results of reading lines until the first error that ends the
// input. A refused line comes with its start: at most wire.PrefixLen octets
// (fewer when the line is longer than the bufio buffer, which then holds
// only its first bufSize octets), cut at the first CR or LF.
type lineResult struct {
	line string
	err  error
}

func refPrefix(line []byte, bufSize int) string {
	n := min(len(line), wire.PrefixLen)
	if len(line) > bufSize {
		n = min(n, bufSize)
	}
	p := line[:n]
	if i := bytes.IndexAny(p, "\r\n"); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

func refLines(in []byte, max, bufSize int) []lineResult {
	var out []lineResult
	for {
		if len(in) == 0 {
			return append(out, lineResult{err: io.EOF})
		}
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			return append(out, lineResult{err: io.ErrUnexpectedEOF})
		}
		line := in[:i+1]
		in = in[i+1:]
		p := refPrefix(line, bufSize)
		switch {
		case len(line) > max:
			out = append(out, lineResult{p, wire.ErrLineTooLong})
		// A line within max is read whole (gathered when longer than
		// the buffer), so its prefix is not cut to the buffer.
		case len(line) < 2 || line[len(line)-2] != '\r':
			out = append(out, lineResult{refPrefix(line, len(line)), wire.ErrBareLF})
		case bytes.IndexByte(line[:len(line)-2], '\r') >= 0:
			out = append(out, lineResult{refPrefix(line, len(line)), wire.ErrBareCR})
		default:
			out = append(out, lineResult{line: string(line[:len(line)-2])})
		}
	}
}

// readLines applies ReadLine until io.EOF or io.ErrUnexpectedEOF (or 10000
// results, against loops).
func readLines(br *bufio.Reader, max int) []lineResult {
	var out []lineResult
	for len(out) < 10000 {
		line, err := wire.ReadLine(br, max)
		out = append(out, lineResult{line, err})
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
	}
	return out
}

// refNewlines is the reference for NewlineChecker: every CR is followed by
// LF and every LF preceded by CR.
func refNewlines(in []byte) bool {
	for i, c := range in {
		switch c {
		case '\r':
			if i+1 >= len(in) || in[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || in[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}

// checkChunks runs a NewlineChecker over chunks the way the BDAT code does:
// it stops at the first false.
func checkChunks(chunks [][]byte) bool {
	var c wire.NewlineChecker
	for _, p := range chunks {
		if !c.Check(p) {
			return false
		}
	}
	return c.End()
}
