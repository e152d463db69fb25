// Package dsn builds delivery status notifications: the message the queue
// sends back to a sender when it gives up on recipients ("failed"), is still
// retrying them ("delayed"), or was asked to report success.
//
// A report is an RFC 5322 message with CRLF line ends and a top-level
// multipart/report of report-type delivery-status (RFC 3461 §6.2, RFC 6522)
// in three parts: a text/plain explanation for people, the
// message/delivery-status fields for programs (RFC 3464), and the original
// message's header section (text/rfc822-headers) or, when the sender asked
// with RET=FULL and the message fits in [Report.MaxReturn], the whole message
// (message/rfc822). When an address is not ASCII (SMTPUTF8, RFC 6531) the
// second and third parts are message/global-delivery-status and
// message/global-headers or message/global (RFC 6533) instead.
//
// The queue hands the result to delivery with the null reverse-path, MAIL
// FROM:<>, so that a report can never cause another report (RFC 5321 §4.5.5).
// For the same reason [New] refuses to report on a message whose own
// reverse-path was null: it returns [ErrNullSender]. Nothing else is checked
// here: whether a recipient's NOTIFY parameter asked for the report (RFC 3461
// §5.2) is for the caller to decide before calling New.
//
// The threat this package answers is text from the network: replies of
// remote servers, addresses, ORCPT and ENVID values. None of it can add a
// header line or a MIME part: control characters (CR and LF included) become
// spaces, every header field is folded (RFC 5322 §2.2.3) so that no line is
// longer than 998 octets, the report's own header section is ASCII unless the
// sender's address is not, and a boundary is never one found in the content.
//
// The output is 7-bit unless an address is not ASCII or the original message
// is returned with 8-bit content; it then needs 8BITMIME, and SMTPUTF8 when
// the sender's address (the report's To and RCPT) is not ASCII.
package dsn

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// ErrNullSender is returned by New for a message whose reverse-path was null:
// it is itself a notification (or must be treated as one), and notifications
// are never answered with notifications (RFC 5321 §4.5.5).
var ErrNullSender = errors.New("dsn: null reverse-path: no report is sent for a report")

// DefaultMaxReturn is the largest original message returned whole when
// Report.MaxReturn is zero: 1 MiB. A larger one is returned as its header.
const DefaultMaxReturn = 1 << 20

// Ret is the RET parameter of the original MAIL command (RFC 3461 §4.3).
type Ret int

const (
	// RetDefault: no RET parameter. RFC 3461 §4.3 leaves the choice to the
	// MTA; Petrel returns the header section only.
	RetDefault Ret = iota
	// RetHdrs: RET=HDRS, "only the headers of the message".
	RetHdrs
	// RetFull: RET=FULL, the whole message in a report of failure.
	RetFull
)

// Action is what the reporting MTA did for a recipient (RFC 3464 §2.3.3).
type Action string

// The actions of RFC 3464 §2.3.3.
const (
	ActionFailed    Action = "failed"    // given up: not delivered, no further attempt
	ActionDelayed   Action = "delayed"   // not delivered yet, still being retried
	ActionDelivered Action = "delivered" // delivered to the recipient's mailbox
	ActionRelayed   Action = "relayed"   // handed to a system that does not report delivery
	ActionExpanded  Action = "expanded"  // delivered, and forwarded on to further recipients
)

