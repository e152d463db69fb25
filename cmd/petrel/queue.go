package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/petrel-mta/petrel/internal/queue"
)

const queueHelp = `Usage:
  petrel queue list             the queue, like mailq: one line per message, one per recipient
  petrel queue show ID          a message's envelope, recipients and headers (--body: the whole message)
  petrel queue flush [ID]       make the pending and deferred recipients of ID, or of every message, due now
  petrel queue delete ID        remove a message; no report goes to its sender
  petrel queue bounce ID        fail the remaining recipients; the daemon sends the sender a DSN

Works on the spool DIR/queue whether the daemon runs or not: reads need no
lock, each change takes the message's lock, and the daemon is told of it
(at its next queue scan, or when it next starts).

Exit status: 0 done; 1 failure (no such message, no spool); 2 bad usage.

Flags:
`

// timeLayout is how the queue commands show times, in the local zone.
const timeLayout = "2006-01-02 15:04:05"

func queueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("petrel queue", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	dataDir := fs.String("data", "./petrel-data", "data `dir`ectory, as for petrel serve; the spool is DIR/queue")
	asJSON := fs.Bool("json", false, "list and show: print JSON instead, for scripts")
	withBody := fs.Bool("body", false, "show: print the whole message instead of its headers")
	usageFail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel queue: "+format+"\n", args...)
		return 2
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel queue: "+format+"\n", args...)
		return 1
	}

	// Flags may come before or after the command and its operands.
	words, code, ok := parseWords(fs, args, "petrel queue", queueHelp, stderr)
	if !ok {
		return code
	}
	if len(words) == 0 {
		return usageFail("give a command: list, show, flush, delete or bounce; run 'petrel queue -h' for help")
	}
	cmd, words := words[0], words[1:]
	switch cmd {
	case "list":
		if len(words) != 0 {
			return usageFail("list takes no argument (got %q)", words[0])
		}
	case "flush":
		if len(words) > 1 {
			return usageFail("flush takes at most one ID (got %d): petrel queue flush [ID]", len(words))
		}
	case "show", "delete", "bounce":
		if len(words) != 1 {
			return usageFail("%s takes one ID (got %d): petrel queue %s ID", cmd, len(words), cmd)
		}
	default:
		return usageFail("unknown command %q: use list, show, flush, delete or bounce", cmd)
	}
	if *asJSON && cmd != "list" && cmd != "show" {
		return usageFail("--json is for list and show, not %s", cmd)
	}
	if *withBody && cmd != "show" {
		return usageFail("--body is for show, not %s", cmd)
	}
	if *withBody && *asJSON {
		return usageFail("--body and --json do not go together: --json gives the state, --body the message")
	}
	if *dataDir == "" {
		return usageFail("--data must not be empty")
	}
	dir := filepath.Join(*dataDir, "queue")
	var id string
	if len(words) == 1 {
		// IDs are Crockford base32, which is case-insensitive.
		id = strings.ToUpper(words[0])
		if !queue.ValidID(id) {
			return fail("%q is not a queue ID (16 letters and digits); see petrel queue list --data %s", words[0], *dataDir)
		}
	}

	// Attach, never Open: Open would make this command the spool's owner
	// (recovering it, and locking the daemon out while it runs). Attach
	// needs no daemon: its changes are made on disk under the message's
	// lock, and its flush hints wait in notify/ for the owner's next
	// Lease or Open.
	// The spool logs what it skips (a state file it cannot read) on stderr.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	q, err := queue.Attach(dir, queue.Options{Logger: logger})
	if err != nil {
		return fail("no queue at %s (%s); check --data: it must be the daemon's data directory", dir, rootCause(err))
	}
	defer q.Close()
	notFound := func() int {
		return fail("no message %s in the queue at %s; see petrel queue list --data %s", id, dir, *dataDir)
	}
	other := func(err error) int {
		return fail("%s: %s", dir, strings.TrimPrefix(err.Error(), "queue: "))
	}

	switch cmd {
	case "list":
		msgs, err := q.List(ctx)
		if err != nil {
			return other(err)
		}
		if *asJSON {
			if msgs == nil {
				msgs = []queue.Message{}
			}
			return writeJSON(stdout, stderr, msgs)
		}
		writeMailq(stdout, msgs, time.Now())
		return 0

	case "show":
		m, err := q.Get(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return other(err)
		}
		body, err := q.Body(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return other(err)
		}
		defer body.Close()
		if *asJSON {
			hdr, err := readHeader(body)
			if err != nil {
				return fail("reading the message %s: %v", id, err)
			}
			return writeJSON(stdout, stderr, struct {
				queue.Message
				Headers string `json:"headers"`
			}{m, string(hdr)})
		}
		w := bufio.NewWriter(stdout)
		writeMessage(w, m, time.Now())
		fmt.Fprintln(w)
		if *withBody {
			_, err = io.Copy(w, body)
		} else {
			var hdr []byte
			hdr, err = readHeader(body)
			w.WriteString(printableText(string(hdr), true))
		}
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return fail("reading the message %s: %v", id, err)
		}
		return 0

	case "flush":
		var targets []queue.Message
		if id != "" {
			m, err := q.Get(ctx, id)
			if errors.Is(err, queue.ErrNotFound) {
				return notFound()
			}
			if err != nil {
				return other(err)
			}
			targets = []queue.Message{m}
		} else {
			targets, err = q.List(ctx)
			if err != nil {
				return other(err)
			}
		}
		if err := q.Flush(ctx, id); errors.Is(err, queue.ErrNotFound) {
			return notFound()
		} else if err != nil {
			return other(err)
		}
		n, rcpts := 0, 0
		for _, m := range targets {
			if k := countWaiting(m); k > 0 {
				n++
				rcpts += k
			}
		}
		switch {
		case id != "" && n == 0:
			fmt.Fprintf(stdout, "nothing to flush in %s: no recipient is pending or deferred\n", id)
		case id != "":
			fmt.Fprintf(stdout, "flushed %s: %s due now\n", id, plural(rcpts, "recipient"))
		case n == 0:
			fmt.Fprintln(stdout, "nothing to flush: no recipient is pending or deferred")
		default:
			fmt.Fprintf(stdout, "flushed %s (%s) due now\n", plural(n, "message"), plural(rcpts, "recipient"))
		}
		return 0

	case "delete":
		m, err := q.Get(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return other(err)
		}
		if err := q.Delete(ctx, id); errors.Is(err, queue.ErrNotFound) {
			return notFound()
		} else if err != nil {
			return other(err)
		}
		fmt.Fprintf(stdout, "deleted %s from %s (%s not delivered); no report goes to the sender\n",
			id, sender(m.From), plural(countUndelivered(m), "recipient"))
		return 0

	case "bounce":
		m, err := q.Get(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return other(err)
		}
		if err := q.Bounce(ctx, id); errors.Is(err, queue.ErrNotFound) {
			return notFound()
		} else if err != nil {
			return other(err)
		}
		n := countWaiting(m)
		if n == 0 {
			fmt.Fprintf(stdout, "nothing to bounce in %s: no recipient is pending or deferred\n", id)
			return 0
		}
		dsn := "the daemon sends " + m.From + " a delivery status notification"
		if m.From == "" {
			dsn = "no notification: the sender is <>"
		}
		fmt.Fprintf(stdout, "bounced %s: %s marked failed; %s\n", id, plural(n, "recipient"), dsn)
		return 0
	}
	return 2 // not reached
}

