package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/internal/wire"
)

// dataCase is one input to DataReader with the expected outcome. Every
// case is also checked against the reference and under every readConfig.
type dataCase struct {
	name    string
	in      string
	max     int64
	content string // when err is nil
	err     error  // read error: nil, an ErrData*, or io.ErrUnexpectedEOF
	rest    string // left in the bufio.Reader after Drain
}

func checkDataCase(t *testing.T, tc dataCase) {
	t.Helper()
	for _, c := range readConfigs {
		res := runData([]byte(tc.in), tc.max, c)
		if d := compareData([]byte(tc.in), tc.max, res); d != "" {
			t.Errorf("%s [%s]: disagrees with the reference: %s", tc.name, c.name, d)
		}
		if res.readErr != tc.err {
			t.Errorf("%s [%s]: read error %v, want %v", tc.name, c.name, res.readErr, tc.err)
		}
		if tc.err == nil && string(res.content) != tc.content {
			t.Errorf("%s [%s]: content %q, want %q", tc.name, c.name, res.content, tc.content)
		}
		if !refData([]byte(tc.in), tc.max).found {
			if res.drainErr != io.ErrUnexpectedEOF {
				t.Errorf("%s [%s]: Drain = %v, want io.ErrUnexpectedEOF", tc.name, c.name, res.drainErr)
			}
		} else if res.drainErr != nil {
			t.Errorf("%s [%s]: Drain = %v", tc.name, c.name, res.drainErr)
		}
		if string(res.rest) != tc.rest {
			t.Errorf("%s [%s]: left %q, want %q", tc.name, c.name, res.rest, tc.rest)
		}
	}
}

func TestDataReaderTransparency(t *testing.T) {
	for _, tc := range []dataCase{
		{name: "simple", in: "hello\r\n.\r\n", content: "hello\r\n"},
		{name: "empty message", in: ".\r\n", content: ""},
		{name: "empty lines", in: "\r\n\r\n.\r\n", content: "\r\n\r\n"},
		{name: "headers and body", in: "Subject: x\r\n\r\nbody\r\n.\r\n", content: "Subject: x\r\n\r\nbody\r\n"},
		{name: "commands after the end stay unread", in: "a\r\n.\r\nQUIT\r\n", content: "a\r\n", rest: "QUIT\r\n"},
		{name: "stuffed dot text", in: "..x\r\n.\r\n", content: ".x\r\n"},
		{name: "stuffed lone dot", in: "..\r\n.\r\n", content: ".\r\n"},
		{name: "stuffed two dots", in: "...\r\n.\r\n", content: "..\r\n"},
		{name: "dot space", in: ". x\r\n.\r\n", content: " x\r\n"},
		{name: "unstuffed dot text loses its dot", in: ".x\r\n.\r\n", content: "x\r\n"},
		{name: "dot inside a line", in: "a.\r\nb.c\r\n .\r\n.\r\n", content: "a.\r\nb.c\r\n .\r\n"},
		{name: "dot line after content", in: "a\r\n..\r\nb\r\n.\r\n", content: "a\r\n.\r\nb\r\n"},
		{name: "end then more data", in: "a\r\n.\r\nb\r\n.\r\n", content: "a\r\n", rest: "b\r\n.\r\n"},
		{name: "NUL is content", in: "a\x00b\r\n.\r\n", content: "a\x00b\r\n"},
		{name: "8-bit is content", in: "\xff\xfe\r\n.\r\n", content: "\xff\xfe\r\n"},
		{name: "dot tab", in: ".\t\r\n.\r\n", content: "\t\r\n"},
		{name: "EOF without end", in: "a\r\nb\r\n", err: io.ErrUnexpectedEOF},
		{name: "EOF after dot CR", in: "a\r\n.\r", err: io.ErrUnexpectedEOF},
		{name: "EOF after dot", in: "a\r\n.", err: io.ErrUnexpectedEOF},
		{name: "EOF mid-line", in: "abc", err: io.ErrUnexpectedEOF},
		{name: "empty input", in: "", err: io.ErrUnexpectedEOF},
		{name: "dot at EOF is no end", in: ".", err: io.ErrUnexpectedEOF},
		{name: "dot CR LF not at a line start", in: "a.\r\n", err: io.ErrUnexpectedEOF},
	} {
		checkDataCase(t, tc)
	}
}