// Recipient is one recipient the report is about. Every field but Addr and
// Action is optional. The string fields may hold anything a remote peer sent:
// New cleans them.
type Recipient struct {
	// Addr is the recipient's mailbox as used for delivery (the RCPT TO
	// forward-path without angle brackets): the Final-Recipient.
	Addr string
	// ORCPT is the recipient's ORCPT parameter exactly as received,
	// addr-type ";" xtext (RFC 3461 §4.2), such as "rfc822;bob+2Bx@example.org";
	// "" when none was given. New decodes the xtext. The report has an
	// Original-Recipient field if and only if ORCPT is set (RFC 3461 §6.3 d).
	ORCPT string
	// Action is what happened; a report with any failed recipient is a
	// report of failure.
	Action Action
	// Status is the RFC 3463 status code, such as "5.1.1". When empty it is
	// the enhanced code of Reply when that fits the Action, or else a default
	// (X.0.0, or 4.4.7 "delivery time expired" for a failure after
	// temporary errors). Its class must fit the Action: 4 or 5 for failed,
	// 4 for delayed, 2 for the others.
	Status string
	// Reply is the last reply about this recipient, all its lines, such as
	// "550-5.1.1 No such user\r\n550 5.1.1 Try another". It becomes the
	// Diagnostic-Code "smtp; ..." (RFC 3461 §6.3 i). Text that is not an SMTP
	// reply (a local error such as a refused connection) is reported as
	// "X-Petrel; ...". Empty: no Diagnostic-Code.
	Reply string
	// RemoteMTA is the host that gave Reply; empty for a local failure.
	RemoteMTA string
	// LastAttempt is the time of the last delivery attempt; zero: none.
	LastAttempt time.Time
	// WillRetryUntil is, for a delayed recipient, when the queue will give
	// up. Ignored for other actions.
	WillRetryUntil time.Time
}

// Report is what New needs to build a report.
type Report struct {
	// ReportingMTA is this host's name (ASCII). It is the Reporting-MTA, the
	// domain of From: MAILER-DAEMON@ and of the report's Message-ID.
	ReportingMTA string
	// Sender is the original reverse-path without angle brackets: the
	// report's recipient. "" (or "<>") is the null path: ErrNullSender.
	Sender string
	// EnvID is the ENVID parameter exactly as received (xtext, RFC 3461
	// §4.4), "" when none. Decoded, it is the Original-Envelope-Id
	// (RFC 3461 §6.3 a).
	EnvID string
	// Ret is the RET parameter of the original transaction.
	Ret Ret
	// UTF8 tells that the original transaction used SMTPUTF8. A header
	// section that is not ASCII is then returned as message/global-headers.
	UTF8 bool
	// QueueID is the message's queue ID, shown to the sender and put in an
	// X-Petrel-Queue-ID field so that a postmaster can find it in the logs.
	QueueID string
	// Arrival is when the message was received; zero: unknown.
	Arrival time.Time
	// Message is the original message, header and body, as received. Nil
	// leaves the third part out (nothing of the content is returned).
	Message io.Reader
	// MaxReturn bounds what is read of Message and returned: a larger
	// message is returned as its header section, even with RET=FULL. Zero
	// means DefaultMaxReturn.
	MaxReturn int64
	// Recipients are the recipients the report is about, at least one. All
	// of them are in the one report, failed and delayed alike.
	Recipients []Recipient

	// Now is the report's Date; zero means time.Now().
	Now time.Time
	// Rand is the source of the MIME boundary and of the Message-ID; nil
	// means crypto/rand. Tests pass a fixed source for byte-exact output.
	Rand io.Reader
}

// Subjects of the report, by kind.
const (
	SubjectFailed    = "Undelivered Mail Returned to Sender"
	SubjectDelayed   = "Delayed Mail (still being retried)"
	SubjectDelivered = "Successful Mail Delivery Report"
)

// rcpt is a Recipient made ready for output: every string cleaned.
type rcpt struct {
	action    Action
	addrType  string // "rfc822" or "utf-8" (RFC 6533)
	addr      string
	orcpt     bool
	orcptType string
	orcptAddr string
	status    string
	diagType  string // "smtp", "X-Petrel", or "" for no Diagnostic-Code
	diag      []string
	remote    string
	last      time.Time
	until     time.Time
}

