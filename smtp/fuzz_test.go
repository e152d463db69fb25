package smtp_test

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/petrel-mta/petrel/smtp"
)

// pathSeeds are shared by the two path fuzz targets; the committed corpora
// under testdata/fuzz hold more.
var pathSeeds = []string{
	"<>",
	"<> SIZE=10",
	"<Postmaster>",
	"<user@example.org>",
	"<first.last+tag@Example.ORG> BODY=8BITMIME",
	`<"a b"@x.org>`,
	`<"a\"b"@x.org>`,
	`<"a>b"@x.org> SIZE=1`,
	`<""@x.org>`,
	"<u@[192.0.2.1]>",
	"<u@[IPv6:2001:db8::1]>",
	"<u@[tag:content]>",
	"<u@[300.1.1.1]>",
	"<@a.example,@b.example:u@c.example>",
	"<user%other@local>",
	"<other!user@local>",
	`<"user@other"@local>`,
	"<user@other@local>",
	"<u@foreign.>",
	"<jösé@bücher.example>",
	"<u@x.org\r\n>",
}

func FuzzParseReversePath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowUTF8 bool) {
		checkParsedPath(t, "ParseReversePath", smtp.ParseReversePath, s, allowUTF8)
	})
}

func FuzzParseForwardPath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowUTF8 bool) {
		checkParsedPath(t, "ParseForwardPath", smtp.ParseForwardPath, s, allowUTF8)
	})
}

// checkParsedPath checks the properties every successful parse must have.
func checkParsedPath(t *testing.T, fn string, parse func(string, bool) (smtp.Path, string, error), s string, allowUTF8 bool) {
	p, rest, err := parse(s, allowUTF8)
	if err != nil {
		if p != (smtp.Path{}) || rest != "" {
			t.Fatalf("%s(%q) failed with %v but returned %+v, %q", fn, s, err, p, rest)
		}
		return
	}
	if !strings.HasSuffix(s, rest) || len(rest) >= len(s) {
		t.Fatalf("%s(%q): rest %q is not a proper suffix", fn, s, rest)
	}
	consumed := s[:len(s)-len(rest)]
	if consumed[0] != '<' || consumed[len(consumed)-1] != '>' {
		t.Fatalf("%s(%q) consumed %q, not a bracketed path", fn, s, consumed)
	}
	if len(consumed) > smtp.MaxPathLen {
		t.Fatalf("%s(%q) consumed %d octets, over %d", fn, s, len(consumed), smtp.MaxPathLen)
	}
	// The ABNF allows no control characters anywhere in a path (no CR, LF,
	// NUL, TAB, DEL), and 8-bit octets only as UTF-8 with SMTPUTF8.
	for i := 0; i < len(consumed); i++ {
		if c := consumed[i]; c < 0x20 || c == 0x7f || (c >= 0x80 && !allowUTF8) {
			t.Fatalf("%s(%q, %v) accepted octet %#x", fn, s, allowUTF8, c)
		}
	}
	if !utf8.ValidString(consumed) {
		t.Fatalf("%s(%q) accepted invalid UTF-8", fn, s)
	}
	if !allowUTF8 && !p.ASCII() {
		t.Fatalf("%s(%q, false) = %+v, not ASCII", fn, s, p)
	}

	switch {
	case p.IsNull():
		if fn == "ParseForwardPath" || consumed != "<>" {
			t.Fatalf("%s(%q) = null path from %q", fn, s, consumed)
		}
	case p.Domain == "":
		if fn != "ParseForwardPath" || !p.IsPostmaster() {
			t.Fatalf("%s(%q) = %+v: no domain and not <Postmaster>", fn, s, p)
		}
	default:
		if !smtp.IsDomain(p.Domain, allowUTF8) && !smtp.IsAddressLiteral(p.Domain) {
			t.Fatalf("%s(%q): domain %q is neither a domain nor an address literal", fn, s, p.Domain)
		}
		if len(p.Local) > smtp.MaxLocalPartLen {
			t.Fatalf("%s(%q): local part of %d octets", fn, s, len(p.Local))
		}
		// S-RELAY-04: the domain is what follows the mailbox's last "@",
		// never a domain hidden in the local part or the source route.
		if !p.IsLiteral() {
			inner := consumed[1 : len(consumed)-1]
			if d := inner[strings.LastIndexByte(inner, '@')+1:]; d != p.Domain {
				t.Fatalf("%s(%q).Domain = %q, but the mailbox ends in %q", fn, s, p.Domain, d)
			}
		}
	}

	// Round trip: the canonical form parses back to the same Path.
	b := p.Bracketed()
	if strings.ContainsAny(b, "\r\n\x00") {
		t.Fatalf("%+v.Bracketed() = %q", p, b)
	}
	if len(b) > len(consumed) {
		t.Fatalf("%+v.Bracketed() = %q, longer than the input %q", p, b, consumed)
	}
	q, rest2, err := parse(b, allowUTF8)
	if err != nil || rest2 != "" || q != p {
		t.Fatalf("%s(%q) = %+v, %q, %v; want %+v (from %q)", fn, b, q, rest2, err, p, s)
	}
}

