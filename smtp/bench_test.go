package smtp_test

import (
	"testing"

	"github.com/petrel-mta/petrel/smtp"
)

// BenchmarkParseMail parses a MAIL command line as the server does: the
// verb, the reverse-path, the ESMTP parameters.
func BenchmarkParseMail(b *testing.B) {
	line := "MAIL FROM:<someone.with.a.long.name@mail.example.org> SIZE=102400 BODY=8BITMIME SMTPUTF8"
	b.ReportAllocs()
	for b.Loop() {
		verb, arg, ok := smtp.ParseCommand(line)
		if !ok || verb != "MAIL" {
			b.Fatal("ParseCommand")
		}
		_, rest, err := smtp.ParseReversePath(arg[len("FROM:"):], true)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := smtp.ParseParams(rest, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRcpt parses a RCPT command line.
func BenchmarkParseRcpt(b *testing.B) {
	line := "RCPT TO:<recipient@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;recipient@example.net"
	b.ReportAllocs()
	for b.Loop() {
		_, arg, ok := smtp.ParseCommand(line)
		if !ok {
			b.Fatal("ParseCommand")
		}
		_, rest, err := smtp.ParseForwardPath(arg[len("TO:"):], false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := smtp.ParseParams(rest, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseReply parses a reply line as the client does.
func BenchmarkParseReply(b *testing.B) {
	line := "250 2.0.0 OK: queued as 01JDX5Q3ZK7W8Y2M4N6P"
	b.ReportAllocs()
	for b.Loop() {
		code, _, text, err := smtp.ParseReplyLine(line)
		if err != nil {
			b.Fatal(err)
		}
		smtp.SplitEnhanced(code, text)
	}
}
