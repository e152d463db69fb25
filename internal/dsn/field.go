package dsn

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Line lengths (RFC 5322 §2.1.1): a line SHOULD have at most 78 characters
// and MUST have at most 998, both without the CRLF.
const (
	softLine = 78
	hardLine = 998
	// maxWord is the longest run of text without a space that is written
	// on one line. A longer one (never seen in a real reply) is cut into
	// pieces, with a fold between them, so that hardLine holds whatever the
	// field's name and indentation.
	maxWord = 900
)

// clean makes s safe inside a header field body or a line of text. Every
// control character, CR and LF included, becomes a space: no text from the
// network can end a line. Outside utf8 mode every non-ASCII character becomes
// "?" (message/delivery-status "MUST" be 7bit, RFC 3464's registration of
// it); in utf8 mode (RFC 6533) invalid UTF-8 becomes U+FFFD, and the C1 controls and the
// Unicode line and paragraph separators become spaces.
func clean(s string, utf8ok bool) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				c = ' '
			}
			b.WriteByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case !utf8ok:
			b.WriteByte('?')
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		case r >= 0x80 && r <= 0x9f, r == '\u2028', r == '\u2029':
			b.WriteByte(' ')
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// words splits cleaned text at spaces, cutting any word longer than maxWord
// (at a UTF-8 character boundary).
func words(s string) []string {
	var out []string
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' }) {
		for len(w) > maxWord {
			cut := maxWord
			for cut > 0 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			out = append(out, w[:cut])
			w = w[cut:]
		}
		out = append(out, w)
	}
	return out
}

// fold writes first and then the words of text, the first word right after
// first, the others after a space or, when the line would pass width, after
// a line break and indent. Lines end in CRLF. Runs of spaces become one
// space, and no line is ever only white space. For a
// header field indent is " ": the white space that makes the fold
// (RFC 5322 §2.2.3).
func fold(buf *bytes.Buffer, first, text, indent string, width int) {
	ws := words(text)
	if len(ws) == 0 {
		first = strings.TrimRight(first, " ")
	}
	buf.WriteString(first)
	line := len(first)
	for i, w := range ws {
		if i > 0 {
			if line+1+len(w) > width {
				buf.WriteString("\r\n")
				buf.WriteString(indent)
				line = len(indent)
			} else {
				buf.WriteByte(' ')
				line++
			}
		}
		buf.WriteString(w)
		line += len(w)
	}
	buf.WriteString("\r\n")
}

// header writes header fields, folded, from values that are cleaned here.
type header struct {
	buf  *bytes.Buffer
	utf8 bool
}

// field writes "name: value". name is one of ours, value may come from the
// network.
func (h *header) field(name, value string) {
	fold(h.buf, name+": ", clean(value, h.utf8), " ", softLine)
}

// decodeXtext decodes RFC 3461 §4 xtext: "+" followed by two upper-case hex
// digits stands for that octet. A "+" not followed by two hex digits is kept
// as it is (lower-case digits are accepted too).
func decodeXtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
