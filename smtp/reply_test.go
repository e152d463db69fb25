package smtp_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
)

func TestParseEnhancedCode(t *testing.T) {
	cases := []struct {
		in   string
		want smtp.EnhancedCode
		ok   bool
	}{
		{"2.0.0", smtp.EnhancedCode{2, 0, 0}, true},
		{"4.7.0", smtp.EnhancedCode{4, 7, 0}, true},
		{"5.1.1", smtp.EnhancedCode{5, 1, 1}, true},
		{"5.7.11", smtp.EnhancedCode{5, 7, 11}, true},
		{"5.7.30", smtp.EnhancedCode{5, 7, 30}, true},
		{"5.123.999", smtp.EnhancedCode{5, 123, 999}, true},
		{"2.00.000", smtp.EnhancedCode{2, 0, 0}, true},
		{"", smtp.EnhancedCode{}, false},
		{"5", smtp.EnhancedCode{}, false},
		{"5.7", smtp.EnhancedCode{}, false},
		{"5.7.", smtp.EnhancedCode{}, false},
		{"5..1", smtp.EnhancedCode{}, false},
		{".5.1.1", smtp.EnhancedCode{}, false},
		{"5.1.1.", smtp.EnhancedCode{}, false},
		{"5.1.1.1", smtp.EnhancedCode{}, false},
		{"0.0.0", smtp.EnhancedCode{}, false},
		{"1.0.0", smtp.EnhancedCode{}, false},
		{"3.0.0", smtp.EnhancedCode{}, false},
		{"6.0.0", smtp.EnhancedCode{}, false},
		{"55.1.1", smtp.EnhancedCode{}, false},
		{"05.1.1", smtp.EnhancedCode{}, false},
		{"5.1000.1", smtp.EnhancedCode{}, false},
		{"5.1.1000", smtp.EnhancedCode{}, false},
		{"5.a.1", smtp.EnhancedCode{}, false},
		{"+5.1.1", smtp.EnhancedCode{}, false},
		{"5.-1.1", smtp.EnhancedCode{}, false},
		{"5.1.1 ", smtp.EnhancedCode{}, false},
		{" 5.1.1", smtp.EnhancedCode{}, false},
		{"5,1,1", smtp.EnhancedCode{}, false},
		{"５.1.1", smtp.EnhancedCode{}, false},
	}
	for _, tc := range cases {
		got, err := smtp.ParseEnhancedCode(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseEnhancedCode(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestEnhancedCodeString(t *testing.T) {
	cases := []struct {
		e    smtp.EnhancedCode
		want string
	}{
		{smtp.NoEnhancedCode, ""},
		{smtp.E200Undefined, "2.0.0"},
		{smtp.E571DeliveryNotAuth, "5.7.1"},
		{smtp.E5711EncryptRequired, "5.7.11"},
		{smtp.E453TooManyRcpts, "4.5.3"},
	}
	for _, tc := range cases {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.e, got, tc.want)
		}
		if tc.e.IsZero() != (tc.want == "") {
			t.Errorf("%#v.IsZero() = %v", tc.e, tc.e.IsZero())
		}
		if tc.want != "" {
			if back, err := smtp.ParseEnhancedCode(tc.want); err != nil || back != tc.e {
				t.Errorf("ParseEnhancedCode(%q) = %v, %v; want %v", tc.want, back, err, tc.e)
			}
		}
	}
}

// Every named enhanced code is well formed.
func TestEnhancedCodeConstants(t *testing.T) {
	for _, e := range []smtp.EnhancedCode{
		smtp.E200Undefined, smtp.E210OtherAddress, smtp.E215DestValid, smtp.E260Other, smtp.E270Security,
		smtp.E300Other, smtp.E430SystemOther, smtp.E431SystemFull, smtp.E432NotAccepting, smtp.E453TooManyRcpts,
		smtp.E470Security, smtp.E510OtherAddress, smtp.E511BadMailbox, smtp.E513BadDestSyntax,
		smtp.E517BadSenderSyntax, smtp.E534MsgTooBig, smtp.E550Protocol, smtp.E551InvalidCommand,
		smtp.E552SyntaxError, smtp.E554InvalidArgs, smtp.E560Media, smtp.E567NonASCIIAddr, smtp.E570Security,
		smtp.E571DeliveryNotAuth, smtp.E5711EncryptRequired,
	} {
		if back, err := smtp.ParseEnhancedCode(e.String()); err != nil || back != e {
			t.Errorf("ParseEnhancedCode(%q) = %v, %v", e.String(), back, err)
		}
	}
}

func TestAppendReply(t *testing.T) {
	cases := []struct {
		name  string
		code  int
		enh   smtp.EnhancedCode
		lines []string
		want  string
	}{
		{"plain", 250, smtp.NoEnhancedCode, []string{"OK"}, "250 OK\r\n"},
		{"enhanced", 250, smtp.E200Undefined, []string{"OK"}, "250 2.0.0 OK\r\n"},
		{"no lines", 250, smtp.NoEnhancedCode, nil, "250 \r\n"},
		{"no lines enhanced", 221, smtp.E200Undefined, nil, "221 2.0.0\r\n"},
		{"empty line enhanced", 250, smtp.E200Undefined, []string{""}, "250 2.0.0\r\n"},
		{"multi-line", 250, smtp.NoEnhancedCode, []string{"mx greets x", "PIPELINING", "STARTTLS"},
			"250-mx greets x\r\n250-PIPELINING\r\n250 STARTTLS\r\n"},
		{"multi-line enhanced on every line", 550, smtp.E511BadMailbox, []string{"No such user", "see the docs"},
			"550-5.1.1 No such user\r\n550 5.1.1 see the docs\r\n"},
		{"multi-line empty middle", 214, smtp.E200Undefined, []string{"a", "", "b"},
			"214-2.0.0 a\r\n214-2.0.0\r\n214 2.0.0 b\r\n"},
		{"CRLF cut", 250, smtp.NoEnhancedCode, []string{"a\r\n250 injected"}, "250 a\r\n"},
		{"LF cut", 250, smtp.E200Undefined, []string{"a\nb"}, "250 2.0.0 a\r\n"},
		{"CR cut", 250, smtp.NoEnhancedCode, []string{"x\rRCPT TO:<a@b>"}, "250 x\r\n"},
		{"cut in the middle line", 550, smtp.E571DeliveryNotAuth, []string{"a", "b\r\n550 fake", "c"},
			"550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c\r\n"},
		{"line of only CRLF", 250, smtp.E200Undefined, []string{"\r\n"}, "250 2.0.0\r\n"},
		{"leading space kept", 250, smtp.NoEnhancedCode, []string{" x"}, "250  x\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(smtp.AppendReply(nil, tc.code, tc.enh, tc.lines...))
			if got != tc.want {
				t.Fatalf("AppendReply(%d, %v, %q) = %q, want %q", tc.code, tc.enh, tc.lines, got, tc.want)
			}
			checkReplyWire(t, got, tc.code, tc.enh)
		})
	}
	// AppendReply appends.
	got := smtp.AppendReply([]byte("354 go\r\n"), 250, smtp.E200Undefined, "OK")
	if string(got) != "354 go\r\n250 2.0.0 OK\r\n" {
		t.Errorf("AppendReply to a prefix = %q", got)
	}
}

// checkReplyWire checks that wire is one well-formed reply: CRLF lines of
// "code-text" ending with one "code text", each carrying enh.
func checkReplyWire(t *testing.T, wire string, code int, enh smtp.EnhancedCode) {
	t.Helper()
	if !strings.HasSuffix(wire, "\r\n") {
		t.Fatalf("reply %q does not end in CRLF", wire)
	}
	lines := strings.Split(strings.TrimSuffix(wire, "\r\n"), "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("reply line %q holds a bare CR or LF", l)
		}
		c, more, text, err := smtp.ParseReplyLine(l)
		if err != nil || c != code || more != (i < len(lines)-1) {
			t.Fatalf("ParseReplyLine(%q) = %d, %v, %q, %v; want code %d, more %v", l, c, more, text, err, code, i < len(lines)-1)
		}
		if !enh.IsZero() {
			if e, _ := smtp.SplitEnhanced(c, text); e != enh {
				t.Fatalf("reply line %q: enhanced code %v, want %v", l, e, enh)
			}
		}
	}
}

