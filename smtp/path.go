package smtp

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits of RFC 5321 §4.5.3.1.
const (
	MaxLocalPartLen = 64  // §4.5.3.1.1
	MaxDomainLen    = 255 // §4.5.3.1.2
	MaxPathLen      = 256 // §4.5.3.1.3, including the angle brackets
)

// Path is a reverse-path or forward-path (RFC 5321 §4.1.2) without its
// source route, which is parsed and dropped (§4.1.1.3, Appendix C). The null
// reverse-path "<>" is the zero Path.
type Path struct {
	// Local is the local part with quoting removed: for the path
	// <"a b"@example.org> it is `a b`.
	Local string
	// Domain is the domain as sent (case preserved), or an address literal
	// including its brackets, such as "[192.0.2.1]" or "[IPv6:2001:db8::1]".
	// It is empty only for the null path and for <Postmaster>.
	Domain string
}

// IsNull reports whether p is the null reverse-path <>.
func (p Path) IsNull() bool { return p.Local == "" && p.Domain == "" }

// IsLiteral reports whether the domain is an address literal.
func (p Path) IsLiteral() bool { return strings.HasPrefix(p.Domain, "[") }

// IsPostmaster reports whether p is <Postmaster> without a domain (RFC 5321
// §4.1.1.3), which every server must accept.
func (p Path) IsPostmaster() bool { return p.Domain == "" && strings.EqualFold(p.Local, "postmaster") }

// ASCII reports whether the path is all ASCII (no SMTPUTF8 needed).
func (p Path) ASCII() bool { return isASCII(p.Local) && isASCII(p.Domain) }

// String returns the mailbox in wire form without angle brackets, quoting the
// local part when it is not a Dot-string. The null path gives "".
func (p Path) String() string {
	if p.IsNull() {
		return ""
	}
	l := p.Local
	if !isDotString(l, true) {
		l = quoteLocal(l)
	}
	if p.Domain == "" {
		return l
	}
	return l + "@" + p.Domain
}

// Bracketed returns the path in angle brackets, as it appears in MAIL and RCPT.
func (p Path) Bracketed() string { return "<" + p.String() + ">" }

func quoteLocal(l string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if l[i] == '"' || l[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

// Errors returned by the path parsers. They are *Error values carrying the
// reply a server should send.
var (
	ErrPathSyntax     = &Error{Code: C501ArgSyntaxError, Enhanced: E554InvalidArgs, Message: "Syntax error in mailbox address"}
	ErrPathTooLong    = &Error{Code: C501ArgSyntaxError, Enhanced: E554InvalidArgs, Message: "Mailbox address too long"}
	ErrPathNonASCII   = &Error{Code: C553MailboxNameInvalid, Enhanced: E567NonASCIIAddr, Message: "Non-ASCII address requires SMTPUTF8"}
	errNullNotAllowed = &Error{Code: C501ArgSyntaxError, Enhanced: E554InvalidArgs, Message: "Null path not allowed here"}
)

// ParseReversePath parses the path at the start of s ("<>" or a Path) and
// returns the rest of s after it. utf8 allows RFC 6531 UTF-8 in the mailbox.
func ParseReversePath(s string, utf8 bool) (Path, string, error) {
	if strings.HasPrefix(s, "<>") {
		return Path{}, s[2:], nil
	}
	return parsePath(s, utf8, false)
}

// ParseForwardPath parses a forward-path at the start of s, also accepting
// "<Postmaster>" (RFC 5321 §4.1.1.3), and returns the rest of s.
func ParseForwardPath(s string, utf8 bool) (Path, string, error) {
	if strings.HasPrefix(s, "<>") {
		return Path{}, "", errNullNotAllowed
	}
	if len(s) >= 12 && strings.EqualFold(s[:12], "<postmaster>") {
		return Path{Local: s[1:11]}, s[12:], nil
	}
	return parsePath(s, utf8, true)
}

func parsePath(s string, allowUTF8, forward bool) (Path, string, error) {
	if len(s) == 0 || s[0] != '<' {
		return Path{}, "", ErrPathSyntax
	}
	end := pathEnd(s)
	if end < 0 {
		return Path{}, "", ErrPathSyntax
	}
	inner, rest := s[1:end], s[end+1:]
	if end+1 > MaxPathLen {
		return Path{}, "", ErrPathTooLong
	}
	if !allowUTF8 && !isASCII(inner) {
		return Path{}, "", ErrPathNonASCII
	}
	if !utf8.ValidString(inner) {
		return Path{}, "", ErrPathSyntax
	}
	// A-d-l ":" — source route, parsed strictly and ignored.
	if strings.HasPrefix(inner, "@") {
		colon := strings.IndexByte(inner, ':')
		if colon < 0 {
			return Path{}, "", ErrPathSyntax
		}
		for _, hop := range strings.Split(inner[:colon], ",") {
			if !strings.HasPrefix(hop, "@") || !IsDomain(hop[1:], allowUTF8) {
				return Path{}, "", ErrPathSyntax
			}
		}
		inner = inner[colon+1:]
	}
	p, err := parseMailbox(inner, allowUTF8)
	if err != nil {
		return Path{}, "", err
	}
	return p, rest, nil
}

// pathEnd finds the '>' that closes the path starting at s[0] == '<',
// skipping a quoted local part and an address literal (either may contain
// '>').
func pathEnd(s string) int {
	inQuote, inLiteral := false, false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inLiteral:
			// dcontent may hold '>' and '"' but never ']' (§4.1.3).
			inLiteral = c != ']'
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '[':
			inLiteral = true
		case !inQuote && c == '>':
			return i
		}
	}
	return -1
}

