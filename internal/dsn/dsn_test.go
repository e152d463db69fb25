package dsn_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/dsn"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the output of New")

// seq is a deterministic stand-in for crypto/rand: 0, 1, 2, ... mod 256.
type seq struct{ n byte }

func (s *seq) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = s.n
		s.n++
	}
	return len(p), nil
}

var (
	arrival = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	last    = time.Date(2026, 3, 2, 9, 45, 30, 0, time.UTC)
	now     = time.Date(2026, 3, 2, 9, 46, 0, 0, time.UTC)
	until   = time.Date(2026, 3, 7, 9, 15, 0, 0, time.UTC)
)

const original = "Return-Path: <alice@example.com>\r\n" +
	"Received: from client.example.com (client.example.com [192.0.2.10])\r\n" +
	"\tby mx.example.org (Petrel) with ESMTPS id 4F2A9C\r\n" +
	"\tfor <bob@example.net>; Mon, 02 Mar 2026 09:15:00 +0000\r\n" +
	"From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.net>, Carol <carol@example.org>\r\n" +
	"Subject: Lunch on Friday\r\n" +
	"Date: Mon, 02 Mar 2026 10:14:58 +0100\r\n" +
	"Message-ID: <lunch.1@example.com>\r\n" +
	"\r\n" +
	"Shall we meet at noon?\r\n" +
	"-- \r\n" +
	"Alice\r\n"

// base is a report with one failed recipient, the fields filled as the
// queue would fill them.
func base() dsn.Report {
	return dsn.Report{
		ReportingMTA: "mx.example.org",
		Sender:       "alice@example.com",
		EnvID:        "QQ+2B314159",
		QueueID:      "4F2A9C",
		Arrival:      arrival,
		Message:      strings.NewReader(original),
		Recipients: []dsn.Recipient{{
			Addr:        "bob@example.net",
			ORCPT:       "rfc822;Bob+2Bfriday@example.net",
			Action:      dsn.ActionFailed,
			Reply:       "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
			RemoteMTA:   "mx.example.net",
			LastAttempt: last,
		}},
		Now:  now,
		Rand: &seq{},
	}
}

// recipientWant is what the per-recipient fields of a report must say.
type recipientWant struct {
	orcpt, final, action, status, remote, diag, retry string
}