func FuzzParseParams(f *testing.F) {
	for _, s := range []string{
		"",
		" SIZE=1000",
		" BODY=8BITMIME SMTPUTF8",
		" SIZE=1 size=2",
		" SIZE=1  BODY=7BIT",
		" SIZE=",
		" X=a=b",
		" X=é",
		" X=\xff",
		" SIZE=1\r\nRCPT TO:<a@b>",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowUTF8 bool) {
		ps, err := smtp.ParseParams(s, allowUTF8)
		if err != nil {
			if ps != nil {
				t.Fatalf("ParseParams(%q) failed with %v but returned %+v", s, err, ps)
			}
			return
		}
		if (s == "") != (len(ps) == 0) {
			t.Fatalf("ParseParams(%q) = %+v", s, ps)
		}
		var b strings.Builder
		seen := map[string]bool{}
		for _, p := range ps {
			if p.Keyword == "" || strings.ContainsAny(p.Keyword+p.Value, " =\r\n\x00\t\x7f") {
				t.Fatalf("ParseParams(%q): bad param %+v", s, p)
			}
			if p.HasValue == (p.Value == "") {
				t.Fatalf("ParseParams(%q): HasValue %v with value %q", s, p.HasValue, p.Value)
			}
			k := strings.ToUpper(p.Keyword)
			if seen[k] {
				t.Fatalf("ParseParams(%q): duplicate keyword %q", s, p.Keyword)
			}
			seen[k] = true
			if !allowUTF8 && !isASCII(p.Value) {
				t.Fatalf("ParseParams(%q, false): 8-bit value %q", s, p.Value)
			}
			b.WriteString(" " + p.Keyword)
			if p.HasValue {
				b.WriteString("=" + p.Value)
			}
		}
		if b.String() != s {
			t.Fatalf("ParseParams(%q) = %+v, which reads back as %q", s, ps, b.String())
		}
	})
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"EHLO client.example",
		"ehlo x",
		"QUIT",
		"MAIL FROM:<a@b.example> SIZE=10",
		"RCPT  TO:<a@b>",
		"BDAT 10 LAST",
		"",
		" NOOP",
		"NO0P",
		"ABCDEFGHIJKLMNOPQ",
		"GET / HTTP/1.1",
		"ÉHLO x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		verb, arg, ok := smtp.ParseCommand(line)
		if !ok {
			if verb != "" || arg != "" {
				t.Fatalf("ParseCommand(%q) = %q, %q, false", line, verb, arg)
			}
			return
		}
		if verb == "" || len(verb) > 16 {
			t.Fatalf("ParseCommand(%q): verb %q", line, verb)
		}
		for i := 0; i < len(verb); i++ {
			if verb[i] < 'A' || verb[i] > 'Z' {
				t.Fatalf("ParseCommand(%q): verb %q is not upper-case letters", line, verb)
			}
		}
		if !strings.EqualFold(line[:len(verb)], verb) {
			t.Fatalf("ParseCommand(%q): verb %q is not the line's first word", line, verb)
		}
		if want := strings.TrimPrefix(line[len(verb):], " "); arg != want {
			t.Fatalf("ParseCommand(%q): arg %q, want %q", line, arg, want)
		}
		if len(line) > len(verb) && line[len(verb)] != ' ' {
			t.Fatalf("ParseCommand(%q): verb %q not followed by a space", line, verb)
		}
	})
}