// The SMTP smuggling variants of requirements §5.3, each followed by a
// smuggled transaction and the real end of data, then a command that must
// be left for the command loop. The server must refuse the message (bare CR
// or LF) or take the variant as content (NUL), and in both cases stop at the
// real end.
func TestDataReaderSmuggling(t *testing.T) {
	const (
		head     = "From: a@sender.example\r\nSubject: hi\r\n\r\nbody"
		smuggled = "MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: admin@bank.example\r\n\r\nsmuggled"
		end      = "\r\n.\r\n"
		after    = "QUIT\r\n"
	)
	for _, tc := range []struct {
		id, variant string
		refused     bool
		content     string // when not refused
	}{
		{id: "S-SMUG-01 LF.LF", variant: "\n.\n", refused: true},
		{id: "S-SMUG-02 LF.CRLF", variant: "\n.\r\n", refused: true},
		{id: "S-SMUG-03 CRLF.LF", variant: "\r\n.\n", refused: true},
		{id: "S-SMUG-04 CR.CR", variant: "\r.\r", refused: true},
		{id: "S-SMUG-05 CR.CRLF", variant: "\r.\r\n", refused: true},
		{id: "S-SMUG-06 CRLF.CR", variant: "\r\n.\r", refused: true},
		{id: "S-SMUG-07 CRLF NUL.CRLF", variant: "\r\n\x00.\r\n",
			content: "From: a@sender.example\r\nSubject: hi\r\n\r\nbody\r\n\x00.\r\n" +
				"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: admin@bank.example\r\n\r\nsmuggled\r\n"},
		{id: "S-SMUG-08 CRLF.NUL CRLF", variant: "\r\n.\x00\r\n",
			content: "From: a@sender.example\r\nSubject: hi\r\n\r\nbody\r\n\x00\r\n" +
				"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: admin@bank.example\r\n\r\nsmuggled\r\n"},
		{id: "LF.LF at the very start", variant: "\n.\n", refused: true},
		{id: "CR LF split by NUL", variant: "\r\x00\n.\r\n", refused: true},
		{id: "LF CR . CR LF", variant: "\n\r.\r\n", refused: true},
		{id: "CRLF . CR CRLF", variant: "\r\n.\r\r\n", refused: true},
		{id: "CRLF . LF CRLF", variant: "\r\n.\n\r\n", refused: true},
	} {
		in := head + tc.variant + smuggled + end + after
		if tc.id == "LF.LF at the very start" {
			in = tc.variant + smuggled + end + after
		}
		dc := dataCase{name: tc.id, in: in, rest: after, content: tc.content}
		if tc.refused {
			dc.err = wire.ErrDataBareNewline
		}
		checkDataCase(t, dc)
	}
}

