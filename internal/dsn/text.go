package dsn

import (
	"bytes"
	"time"
)

// textWidth is the width the explanation is wrapped to.
const textWidth = 72

// explain writes the human-readable part, in the spirit of Postfix's
// bounce(8) text: who the report is from, then one section per kind of
// outcome, each listing its recipients with the reply of the host that gave
// it, then what is attached.
func explain(r *Report, rcpts []rcpt, o *original, limit int64) []byte {
	var b bytes.Buffer
	para := func(text string) {
		fold(&b, "", text, "", textWidth)
		b.WriteString("\r\n")
	}
	para("This is the mail system at host " + r.ReportingMTA + ".")

	section := func(a Action, intro string) {
		first := true
		for _, rc := range rcpts {
			if rc.action != a {
				continue
			}
			if first {
				para(intro)
				first = false
			}
			entry(&b, rc)
		}
	}
	section(ActionFailed, "Your message could not be delivered to the recipients below. "+
		"The mail system has given up on them: the message was not delivered "+
		"to them and will not be tried again.")

	var until time.Time
	for _, rc := range rcpts {
		if rc.action == ActionDelayed && rc.until.After(until) {
			until = rc.until
		}
	}
	delayed := "This is a warning only: you do not need to send your message again. " +
		"It has not been delivered yet to the recipients below, and the mail " +
		"system is still trying"
	if !until.IsZero() {
		delayed += ", until " + until.Format(time.RFC1123Z)
	}
	section(ActionDelayed, delayed+". You will be told if it gives up.")
	section(ActionDelivered, "Your message was delivered to the recipients below.")
	section(ActionRelayed, "Your message was passed on to the recipients below, "+
		"to a system that will not report whether it delivers it.")
	section(ActionExpanded, "Your message was delivered to the recipients below, "+
		"and passed on from there to further recipients.")

	attached := "The delivery report is attached below"
	switch {
	case o == nil:
	case o.whole != nil:
		attached += ", followed by your message"
	case o.tooBig:
		attached += ", followed by the header of your message: the whole message, " +
			"larger than " + itoa(limit) + " bytes, is not returned"
	case o.unfit:
		attached += ", followed by the header of your message: the whole message, " +
			"with a NUL character or a line longer than 998 characters, is not returned"
	default:
		attached += ", followed by the header of your message"
	}
	para(attached + ".")
	if r.QueueID != "" {
		para("Queue ID: " + clean(r.QueueID, false))
	}
	fold(&b, "", "For help, write to <postmaster@"+r.ReportingMTA+"> and include this report.", "", textWidth)
	return b.Bytes()
}

// entry writes one recipient: its address and the host that replied, then
// the reply, each of its lines indented.
func entry(b *bytes.Buffer, rc rcpt) {
	head := "<" + rc.addr + ">:"
	switch {
	case rc.remote != "" && rc.diagType == "smtp":
		head += " host " + rc.remote + " said:"
	case rc.remote != "":
		head += " while talking to host " + rc.remote + ":"
	case rc.diagType == "":
		head += " status " + rc.status
	}
	fold(b, "", head, "    ", textWidth)
	for _, line := range rc.diag {
		fold(b, "    ", line, "    ", textWidth)
	}
	b.WriteString("\r\n")
}
