package dsn_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/internal/dsn"
	"github.com/petrel-mta/petrel/smtp"
)

// FuzzNew feeds New with arbitrary text from the network (reply, addresses,
// ORCPT, ENVID, remote host, original message) and checks that the report
// always reads back as a well-formed multipart/report (see parse): CRLF line
// ends only, lines of at most 998 octets, exactly the header fields New
// writes, one group of delivery-status fields per recipient, and only the
// fields RFC 3464 defines in them.
func FuzzNew(f *testing.F) {
	f.Add("alice@example.com", "bob@example.net", "rfc822;bob@example.net", "QQ+2B314159",
		"550 5.1.1 <bob@example.net>: User unknown", "mx.example.net",
		[]byte("From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"), byte(1), false)
	f.Add("alice@example.com", "bob@example.net\r\nBcc: x@example.com", "rfc822;a+0D+0AB:+20c", "+0D+0A",
		"550 5.7.1 no\r\nBcc: victim@example.com\r\n\r\n--=_petrel_000102030405060708090a0b\r\n550 "+strings.Repeat("x", 2000),
		"mx\nX: y", []byte("Subject: \xff\xfe\x00\r\n\r\n"), byte(2), false)
	f.Add("jörg@bücher.example", "李@例子.测试", "utf-8;李@例子.测试", "",
		"550 5.1.1 \xe2\x80\xa8\xc2\x85\xed\xa0\x80 bad utf-8", "", []byte("Subject: Grüße\r\n\r\nHallo\r\n"), byte(2), true)
	f.Add("a@b.example", "c@d.example", "", "", "451 4.7.1 greylisted", "[192.0.2.1]",
		[]byte(strings.Repeat("X-Long: "+strings.Repeat("y", 1200)+"\n", 3)+"\nbody"), byte(0), false)

	f.Fuzz(func(t *testing.T, sender, addr, orcpt, envID, reply, remote string, msg []byte, ret byte, utf8 bool) {
		actions := []dsn.Action{dsn.ActionFailed, dsn.ActionDelayed, dsn.ActionDelivered, dsn.ActionRelayed, dsn.ActionExpanded}
		r := dsn.Report{
			ReportingMTA: "mx.example.org",
			Sender:       sender,
			EnvID:        envID,
			Ret:          dsn.Ret(ret % 3),
			UTF8:         utf8,
			QueueID:      reply,
			Arrival:      arrival,
			Message:      strings.NewReader(string(msg)),
			MaxReturn:    4096,
			Recipients: []dsn.Recipient{
				{Addr: addr, ORCPT: orcpt, Action: actions[int(ret/3)%len(actions)], Reply: reply, RemoteMTA: remote,
					LastAttempt: last, WillRetryUntil: until},
				{Addr: "carol@example.org", Action: dsn.ActionFailed, Reply: reply},
			},
			Now:  now,
			Rand: &seq{},
		}
		out, err := dsn.New(r)
		if err != nil {
			bare := strings.TrimSuffix(strings.TrimPrefix(sender, "<"), ">")
			_, serr := smtp.ParseMailbox(bare, true)
			switch {
			case errors.Is(err, dsn.ErrNullSender) && (sender == "" || sender == "<>"):
			case serr != nil && strings.HasPrefix(err.Error(), "dsn: bad sender"):
			case addr == "" && strings.Contains(err.Error(), "without an address"):
			default:
				t.Fatalf("New: %v", err)
			}
			return
		}
		p, err := parse(out)
		if err != nil {
			t.Fatalf("%v\n%q", err, out)
		}
		for k := range p.header {
			switch k {
			case "From", "To", "Subject", "Date", "Message-Id", "Auto-Submitted", "Mime-Version", "Content-Type", "Content-Transfer-Encoding":
			default:
				t.Fatalf("header field %s: %q", k, out)
			}
		}
		if len(p.perRecipient) != 2 {
			t.Fatalf("%d recipient groups, want 2\n%q", len(p.perRecipient), out)
		}
		for _, h := range append(p.perRecipient, p.perMessage) {
			for k := range h {
				switch k {
				case "Original-Envelope-Id", "Reporting-Mta", "X-Petrel-Queue-Id", "Arrival-Date",
					"Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-Mta",
					"Diagnostic-Code", "Last-Attempt-Date", "Will-Retry-Until":
				default:
					t.Fatalf("delivery-status field %s\n%q", k, out)
				}
			}
		}
		if got, want := len(p.perRecipient[0].Values("Original-Recipient")) > 0, orcpt != ""; got != want {
			t.Fatalf("Original-Recipient present %v, ORCPT %q", got, orcpt)
		}
	})
}
