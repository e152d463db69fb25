package wire_test

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/petrel-mta/petrel/internal/wire"
)

// bufSizeFor maps a fuzzed selector to a bufio size: bufio's minimum (16),
// sizes near it, and the server's 4096.
func bufSizeFor(sel uint16) int {
	if sel%5 == 0 {
		return 4096
	}
	return 16 + int(sel%64)
}

func FuzzReadLine(f *testing.F) {
	f.Add([]byte("EHLO x\r\nNOOP\r\n"), uint16(0), uint16(512))
	f.Add([]byte("NOOP\nQUIT\r\n"), uint16(1), uint16(512))
	f.Add([]byte("NO\rOP\r\nQUIT\r\n"), uint16(2), uint16(20))
	f.Add([]byte(strings.Repeat("x", 100)+"\r\nNOOP\r\n"), uint16(1), uint16(16))
	f.Add([]byte(strings.Repeat("x", 15)+"\r\nNOOP\r\n"), uint16(1), uint16(16))
	f.Add([]byte("NOOP\r"), uint16(3), uint16(512))
	f.Add([]byte(""), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, sel, max uint16) {
		size := bufSizeFor(sel)
		// max may exceed the bufio buffer (the server reads 12 KiB AUTH
		// lines through a 2 KiB buffer): up to four times its size here.
		m := int(max) % (4*size + 1)
		var r io.Reader = bytes.NewReader(in)
		if sel&0x8000 != 0 {
			r = iotest.OneByteReader(r)
		}
		got := readLines(bufio.NewReaderSize(r, size), m)
		want := refLines(in, m, size)
		if !equalLines(got, want) {
			t.Fatalf("ReadLine(buf %d, max %d) over %q:\n got %v\nwant %v", size, m, in, got, want)
		}
		for _, l := range got {
			if strings.ContainsAny(l.line, "\r\n") || l.err == nil && len(l.line)+2 > m || l.err != nil && len(l.line) > wire.PrefixLen {
				t.Fatalf("ReadLine returned %q", l.line)
			}
		}
	})
}

func FuzzDataReader(f *testing.F) {
	f.Add([]byte("hello\r\n.\r\nQUIT\r\n"), uint16(0), uint16(0))
	f.Add([]byte("..x\r\n..\r\n.\r\n"), uint16(1), uint16(0))
	f.Add([]byte("a\n.\nMAIL FROM:<a@b>\r\n.\r\nQUIT\r\n"), uint16(2), uint16(0))
	f.Add([]byte("a\r\n.\nb\r\n.\r\n"), uint16(3), uint16(0))
	f.Add([]byte("a\r.\rb\r\n.\r\n"), uint16(4), uint16(0))
	f.Add([]byte("a\r\n\x00.\r\n.\r\n"), uint16(0), uint16(0))
	f.Add([]byte(strings.Repeat("a", 15)+"\r\n.\r\n"), uint16(1), uint16(0))
	f.Add([]byte(strings.Repeat("a", 15)+"\rx\r\n.\r\n"), uint16(1), uint16(0))
	f.Add([]byte(strings.Repeat("y", 999)+"\r\n.\r\n"), uint16(0), uint16(0))
	f.Add([]byte("0123456789\r\n.\r\n"), uint16(0), uint16(10))
	f.Fuzz(func(t *testing.T, in []byte, sel, max uint16) {
		size := bufSizeFor(sel)
		c := readConfig{name: "fuzz", bufSize: size, oneByteIn: sel&0x8000 != 0, oneByteOut: sel&0x4000 != 0}
		res := runData(in, int64(max), c)
		if d := compareData(in, int64(max), res); d != "" {
			t.Fatalf("DataReader(buf %d, max %d, one byte %v/%v) over %q: %s", size, max, c.oneByteIn, c.oneByteOut, in, d)
		}
		// Bulk and one-byte reads agree exactly.
		bulk := runData(in, int64(max), readConfig{name: "bulk", bufSize: 4096})
		if !bytes.Equal(bulk.rest, res.rest) || (bulk.readErr == nil) != (res.readErr == nil) ||
			bulk.readErr == nil && !bytes.Equal(bulk.content, res.content) {
			t.Fatalf("DataReader over %q: buf %d gives %v/%q, bulk gives %v/%q", in, size, res.readErr, res.rest, bulk.readErr, bulk.rest)
		}
	})
}

func FuzzNewlineChecker(f *testing.F) {
	f.Add([]byte("a\r\nb\r\n"), []byte{1})
	f.Add([]byte("a\r\nb\r\n"), []byte{2, 0, 1})
	f.Add([]byte("a\nb"), []byte{1})
	f.Add([]byte("a\rb"), []byte{2})
	f.Add([]byte("a\r"), []byte{})
	f.Add([]byte("\r\n.\r\n"), []byte{1, 1, 1, 1})
	f.Add([]byte("body\n.\nMAIL\r\n"), []byte{5})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		want := refNewlines(in)
		if got := checkChunks([][]byte{in}); got != want {
			t.Fatalf("NewlineChecker(%q) = %v, want %v", in, got, want)
		}
		// Cut the input into chunks of the fuzzed lengths (0 included).
		var chunks [][]byte
		rest := in
		for _, n := range cuts {
			k := min(int(n)%8, len(rest))
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		chunks = append(chunks, rest)
		if got := checkChunks(chunks); got != want {
			t.Fatalf("NewlineChecker(%q) in chunks %q = %v, want %v", in, chunks, got, want)
		}
	})
}