// rootCause is the innermost error's text: "no such file or directory".
func rootCause(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "petrel queue: %v\n", err)
		return 1
	}
	return 0
}

// writeMailq writes msgs as Postfix's mailq does: a header, per message a
// line with its ID, size, arrival and sender, then an indented line per
// recipient not yet done, and a summary.
func writeMailq(out io.Writer, msgs []queue.Message, now time.Time) {
	if len(msgs) == 0 {
		fmt.Fprintln(out, "Mail queue is empty")
		return
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	fmt.Fprintf(w, "%-16s %9s  %-19s  %s\n", "-Queue ID-------", "--Size--", "----Arrival Time---", "-Sender/Recipient-------")
	var total int64
	for _, m := range msgs {
		total += m.Size
		fmt.Fprintf(w, "%-16s %9d  %-19s  %s\n", m.ID, m.Size, m.Received.Local().Format(timeLayout), printable(sender(m.From)))
		for _, r := range m.Rcpts {
			fmt.Fprintf(w, "    %s  %s", printable(r.Addr), rcptState(r, now))
			if r.LastReply != "" {
				fmt.Fprintf(w, " (%s)", oneLine(r.LastReply))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
	req := "Requests"
	if len(msgs) == 1 {
		req = "Request"
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d %s.\n", (total+1023)/1024, len(msgs), req)
}

// rcptState says where a recipient stands: "deferred, 3 attempts, next
// 2026-11-28 15:30:01".
func rcptState(r queue.Recipient, now time.Time) string {
	parts := []string{r.State.String()}
	if r.Expired {
		parts[0] += " (expired)"
	}
	if r.Attempts > 0 {
		parts = append(parts, plural(r.Attempts, "attempt"))
	}
	switch r.State {
	case queue.Pending, queue.Deferred:
		if r.NextAttempt.After(now) {
			parts = append(parts, "next "+r.NextAttempt.Local().Format(timeLayout))
		} else {
			parts = append(parts, "due now")
		}
	case queue.Failed:
		if !r.Reported {
			parts = append(parts, "to be reported")
		}
	}
	return strings.Join(parts, ", ")
}

// writeMessage writes the envelope and recipients of m, one field a line.
func writeMessage(w io.Writer, m queue.Message, now time.Time) {
	fmt.Fprintf(w, "id:       %s\n", m.ID)
	fmt.Fprintf(w, "arrival:  %s\n", m.Received.Local().Format(timeLayout+" -0700"))
	fmt.Fprintf(w, "size:     %d bytes\n", m.Size)
	fmt.Fprintf(w, "from:     %s\n", printable(sender(m.From)))
	for _, k := range slices.Sorted(maps.Keys(m.Attrs)) {
		fmt.Fprintf(w, "attr:     %s=%s\n", printable(k), printable(m.Attrs[k]))
	}
	for _, r := range m.Rcpts {
		fmt.Fprintf(w, "to:       %s  %s\n", printable(r.Addr), rcptState(r, now))
		if r.LastAttempt != (time.Time{}) {
			fmt.Fprintf(w, "          last attempt %s\n", r.LastAttempt.Local().Format(timeLayout))
		}
		if r.LastReply != "" {
			reply := oneLine(r.LastReply)
			if r.RemoteMTA != "" {
				reply += " (from " + printable(r.RemoteMTA) + ")"
			}
			fmt.Fprintf(w, "          reply: %s\n", reply)
		}
		if r.ORCPT != "" {
			fmt.Fprintf(w, "          ORCPT=%s\n", printable(r.ORCPT))
		}
		if r.Notify != "" {
			fmt.Fprintf(w, "          NOTIFY=%s\n", printable(r.Notify))
		}
	}
}

// maxHeader bounds what show reads looking for the end of the header.
const maxHeader = 1 << 20

// readHeader returns the header of a message, through the empty line that
// ends it (or the whole message, if it has no body), at most maxHeader bytes.
func readHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeader))
	var hdr []byte
	for {
		line, err := br.ReadBytes('\n')
		hdr = append(hdr, line...)
		if len(bytes.TrimRight(line, "\r\n")) == 0 && len(line) > 0 {
			return hdr, nil
		}
		if err == io.EOF {
			return hdr, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func countWaiting(m queue.Message) int {
	n := 0
	for _, r := range m.Rcpts {
		if r.State == queue.Pending || r.State == queue.Deferred {
			n++
		}
	}
	return n
}

func countUndelivered(m queue.Message) int {
	n := 0
	for _, r := range m.Rcpts {
		if r.State != queue.Delivered {
			n++
		}
	}
	return n
}

func sender(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

// oneLine joins a multiline reply into one line, made printable.
func oneLine(s string) string {
	return printable(strings.Join(strings.Fields(s), " "))
}

// printable replaces control characters (C0, DEL, C1: terminal escape
// sequences from a remote server's reply or a message header) with '?',
// as Postfix does; tab, CR and LF are kept when keepLines is true.
func printable(s string) string {
	return printableText(s, false)
}

func printableText(s string, keepLines bool) string {
	return strings.Map(func(r rune) rune {
		if keepLines && (r == '\t' || r == '\r' || r == '\n') {
			return r
		}
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