func TestParseReplyLine(t *testing.T) {
	cases := []struct {
		line string
		code int
		more bool
		text string
		ok   bool
	}{
		{"250 OK", 250, false, "OK", true},
		{"250-PIPELINING", 250, true, "PIPELINING", true},
		{"250", 250, false, "", true},
		{"250 ", 250, false, "", true},
		{"250-", 250, true, "", true},
		{"354 Start mail input", 354, false, "Start mail input", true},
		{"220 mx.example ESMTP", 220, false, "mx.example ESMTP", true},
		{"550 5.1.1 No such user", 550, false, "5.1.1 No such user", true},
		{"599 x", 599, false, "x", true},
		{"200 x", 200, false, "x", true},
		{"250  two spaces", 250, false, " two spaces", true},
		{"", 0, false, "", false},
		{"25", 0, false, "", false},
		{"2500 OK", 0, false, "", false},
		{"250_OK", 0, false, "", false},
		{"250\tOK", 0, false, "", false},
		{"abc OK", 0, false, "", false},
		{"25a OK", 0, false, "", false},
		{"-250 OK", 0, false, "", false},
		{" 250 OK", 0, false, "", false},
		{"199 x", 0, false, "", false},
		{"099 x", 0, false, "", false},
		{"600 x", 0, false, "", false},
		{"999 x", 0, false, "", false},
	}
	for _, tc := range cases {
		code, more, text, err := smtp.ParseReplyLine(tc.line)
		if code != tc.code || more != tc.more || text != tc.text || (err == nil) != tc.ok {
			t.Errorf("ParseReplyLine(%q) = %d, %v, %q, %v; want %d, %v, %q, ok %v", tc.line, code, more, text, err, tc.code, tc.more, tc.text, tc.ok)
		}
		if err != nil && !errors.Is(err, smtp.ErrMalformedReply) {
			t.Errorf("ParseReplyLine(%q) error = %v, want ErrMalformedReply", tc.line, err)
		}
	}
}

