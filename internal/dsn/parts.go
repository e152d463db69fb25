package dsn

import (
	"bytes"
	"mime/quotedprintable"
	"strconv"
	"time"
)

// part is one body part of the multipart/report: its MIME header fields and
// its body, both with CRLF line ends.
type part struct {
	header   []byte
	body     []byte
	eightBit bool // the body has octets above 127 (Content-Transfer-Encoding: 8bit)
}

// builder makes the parts of one report.
type builder struct {
	intl bool // RFC 6533 media types and UTF-8 in fields
}

func (b *builder) newPart(contentType, description string, body []byte, encoding string) part {
	var h bytes.Buffer
	hw := &header{buf: &h}
	hw.field("Content-Description", description)
	hw.field("Content-Type", contentType)
	if encoding != "" {
		hw.field("Content-Transfer-Encoding", encoding)
	}
	return part{header: h.Bytes(), body: body, eightBit: encoding == "8bit"}
}

// statusPart is the machine-readable part: message/delivery-status
// (RFC 3464), or message/global-delivery-status (RFC 6533) when addresses
// are not ASCII. The per-message fields come first, then one group
// of per-recipient fields for each recipient, each group after an empty line
// (RFC 3464 §2.1), every field in the order of the RFC 3464 §2.2 and §2.3
// ABNF.
func (b *builder) statusPart(r *Report, rcpts []rcpt) part {
	var body bytes.Buffer
	h := &header{buf: &body, utf8: b.intl}
	if r.EnvID != "" {
		// RFC 3461 §6.3 a: with an ENVID, the field MUST be present, its
		// value the decoded xtext.
		h.field("Original-Envelope-Id", decodeXtext(r.EnvID))
	}
	h.field("Reporting-MTA", "dns; "+r.ReportingMTA)
	if r.QueueID != "" {
		h.field("X-Petrel-Queue-ID", r.QueueID)
	}
	if !r.Arrival.IsZero() {
		h.field("Arrival-Date", r.Arrival.Format(time.RFC1123Z))
	}
	for _, rc := range rcpts {
		body.WriteString("\r\n")
		if rc.orcpt {
			// RFC 3461 §6.3 d: present if and only if ORCPT was given.
			h.field("Original-Recipient", rc.orcptType+"; "+rc.orcptAddr)
		}
		h.field("Final-Recipient", rc.addrType+"; "+rc.addr)
		h.field("Action", string(rc.action))
		h.field("Status", rc.status)
		if rc.remote != "" {
			h.field("Remote-MTA", "dns; "+rc.remote)
		}
		if rc.diagType != "" {
			h.field("Diagnostic-Code", rc.diagType+"; "+joinLines(rc.diag))
		}
		if !rc.last.IsZero() {
			h.field("Last-Attempt-Date", rc.last.Format(time.RFC1123Z))
		}
		if !rc.until.IsZero() {
			h.field("Will-Retry-Until", rc.until.Format(time.RFC1123Z))
		}
	}
	if !b.intl {
		// 7bit, which the registration of the type requires and clean
		// made sure of.
		return b.newPart("message/delivery-status", "Delivery report", body.Bytes(), "")
	}
	enc := ""
	if has8Bit(body.Bytes()) {
		enc = "8bit"
	}
	return b.newPart("message/global-delivery-status", "Delivery report", body.Bytes(), enc)
}

// originalPart is the returned content: the whole message as message/rfc822
// (message/global when international, RFC 6532 §3.7), or its header section
// as text/rfc822-headers (RFC 6522) or message/global-headers (RFC 6533).
func (b *builder) originalPart(o *original) part {
	if o.whole != nil {
		typ := "message/rfc822"
		if b.intl {
			typ = "message/global"
		}
		enc := ""
		if has8Bit(o.whole) {
			enc = "8bit"
		}
		return b.newPart(typ, "Undelivered message", o.whole, enc)
	}
	if b.intl {
		// message/global-headers: 8bit "whenever possible",
		// quoted-printable when not, and never a charset parameter (its
		// registration by RFC 6533).
		if !embeddable(o.header) {
			return b.newPart("message/global-headers", "Message header", qp(o.header), "quoted-printable")
		}
		enc := ""
		if has8Bit(o.header) {
			enc = "8bit"
		}
		return b.newPart("message/global-headers", "Message header", o.header, enc)
	}
	// text/rfc822-headers: 7bit, or quoted-printable for a header section
	// that is not 7-bit clean, as its registration by RFC 6522 allows.
	if has8Bit(o.header) || !embeddable(o.header) {
		return b.newPart("text/rfc822-headers", "Message header", qp(o.header), "quoted-printable")
	}
	return b.newPart("text/rfc822-headers", "Message header", o.header, "")
}

// textPart is the explanation for people, the first part of a
// multipart/report (RFC 6522).
func (b *builder) textPart(r *Report, rcpts []rcpt, o *original, limit int64) part {
	body := explain(r, rcpts, o, limit)
	if has8Bit(body) {
		return b.newPart("text/plain; charset=utf-8", "Notification", body, "8bit")
	}
	return b.newPart("text/plain; charset=us-ascii", "Notification", body, "")
}

// qp encodes data as quoted-printable text (RFC 2045 §6.7): lines of at most
// 76 characters, CRLF line breaks.
func qp(data []byte) []byte {
	var out bytes.Buffer
	w := quotedprintable.NewWriter(&out)
	// Writing to a bytes.Buffer does not fail.
	_, _ = w.Write(data)
	_ = w.Close()
	return out.Bytes()
}

// joinLines joins the lines of a multi-line reply with spaces, as one
// Diagnostic-Code value.
func joinLines(lines []string) string {
	var b bytes.Buffer
	for i, l := range lines {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