var goldenTests = []struct {
	name        string
	report      func() dsn.Report
	subject     string
	types       []string // content types of the parts
	envID       string
	recipients  []recipientWant
	thirdHas    string // text the third part must contain
	thirdHasNot string // text it must not contain
}{
	{
		name: "failed-hdrs",
		report: func() dsn.Report {
			r := base()
			r.Ret = dsn.RetHdrs
			return r
		},
		subject: dsn.SubjectFailed,
		types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		envID:   "QQ+314159",
		recipients: []recipientWant{{
			orcpt: "rfc822; Bob+friday@example.net", final: "rfc822; bob@example.net",
			action: "failed", status: "5.1.1", remote: "dns; mx.example.net",
			diag: "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
		}},
		thirdHas: "Subject: Lunch on Friday\r\n", thirdHasNot: "Shall we meet",
	},
	{
		name: "failed-and-delayed",
		report: func() dsn.Report {
			r := base()
			r.EnvID = ""
			r.Ret = dsn.RetFull
			r.Recipients = append(r.Recipients, dsn.Recipient{
				Addr:           "carol@example.org",
				Action:         dsn.ActionDelayed,
				Reply:          "451-4.7.1 Greylisted, please try again later\r\n451 4.7.1 See https://example.org/greylisting",
				RemoteMTA:      "mx2.example.org",
				LastAttempt:    last,
				WillRetryUntil: until,
			})
			return r
		},
		subject: dsn.SubjectFailed,
		types:   []string{"text/plain", "message/delivery-status", "message/rfc822"},
		recipients: []recipientWant{
			{orcpt: "rfc822; Bob+friday@example.net", final: "rfc822; bob@example.net", action: "failed", status: "5.1.1"},
			{final: "rfc822; carol@example.org", action: "delayed", status: "4.7.1", remote: "dns; mx2.example.org",
				diag:  "smtp; 451-4.7.1 Greylisted, please try again later 451 4.7.1 See https://example.org/greylisting",
				retry: "Sat, 07 Mar 2026 09:15:00 +0000"},
		},
		thirdHas: "Shall we meet at noon?\r\n",
	},
	{
		name: "ret-full",
		report: func() dsn.Report {
			r := base()
			r.Ret = dsn.RetFull
			return r
		},
		subject:    dsn.SubjectFailed,
		types:      []string{"text/plain", "message/delivery-status", "message/rfc822"},
		envID:      "QQ+314159",
		recipients: []recipientWant{{final: "rfc822; bob@example.net", action: "failed", status: "5.1.1"}},
		thirdHas:   original,
	},
	{
		name: "ret-full-too-big",
		report: func() dsn.Report {
			r := base()
			r.Ret = dsn.RetFull
			r.MaxReturn = int64(len(original) - 1)
			return r
		},
		subject:    dsn.SubjectFailed,
		envID:      "QQ+314159",
		types:      []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		recipients: []recipientWant{{final: "rfc822; bob@example.net", action: "failed", status: "5.1.1"}},
		thirdHas:   "Message-ID: <lunch.1@example.com>\r\n", thirdHasNot: "Shall we meet",
	},
	{
		name: "delayed",
		report: func() dsn.Report {
			r := base()
			r.Ret = dsn.RetFull // only the header: nothing failed (RFC 3461 §4.3)
			r.Recipients[0] = dsn.Recipient{
				Addr: "bob@example.net", Action: dsn.ActionDelayed,
				Reply: "421 mx.example.net Service not available", RemoteMTA: "mx.example.net",
				LastAttempt: last, WillRetryUntil: until,
			}
			return r
		},
		subject: dsn.SubjectDelayed,
		envID:   "QQ+314159",
		types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		recipients: []recipientWant{{final: "rfc822; bob@example.net", action: "delayed", status: "4.0.0",
			diag: "smtp; 421 mx.example.net Service not available", retry: "Sat, 07 Mar 2026 09:15:00 +0000"}},
		thirdHasNot: "Shall we meet",
	},
	{
		name: "expired-local",
		report: func() dsn.Report {
			r := base()
			r.Message = nil
			r.Recipients = []dsn.Recipient{
				// Given up after temporary failures: 4.4.7.
				{Addr: "dave@example.net", Action: dsn.ActionFailed, Reply: "450 mailbox busy", RemoteMTA: "mx.example.net"},
				// Not an SMTP reply: a local error.
				{Addr: "erin@example.info", Action: dsn.ActionFailed, Reply: "dial tcp 192.0.2.25:25: connect: connection refused"},
				// Nothing known but the status.
				{Addr: "frank@nx.example", Action: dsn.ActionFailed, Status: "5.1.2"},
			}
			return r
		},
		subject: dsn.SubjectFailed,
		types:   []string{"text/plain", "message/delivery-status"},
		envID:   "QQ+314159",
		recipients: []recipientWant{
			{final: "rfc822; dave@example.net", action: "failed", status: "4.4.7", diag: "smtp; 450 mailbox busy"},
			{final: "rfc822; erin@example.info", action: "failed", status: "5.0.0",
				diag: "X-Petrel; dial tcp 192.0.2.25:25: connect: connection refused"},
			{final: "rfc822; frank@nx.example", action: "failed", status: "5.1.2"},
		},
	},
	{
		name: "hostile-reply",
		report: func() dsn.Report {
			r := base()
			r.Recipients[0].Reply = "550 5.7.1 Rejected\r\nBcc: victim@example.com\r\n\r\n--=_petrel_000102030405060708090a0b\r\n" +
				"550 5.7.1 " + strings.Repeat("x", 2000) + "\x00\x1b[31m\u0085 end"
			r.Recipients[0].Addr = "bob@example.net\r\nX-Injected: yes"
			r.Recipients[0].RemoteMTA = "mx.example.net\nX-Injected: yes"
			r.Recipients[0].ORCPT = "rfc822;bob+0D+0AX-Injected:+20yes@example.net"
			r.EnvID = "id+0D+0AX-Injected:+20yes"
			return r
		},
		subject:  dsn.SubjectFailed,
		types:    []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		envID:    "id X-Injected: yes",
		thirdHas: "Subject: Lunch on Friday\r\n",
	},
	{
		name: "smtputf8",
		report: func() dsn.Report {
			r := base()
			r.Sender = "jörg@bücher.example"
			r.UTF8 = true
			r.EnvID = ""
			r.Message = strings.NewReader("From: Jörg <jörg@bücher.example>\r\nTo: 李 <李@例子.测试>\r\nSubject: Grüße\r\n\r\nHallo\r\n")
			r.Recipients[0].Addr = "李@例子.测试"
			r.Recipients[0].ORCPT = "utf-8;李@例子.测试"
			r.Recipients[0].Reply = "550 5.1.1 <李@例子.测试>: unknown user"
			return r
		},
		subject: dsn.SubjectFailed,
		types:   []string{"text/plain", "message/global-delivery-status", "message/global-headers"},
		recipients: []recipientWant{{orcpt: "utf-8; 李@例子.测试", final: "utf-8; 李@例子.测试",
			action: "failed", status: "5.1.1", diag: "smtp; 550 5.1.1 <李@例子.测试>: unknown user"}},
		thirdHas: "Subject: Grüße\r\n", thirdHasNot: "Hallo",
	},
	{
		name: "utf8-header-ascii-addresses",
		report: func() dsn.Report {
			r := base()
			// 8-bit header, but neither SMTPUTF8 nor a UTF-8 address: a
			// 7-bit report with the header quoted-printable.
			r.Message = strings.NewReader("From: alice@example.com\r\nSubject: Grüße\r\n\r\nHallo\r\n")
			return r
		},
		subject:    dsn.SubjectFailed,
		envID:      "QQ+314159",
		types:      []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		recipients: []recipientWant{{final: "rfc822; bob@example.net", action: "failed", status: "5.1.1"}},
		thirdHas:   "Subject: Grüße\r\n",
	},
	{
		name: "delivered-relayed",
		report: func() dsn.Report {
			r := base()
			r.Recipients = []dsn.Recipient{
				{Addr: "bob@example.net", Action: dsn.ActionDelivered, Reply: "250 2.0.0 Ok: queued as 1234", RemoteMTA: "mx.example.net", LastAttempt: last},
				{Addr: "carol@example.org", Action: dsn.ActionRelayed, Reply: "250 Ok", RemoteMTA: "legacy.example.org", LastAttempt: last},
			}
			return r
		},
		subject: dsn.SubjectDelivered,
		envID:   "QQ+314159",
		types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
		recipients: []recipientWant{
			{final: "rfc822; bob@example.net", action: "delivered", status: "2.0.0"},
			{final: "rfc822; carol@example.org", action: "relayed", status: "2.0.0"},
		},
	},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenTests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.report()
			got, err := dsn.New(r)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (-update rewrites it):\n%s", golden, lineDiff(string(want), string(got)))
			}

			p, err := parse(got)
			if err != nil {
				t.Fatalf("parsing the report: %v\n%s", err, got)
			}
			checkEnvelopeHeaders(t, p, r, tc.subject)
			var types []string
			for _, pt := range p.parts {
				types = append(types, pt.contentType)
			}
			if strings.Join(types, " ") != strings.Join(tc.types, " ") {
				t.Errorf("parts %v, want %v", types, tc.types)
			}
			if got, want := p.perMessage.Get("Reporting-MTA"), "dns; mx.example.org"; got != want {
				t.Errorf("Reporting-MTA %q, want %q", got, want)
			}
			if got := p.perMessage.Get("Original-Envelope-Id"); got != tc.envID {
				t.Errorf("Original-Envelope-Id %q, want %q", got, tc.envID)
			}
			if len(p.perRecipient) != len(r.Recipients) {
				t.Fatalf("%d recipient groups, want %d", len(p.perRecipient), len(r.Recipients))
			}
			for i, w := range tc.recipients {
				h := p.perRecipient[i]
				check := func(field, want string) {
					t.Helper()
					if want == "" {
						return
					}
					if got := h.Get(field); got != want {
						t.Errorf("recipient %d: %s %q, want %q", i, field, got, want)
					}
				}
				check("Final-Recipient", w.final)
				check("Action", w.action)
				check("Status", w.status)
				check("Remote-MTA", w.remote)
				check("Diagnostic-Code", w.diag)
				check("Will-Retry-Until", w.retry)
				// RFC 3461 §6.3 d: Original-Recipient if and only if ORCPT.
				if got, want := h.Get("Original-Recipient"), w.orcpt; want != "" && got != want {
					t.Errorf("recipient %d: Original-Recipient %q, want %q", i, got, want)
				}
				if has := len(h.Values("Original-Recipient")) > 0; has != (r.Recipients[i].ORCPT != "") {
					t.Errorf("recipient %d: Original-Recipient present %v, ORCPT %q", i, has, r.Recipients[i].ORCPT)
				}
				if r.Recipients[i].Action != dsn.ActionDelayed && len(h.Values("Will-Retry-Until")) > 0 {
					t.Errorf("recipient %d: Will-Retry-Until for action %s", i, r.Recipients[i].Action)
				}
			}
			if len(p.parts) == 3 {
				third := string(p.parts[2].body)
				if tc.thirdHas != "" && !strings.Contains(third, tc.thirdHas) {
					t.Errorf("third part lacks %q:\n%s", tc.thirdHas, third)
				}
				if tc.thirdHasNot != "" && strings.Contains(third, tc.thirdHasNot) {
					t.Errorf("third part has %q:\n%s", tc.thirdHasNot, third)
				}
			}
		})
	}
}

