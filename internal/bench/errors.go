package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// Kind classifies a failure, for the report's error counts.
type Kind int

// The kinds of failure. A session that fails at setup (connect to the
// second EHLO) counts once, under the step that failed; a transaction's
// refusals count under the command refused; a connection that breaks
// counts as timeout, io or protocol.
const (
	KindConnect  Kind = iota // TCP connect failed
	KindTLS                  // STARTTLS not offered or refused, handshake or certificate failure
	KindGreeting             // the greeting was not 220
	KindEHLO                 // EHLO refused
	KindMail                 // MAIL refused
	KindRcpt4xx              // a recipient refused temporarily (one count per recipient)
	KindRcpt5xx              // a recipient refused permanently
	KindData4xx              // DATA or the end of the data refused temporarily
	KindData5xx              // DATA or the end of the data refused permanently
	KindTimeout              // no reply within --timeout
	KindIO                   // the connection broke (reset, closed by the server)
	KindProtocol             // a malformed or unexpected reply, an unexpected 421 to NOOP/RSET/QUIT
	numKinds
)

// String is the kind's name in reports ("rcpt_4xx").
func (k Kind) String() string {
	switch k {
	case KindConnect:
		return "connect"
	case KindTLS:
		return "tls"
	case KindGreeting:
		return "greeting"
	case KindEHLO:
		return "ehlo"
	case KindMail:
		return "mail"
	case KindRcpt4xx:
		return "rcpt_4xx"
	case KindRcpt5xx:
		return "rcpt_5xx"
	case KindData4xx:
		return "data_4xx"
	case KindData5xx:
		return "data_5xx"
	case KindTimeout:
		return "timeout"
	case KindIO:
		return "io"
	case KindProtocol:
		return "protocol"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is a failure of one step, with its kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Kind.String() + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// failf returns an *Error of kind k.
func failf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// netFail classifies a read or write error: a timeout, or a broken
// connection.
func netFail(err error) *Error {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: KindTimeout, Err: err}
	}
	return &Error{Kind: KindIO, Err: err}
}

// replyKind is the kind of a refusal of a transaction command: 4xx or
// 5xx for RCPT and the data, one kind for the rest.
func replyKind(base Kind, code int) Kind {
	switch {
	case base == KindRcpt4xx && code >= 500:
		return KindRcpt5xx
	case base == KindData4xx && code >= 500:
		return KindData5xx
	}
	return base
}
