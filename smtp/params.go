package smtp

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Param is one ESMTP parameter of MAIL or RCPT (RFC 5321 §4.1.2):
// esmtp-keyword ["=" esmtp-value].
type Param struct {
	Keyword  string // as sent; compare with strings.EqualFold
	Value    string
	HasValue bool
}

// ErrParamSyntax is the reply for malformed MAIL/RCPT parameters.
var ErrParamSyntax = &Error{Code: C501ArgSyntaxError, Enhanced: E554InvalidArgs, Message: "Syntax error in parameters"}

// ParseParams parses what follows a path in MAIL or RCPT: empty, or SP
// esmtp-param *(SP esmtp-param). esmtp-keyword = (ALPHA / DIGIT) *(ALPHA /
// DIGIT / "-"); esmtp-value = 1*(%d33-60 / %d62-126), extended by RFC 6531
// §3.3 with UTF-8 when allowUTF8 is set. Duplicate keywords are an error.
func ParseParams(s string, allowUTF8 bool) ([]Param, error) {
	if s == "" {
		return nil, nil
	}
	if s[0] != ' ' {
		return nil, ErrParamSyntax
	}
	var ps []Param
	for f := range strings.SplitSeq(s[1:], " ") {
		if f == "" {
			return nil, ErrParamSyntax // double or trailing space
		}
		var p Param
		p.Keyword, p.Value, p.HasValue = strings.Cut(f, "=")
		if !isESMTPKeyword(p.Keyword) || (p.HasValue && !isESMTPValue(p.Value, allowUTF8)) {
			return nil, ErrParamSyntax
		}
		for _, q := range ps {
			if strings.EqualFold(q.Keyword, p.Keyword) {
				return nil, ErrParamSyntax
			}
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func isESMTPKeyword(s string) bool {
	if s == "" || s[0] == '-' {
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

func isESMTPValue(s string, allowUTF8 bool) bool {
	if s == "" || (allowUTF8 && !utf8.ValidString(s)) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 33 && c <= 126 && c != '=' {
			continue
		}
		if c >= 128 && allowUTF8 {
			continue
		}
		return false
	}
	return true
}

// ParseSize parses a SIZE value or BDAT chunk size: 1*20DIGIT (RFC 1870 §3,
// RFC 3030 §2), no sign, fitting in an int64.
func ParseSize(s string) (int64, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ParseCommand splits a command line (without CRLF) into its verb, upper
// case, and the argument after the first space. A verb is 1*ALPHA (RFC 5321
// §4.1.1: commands are alphabetic, case-insensitive); ok is false otherwise.
func ParseCommand(line string) (verb, arg string, ok bool) {
	verb, arg, _ = strings.Cut(line, " ")
	if verb == "" || len(verb) > 16 {
		return "", "", false
	}
	up := []byte(verb)
	for i, c := range up {
		switch {
		case c >= 'a' && c <= 'z':
			up[i] = c - 'a' + 'A'
		case c >= 'A' && c <= 'Z':
		default:
			return "", "", false
		}
	}
	return string(up), arg, true
}