func checkEnvelopeHeaders(t *testing.T, p *parsed, r dsn.Report, subject string) {
	t.Helper()
	want := map[string]string{
		"From":           "Mail Delivery System <MAILER-DAEMON@" + r.ReportingMTA + ">",
		"To":             "<" + r.Sender + ">",
		"Subject":        subject,
		"Auto-Submitted": "auto-replied",
		"Mime-Version":   "1.0",
	}
	for k, v := range want {
		if got := p.header.Get(k); got != v {
			t.Errorf("header %s: %q, want %q", k, got, v)
		}
	}
	if d, err := p.header.Date(); err != nil || !d.Equal(r.Now) {
		t.Errorf("Date %v (%v), want %v", d, err, r.Now)
	}
	if id := p.header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@"+r.ReportingMTA+">") {
		t.Errorf("Message-ID %q", id)
	}
}

func TestHostileReply(t *testing.T) {
	var r dsn.Report
	for _, tc := range goldenTests {
		if tc.name == "hostile-reply" {
			r = tc.report()
		}
	}
	got, err := dsn.New(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(got), "\r\n") {
		if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X-Injected:") {
			t.Errorf("injected line %q", line)
		}
	}
	p, err := parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.header["Bcc"]) > 0 || len(p.header["X-Injected"]) > 0 {
		t.Errorf("injected header: %v", p.header)
	}
	h := p.perRecipient[0]
	for k, v := range h {
		switch k {
		case "Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-Mta", "Diagnostic-Code", "Last-Attempt-Date":
			if len(v) != 1 {
				t.Errorf("%d %s fields", len(v), k)
			}
		default:
			t.Errorf("unexpected field %s: %q", k, v)
		}
	}
	diag := h.Get("Diagnostic-Code")
	if !strings.HasPrefix(diag, "smtp; 550 5.7.1 Rejected Bcc: victim@example.com --=_petrel_") ||
		!strings.Contains(diag, strings.Repeat("x", 900)) || !strings.HasSuffix(diag, "[31m? end") {
		t.Errorf("Diagnostic-Code %q", diag)
	}
	if got, want := h.Get("Final-Recipient"), "rfc822; bob@example.net X-Injected: yes"; got != want {
		t.Errorf("Final-Recipient %q, want %q", got, want)
	}
	if got, want := h.Get("Original-Recipient"), "rfc822; bob X-Injected: yes@example.net"; got != want {
		t.Errorf("Original-Recipient %q, want %q", got, want)
	}
	if strings.Contains(string(got), "\r\n--=_petrel_000102030405060708090a0b\r\n") {
		t.Error("the reply's boundary line made it into the report as a line")
	}
}

