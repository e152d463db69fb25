package smtp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
)

// errAny marks a case that must fail without naming the error: the null
// path in a forward-path is refused with an unexported error.
var errAny = errors.New("any error")

type pathCase struct {
	name   string
	in     string
	utf8   bool
	want   smtp.Path
	rest   string
	err    error // nil, errAny, or the sentinel expected with errors.Is
	reason string
}

func checkPath(t *testing.T, fn string, parse func(string, bool) (smtp.Path, string, error), tc pathCase) {
	t.Helper()
	p, rest, err := parse(tc.in, tc.utf8)
	switch {
	case tc.err == nil && err != nil:
		t.Fatalf("%s(%q, %v) = error %v, want %+v", fn, tc.in, tc.utf8, err, tc.want)
	case tc.err == nil:
		if p != tc.want || rest != tc.rest {
			t.Fatalf("%s(%q, %v) = %+v, rest %q; want %+v, rest %q", fn, tc.in, tc.utf8, p, rest, tc.want, tc.rest)
		}
	case err == nil:
		t.Fatalf("%s(%q, %v) = %+v, rest %q; want an error (%s)", fn, tc.in, tc.utf8, p, rest, tc.reason)
	case tc.err == errAny:
		var se *smtp.Error
		if !errors.As(err, &se) || se.Code/100 != 5 {
			t.Fatalf("%s(%q) error = %v, want a 5xx *smtp.Error", fn, tc.in, err)
		}
	case !errors.Is(err, tc.err):
		t.Fatalf("%s(%q, %v) error = %v, want %v", fn, tc.in, tc.utf8, err, tc.err)
	}
	if err != nil && (p != smtp.Path{} || rest != "") {
		t.Errorf("%s(%q) failed but returned %+v, rest %q; want zero values", fn, tc.in, p, rest)
	}
}

