package dsn

import (
	"bytes"
	"strings"
	"testing"
)

func TestDecodeXtext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"bob@example.net", "bob@example.net"},
		{"bob+2Bfriday@example.net", "bob+friday@example.net"},
		{"a+20b+3D", "a b="},
		{"+2b", "+"},     // lower-case hex, accepted
		{"+2", "+2"},     // too short: kept
		{"+zz1", "+zz1"}, // not hex: kept
		{"+0D+0A", "\r\n"},
		{"+", "+"},
	}
	for _, tc := range tests {
		if got := decodeXtext(tc.in); got != tc.want {
			t.Errorf("decodeXtext(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	tests := []struct {
		in   string
		utf8 bool
		want string
	}{
		{"a\r\nb\tc\x00d\x7f", false, "a  b c d "},
		{"Grüße", false, "Gr??e"},
		{"Grüße", true, "Grüße"},
		{"a\xffb", true, "a\uFFFDb"},
		{"a\u0085b\u2028c\u2029d", true, "a b c d"},
		{"李\xed\xa0\x80", true, "李\uFFFD\uFFFD\uFFFD"}, // a surrogate is not UTF-8
	}
	for _, tc := range tests {
		if got := clean(tc.in, tc.utf8); got != tc.want {
			t.Errorf("clean(%q, %v) = %q, want %q", tc.in, tc.utf8, got, tc.want)
		}
	}
}

func TestFold(t *testing.T) {
	var b bytes.Buffer
	h := &header{buf: &b, utf8: true}
	h.field("Diagnostic-Code", "smtp; "+strings.Repeat("word ", 40)+strings.Repeat("é", 1500))
	for i, line := range strings.Split(strings.TrimSuffix(b.String(), "\r\n"), "\r\n") {
		if len(line) > hardLine {
			t.Errorf("line %d: %d octets", i, len(line))
		}
		if i > 0 && !strings.HasPrefix(line, " ") {
			t.Errorf("line %d does not start with white space: %q", i, line)
		}
		if strings.TrimSpace(line) == "" {
			t.Errorf("line %d is only white space", i)
		}
		if !strings.HasPrefix(line, " ") && i > 0 || len(line) > softLine && !strings.Contains(line, "é") {
			t.Errorf("line %d: %q", i, line)
		}
	}
	b.Reset()
	h.field("Subject", "")
	if got := b.String(); got != "Subject:\r\n" {
		t.Errorf("empty field: %q", got)
	}
}