func TestNullSender(t *testing.T) {
	for _, sender := range []string{"", "<>"} {
		r := base()
		r.Sender = sender
		if _, err := dsn.New(r); !errors.Is(err, dsn.ErrNullSender) {
			t.Errorf("sender %q: error %v, want ErrNullSender", sender, err)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*dsn.Report)
	}{
		{"no recipients", func(r *dsn.Report) { r.Recipients = nil }},
		{"bad sender", func(r *dsn.Report) { r.Sender = "alice@example.com\r\nBcc: x@y" }},
		{"no reporting host", func(r *dsn.Report) { r.ReportingMTA = "" }},
		{"bad reporting host", func(r *dsn.Report) { r.ReportingMTA = "mx.example.org\r\nX: y" }},
		{"unknown action", func(r *dsn.Report) { r.Recipients[0].Action = "bounced" }},
		{"no address", func(r *dsn.Report) { r.Recipients[0].Addr = "" }},
		{"bad status", func(r *dsn.Report) { r.Recipients[0].Status = "5.1" }},
		{"status of the wrong class", func(r *dsn.Report) { r.Recipients[0].Status = "2.0.0" }},
		{"delayed with a permanent status", func(r *dsn.Report) {
			r.Recipients[0].Action = dsn.ActionDelayed
			r.Recipients[0].Status = "5.1.1"
		}},
		{"read error", func(r *dsn.Report) { r.Message = errReader{} }},
	}
	for _, tc := range tests {
		r := base()
		tc.change(&r)
		if out, err := dsn.New(r); err == nil {
			t.Errorf("%s: no error, output:\n%s", tc.name, out)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestStatusFromReply checks the Status chosen when the caller gives none.
func TestStatusFromReply(t *testing.T) {
	tests := []struct {
		action dsn.Action
		reply  string
		want   string
	}{
		{dsn.ActionFailed, "550 5.1.1 no such user", "5.1.1"},
		{dsn.ActionFailed, "550 no such user", "5.0.0"},
		{dsn.ActionFailed, "552-5.2.2 mailbox full\r\n552 5.2.2 try later", "5.2.2"},
		{dsn.ActionFailed, "550 4.1.1 class does not match the code", "5.0.0"},
		{dsn.ActionFailed, "451 4.3.0 try again", "4.3.0"},
		{dsn.ActionFailed, "451 try again", "4.4.7"},
		{dsn.ActionFailed, "", "5.0.0"},
		{dsn.ActionFailed, "connection refused", "5.0.0"},
		{dsn.ActionDelayed, "451 4.7.1 greylisted", "4.7.1"},
		{dsn.ActionDelayed, "550 5.1.1 permanent?", "4.0.0"},
		{dsn.ActionDelayed, "", "4.0.0"},
		{dsn.ActionDelivered, "250 2.6.0 queued", "2.6.0"},
		{dsn.ActionRelayed, "250 ok", "2.0.0"},
		{dsn.ActionExpanded, "", "2.0.0"},
	}
	for _, tc := range tests {
		r := base()
		r.Recipients[0].Action = tc.action
		r.Recipients[0].Reply = tc.reply
		out, err := dsn.New(r)
		if err != nil {
			t.Errorf("%s %q: %v", tc.action, tc.reply, err)
			continue
		}
		p, err := parse(out)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.action, tc.reply, err)
		}
		if got := p.perRecipient[0].Get("Status"); got != tc.want {
			t.Errorf("%s %q: Status %s, want %s", tc.action, tc.reply, got, tc.want)
		}
	}
}

// TestReaderUse checks that only the header section is read when only it is
// returned, and that a Message of any size is read at most to the limit.
func TestReaderUse(t *testing.T) {
	body := strings.Repeat("a line of the body\r\n", 100000)
	for _, ret := range []dsn.Ret{dsn.RetDefault, dsn.RetHdrs, dsn.RetFull} {
		cr := &countingReader{r: strings.NewReader(original + body)}
		r := base()
		r.Ret = ret
		r.Message = cr
		r.MaxReturn = 64 << 10
		out, err := dsn.New(r)
		if err != nil {
			t.Fatal(err)
		}
		if cr.n > 64<<10+4096+1 {
			t.Errorf("ret %d: read %d octets", ret, cr.n)
		}
		if bytes.Contains(out, []byte("a line of the body")) {
			t.Errorf("ret %d: body returned", ret)
		}
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestOriginalLineEnds checks that a message with bare LF line ends, or no
// body, is returned with CRLF line ends.
func TestOriginalLineEnds(t *testing.T) {
	for _, msg := range []string{
		"Subject: bare LF\nFrom: a@b.example\n\nbody\n",
		"Subject: no body\r\nFrom: a@b.example",
		"Subject: cut\r\nFrom: a@b.example\r\nX-Long: " + strings.Repeat("y", 1200) + "\r\n\r\nbody\r\n",
		"\r\nbody without a header\r\n",
		"Subject: bare CR\rFrom: a@b.example\r\rbody\r",
	} {
		for _, ret := range []dsn.Ret{dsn.RetHdrs, dsn.RetFull} {
			r := base()
			r.Ret = ret
			r.Message = strings.NewReader(msg)
			out, err := dsn.New(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parse(out); err != nil {
				t.Errorf("%q ret %d: %v\n%s", msg, ret, err, out)
			}
		}
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n-" + strings.TrimRight(wl, "\r") + "\n+" + strings.TrimRight(gl, "\r") + "\n")
			if shown++; shown == 10 {
				break
			}
		}
	}
	return b.String()
}