func TestDataReaderLineLength(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []dataCase{
		{name: "1000 with CRLF", in: x(998) + "\r\n.\r\n", content: x(998) + "\r\n"},
		{name: "1001 with CRLF", in: x(999) + "\r\n.\r\nNOOP\r\n", err: wire.ErrDataLineTooLong, rest: "NOOP\r\n"},
		{name: "1000 plus transparency dot", in: "." + x(998) + "\r\n.\r\n", content: x(998) + "\r\n"},
		{name: "1000 plus stuffed dot", in: ".." + x(997) + "\r\n.\r\n", content: "." + x(997) + "\r\n"},
		{name: "1001 plus transparency dot", in: "." + x(999) + "\r\n.\r\n", err: wire.ErrDataLineTooLong},
		{name: "1000 then short", in: x(998) + "\r\nab\r\n" + x(998) + "\r\n.\r\n", content: x(998) + "\r\nab\r\n" + x(998) + "\r\n"},
		{name: "long line later", in: "a\r\n" + x(5000) + "\r\nb\r\n.\r\nQUIT\r\n", err: wire.ErrDataLineTooLong, rest: "QUIT\r\n"},
		{name: "64 KiB line", in: x(64<<10) + "\r\n.\r\n", err: wire.ErrDataLineTooLong},
		{name: "long line ending in a dot is no end", in: x(5000) + "\r\n" + x(4095) + ".\r\n.\r\nQUIT\r\n", err: wire.ErrDataLineTooLong, rest: "QUIT\r\n"},
		{name: "long line then dot at 4096", in: x(4093) + "\r\n.\r\nQUIT\r\n", err: wire.ErrDataLineTooLong, rest: "QUIT\r\n"},
		{name: "long line without end", in: x(5000), err: wire.ErrDataLineTooLong},
	} {
		checkDataCase(t, tc)
	}
	// S-SMTP-14: a dot at any split boundary never ends the data early.
	for _, n := range []int{510, 511, 998, 999, 1022, 1023, 2046, 4094, 4095, 4096, 8190} {
		in := x(n) + ".\r\n" + "MAIL FROM:<a@b>\r\n.\r\nQUIT\r\n"
		for _, c := range readConfigs {
			res := runData([]byte(in), 0, c)
			if d := compareData([]byte(in), 0, res); d != "" {
				t.Errorf("dot after %d octets [%s]: %s", n, c.name, d)
			}
			if string(res.rest) != "QUIT\r\n" {
				t.Errorf("dot after %d octets [%s]: left %q", n, c.name, res.rest)
			}
		}
	}
}

func TestDataReaderSizeLimit(t *testing.T) {
	for _, tc := range []dataCase{
		{name: "under", in: "0123456\r\n.\r\n", max: 10, content: "0123456\r\n"},
		{name: "exactly", in: "01234567\r\n.\r\n", max: 10, content: "01234567\r\n"},
		{name: "one over", in: "012345678\r\n.\r\nQUIT\r\n", max: 10, err: wire.ErrDataTooBig, rest: "QUIT\r\n"},
		{name: "stuffing not counted", in: "..2345678\r\n.\r\n", max: 10, content: ".2345678\r\n"},
		{name: "over across lines", in: "0123\r\n0123\r\n.\r\n", max: 10, err: wire.ErrDataTooBig},
		{name: "no limit", in: strings.Repeat("0123456789\r\n", 1000) + ".\r\n", max: 0, content: strings.Repeat("0123456789\r\n", 1000)},
		{name: "limit 1", in: "\r\n.\r\n", max: 1, err: wire.ErrDataTooBig},
		{name: "empty under limit 1", in: ".\r\n", max: 1, content: ""},
	} {
		checkDataCase(t, tc)
	}
}

