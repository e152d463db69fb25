package smtp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is an SMTP reply used as a Go error: what a server answers, or what a
// client received. A server turns a returned *Error into exactly this reply;
// any other error becomes a generic "451 4.3.0" so that internal error text
// never reaches the peer.
type Error struct {
	Code     int          // basic reply code, e.g. 550
	Enhanced EnhancedCode // RFC 3463 code; NoEnhancedCode when absent
	Message  string       // text; may hold several lines separated by "\n"
}

// Errorf returns an *Error with a formatted message.
func Errorf(code int, enhanced EnhancedCode, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Message: fmt.Sprintf(format, args...)}
}

// Error formats the reply on one line, as "550 5.1.1 text".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Code))
	if !e.Enhanced.IsZero() {
		b.WriteByte(' ')
		b.WriteString(e.Enhanced.String())
	}
	if e.Message != "" {
		b.WriteByte(' ')
		b.WriteString(strings.ReplaceAll(e.Message, "\n", "; "))
	}
	return b.String()
}

// Temporary reports whether the reply is a transient failure (4xx).
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// Permanent reports whether the reply is a permanent failure (5xx).
func (e *Error) Permanent() bool { return e.Code >= 500 && e.Code < 600 }

// Lines returns the reply text split into lines, never empty.
func (e *Error) Lines() []string {
	if e.Message == "" {
		return []string{""}
	}
	return strings.Split(e.Message, "\n")
}

// AppendReply appends the wire form of a reply to dst: every line but the
// last as "code-text", the last as "code text", each ending in CRLF, with the
// enhanced code (when not zero) after the basic code on every line (RFC 2034
// §4). Lines must not contain CR or LF; any that do are cut there.
func AppendReply(dst []byte, code int, enhanced EnhancedCode, lines ...string) []byte {
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		if j := strings.IndexAny(l, "\r\n"); j >= 0 {
			l = l[:j]
		}
		dst = strconv.AppendInt(dst, int64(code), 10)
		if i == len(lines)-1 {
			dst = append(dst, ' ')
		} else {
			dst = append(dst, '-')
		}
		if !enhanced.IsZero() {
			dst = enhanced.Append(dst)
			if l != "" {
				dst = append(dst, ' ')
			}
		}
		dst = append(dst, l...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// ErrMalformedReply is returned by ParseReplyLine for a line that is not an
// SMTP reply line.
var ErrMalformedReply = errors.New("smtp: malformed reply line")

// ParseReplyLine parses one reply line, "250-text" or "250 text" (RFC 5321
// §4.2). more reports whether further lines of the same reply follow. The
// CRLF must already be removed.
func ParseReplyLine(line string) (code int, more bool, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", ErrMalformedReply
	}
	for i := 0; i < 3; i++ {
		if line[i] < '0' || line[i] > '9' {
			return 0, false, "", ErrMalformedReply
		}
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if code < 200 || code > 599 {
		return 0, false, "", ErrMalformedReply
	}
	if len(line) == 3 {
		return code, false, "", nil
	}
	switch line[3] {
	case ' ':
		return code, false, line[4:], nil
	case '-':
		return code, true, line[4:], nil
	}
	return 0, false, "", ErrMalformedReply
}

// SplitEnhanced splits a leading enhanced status code off reply text when it
// is present and its class matches the basic code's first digit.
func SplitEnhanced(code int, text string) (EnhancedCode, string) {
	word, rest, _ := strings.Cut(text, " ")
	e, err := ParseEnhancedCode(word)
	if err != nil || e.Class != code/100 {
		return NoEnhancedCode, text
	}
	return e, rest
}
