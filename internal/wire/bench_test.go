package wire

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
)

// benchMessage is a dot-stuffed message of about size octets in 76-octet
// text lines (the shape of base64 or quoted-printable bodies), ended by
// <CRLF>.<CRLF>.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: bench\r\n\r\n")
	line := "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+/abcdefghijkl"
	for i := 0; b.Len() < size; i++ {
		if i%50 == 0 {
			b.WriteString("..a line that starts with a dot\r\n")
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// BenchmarkDataReader measures the DATA path of the server: unstuffing and
// checking (bare CR/LF, line length, size) through a bufio.Reader of the
// server's size into a 32 KiB copy buffer. Issue 5 asks ≥ 1 GB/s per core.
func BenchmarkDataReader(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10, 1 << 20} {
		msg := benchMessage(size)
		b.Run(byteSize(size), func(b *testing.B) {
			src := bytes.NewReader(msg)
			br := bufio.NewReaderSize(src, 4096)
			buf := make([]byte, 32<<10)
			var d DataReader
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				br.Reset(src)
				d.Reset(br, 0)
				for {
					_, err := d.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkReadLine measures reading one command line.
func BenchmarkReadLine(b *testing.B) {
	line := "RCPT TO:<someone.with.a.long.name@example.org> NOTIFY=SUCCESS,FAILURE\r\n"
	src := strings.NewReader(line)
	br := bufio.NewReaderSize(src, 4096)
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(line)
		br.Reset(src)
		if _, err := ReadLine(br, 512); err != nil {
			b.Fatal(err)
		}
	}
}