// A CR that is the last byte of a full bufio buffer: fine when the next byte
// is LF, bare otherwise.
func TestDataReaderCRAtBufferBoundary(t *testing.T) {
	a15 := strings.Repeat("a", 15)
	a31 := strings.Repeat("a", 31)
	for _, tc := range []dataCase{
		{name: "CR|LF", in: a15 + "\r\n.\r\n", content: a15 + "\r\n"},
		{name: "CR|LF second buffer", in: a31 + "\r\n.\r\n", content: a31 + "\r\n"},
		{name: "CR|LF then dot line", in: a15 + "\r\n..\r\n.\r\nQUIT\r\n", content: a15 + "\r\n.\r\n", rest: "QUIT\r\n"},
		{name: "CR|x", in: a15 + "\rx\r\n.\r\n", err: wire.ErrDataBareNewline},
		{name: "CR|CR LF", in: a15 + "\r\r\n.\r\n", err: wire.ErrDataBareNewline},
		{name: "CR|. CR LF is no end", in: a15 + "\r.\r\nMAIL FROM:<a@b>\r\n.\r\nQUIT\r\n", err: wire.ErrDataBareNewline, rest: "QUIT\r\n"},
		{name: "CR|LF . LF", in: a15 + "\r\n.\nMAIL\r\n.\r\nQUIT\r\n", err: wire.ErrDataBareNewline, rest: "QUIT\r\n"},
		{name: "CR|long", in: a15 + "\r" + strings.Repeat("b", 40) + "\r\n.\r\n", err: wire.ErrDataBareNewline},
		{name: "stuffed CR|LF", in: "." + a15 + "\r\n.\r\n", content: a15 + "\r\n"},
		{name: "stuffed CR at 16", in: "." + strings.Repeat("a", 14) + "\r\n.\r\n", content: strings.Repeat("a", 14) + "\r\n"},
		{name: "CR at EOF", in: a15 + "\r", err: io.ErrUnexpectedEOF},
	} {
		checkDataCase(t, tc)
	}

	// Every line length around the buffer size, with CR or a bare newline
	// at every position near the end, under every read pattern.
	tails := []string{"\r\n", "\n", "\r", "\rx\r\n", "\r\r\n", "\n\r\n", "\r\n.\n", "\r\n.\r"}
	for n := 0; n <= 70; n++ {
		for _, tail := range tails {
			for _, lead := range []string{"", ".", ".."} {
				in := []byte(lead + strings.Repeat("a", n) + tail + "b\r\n.\r\nQUIT\r\n")
				for _, c := range readConfigs {
					if d := compareData(in, 0, runData(in, 0, c)); d != "" {
						t.Errorf("%q [%s]: %s", in, c.name, d)
					}
				}
			}
		}
	}
}

// Every string of up to 7 octets over an alphabet of the interesting bytes,
// followed by a real end of data, agrees with the reference under every
// read pattern; so does each string alone (with or without an end).
func TestDataReaderMatchesReferenceExhaustive(t *testing.T) {
	alphabet := []byte{'a', '.', '\r', '\n'}
	n := 7
	if testing.Short() {
		n = 5
	}
	var buf []byte
	var walk func(depth int)
	walk = func(depth int) {
		for _, suffix := range []string{"", "\r\n.\r\nX"} {
			in := append(append([]byte{}, buf...), suffix...)
			for _, c := range []readConfig{readConfigs[0], readConfigs[3]} {
				if d := compareData(in, 0, runData(in, 0, c)); d != "" {
					t.Fatalf("%q [%s]: %s", in, c.name, d)
				}
			}
			if d := compareData(in, 4, runData(in, 4, readConfigs[0])); d != "" {
				t.Fatalf("%q max 4: %s", in, d)
			}
		}
		if depth == n {
			return
		}
		for _, b := range alphabet {
			buf = append(buf, b)
			walk(depth + 1)
			buf = buf[:len(buf)-1]
		}
	}
	walk(0)
}