// Paths valid as both reverse-path and forward-path (RFC 5321 §4.1.2).
var validPaths = []pathCase{
	{name: "plain", in: "<user@example.org>", want: smtp.Path{Local: "user", Domain: "example.org"}},
	{name: "dot-string", in: "<first.last+tag@mail.example.org>", want: smtp.Path{Local: "first.last+tag", Domain: "mail.example.org"}},
	{name: "all atext", in: "<!#$%&'*+-/=?^_`{|}~@x.org>", want: smtp.Path{Local: "!#$%&'*+-/=?^_`{|}~", Domain: "x.org"}},
	{name: "case preserved", in: "<User@Example.ORG>", want: smtp.Path{Local: "User", Domain: "Example.ORG"}},
	{name: "single label domain", in: "<user@localhost>", want: smtp.Path{Local: "user", Domain: "localhost"}},
	{name: "numeric labels", in: "<u@1.2.3.4>", want: smtp.Path{Local: "u", Domain: "1.2.3.4"}},
	{name: "punycode", in: "<u@xn--bcher-kva.example>", want: smtp.Path{Local: "u", Domain: "xn--bcher-kva.example"}},
	{name: "rest after path", in: "<u@x.org> SIZE=100", want: smtp.Path{Local: "u", Domain: "x.org"}, rest: " SIZE=100"},
	{name: "rest not a parameter", in: "<u@x.org>junk", want: smtp.Path{Local: "u", Domain: "x.org"}, rest: "junk"},

	{name: "quoted space", in: `<"a b"@x.org>`, want: smtp.Path{Local: "a b", Domain: "x.org"}},
	{name: "quoted escaped quote", in: `<"a\"b"@x.org>`, want: smtp.Path{Local: `a"b`, Domain: "x.org"}},
	{name: "quoted escaped backslash", in: `<"a\\b"@x.org>`, want: smtp.Path{Local: `a\b`, Domain: "x.org"}},
	{name: "quoted needless escape", in: `<"\a"@x.org>`, want: smtp.Path{Local: "a", Domain: "x.org"}},
	{name: "quoted angle bracket and rest", in: `<"a>b"@x.org> BODY=7BIT`, want: smtp.Path{Local: "a>b", Domain: "x.org"}, rest: " BODY=7BIT"},
	{name: "quoted escaped quote then bracket", in: `<"a\">"@x.org>x`, want: smtp.Path{Local: `a">`, Domain: "x.org"}, rest: "x"},
	{name: "quoted empty", in: `<""@x.org>`, want: smtp.Path{Local: "", Domain: "x.org"}},
	{name: "quoted dot-string", in: `<"abc"@x.org>`, want: smtp.Path{Local: "abc", Domain: "x.org"}},
	{name: "quoted double dot", in: `<"a..b"@x.org>`, want: smtp.Path{Local: "a..b", Domain: "x.org"}},

	{name: "IPv4 literal", in: "<u@[192.0.2.1]>", want: smtp.Path{Local: "u", Domain: "[192.0.2.1]"}},
	{name: "IPv6 literal", in: "<u@[IPv6:2001:db8::1]>", want: smtp.Path{Local: "u", Domain: "[IPv6:2001:db8::1]"}},
	{name: "IPv6 tag case", in: "<u@[ipv6:2001:DB8::1]>", want: smtp.Path{Local: "u", Domain: "[ipv6:2001:DB8::1]"}},
	{name: "IPv6 literal v4 tail", in: "<u@[IPv6:::ffff:192.0.2.1]>", want: smtp.Path{Local: "u", Domain: "[IPv6:::ffff:192.0.2.1]"}},
	{name: "general literal", in: "<u@[tag:content]>", want: smtp.Path{Local: "u", Domain: "[tag:content]"}},

	// Source routes are parsed and dropped (RFC 5321 §4.1.1.3, Appendix C).
	{name: "source route", in: "<@a.example,@b.example:u@c.example>", want: smtp.Path{Local: "u", Domain: "c.example"}},
	{name: "source route one hop", in: "<@a.example:u@c.example> SIZE=1", want: smtp.Path{Local: "u", Domain: "c.example"}, rest: " SIZE=1"},
	{name: "source route to literal", in: "<@a.example:u@[IPv6:2001:db8::1]>", want: smtp.Path{Local: "u", Domain: "[IPv6:2001:db8::1]"}},
	{name: "source route quoted", in: `<@a.example:"x>y"@c.example>`, want: smtp.Path{Local: "x>y", Domain: "c.example"}},

	// S-RELAY-04: %-hack and !-paths are local parts of the final domain.
	{name: "percent hack", in: "<user%other@local>", want: smtp.Path{Local: "user%other", Domain: "local"}},
	{name: "percent hack dotted", in: "<user%foreign.example@local.example>", want: smtp.Path{Local: "user%foreign.example", Domain: "local.example"}},
	{name: "bang path", in: "<other!user@local>", want: smtp.Path{Local: "other!user", Domain: "local"}},
	{name: "quoted at", in: `<"user@other"@local>`, want: smtp.Path{Local: "user@other", Domain: "local"}},
	// S-RELAY-03: a source route through the local domain names the foreign
	// mailbox, so the server sees the foreign domain and refuses to relay.
	{name: "source route via local", in: "<@local:user@foreign>", want: smtp.Path{Local: "user", Domain: "foreign"}},

	// RFC 6531: UTF-8 only with SMTPUTF8.
	{name: "utf8 local", in: "<jösé@example.org>", utf8: true, want: smtp.Path{Local: "jösé", Domain: "example.org"}},
	{name: "utf8 domain", in: "<u@bücher.example>", utf8: true, want: smtp.Path{Local: "u", Domain: "bücher.example"}},
	{name: "utf8 quoted", in: `<"jö sé"@example.org>`, utf8: true, want: smtp.Path{Local: "jö sé", Domain: "example.org"}},
	{name: "utf8 cjk", in: "<用户@例子.广告>", utf8: true, want: smtp.Path{Local: "用户", Domain: "例子.广告"}},
	{name: "utf8 allowed ascii", in: "<u@x.org>", utf8: true, want: smtp.Path{Local: "u", Domain: "x.org"}},
}