func FuzzParseReplyLine(f *testing.F) {
	for _, s := range []string{
		"250 OK",
		"250-PIPELINING",
		"250",
		"220 mx.example ESMTP Petrel",
		"550 5.1.1 No such user",
		"550 4.1.1 class mismatch",
		"354 Start mail input",
		"2500 OK",
		"199 x",
		"250 2.0.0",
		"250-2.0.0 a\r\nb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		code, more, text, err := smtp.ParseReplyLine(line)
		if err != nil {
			if code != 0 || more || text != "" {
				t.Fatalf("ParseReplyLine(%q) failed with %v but returned %d, %v, %q", line, err, code, more, text)
			}
		} else {
			if code < 200 || code > 599 {
				t.Fatalf("ParseReplyLine(%q): code %d", line, code)
			}
			if len(line) > 3 {
				sep := " "
				if more {
					sep = "-"
				}
				if back := strconv.Itoa(code) + sep + text; back != line {
					t.Fatalf("ParseReplyLine(%q) = %d, %v, %q, which reads back as %q", line, code, more, text, back)
				}
			}
			e, rest := smtp.SplitEnhanced(code, text)
			if !e.IsZero() {
				if e.Class != code/100 {
					t.Fatalf("SplitEnhanced(%d, %q) = %v: class mismatch", code, text, e)
				}
				if back, err := smtp.ParseEnhancedCode(e.String()); err != nil || back != e {
					t.Fatalf("ParseEnhancedCode(%q) = %v, %v", e.String(), back, err)
				}
				if !strings.HasSuffix(text, rest) {
					t.Fatalf("SplitEnhanced(%d, %q) rest %q", code, text, rest)
				}
			} else if rest != text {
				t.Fatalf("SplitEnhanced(%d, %q) = no code but rest %q", code, text, rest)
			}
		}

		// AppendReply with the line as text: always well-formed, the text
		// cut at the first CR or LF, the enhanced code recoverable.
		for _, c := range []int{250, 451, 554} {
			enh := smtp.EnhancedCode{Class: c / 100, Subject: 5, Detail: 1}
			wire := smtp.AppendReply(nil, c, enh, line, line)
			want := line
			if i := strings.IndexAny(want, "\r\n"); i >= 0 {
				want = want[:i]
			}
			ls := strings.Split(strings.TrimSuffix(string(wire), "\r\n"), "\r\n")
			if len(ls) != 2 || !strings.HasSuffix(string(wire), "\r\n") {
				t.Fatalf("AppendReply(%q) = %q: not two CRLF lines", line, wire)
			}
			for i, l := range ls {
				gc, gmore, gtext, err := smtp.ParseReplyLine(l)
				if err != nil || gc != c || gmore != (i == 0) {
					t.Fatalf("AppendReply(%q) line %q: %d, %v, %v", line, l, gc, gmore, err)
				}
				ge, grest := smtp.SplitEnhanced(gc, gtext)
				if ge != enh || grest != want {
					t.Fatalf("AppendReply(%q) line %q: enhanced %v rest %q; want %v, %q", line, l, ge, grest, enh, want)
				}
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