func TestDataReaderDrain(t *testing.T) {
	in := "line one\r\nline two\r\n.\r\nQUIT\r\n"

	// Drain without reading anything.
	br := bufio.NewReader(strings.NewReader(in))
	d := wire.NewDataReader(br, 0)
	if err := d.Drain(); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Errorf("after Drain: left %q", rest)
	}

	// Drain after reading a few bytes of the first line.
	br = bufio.NewReader(strings.NewReader(in))
	d = wire.NewDataReader(br, 0)
	p := make([]byte, 3)
	if n, err := d.Read(p); err != nil || string(p[:n]) != "lin" {
		t.Fatalf("Read = %q, %v", p[:n], err)
	}
	if err := d.Drain(); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Errorf("after partial read and Drain: left %q", rest)
	}
	if n, err := d.Read(p); n != 0 || err != io.EOF {
		t.Errorf("Read after Drain = %d, %v; want io.EOF", n, err)
	}

	// Drain twice, and after the end was read.
	br = bufio.NewReader(strings.NewReader(in))
	d = wire.NewDataReader(br, 0)
	if _, err := io.ReadAll(d); err != nil {
		t.Fatal(err)
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Errorf("Drain after the end: left %q", rest)
	}

	// Drain stops at an I/O error.
	br = bufio.NewReader(io.MultiReader(strings.NewReader("a\r\nb"), errReader{errNet}))
	d = wire.NewDataReader(br, 0)
	if err := d.Drain(); !errors.Is(err, errNet) {
		t.Errorf("Drain at a network error = %v, want %v", err, errNet)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// Errors are sticky: Read keeps returning the refusal, and Err reports it.
func TestDataReaderStickyError(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("ok\r\nbare\nmore\r\n.\r\nQUIT\r\n"))
	d := wire.NewDataReader(br, 0)
	got, err := io.ReadAll(d)
	if err != wire.ErrDataBareNewline {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if string(got) != "ok\r\n" {
		t.Errorf("content before the refusal = %q, want %q", got, "ok\r\n")
	}
	for range 3 {
		if n, err := d.Read(make([]byte, 10)); n != 0 || err != wire.ErrDataBareNewline {
			t.Errorf("Read again = %d, %v", n, err)
		}
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if d.Err() != wire.ErrDataBareNewline {
		t.Errorf("Err() = %v", d.Err())
	}
	if n, err := d.Read(make([]byte, 10)); n != 0 || err != wire.ErrDataBareNewline {
		t.Errorf("Read after Drain = %d, %v", n, err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Errorf("left %q", rest)
	}
}

// One DataReader serves message after message on the same connection; a
// refused message leaves the next one intact (the session stays in step).
func TestDataReaderReset(t *testing.T) {
	in := "a\r\n.\r\n" + "bad\nsmuggled\r\n.\r\n" + "c\r\n..\r\n.\r\n" + strings.Repeat("x", 20) + "\r\n.\r\n" + "rest"
	br := bufio.NewReaderSize(strings.NewReader(in), 16)
	var d wire.DataReader
	want := []struct {
		content string
		err     error
	}{
		{"a\r\n", nil},
		{"", wire.ErrDataBareNewline},
		{"c\r\n.\r\n", nil},
		{"", wire.ErrDataTooBig},
	}
	for i, w := range want {
		d.Reset(br, 10)
		got, err := io.ReadAll(&d)
		if err != w.err || (err == nil && string(got) != w.content) {
			t.Errorf("message %d: %q, %v; want %q, %v", i, got, err, w.content, w.err)
		}
		if err := d.Drain(); err != nil {
			t.Fatalf("message %d: Drain: %v", i, err)
		}
		if err == nil && d.Size() != int64(len(w.content)) {
			t.Errorf("message %d: Size() = %d", i, d.Size())
		}
	}
	if rest, _ := io.ReadAll(br); string(rest) != "rest" {
		t.Errorf("left %q", rest)
	}
}

// Reading the data through a one-byte network gives exactly what a bulk
// read gives, for a realistic message.
func TestDataReaderOneByteSameAsBulk(t *testing.T) {
	var msg bytes.Buffer
	msg.WriteString("Received: from x\r\nSubject: test\r\n\r\n")
	for i := range 300 {
		line := strings.Repeat(".", i%4) + strings.Repeat("m", i%37)
		if strings.HasPrefix(line, ".") {
			line = "." + line // dot-stuffing
		}
		msg.WriteString(line + "\r\n")
	}
	msg.WriteString(".\r\nQUIT\r\n")
	in := msg.Bytes()
	base := runData(in, 0, readConfigs[0])
	if base.readErr != nil || string(base.rest) != "QUIT\r\n" {
		t.Fatalf("bulk: %v, left %q", base.readErr, base.rest)
	}
	for _, c := range readConfigs[1:] {
		res := runData(in, 0, c)
		if !bytes.Equal(res.content, base.content) || res.readErr != nil || !bytes.Equal(res.rest, base.rest) || res.size != base.size {
			t.Errorf("[%s] differs from the bulk read: err %v, %d octets, left %q", c.name, res.readErr, len(res.content), res.rest)
		}
	}
}
