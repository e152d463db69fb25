package wire_test

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/petrel-mta/petrel/internal/wire"
)

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	a32, x16 := strings.Repeat("a", wire.PrefixLen), strings.Repeat("x", 16)
	cases := []struct {
		name    string
		in      string
		bufSize int
		max     int
		want    []lineResult // up to the final io.EOF / io.ErrUnexpectedEOF
	}{
		{"CRLF", "EHLO x\r\nNOOP\r\n", 4096, 512,
			[]lineResult{{line: "EHLO x"}, {line: "NOOP"}, {err: io.EOF}}},
		{"empty line", "\r\n", 4096, 512,
			[]lineResult{{line: ""}, {err: io.EOF}}},
		{"empty input", "", 4096, 512,
			[]lineResult{{err: io.EOF}}},
		{"bare LF, next line fine", "NOOP\nQUIT\r\n", 4096, 512,
			[]lineResult{{"NOOP", wire.ErrBareLF}, {line: "QUIT"}, {err: io.EOF}}},
		{"LF alone", "\n\r\n", 4096, 512,
			[]lineResult{{err: wire.ErrBareLF}, {line: ""}, {err: io.EOF}}},
		{"bare CR, next line fine", "NO\rOP\r\nQUIT\r\n", 4096, 512,
			[]lineResult{{"NO", wire.ErrBareCR}, {line: "QUIT"}, {err: io.EOF}}},
		{"CR CR LF", "NOOP\r\r\n", 4096, 512,
			[]lineResult{{"NOOP", wire.ErrBareCR}, {err: io.EOF}}},
		{"CR then bare LF", "a\rb\n", 4096, 512,
			[]lineResult{{"a", wire.ErrBareLF}, {err: io.EOF}}},
		{"smuggled command after bare CR", "NOOP\rRSET\r\n", 4096, 512,
			[]lineResult{{"NOOP", wire.ErrBareCR}, {err: io.EOF}}},
		{"prefix of a refused line is 32 octets", strings.Repeat("b", 40) + "\nNOOP\r\n", 4096, 512,
			[]lineResult{{strings.Repeat("b", 32), wire.ErrBareLF}, {line: "NOOP"}, {err: io.EOF}}},
		{"prefix cut at a bare CR", "DATA\rMAIL FROM:<a@b>\r\n", 4096, 512,
			[]lineResult{{"DATA", wire.ErrBareCR}, {err: io.EOF}}},
		{"prefix of a too-long bare-LF line", "MAIL FROM:<a@b> X=" + strings.Repeat("v", 600) + "\n", 4096, 512,
			[]lineResult{{"MAIL FROM:<a@b> X=" + strings.Repeat("v", 14), wire.ErrLineTooLong}, {err: io.EOF}}},
		{"NUL is content", "NO\x00OP\r\n", 4096, 512,
			[]lineResult{{line: "NO\x00OP"}, {err: io.EOF}}},
		{"EOF mid-line", "NOOP", 4096, 512,
			[]lineResult{{err: io.ErrUnexpectedEOF}}},
		{"EOF after CR", "NOOP\r", 4096, 512,
			[]lineResult{{err: io.ErrUnexpectedEOF}}},
		{"EOF after a line", "NOOP\r\nQU", 4096, 512,
			[]lineResult{{line: "NOOP"}, {err: io.ErrUnexpectedEOF}}},
		{"exactly max", strings.Repeat("a", 510) + "\r\nNOOP\r\n", 4096, 512,
			[]lineResult{{line: strings.Repeat("a", 510)}, {line: "NOOP"}, {err: io.EOF}}},
		{"max plus one, next line fine", strings.Repeat("a", 511) + "\r\nNOOP\r\n", 4096, 512,
			[]lineResult{{a32, wire.ErrLineTooLong}, {line: "NOOP"}, {err: io.EOF}}},
		{"too long wins over bare LF", strings.Repeat("a", 600) + "\nNOOP\r\n", 4096, 512,
			[]lineResult{{a32, wire.ErrLineTooLong}, {line: "NOOP"}, {err: io.EOF}}},
		{"exactly the buffer", strings.Repeat("a", 14) + "\r\nNOOP\r\n", 16, 16,
			[]lineResult{{line: strings.Repeat("a", 14)}, {line: "NOOP"}, {err: io.EOF}}},
		{"longer than the buffer", long + "\r\nNOOP\r\n", 16, 16,
			[]lineResult{{x16, wire.ErrLineTooLong}, {line: "NOOP"}, {err: io.EOF}}},
		{"longer than the buffer, CR at the boundary", strings.Repeat("a", 15) + "\r\nNOOP\r\n", 16, 16,
			[]lineResult{{strings.Repeat("a", 15), wire.ErrLineTooLong}, {line: "NOOP"}, {err: io.EOF}}},
		{"longer than the buffer, bare LF", long + "\nNOOP\r\n", 16, 16,
			[]lineResult{{x16, wire.ErrLineTooLong}, {line: "NOOP"}, {err: io.EOF}}},
		{"longer than the buffer, EOF", long, 16, 16,
			[]lineResult{{err: io.ErrUnexpectedEOF}}},
		{"buffer-sized, then EOF", strings.Repeat("a", 16), 16, 16,
			[]lineResult{{err: io.ErrUnexpectedEOF}}},
		{"one MiB line", strings.Repeat("x", 1<<20) + "\r\nQUIT\r\n", 4096, 4096,
			[]lineResult{{strings.Repeat("x", 32), wire.ErrLineTooLong}, {line: "QUIT"}, {err: io.EOF}}},
		{"several long lines", long + "\r\n" + long + "\r\nNOOP\r\n" + long + "\r\n", 16, 16,
			[]lineResult{{x16, wire.ErrLineTooLong}, {x16, wire.ErrLineTooLong}, {line: "NOOP"}, {x16, wire.ErrLineTooLong}, {err: io.EOF}}},
	}
	for _, tc := range cases {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got := readLines(bufio.NewReaderSize(r, tc.bufSize), tc.max)
			if !equalLines(got, tc.want) {
				t.Errorf("%s (one byte %v): got %v, want %v", tc.name, oneByte, got, tc.want)
			}
			if tc.max <= tc.bufSize {
				if ref := refLines([]byte(tc.in), tc.max, tc.bufSize); !equalLines(got, ref) {
					t.Errorf("%s (one byte %v): got %v, reference %v", tc.name, oneByte, got, ref)
				}
			}
		}
	}
}