// ParseMailbox parses a bare Mailbox (RFC 5321 §4.1.2): Local-part "@"
// (Domain / address-literal).
func ParseMailbox(s string, allowUTF8 bool) (Path, error) {
	if !allowUTF8 && !isASCII(s) {
		return Path{}, ErrPathNonASCII
	}
	return parseMailbox(s, allowUTF8)
}

func parseMailbox(s string, allowUTF8 bool) (Path, error) {
	var local, rest string
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		i := 1
		closed := false
		for i < len(s) {
			c := s[i]
			if c == '\\' {
				// quoted-pairSMTP = %d92 %d32-126
				if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
					return Path{}, ErrPathSyntax
				}
				b.WriteByte(s[i+1])
				i += 2
				continue
			}
			if c == '"' {
				closed = true
				i++
				break
			}
			// qtextSMTP = %d32-33 / %d35-91 / %d93-126 (/ UTF8-non-ascii)
			if c < 32 || c == 127 || (c >= 128 && !allowUTF8) {
				return Path{}, ErrPathSyntax
			}
			b.WriteByte(c)
			i++
		}
		if !closed {
			return Path{}, ErrPathSyntax
		}
		local, rest = b.String(), s[i:]
		if !strings.HasPrefix(rest, "@") {
			return Path{}, ErrPathSyntax
		}
		rest = rest[1:]
		if len(s)-len(rest)-1 > MaxLocalPartLen { // the quotes count (§4.5.3.1.1)
			return Path{}, ErrPathTooLong
		}
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			return Path{}, ErrPathSyntax
		}
		local, rest = s[:at], s[at+1:]
		if !isDotString(local, allowUTF8) {
			return Path{}, ErrPathSyntax
		}
		if len(local) > MaxLocalPartLen {
			return Path{}, ErrPathTooLong
		}
	}
	if len(rest) > MaxDomainLen {
		return Path{}, ErrPathTooLong
	}
	if strings.HasPrefix(rest, "[") {
		if !IsAddressLiteral(rest) {
			return Path{}, ErrPathSyntax
		}
	} else if !IsDomain(rest, allowUTF8) {
		return Path{}, ErrPathSyntax
	}
	return Path{Local: local, Domain: rest}, nil
}

// isAtext reports whether c is RFC 5322 atext (as used by RFC 5321).
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDotString reports whether s is a Dot-string: Atom *("." Atom).
func isDotString(s string, allowUTF8 bool) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' || isAtext(c) || (c >= 128 && allowUTF8) {
			continue
		}
		return false
	}
	return true
}

// IsDomain reports whether s is a Domain of RFC 5321 §4.1.2: dot-separated
// sub-domains of letters, digits and inner hyphens, no empty label (so no
// trailing dot), at most 63 octets a label and 255 in all. With allowUTF8,
// non-ASCII labels (U-labels, RFC 6531 §3.3) are accepted as well.
func IsDomain(s string, allowUTF8 bool) bool {
	if s == "" || len(s) > MaxDomainLen {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			case c >= 128 && allowUTF8:
			default:
				return false
			}
		}
	}
	return utf8.ValidString(s)
}

// IsAddressLiteral reports whether s is an RFC 5321 §4.1.3 address literal:
// "[" IPv4 "]", "[IPv6:" IPv6 "]", or "[" tag ":" dcontent "]".
func IsAddressLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	in := s[1 : len(s)-1]
	if tag, rest, ok := strings.Cut(in, ":"); ok {
		if strings.EqualFold(tag, "IPv6") {
			a, err := netip.ParseAddr(rest)
			return err == nil && a.Is6() && a.Zone() == ""
		}
		// General-address-literal = Standardized-tag ":" 1*dcontent
		if !isLdhStr(tag) || rest == "" {
			return false
		}
		for i := 0; i < len(rest); i++ {
			if c := rest[i]; c < 33 || c > 126 || c == '[' || c == '\\' || c == ']' {
				return false
			}
		}
		return true
	}
	a, err := netip.ParseAddr(in)
	return err == nil && a.Is4()
}

func isLdhStr(s string) bool {
	if s == "" || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