func TestSplitEnhanced(t *testing.T) {
	cases := []struct {
		code int
		text string
		want smtp.EnhancedCode
		rest string
	}{
		{550, "5.1.1 No such user", smtp.EnhancedCode{5, 1, 1}, "No such user"},
		{250, "2.0.0 OK", smtp.EnhancedCode{2, 0, 0}, "OK"},
		{250, "2.0.0", smtp.EnhancedCode{2, 0, 0}, ""},
		{250, "2.0.0 ", smtp.EnhancedCode{2, 0, 0}, ""},
		{250, "2.0.0  x", smtp.EnhancedCode{2, 0, 0}, " x"},
		{454, "4.7.0 TLS not available", smtp.EnhancedCode{4, 7, 0}, "TLS not available"},
		{550, "4.1.1 class mismatch", smtp.NoEnhancedCode, "4.1.1 class mismatch"},
		{250, "5.0.0 class mismatch", smtp.NoEnhancedCode, "5.0.0 class mismatch"},
		{354, "3.0.0 no class 3", smtp.NoEnhancedCode, "3.0.0 no class 3"},
		{250, "OK", smtp.NoEnhancedCode, "OK"},
		{250, "", smtp.NoEnhancedCode, ""},
		{250, "mx.example greets x", smtp.NoEnhancedCode, "mx.example greets x"},
		{550, "5.1.1x y", smtp.NoEnhancedCode, "5.1.1x y"},
		{550, "5.1 y", smtp.NoEnhancedCode, "5.1 y"},
		{550, " 5.1.1 y", smtp.NoEnhancedCode, " 5.1.1 y"},
	}
	for _, tc := range cases {
		got, rest := smtp.SplitEnhanced(tc.code, tc.text)
		if got != tc.want || rest != tc.rest {
			t.Errorf("SplitEnhanced(%d, %q) = %v, %q; want %v, %q", tc.code, tc.text, got, rest, tc.want, tc.rest)
		}
	}
}

func TestError(t *testing.T) {
	cases := []struct {
		e                    *smtp.Error
		str                  string
		lines                []string
		temporary, permanent bool
	}{
		{&smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user"}, "550 5.1.1 No such user", []string{"No such user"}, false, true},
		{&smtp.Error{Code: 452, Enhanced: smtp.E453TooManyRcpts, Message: "a\nb"}, "452 4.5.3 a; b", []string{"a", "b"}, true, false},
		{&smtp.Error{Code: 250}, "250", []string{""}, false, false},
		{&smtp.Error{Code: 354, Message: "go"}, "354 go", []string{"go"}, false, false},
		{smtp.Errorf(554, smtp.E571DeliveryNotAuth, "Relay to %s denied", "x.org"), "554 5.7.1 Relay to x.org denied", []string{"Relay to x.org denied"}, false, true},
	}
	for _, tc := range cases {
		if got := tc.e.Error(); got != tc.str {
			t.Errorf("Error() = %q, want %q", got, tc.str)
		}
		if got := tc.e.Lines(); !reflect.DeepEqual(got, tc.lines) {
			t.Errorf("%q.Lines() = %q, want %q", tc.str, got, tc.lines)
		}
		if tc.e.Temporary() != tc.temporary || tc.e.Permanent() != tc.permanent {
			t.Errorf("%q: Temporary %v Permanent %v", tc.str, tc.e.Temporary(), tc.e.Permanent())
		}
		wire := smtp.AppendReply(nil, tc.e.Code, tc.e.Enhanced, tc.e.Lines()...)
		if bytes.Count(wire, []byte("\r\n")) != len(tc.lines) {
			t.Errorf("%q: wire form %q has the wrong number of lines", tc.str, wire)
		}
	}
	// The sentinel errors carry reply codes matching their enhanced class.
	for _, e := range []*smtp.Error{smtp.ErrPathSyntax, smtp.ErrPathTooLong, smtp.ErrPathNonASCII, smtp.ErrParamSyntax} {
		if e.Code/100 != e.Enhanced.Class {
			t.Errorf("%v: class of the enhanced code differs from the reply code", e)
		}
	}
}