// Paths that are invalid as both reverse-path and forward-path.
var invalidPaths = []pathCase{
	{in: "", err: smtp.ErrPathSyntax, reason: "empty"},
	{in: "user@example.org", err: smtp.ErrPathSyntax, reason: "no angle brackets"},
	{in: " <user@example.org>", err: smtp.ErrPathSyntax, reason: "leading space"},
	{in: "<user@example.org", err: smtp.ErrPathSyntax, reason: "no closing bracket"},
	{in: "<user>", err: smtp.ErrPathSyntax, reason: "no domain"},
	{in: "<user@>", err: smtp.ErrPathSyntax, reason: "empty domain"},
	{in: "<@example.org>", err: smtp.ErrPathSyntax, reason: "empty local part"},
	{in: "<u @x.org>", err: smtp.ErrPathSyntax, reason: "space in local part"},
	{in: "<u@x.org >", err: smtp.ErrPathSyntax, reason: "space after domain"},
	{in: "<<u@x.org>>", err: smtp.ErrPathSyntax, reason: "nested brackets"},
	{in: "<u@foreign.>", err: smtp.ErrPathSyntax, reason: "trailing dot in domain (S-RELAY-03)"},
	{in: "<u@.foreign>", err: smtp.ErrPathSyntax, reason: "leading dot in domain"},
	{in: "<u@foreign..example>", err: smtp.ErrPathSyntax, reason: "empty label"},
	{in: "<u@-x.org>", err: smtp.ErrPathSyntax, reason: "label starts with hyphen"},
	{in: "<u@x-.org>", err: smtp.ErrPathSyntax, reason: "label ends with hyphen"},
	{in: "<u@x_y.org>", err: smtp.ErrPathSyntax, reason: "underscore in domain"},
	{in: "<u@" + strings.Repeat("a", 64) + ".org>", err: smtp.ErrPathSyntax, reason: "64-octet label"},
	{in: "<user@other@local>", err: smtp.ErrPathSyntax, reason: "two @ (S-RELAY-04)"},
	{in: "<.user@x.org>", err: smtp.ErrPathSyntax, reason: "leading dot in local part"},
	{in: "<user.@x.org>", err: smtp.ErrPathSyntax, reason: "trailing dot in local part"},
	{in: "<us..er@x.org>", err: smtp.ErrPathSyntax, reason: "double dot in local part"},
	{in: "<us(er)@x.org>", err: smtp.ErrPathSyntax, reason: "specials in local part"},
	{in: "<us,er@x.org>", err: smtp.ErrPathSyntax, reason: "comma in local part"},
	{in: "<u\\x@x.org>", err: smtp.ErrPathSyntax, reason: "backslash outside quotes"},
	{in: `<a"b@x.org>`, err: smtp.ErrPathSyntax, reason: "quote inside dot-string"},
	{in: `<"ab@x.org>`, err: smtp.ErrPathSyntax, reason: "unterminated quoted string"},
	{in: `<"a"b@x.org>`, err: smtp.ErrPathSyntax, reason: "text after quoted string"},
	{in: `<"user@foreign"%x@local>`, err: smtp.ErrPathSyntax, reason: "quoted string must be the whole local part"},
	{in: `<"a"@x.org`, err: smtp.ErrPathSyntax, reason: "quoted, no closing bracket"},
	{in: `<"a\`, err: smtp.ErrPathSyntax, reason: "truncated escape"},
	{in: "<\"a\tb\"@x.org>", err: smtp.ErrPathSyntax, reason: "TAB in quoted string"},
	{in: "<\"a\x7fb\"@x.org>", err: smtp.ErrPathSyntax, reason: "DEL in quoted string"},
	{in: "<\"a\\\x01\"@x.org>", err: smtp.ErrPathSyntax, reason: "quoted-pair of a control"},

	{in: "<u\x00@x.org>", err: smtp.ErrPathSyntax, reason: "NUL"},
	{in: "<u@x.org\r\n>", err: smtp.ErrPathSyntax, reason: "CRLF"},
	{in: "<\"u\r\nRCPT TO:<a@b>\"@x.org>", err: smtp.ErrPathSyntax, reason: "CRLF in quoted string"},
	{in: "<\"u\n\"@x.org>", err: smtp.ErrPathSyntax, reason: "LF in quoted string"},

	{in: "<u@[300.1.1.1]>", err: smtp.ErrPathSyntax, reason: "IPv4 octet over 255"},
	{in: "<u@[192.0.2]>", err: smtp.ErrPathSyntax, reason: "three octets"},
	{in: "<u@[192.0.2.1.5]>", err: smtp.ErrPathSyntax, reason: "five octets"},
	{in: "<u@[IPv6:1.2.3.4]>", err: smtp.ErrPathSyntax, reason: "IPv4 under the IPv6 tag"},
	{in: "<u@[IPv6:2001:db8::1%eth0]>", err: smtp.ErrPathSyntax, reason: "zone"},
	{in: "<u@[IPv6:2001:db8::g]>", err: smtp.ErrPathSyntax, reason: "bad hex"},
	{in: "<u@[]>", err: smtp.ErrPathSyntax, reason: "empty literal"},
	{in: "<u@[tag:]>", err: smtp.ErrPathSyntax, reason: "empty dcontent"},
	{in: "<u@[tag:a b]>", err: smtp.ErrPathSyntax, reason: "space in dcontent"},
	{in: "<u@[tag:a[b]>", err: smtp.ErrPathSyntax, reason: "[ in dcontent"},
	{in: "<u@[tag-:x]>", err: smtp.ErrPathSyntax, reason: "tag ends with hyphen"},
	{in: "<u@[t_g:x]>", err: smtp.ErrPathSyntax, reason: "underscore in tag"},
	{in: "<u@[192.0.2.1>", err: smtp.ErrPathSyntax, reason: "unterminated literal"},
	{in: "<u@192.0.2.1]>", err: smtp.ErrPathSyntax, reason: "literal without ["},
	{in: "<u@x.[192.0.2.1]>", err: smtp.ErrPathSyntax, reason: "literal inside a domain"},

	{in: "<@a.example:>", err: smtp.ErrPathSyntax, reason: "route without mailbox"},
	{in: "<@a.example u@c.example>", err: smtp.ErrPathSyntax, reason: "route without colon"},
	{in: "<@a.example,b.example:u@c.example>", err: smtp.ErrPathSyntax, reason: "hop without @"},
	{in: "<@a.example,,@b.example:u@c.example>", err: smtp.ErrPathSyntax, reason: "empty hop"},
	{in: "<@a.example.:u@c.example>", err: smtp.ErrPathSyntax, reason: "hop with trailing dot"},
	{in: "<@[192.0.2.1]:u@c.example>", err: smtp.ErrPathSyntax, reason: "hop is an address literal"},
	{in: "<@:u@c.example>", err: smtp.ErrPathSyntax, reason: "empty hop domain"},
	{in: "<:u@c.example>", err: smtp.ErrPathSyntax, reason: "colon without route"},
	{in: "<@a.example:@b.example:u@c.example>", err: smtp.ErrPathSyntax, reason: "two route colons"},

	{in: "<jösé@example.org>", err: smtp.ErrPathNonASCII, reason: "UTF-8 local part without SMTPUTF8"},
	{in: "<u@bücher.example>", err: smtp.ErrPathNonASCII, reason: "UTF-8 domain without SMTPUTF8"},
	{in: `<"jö sé"@example.org>`, err: smtp.ErrPathNonASCII, reason: "UTF-8 quoted without SMTPUTF8"},
	{in: "<@bücher.example:u@x.org>", err: smtp.ErrPathNonASCII, reason: "UTF-8 in the source route"},
	{in: "<u@x\xff.org>", err: smtp.ErrPathNonASCII, reason: "invalid UTF-8 without SMTPUTF8"},
	{in: "<u@x\xff.org>", utf8: true, err: smtp.ErrPathSyntax, reason: "invalid UTF-8"},
	{in: "<j\xc3@x.org>", utf8: true, err: smtp.ErrPathSyntax, reason: "truncated UTF-8"},
	{in: "<u@[IPv6:2001:db8::ü]>", utf8: true, err: smtp.ErrPathSyntax, reason: "UTF-8 in a literal"},
}

func TestParseReversePath(t *testing.T) {
	cases := []pathCase{
		{name: "null", in: "<>", want: smtp.Path{}},
		{name: "null with params", in: "<> SIZE=100 BODY=8BITMIME", want: smtp.Path{}, rest: " SIZE=100 BODY=8BITMIME"},
		{name: "null utf8", in: "<>", utf8: true, want: smtp.Path{}},
		{name: "postmaster alone", in: "<Postmaster>", err: smtp.ErrPathSyntax, reason: "<Postmaster> is only a forward-path"},
		{name: "postmaster with domain", in: "<postmaster@example.org>", want: smtp.Path{Local: "postmaster", Domain: "example.org"}},
		{name: "null with space", in: "< >", err: smtp.ErrPathSyntax, reason: "not the null path"},
	}
	cases = append(cases, validPaths...)
	cases = append(cases, invalidPaths...)
	for _, tc := range cases {
		t.Run(tc.name+tc.reason, func(t *testing.T) {
			checkPath(t, "ParseReversePath", smtp.ParseReversePath, tc)
		})
	}
}

func TestParseForwardPath(t *testing.T) {
	cases := []pathCase{
		{name: "null", in: "<>", err: errAny, reason: "null path is reverse only"},
		{name: "null with params", in: "<> NOTIFY=NEVER", err: errAny, reason: "null path is reverse only"},
		{name: "postmaster", in: "<Postmaster>", want: smtp.Path{Local: "Postmaster"}},
		{name: "postmaster lower", in: "<postmaster>", want: smtp.Path{Local: "postmaster"}},
		{name: "postmaster upper rest", in: "<POSTMASTER> NOTIFY=NEVER", want: smtp.Path{Local: "POSTMASTER"}, rest: " NOTIFY=NEVER"},
		{name: "postmaster utf8", in: "<Postmaster>", utf8: true, want: smtp.Path{Local: "Postmaster"}},
		{name: "postmaster with domain", in: "<Postmaster@example.org>", want: smtp.Path{Local: "Postmaster", Domain: "example.org"}},
		{name: "postmaster space", in: "<Postmaster >", err: smtp.ErrPathSyntax, reason: "space"},
		{name: "postmaster prefix", in: "<Postmasters>", err: smtp.ErrPathSyntax, reason: "not postmaster"},
		{name: "postmaster unterminated", in: "<Postmaster", err: smtp.ErrPathSyntax, reason: "no >"},
		{name: "postmaster long s", in: "<postmaſter>", utf8: true, err: smtp.ErrPathSyntax, reason: "U+017F folds to s but is not postmaster"},
		{name: "routed postmaster", in: "<@a.example:Postmaster>", err: smtp.ErrPathSyntax, reason: "no domain"},
	}
	cases = append(cases, validPaths...)
	cases = append(cases, invalidPaths...)
	for _, tc := range cases {
		t.Run(tc.name+tc.reason, func(t *testing.T) {
			checkPath(t, "ParseForwardPath", smtp.ParseForwardPath, tc)
		})
	}
	p, _, err := smtp.ParseForwardPath("<postmaster>", false)
	if err != nil || !p.IsPostmaster() {
		t.Errorf("<postmaster>: %+v, %v; want IsPostmaster", p, err)
	}
}

// S-RELAY-04: whatever the local part holds (%, !, a quoted @), the domain
// the path routes to is the one after the last @ of the mailbox.
func TestPathRelayTricksStayLocal(t *testing.T) {
	for _, in := range []string{
		"<user%other@local>",
		"<user%other%third@local>",
		"<user%other.example@local>",
		"<other!user@local>",
		"<a!b!user@local>",
		"<other!user%third@local>",
		`<"user@other"@local>`,
		`<"user@other.example"@local>`,
		`<"@other"@local>`,
		`<"user%other@x"@local>`,
		`<"other!user"@local>`,
		`<"a\"@other"@local>`,
		"<@other:user@local>",
		"<@other.example,@third.example:user%x@local>",
	} {
		for _, utf8 := range []bool{false, true} {
			for name, parse := range map[string]func(string, bool) (smtp.Path, string, error){
				"ParseReversePath": smtp.ParseReversePath,
				"ParseForwardPath": smtp.ParseForwardPath,
			} {
				p, rest, err := parse(in, utf8)
				if err != nil || rest != "" {
					t.Errorf("%s(%q) = %+v, %q, %v; want a path", name, in, p, rest, err)
					continue
				}
				if p.Domain != "local" {
					t.Errorf("%s(%q).Domain = %q, want %q", name, in, p.Domain, "local")
				}
				if p.IsLiteral() || p.IsPostmaster() || p.IsNull() {
					t.Errorf("%s(%q) = %+v: literal/postmaster/null", name, in, p)
				}
			}
		}
	}
}

func TestPathLengthLimits(t *testing.T) {
	label63 := strings.Repeat("d", 63)
	dom := func(n int) string { // a valid domain of exactly n octets
		var labels []string
		for n > 0 {
			l := min(63, n)
			if n-l == 1 { // avoid a trailing label of length 0
				l--
			}
			labels = append(labels, strings.Repeat("d", l))
			n -= l + 1
		}
		s := strings.Join(labels, ".")
		return s
	}
	for _, n := range []int{1, 63, 64, 200, 252, 255, 256} {
		if got := len(dom(n)); got != n {
			t.Fatalf("dom(%d) has %d octets", n, got)
		}
	}
	cases := []struct {
		name string
		in   string
		err  error
	}{
		{"local 64", "<" + strings.Repeat("l", 64) + "@x.org>", nil},
		{"local 65", "<" + strings.Repeat("l", 65) + "@x.org>", smtp.ErrPathTooLong},
		{"local 64 dotted", "<" + strings.Repeat("l.", 31) + "ll@x.org>", nil},
		{"quoted local 64 with quotes", `<"` + strings.Repeat("q", 62) + `"@x.org>`, nil},
		{"quoted local 64 escaped", `<"` + strings.Repeat(`\"`, 31) + `"@x.org>`, nil},
		// §4.5.3.1.1 limits the local-part, and Local-part = Dot-string /
		// Quoted-string: the quotes and backslashes count.
		{"quoted local 65 with quotes", `<"` + strings.Repeat("q", 63) + `"@x.org>`, smtp.ErrPathTooLong},
		{"quoted local 66 with quotes", `<"` + strings.Repeat("q", 64) + `"@x.org>`, smtp.ErrPathTooLong},
		{"quoted local 65 escaped", `<"` + strings.Repeat(`\"`, 31) + `q"@x.org>`, smtp.ErrPathTooLong},
		{"quoted local 80", `<"` + strings.Repeat("q", 78) + `"@x.org>`, smtp.ErrPathTooLong},
		{"label 63", "<u@" + label63 + ".org>", nil},
		{"path 256", "<u@" + dom(252) + ">", nil},
		{"path 257", "<u@" + dom(253) + ">", smtp.ErrPathTooLong},
		{"path 256 with route", "<@a.example:u@" + dom(241) + ">", nil},
		{"path 257 with route", "<@a.example:u@" + dom(242) + ">", smtp.ErrPathTooLong},
		{"path 256 with quoted local", `<"a b"@` + dom(248) + ">", nil},
		{"path 257 with quoted local", `<"a b"@` + dom(249) + ">", smtp.ErrPathTooLong},
		{"path 300 unterminated is syntax", "<u@" + dom(296), smtp.ErrPathSyntax},
		{"path 10000", "<u@" + strings.Repeat("a.", 5000) + "org>", smtp.ErrPathTooLong},
	}
	for _, tc := range cases {
		for name, parse := range map[string]func(string, bool) (smtp.Path, string, error){
			"ParseReversePath": smtp.ParseReversePath,
			"ParseForwardPath": smtp.ParseForwardPath,
		} {
			_, _, err := parse(tc.in, false)
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("%s: %s(len %d) error = %v, want %v", tc.name, name, len(tc.in), err, tc.err)
			}
		}
	}

	// The domain limits need ParseMailbox: a 255-octet domain does not fit
	// in a 256-octet path with a local part and the brackets.
	for _, tc := range []struct {
		name string
		in   string
		err  error
	}{
		{"domain 255", "u@" + dom(255), nil},
		{"domain 256", "u@" + dom(256), smtp.ErrPathTooLong},
		{"local 64", strings.Repeat("l", 64) + "@x.org", nil},
		{"local 65", strings.Repeat("l", 65) + "@x.org", smtp.ErrPathTooLong},
	} {
		_, err := smtp.ParseMailbox(tc.in, false)
		if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("ParseMailbox %s: error = %v, want %v", tc.name, err, tc.err)
		}
	}
	if !smtp.IsDomain(dom(255), false) || smtp.IsDomain(dom(256), false) {
		t.Errorf("IsDomain: want 255 octets accepted and 256 refused")
	}
}

func TestPathStringAndRoundTrip(t *testing.T) {
	cases := []struct {
		in      string
		forward bool
		utf8    bool
		str     string // want String()
	}{
		{in: "<>", str: ""},
		{in: "<Postmaster>", forward: true, str: "Postmaster"},
		{in: "<postmaster>", forward: true, str: "postmaster"},
		{in: "<user@example.org>", str: "user@example.org"},
		{in: "<User@Example.ORG>", str: "User@Example.ORG"},
		{in: `<"a b"@x.org>`, str: `"a b"@x.org`},
		{in: `<"a\"b"@x.org>`, str: `"a\"b"@x.org`},
		{in: `<"a\\b"@x.org>`, str: `"a\\b"@x.org`},
		{in: `<"a>b"@x.org>`, str: `"a>b"@x.org`},
		{in: `<""@x.org>`, str: `""@x.org`},
		{in: `<"abc"@x.org>`, str: "abc@x.org"},
		{in: `<"\a\b\c"@x.org>`, str: "abc@x.org"},
		{in: `<".abc"@x.org>`, str: `".abc"@x.org`},
		{in: `<"a..b"@x.org>`, str: `"a..b"@x.org`},
		{in: `<"user@other"@local>`, str: `"user@other"@local`},
		{in: `<"Postmaster"@x.org>`, str: "Postmaster@x.org"},
		{in: "<user%other@local>", str: "user%other@local"},
		{in: "<@a.example,@b.example:u@c.example>", str: "u@c.example"},
		{in: "<u@[192.0.2.1]>", str: "u@[192.0.2.1]"},
		{in: "<u@[IPv6:2001:db8::1]>", str: "u@[IPv6:2001:db8::1]"},
		{in: "<u@[tag:content]>", str: "u@[tag:content]"},
		{in: "<jösé@bücher.example>", utf8: true, str: "jösé@bücher.example"},
		{in: `<"jö sé"@x.org>`, utf8: true, str: `"jö sé"@x.org`},
		{in: "<" + strings.Repeat("l", 64) + "@x.org>", str: strings.Repeat("l", 64) + "@x.org"},
	}
	for _, tc := range cases {
		parse := smtp.ParseReversePath
		if tc.forward {
			parse = smtp.ParseForwardPath
		}
		p, rest, err := parse(tc.in, tc.utf8)
		if err != nil || rest != "" {
			t.Errorf("parse(%q) = %+v, %q, %v", tc.in, p, rest, err)
			continue
		}
		if got := p.String(); got != tc.str {
			t.Errorf("parse(%q).String() = %q, want %q", tc.in, got, tc.str)
		}
		if got, want := p.Bracketed(), "<"+tc.str+">"; got != want {
			t.Errorf("parse(%q).Bracketed() = %q, want %q", tc.in, got, want)
		}
		q, rest, err := parse(p.Bracketed(), tc.utf8)
		if err != nil || rest != "" || q != p {
			t.Errorf("parse(%q) = %+v, %q, %v; want %+v (round trip of %q)", p.Bracketed(), q, rest, err, p, tc.in)
		}
		if p.IsNull() != (tc.in == "<>") {
			t.Errorf("parse(%q).IsNull() = %v", tc.in, p.IsNull())
		}
	}
}

func TestPathMethods(t *testing.T) {
	cases := []struct {
		p                                smtp.Path
		null, literal, postmaster, ascii bool
	}{
		{p: smtp.Path{}, null: true, ascii: true},
		{p: smtp.Path{Local: "Postmaster"}, postmaster: true, ascii: true},
		{p: smtp.Path{Local: "POSTMASTER"}, postmaster: true, ascii: true},
		{p: smtp.Path{Local: "postmaster", Domain: "x.org"}, ascii: true},
		{p: smtp.Path{Local: "u", Domain: "[192.0.2.1]"}, literal: true, ascii: true},
		{p: smtp.Path{Local: "ü", Domain: "x.org"}},
		{p: smtp.Path{Local: "u", Domain: "bücher.example"}},
		{p: smtp.Path{Local: "", Domain: "x.org"}, ascii: true},
	}
	for _, tc := range cases {
		if got := tc.p.IsNull(); got != tc.null {
			t.Errorf("%+v.IsNull() = %v", tc.p, got)
		}
		if got := tc.p.IsLiteral(); got != tc.literal {
			t.Errorf("%+v.IsLiteral() = %v", tc.p, got)
		}
		if got := tc.p.IsPostmaster(); got != tc.postmaster {
			t.Errorf("%+v.IsPostmaster() = %v", tc.p, got)
		}
		if got := tc.p.ASCII(); got != tc.ascii {
			t.Errorf("%+v.ASCII() = %v", tc.p, got)
		}
	}
}

func TestParseMailbox(t *testing.T) {
	cases := []struct {
		in   string
		utf8 bool
		want smtp.Path
		err  error
	}{
		{in: "u@x.org", want: smtp.Path{Local: "u", Domain: "x.org"}},
		{in: `"a b"@x.org`, want: smtp.Path{Local: "a b", Domain: "x.org"}},
		{in: "u@[192.0.2.1]", want: smtp.Path{Local: "u", Domain: "[192.0.2.1]"}},
		{in: "ü@x.org", utf8: true, want: smtp.Path{Local: "ü", Domain: "x.org"}},
		{in: "ü@x.org", err: smtp.ErrPathNonASCII},
		{in: "<u@x.org>", err: smtp.ErrPathSyntax},
		{in: "u@x.org ", err: smtp.ErrPathSyntax},
		{in: "u", err: smtp.ErrPathSyntax},
		{in: "", err: smtp.ErrPathSyntax},
		{in: "@a:u@x.org", err: smtp.ErrPathSyntax},
	}
	for _, tc := range cases {
		p, err := smtp.ParseMailbox(tc.in, tc.utf8)
		if tc.err == nil && (err != nil || p != tc.want) || tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("ParseMailbox(%q, %v) = %+v, %v; want %+v, %v", tc.in, tc.utf8, p, err, tc.want, tc.err)
		}
	}
}

// A mailbox that ParseMailbox accepts must survive Bracketed and the path
// parsers. RFC 5321 §4.1.3's dcontent (%d33-90 / %d94-126) includes '>' and
// '"', which the path parser's scan for the closing '>' does not expect.
func TestMailboxBracketedRoundTrip(t *testing.T) {
	for _, in := range []string{
		"u@x.org",
		`"a>b"@x.org`,
		"u@[tag:a.b-c]",
		"u@[tag:a>b]",
		`u@[tag:a"b]`,
	} {
		p, err := smtp.ParseMailbox(in, false)
		if err != nil {
			t.Fatalf("ParseMailbox(%q): %v", in, err)
		}
		q, rest, err := smtp.ParseForwardPath(p.Bracketed(), false)
		if err != nil || rest != "" || q != p {
			t.Errorf("ParseMailbox(%q) accepted, but ParseForwardPath(%q) = %+v, %q, %v",
				in, p.Bracketed(), q, rest, err)
		}
	}
}

func TestIsDomain(t *testing.T) {
	cases := []struct {
		in   string
		utf8 bool
		want bool
	}{
		{"example.org", false, true},
		{"a", false, true},
		{"a-b.c-d", false, true},
		{"a--b", false, true},
		{"xn--bcher-kva.example", false, true},
		{"123", false, true},
		{strings.Repeat("a", 63), false, true},
		{strings.Repeat("a", 64), false, false},
		{"", false, false},
		{".", false, false},
		{"a.", false, false},
		{".a", false, false},
		{"a..b", false, false},
		{"-a", false, false},
		{"a-", false, false},
		{"a_b", false, false},
		{"a b", false, false},
		{"[192.0.2.1]", false, false},
		{"bücher.example", false, false},
		{"bücher.example", true, true},
		{"b\xffcher.example", true, false},
		{"a\x00b", true, false},
	}
	for _, tc := range cases {
		if got := smtp.IsDomain(tc.in, tc.utf8); got != tc.want {
			t.Errorf("IsDomain(%q, %v) = %v, want %v", tc.in, tc.utf8, got, tc.want)
		}
	}
}

func TestIsAddressLiteral(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		{"[192.0.2.1]", true},
		{"[0.0.0.0]", true},
		{"[255.255.255.255]", true},
		{"[IPv6:2001:db8::1]", true},
		{"[IPv6:::]", true},
		{"[IPv6:::1]", true},
		{"[IPv6:2001:db8:0:0:0:0:2:1]", true},
		{"[IPv6:::ffff:192.0.2.1]", true},
		{"[tag:content]", true},
		{"[x-y:!~]", true},
		{"[300.1.1.1]", false},
		{"[256.0.0.1]", false},
		{"[1.2.3]", false},
		{"[1.2.3.4.5]", false},
		{"[ 192.0.2.1]", false},
		{"[192.0.2.1 ]", false},
		{"[IPv6:1.2.3.4]", false},
		{"[IPv6:]", false},
		{"[IPv6:2001:db8::1%eth0]", false},
		{"[IPv6:2001:db8:::1]", false},
		{"[tag:]", false},
		{"[:x]", false},
		{"[tag-:x]", false},
		{"[tag:a\\b]", false},
		{"[tag:a]b]", false},
		{"[tag:a\x7fb]", false},
		{"[]", false},
		{"[", false},
		{"192.0.2.1", false},
		{"[192.0.2.1", false},
		{"192.0.2.1]", false},
		{"", false},
	}
	for _, tc := range cases {
		if got := smtp.IsAddressLiteral(tc.in); got != tc.want {
			t.Errorf("IsAddressLiteral(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