// New builds the report r describes, a complete message with CRLF line ends.
// It fails with ErrNullSender for a null reverse-path, with an error for a
// report that cannot be made (no recipient, a bad sender or reporting host,
// an unknown action, a status that is not an RFC 3463 code or does not fit
// its action), and with the error of reading r.Message.
func New(r Report) ([]byte, error) {
	if r.Sender == "" || r.Sender == "<>" {
		return nil, ErrNullSender
	}
	sender, err := smtp.ParseMailbox(strings.TrimSuffix(strings.TrimPrefix(r.Sender, "<"), ">"), true)
	if err != nil {
		return nil, fmt.Errorf("dsn: bad sender address %q: %w", r.Sender, err)
	}
	if r.ReportingMTA == "" || !smtp.IsDomain(r.ReportingMTA, false) {
		return nil, fmt.Errorf("dsn: bad reporting host %q", r.ReportingMTA)
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: no recipient to report on")
	}
	limit := r.MaxReturn
	if limit <= 0 {
		limit = DefaultMaxReturn
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	random := r.Rand
	if random == nil {
		random = rand.Reader
	}

	var failed, delayed bool
	for _, rc := range r.Recipients {
		switch rc.Action {
		case ActionFailed:
			failed = true
		case ActionDelayed:
			delayed = true
		case ActionDelivered, ActionRelayed, ActionExpanded:
		default:
			return nil, fmt.Errorf("dsn: unknown action %q", rc.Action)
		}
		if rc.Addr == "" {
			return nil, errors.New("dsn: recipient without an address")
		}
	}

	// RFC 3461 §4.3: RET applies only to reports of failure; a report with
	// no failure returns only the header section.
	wantFull := r.Ret == RetFull && failed
	var orig *original
	if r.Message != nil {
		orig, err = readOriginal(r.Message, wantFull, limit)
		if err != nil {
			return nil, fmt.Errorf("dsn: reading the original message: %w", err)
		}
	}

	// International (RFC 6533) when an address is not ASCII, or when the
	// original was SMTPUTF8 and its header section is not ASCII.
	intl := !isASCII(r.Sender)
	for _, rc := range r.Recipients {
		if !isASCII(rc.Addr) || !isASCII(decodeXtext(rc.ORCPT)) {
			intl = true
		}
	}
	if r.UTF8 && orig != nil && !isASCII(string(orig.header)) {
		intl = true
	}

	rcpts := make([]rcpt, len(r.Recipients))
	for i, rc := range r.Recipients {
		rcpts[i], err = prepare(rc, intl)
		if err != nil {
			return nil, err
		}
	}

	b := &builder{intl: intl}
	parts := []part{
		b.textPart(&r, rcpts, orig, limit),
		b.statusPart(&r, rcpts),
	}
	if orig != nil {
		parts = append(parts, b.originalPart(orig))
	}

	subject := SubjectDelivered
	if failed {
		subject = SubjectFailed
	} else if delayed {
		subject = SubjectDelayed
	}

	boundary, err := newBoundary(random, parts)
	if err != nil {
		return nil, err
	}
	var id [16]byte
	if _, err := io.ReadFull(random, id[:]); err != nil {
		return nil, fmt.Errorf("dsn: making a Message-ID: %w", err)
	}

	var out bytes.Buffer
	h := &header{buf: &out, utf8: intl}
	h.field("From", "Mail Delivery System <MAILER-DAEMON@"+r.ReportingMTA+">")
	h.field("To", "<"+sender.String()+">")
	h.field("Subject", subject)
	h.field("Date", now.Format(time.RFC1123Z))
	h.field("Message-ID", "<dsn."+hex.EncodeToString(id[:])+"@"+r.ReportingMTA+">")
	// RFC 3834 §5: a report is generated automatically, in response to the
	// original message.
	h.field("Auto-Submitted", "auto-replied")
	h.field("MIME-Version", "1.0")
	h.field("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	for _, p := range parts {
		if p.eightBit {
			h.field("Content-Transfer-Encoding", "8bit")
			break
		}
	}
	out.WriteString("\r\nThis is a MIME-encapsulated message.\r\n")
	for _, p := range parts {
		out.WriteString("\r\n--" + boundary + "\r\n")
		out.Write(p.header)
		out.WriteString("\r\n")
		out.Write(p.body)
	}
	out.WriteString("\r\n--" + boundary + "--\r\n")
	return out.Bytes(), nil
}

// prepare checks and cleans one recipient.
func prepare(rc Recipient, intl bool) (rcpt, error) {
	p := rcpt{
		action: rc.Action,
		addr:   clean(rc.Addr, intl),
		remote: clean(rc.RemoteMTA, intl),
		last:   rc.LastAttempt,
	}
	p.addrType = addrType(p.addr)
	if rc.Action == ActionDelayed {
		p.until = rc.WillRetryUntil
	}
	if rc.ORCPT != "" {
		p.orcpt = true
		typ, addr, ok := strings.Cut(rc.ORCPT, ";")
		if !ok {
			typ, addr = "rfc822", rc.ORCPT
		}
		p.orcptType = atom(strings.TrimSpace(typ))
		if p.orcptType == "" {
			p.orcptType = "rfc822"
		}
		p.orcptAddr = clean(decodeXtext(strings.TrimSpace(addr)), intl)
	}

	code, enhanced := 0, smtp.NoEnhancedCode
	if rc.Reply != "" {
		lines := replyLines(rc.Reply)
		c, _, text, err := smtp.ParseReplyLine(lines[0])
		if err == nil {
			code = c
			enhanced, _ = smtp.SplitEnhanced(c, text)
			p.diagType = "smtp"
		} else {
			p.diagType = "X-Petrel"
		}
		for _, l := range lines {
			if l = strings.TrimSpace(clean(l, intl)); l != "" {
				p.diag = append(p.diag, l)
			}
		}
		if len(p.diag) == 0 {
			p.diagType = ""
		}
	}

	if rc.Status != "" {
		e, err := smtp.ParseEnhancedCode(rc.Status)
		if err != nil {
			return rcpt{}, fmt.Errorf("dsn: recipient %q: %w", p.addr, err)
		}
		if !fits(rc.Action, e.Class) {
			return rcpt{}, fmt.Errorf("dsn: recipient %q: status %s does not fit action %s", p.addr, e, rc.Action)
		}
		p.status = e.String()
		return p, nil
	}
	switch {
	case !enhanced.IsZero() && fits(rc.Action, enhanced.Class):
		p.status = enhanced.String()
	case rc.Action == ActionFailed && code >= 400 && code < 500:
		// Given up after temporary errors: the queue lifetime ran out.
		p.status = "4.4.7"
	case rc.Action == ActionFailed:
		p.status = "5.0.0"
	case rc.Action == ActionDelayed:
		p.status = "4.0.0"
	default:
		p.status = "2.0.0"
	}
	return p, nil
}

// fits reports whether a status of this class can go with the action: a
// failure is permanent (5) or, after the queue lifetime ran out, the last
// temporary error (4); a delay is temporary; the rest are successes.
func fits(a Action, class int) bool {
	switch a {
	case ActionFailed:
		return class == 5 || class == 4
	case ActionDelayed:
		return class == 4
	}
	return class == 2
}

// replyLines splits a reply into its lines, never returning none.
func replyLines(reply string) []string {
	reply = strings.TrimRight(strings.ReplaceAll(reply, "\r\n", "\n"), "\n")
	return strings.Split(reply, "\n")
}

// addrType is the address type of a cleaned address: "utf-8" (RFC 6533)
// for one that is not ASCII, else "rfc822".
func addrType(addr string) string {
	if isASCII(addr) {
		return "rfc822"
	}
	return "utf-8"
}

// atom keeps the characters of s that may be in an address type (an RFC 5322
// atom): a hostile ORCPT cannot break the field's syntax.
func atom(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// newBoundary returns a random boundary that none of the parts contains
// (RFC 2046 §5.1.1). It contains "=_", which quoted-printable content
// cannot.
func newBoundary(random io.Reader, parts []part) (string, error) {
	for try := 0; try < 8; try++ {
		var buf [12]byte
		if _, err := io.ReadFull(random, buf[:]); err != nil {
			return "", fmt.Errorf("dsn: making a boundary: %w", err)
		}
		boundary := "=_petrel_" + hex.EncodeToString(buf[:])
		clash := false
		for _, p := range parts {
			if bytes.Contains(p.body, []byte(boundary)) {
				clash = true
				break
			}
		}
		if !clash {
			return boundary, nil
		}
	}
	return "", errors.New("dsn: no boundary found that is not in the content")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
