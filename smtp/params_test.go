package smtp_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
)

func TestParseParams(t *testing.T) {
	p := func(k, v string) smtp.Param { return smtp.Param{Keyword: k, Value: v, HasValue: true} }
	flag := func(k string) smtp.Param { return smtp.Param{Keyword: k} }
	cases := []struct {
		in   string
		utf8 bool
		want []smtp.Param
		ok   bool
	}{
		{in: "", want: nil, ok: true},
		{in: " SIZE=1000", want: []smtp.Param{p("SIZE", "1000")}, ok: true},
		{in: " size=1000", want: []smtp.Param{p("size", "1000")}, ok: true},
		{in: " SMTPUTF8", want: []smtp.Param{flag("SMTPUTF8")}, ok: true},
		{in: " BODY=8BITMIME SMTPUTF8 SIZE=1", want: []smtp.Param{p("BODY", "8BITMIME"), flag("SMTPUTF8"), p("SIZE", "1")}, ok: true},
		{in: " X-FOO=bar", want: []smtp.Param{p("X-FOO", "bar")}, ok: true},
		{in: " 8X=y", want: []smtp.Param{p("8X", "y")}, ok: true},
		{in: " A-=y", want: []smtp.Param{p("A-", "y")}, ok: true},
		{in: " ENVID=a+2Bb<>!~", want: []smtp.Param{p("ENVID", "a+2Bb<>!~")}, ok: true},
		{in: " ORCPT=rfc822;u+40x.org", want: []smtp.Param{p("ORCPT", "rfc822;u+40x.org")}, ok: true},
		{in: " X=é", utf8: true, want: []smtp.Param{p("X", "é")}, ok: true},
		{in: " SIZE=a b", want: []smtp.Param{p("SIZE", "a"), flag("b")}, ok: true},
		{in: " " + strings.Repeat("K", 300) + "=" + strings.Repeat("v", 300), want: []smtp.Param{p(strings.Repeat("K", 300), strings.Repeat("v", 300))}, ok: true},

		{in: "SIZE=1"},                 // no leading space
		{in: "  SIZE=1"},               // two leading spaces
		{in: " SIZE=1  BODY=7BIT"},     // double space
		{in: " SIZE=1 "},               // trailing space
		{in: " "},                      // a space alone
		{in: "\tSIZE=1"},               // TAB separator
		{in: " SIZE=1\tBODY=7BIT"},     // TAB separator
		{in: " =1"},                    // empty keyword
		{in: " -X=1"},                  // keyword starts with hyphen
		{in: " X_Y=1"},                 // underscore
		{in: " X.Y=1"},                 // dot
		{in: " SIZE="},                 // empty value
		{in: " SIZE=a=b"},              // '=' in value
		{in: " SIZE=1 size=2"},         // duplicate, any case
		{in: " SMTPUTF8 smtputf8"},     // duplicate flag
		{in: " SMTPUTF8 SMTPUTF8=x"},   // duplicate flag and value
		{in: " X=a\x00b"},              // NUL
		{in: " X=a\x7fb"},              // DEL
		{in: " X=a\rb"},                // CR
		{in: " X=a\r\nRCPT"},           // CRLF
		{in: " X=é"},                   // UTF-8 without SMTPUTF8
		{in: " É=x", utf8: true},       // UTF-8 keyword
		{in: " SIZE=1\r\nRCPT TO:<a>"}, // injection attempt
	}
	for _, tc := range cases {
		got, err := smtp.ParseParams(tc.in, tc.utf8)
		if !tc.ok {
			if err == nil {
				t.Errorf("ParseParams(%q, %v) = %+v, want an error", tc.in, tc.utf8, got)
			} else if !errors.Is(err, smtp.ErrParamSyntax) {
				t.Errorf("ParseParams(%q, %v) error = %v, want ErrParamSyntax", tc.in, tc.utf8, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseParams(%q, %v) = %+v, %v; want %+v", tc.in, tc.utf8, got, err, tc.want)
		}
	}
}

// RFC 6531 §3.3 extends esmtp-value with UTF8-non-ascii: well-formed UTF-8,
// not arbitrary octets above 127.
func TestParseParamsInvalidUTF8(t *testing.T) {
	for _, in := range []string{" X=\xff", " X=a\xc3", " X=\xed\xa0\x80"} {
		if got, err := smtp.ParseParams(in, true); err == nil {
			t.Errorf("ParseParams(%q, true) = %+v: invalid UTF-8 accepted in esmtp-value", in, got)
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"1000", 1000, true},
		{"36700160", 36700160, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"00000000000000000001", 1, true},                  // 20 digits
		{"09223372036854775807", 1<<63 - 1, true},          // 20 digits, fits
		{"9223372036854775808", 0, false},                  // 19 digits, overflows
		{"99999999999999999999", 0, false},                 // 20 digits, overflows
		{"000000000000000000001", 0, false},                // 21 digits
		{"000000000000000000000000000000000001", 0, false}, // 36 digits
		{"", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
		{"-0", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"1_000", 0, false},
		{"１", 0, false}, // fullwidth digit one
		{"1\x00", 0, false},
	}
	for _, tc := range cases {
		got, ok := smtp.ParseSize(tc.in)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseCommand(t *testing.T) {
	cases := []struct {
		line      string
		verb, arg string
		ok        bool
	}{
		{"EHLO client.example", "EHLO", "client.example", true},
		{"ehlo client.example", "EHLO", "client.example", true},
		{"eHlO x", "EHLO", "x", true},
		{"QUIT", "QUIT", "", true},
		{"NOOP ", "NOOP", "", true},
		{"NOOP  x", "NOOP", " x", true},
		{"MAIL FROM:<a@b.example> SIZE=10", "MAIL", "FROM:<a@b.example> SIZE=10", true},
		{"RCPT  TO:<a@b>", "RCPT", " TO:<a@b>", true},
		{"bdat 10 LAST", "BDAT", "10 LAST", true},
		{"STARTTLS", "STARTTLS", "", true},
		{"ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP", "", true}, // 16 letters
		{"DATA\x00", "", "", false},
		{"ABCDEFGHIJKLMNOPQ", "", "", false}, // 17 letters
		{"", "", "", false},
		{" NOOP", "", "", false},
		{"NO0P", "", "", false},
		{"X-FOO", "", "", false},
		{"NOOP\tx", "", "", false},
		{"ÉHLO x", "", "", false},
		{"EHLO\r", "", "", false},
		{"MAIL:FROM", "", "", false},
	}
	for _, tc := range cases {
		verb, arg, ok := smtp.ParseCommand(tc.line)
		if verb != tc.verb || arg != tc.arg || ok != tc.ok {
			t.Errorf("ParseCommand(%q) = %q, %q, %v; want %q, %q, %v", tc.line, verb, arg, ok, tc.verb, tc.arg, tc.ok)
		}
	}
}
