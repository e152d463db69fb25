package smtp_test

import (
	"fmt"

	"github.com/petrel-mta/petrel/smtp"
)

// Parsing the argument of RCPT TO: the path, then its parameters. The
// source route is accepted and dropped (RFC 5321 §4.1.1.3).
func ExampleParseForwardPath() {
	p, rest, err := smtp.ParseForwardPath(`<@relay.example:"john doe"@example.org> NOTIFY=NEVER`, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	params, _ := smtp.ParseParams(rest, false)
	fmt.Println(p.Local, p.Domain, p.Bracketed(), params[0].Keyword)

	_, _, err = smtp.ParseForwardPath("<user@example.org.>", false)
	fmt.Println(err)
	// Output:
	// john doe example.org <"john doe"@example.org> NOTIFY
	// 501 5.5.4 Syntax error in mailbox address
}

// Writing a reply with an enhanced status code on every line (RFC 2034).
func ExampleAppendReply() {
	fmt.Printf("%q\n", smtp.AppendReply(nil, 250, smtp.E200Undefined, "first", "last"))
	// Output:
	// "250-2.0.0 first\r\n250 2.0.0 last\r\n"
}
