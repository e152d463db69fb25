package dsn_test

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/petrel-mta/petrel/internal/dsn"
)

// The queue gave up on a recipient: it builds the report and queues it for
// the original sender, with the null reverse-path.
func ExampleNew() {
	msg, err := dsn.New(dsn.Report{
		ReportingMTA: "mx.example.org",
		Sender:       "alice@example.com",
		Ret:          dsn.RetHdrs,
		Message:      strings.NewReader("From: alice@example.com\r\nSubject: Lunch\r\n\r\nNoon?\r\n"),
		Recipients: []dsn.Recipient{{
			Addr:      "bob@example.net",
			Action:    dsn.ActionFailed,
			Reply:     "550 5.1.1 <bob@example.net>: User unknown",
			RemoteMTA: "mx.example.net",
		}},
		// Fixed here for reproducible output; the queue leaves them zero.
		Now:  time.Date(2026, 3, 2, 9, 46, 0, 0, time.UTC),
		Rand: bytes.NewReader(make([]byte, 64)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The queue would now do: enqueue(from "", to "alice@example.com", msg).
	// The second Subject is in the returned header section.
	sc := bufio.NewScanner(bytes.NewReader(msg))
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.HasPrefix(line, "Subject:") || strings.HasPrefix(line, "Status:") || strings.HasPrefix(line, "Diagnostic-Code:") {
			fmt.Println(line)
		}
	}
	// Output:
	// Subject: Undelivered Mail Returned to Sender
	// Status: 5.1.1
	// Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: User unknown
	// Subject: Lunch
}

// A null reverse-path is never answered.
func ExampleNew_nullSender() {
	_, err := dsn.New(dsn.Report{ReportingMTA: "mx.example.org", Sender: ""})
	fmt.Println(err == dsn.ErrNullSender)
	// Output: true
}
