package dsn_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// parsed is a report read back with the standard library, as a receiving
// program would: net/mail for the message, mime/multipart for the parts,
// net/textproto for the groups of delivery-status fields.
type parsed struct {
	header       mail.Header
	parts        []parsedPart
	perMessage   textproto.MIMEHeader
	perRecipient []textproto.MIMEHeader
}

type parsedPart struct {
	contentType string // media type, lower case, without parameters
	params      map[string]string
	encoding    string // Content-Transfer-Encoding, "" when none
	body        []byte // decoded when quoted-printable
}

// parse reads a report back and checks what every report must be: CRLF line
// ends only, no line longer than 998 octets (RFC 5322 §2.1.1), a top-level
// multipart/report; report-type=delivery-status (RFC 3461 §6.2) of two or
// three parts in the RFC 6522 order, and delivery-status groups that
// textproto can read.
func parse(msg []byte) (*parsed, error) {
	if err := checkLines(msg); err != nil {
		return nil, err
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("net/mail: %w", err)
	}
	p := &parsed{header: m.Header}
	for _, name := range []string{"From", "To", "Subject", "Date", "Message-Id", "Auto-Submitted", "Mime-Version", "Content-Type"} {
		if v := m.Header[name]; len(v) != 1 {
			return nil, fmt.Errorf("header %s: %d fields, want 1", name, len(v))
		}
	}
	if _, err := m.Header.Date(); err != nil {
		return nil, fmt.Errorf("Date: %w", err)
	}
	if _, err := mail.ParseAddress(m.Header.Get("From")); err != nil {
		return nil, fmt.Errorf("From: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("Content-Type: %w", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		return nil, fmt.Errorf("Content-Type %q %v: not a delivery-status report", mt, params)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		raw, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		pt, pparams, err := mime.ParseMediaType(raw.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("part %d Content-Type: %w", len(p.parts), err)
		}
		body, err := io.ReadAll(raw)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(p.parts), err)
		}
		enc := strings.ToLower(raw.Header.Get("Content-Transfer-Encoding"))
		switch enc {
		case "", "7bit":
			if bytes.ContainsFunc(body, func(r rune) bool { return r >= 0x80 }) {
				return nil, fmt.Errorf("part %d: 8-bit data without Content-Transfer-Encoding 8bit", len(p.parts))
			}
		case "8bit":
		case "quoted-printable":
			body, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
			if err != nil {
				return nil, fmt.Errorf("part %d: quoted-printable: %w", len(p.parts), err)
			}
		default:
			return nil, fmt.Errorf("part %d: Content-Transfer-Encoding %q", len(p.parts), enc)
		}
		p.parts = append(p.parts, parsedPart{contentType: pt, params: pparams, encoding: enc, body: body})
	}
	if n := len(p.parts); n != 2 && n != 3 {
		return nil, fmt.Errorf("%d parts, want 2 or 3", n)
	}
	if t := p.parts[0].contentType; t != "text/plain" {
		return nil, fmt.Errorf("first part is %s, want text/plain", t)
	}
	switch t := p.parts[1].contentType; t {
	case "message/delivery-status":
		if p.parts[1].encoding != "" {
			return nil, fmt.Errorf("message/delivery-status with encoding %q, must be 7bit", p.parts[1].encoding)
		}
	case "message/global-delivery-status":
	default:
		return nil, fmt.Errorf("second part is %s, want a delivery-status", t)
	}
	if len(p.parts) == 3 {
		switch t := p.parts[2].contentType; t {
		case "text/rfc822-headers", "message/rfc822", "message/global-headers", "message/global":
		default:
			return nil, fmt.Errorf("third part is %s", t)
		}
	}

	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(p.parts[1].body)))
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			if p.perMessage == nil {
				p.perMessage = h
			} else {
				p.perRecipient = append(p.perRecipient, h)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("delivery-status fields: %w", err)
		}
	}
	if p.perMessage.Get("Reporting-MTA") == "" {
		return nil, errors.New("no Reporting-MTA")
	}
	for i, h := range p.perRecipient {
		for _, f := range []string{"Final-Recipient", "Action", "Status"} {
			if len(h.Values(f)) != 1 {
				return nil, fmt.Errorf("recipient %d: %d %s fields, want 1", i, len(h.Values(f)), f)
			}
		}
	}
	return p, nil
}

// checkLines checks that every line of msg ends in CRLF, that CR and LF
// appear only so, and that no line is longer than 998 octets.
func checkLines(msg []byte) error {
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		return errors.New("does not end in CRLF")
	}
	for n, line := range bytes.Split(msg[:len(msg)-2], []byte("\r\n")) {
		if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
			return fmt.Errorf("line %d: bare CR or LF at %d: %q", n+1, i, line)
		}
		if len(line) > 998 {
			return fmt.Errorf("line %d: %d octets", n+1, len(line))
		}
	}
	return nil
}