func equalLines(a, b []lineResult) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].line != b[i].line || a[i].err != b[i].err {
			return false
		}
	}
	return true
}

// Lines longer than the bufio buffer are gathered up to max (so that a
// small buffer still reads 12 KiB AUTH lines, RFC 4954 §4), checked like
// others, and refused when over max; the next line is read correctly after
// each.
func TestReadLineMaxAboveBufferSize(t *testing.T) {
	tests := []struct {
		line string
		max  int
		want string
		err  error
	}{
		{strings.Repeat("a", 30) + "\r\n", 64, strings.Repeat("a", 30), nil},
		{strings.Repeat("a", 62) + "\r\n", 64, strings.Repeat("a", 62), nil},
		{strings.Repeat("a", 63) + "\r\n", 64, strings.Repeat("a", 16), wire.ErrLineTooLong},
		{strings.Repeat("a", 200) + "\r\n", 64, strings.Repeat("a", 16), wire.ErrLineTooLong},
		{strings.Repeat("a", 30) + "\n", 64, strings.Repeat("a", 30), wire.ErrBareLF},
		{strings.Repeat("a", 20) + "\r" + strings.Repeat("b", 20) + "\r\n", 64, strings.Repeat("a", 20), wire.ErrBareCR},
	}
	for _, tt := range tests {
		br := bufio.NewReaderSize(strings.NewReader(tt.line+"NOOP\r\n"), 16)
		if got, err := wire.ReadLine(br, tt.max); err != tt.err || got != tt.want {
			t.Errorf("ReadLine(%d octets, max %d) on a 16-octet buffer = %q, %v; want %q, %v", len(tt.line), tt.max, got, err, tt.want, tt.err)
		}
		if got, err := wire.ReadLine(br, tt.max); err != nil || got != "NOOP" {
			t.Errorf("next line = %q, %v", got, err)
		}
	}
}

var errNet = errors.New("network down")

func TestReadLineReaderError(t *testing.T) {
	cases := []struct {
		name string
		r    io.Reader
		want []lineResult
	}{
		{"error at once", iotest.ErrReader(errNet), []lineResult{{err: errNet}}},
		{"error mid-line", io.MultiReader(strings.NewReader("NOOP\r\nQU"), iotest.ErrReader(errNet)),
			[]lineResult{{line: "NOOP"}, {err: errNet}}},
		{"error in a long line", io.MultiReader(strings.NewReader(strings.Repeat("x", 100)), iotest.ErrReader(errNet)),
			[]lineResult{{err: errNet}}},
		{"timeout", iotest.TimeoutReader(strings.NewReader("NOOP\r\nQUIT\r\n")),
			[]lineResult{{line: "NOOP"}, {line: "QUIT"}, {err: iotest.ErrTimeout}}},
	}
	for _, tc := range cases {
		br := bufio.NewReaderSize(tc.r, 16)
		var got []lineResult
		for range tc.want {
			line, err := wire.ReadLine(br, 16)
			got = append(got, lineResult{line, err})
		}
		if !equalLines(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
