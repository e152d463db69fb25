package smtpserver_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtpserver"
)

// atkSmugVariants are the end-of-data look-alikes of requirements §5.3
// (SEC Consult, CVE-2023-51764/51765/51766). bare is set where the variant
// has a bare CR or LF, which the server must refuse with 550 5.5.2
// (RFC 5321 §2.3.8); the NUL variants are plain data and may be accepted.
var atkSmugVariants = []struct {
	id, seq string
	bare    bool
}{
	{"S-SMUG-01", "\n.\n", true},
	{"S-SMUG-02", "\n.\r\n", true},
	{"S-SMUG-03", "\r\n.\n", true},
	{"S-SMUG-04", "\r.\r", true},
	{"S-SMUG-05", "\r.\r\n", true},
	{"S-SMUG-06", "\r\n.\r", true},
	{"S-SMUG-07", "\r\n\x00.\r\n", false},
	{"S-SMUG-08", "\r\n.\x00\r\n", false},
}

// atkOneReply checks the replies after a message and QUIT: exactly one
// reply for the message, then 221. It returns the message's reply.
func atkOneReply(t *testing.T, rs []atkReply) atkReply {
	t.Helper()
	for _, r := range rs {
		if r.code == 354 {
			t.Errorf("a 354 appeared: smuggled DATA ran (replies %v)", rs)
		}
	}
	if len(rs) != 2 || rs[1].code != 221 {
		t.Fatalf("want exactly one reply for the message then 221, got %v", rs)
	}
	return rs[0]
}

// TestAttackSmugglingDATA: S-SMUG-01..08. A body holds a fake end of data
// followed by a second, spoofed transaction, then the real <CRLF>.<CRLF>
// and QUIT. The server must answer the message once (550 5.5.2 for bare
// CR/LF; 250 or 5xx for the NUL variants), then 221; the spoofed MAIL never
// runs and at most one message, not from spoof@, is stored.
func TestAttackSmugglingDATA(t *testing.T) {
	for _, v := range atkSmugVariants {
		t.Run(fmt.Sprintf("%s/%q", v.id, v.seq), func(t *testing.T) {
			env := atkStart(t, smtpserver.Options{})
			c := atkGreeted(t, env.addr)
			c.openTx()
			c.cmd("DATA", 354, "")
			c.send(atkMessage + "hello" + v.seq + atkSmuggled + ".\r\nQUIT\r\n")
			r := atkOneReply(t, c.repliesUntilClose())
			switch {
			case v.bare:
				if r.code != 550 || r.enh() != "5.5.2" {
					t.Errorf("bare CR/LF in DATA: got %v, want 550 5.5.2", r)
				}
			default:
				if r.code != 250 && r.code/100 != 5 {
					t.Errorf("got %v, want 250 or 5xx", r)
				}
			}
			env.stop()
			env.checkNoSpoof(t, 1)
			msgs := env.be.Messages()
			if v.bare && len(msgs) != 0 {
				t.Errorf("message with bare CR/LF stored")
			}
			if !v.bare && r.code == 250 {
				if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "MAIL FROM:<spoof@victim.example>") {
					t.Errorf("accepted message does not hold the smuggled text as data (%d messages)", len(msgs))
				}
			}
		})
	}
}

// TestAttackSmugglingBDAT: S-BDAT-02 (RFC 3030 §2). Chunk content is opaque:
// a real <CRLF>.<CRLF> and commands inside a chunk are data; a smuggling
// sequence with a bare CR or LF refuses the message at LAST with 550 5.5.2.
// One reply per chunk; the smuggled MAIL never runs.
func TestAttackSmugglingBDAT(t *testing.T) {
	type variant struct {
		name   string
		chunks []string // the last one is sent with LAST
		codes  []int    // one per chunk
		enh    string   // of the last reply
		stored bool
	}
	tests := []variant{
		{name: "CRLF.CRLF and commands are data", chunks: []string{atkMessage + "hello\r\n.\r\n" + atkSmuggled}, codes: []int{250}, stored: true},
		{name: "two chunks, commands in the first", chunks: []string{atkMessage + "hello\r\n.\r\n" + atkSmuggled + ".\r\n", "QUIT\r\nRSET\r\n"}, codes: []int{250, 250}, stored: true},
		{name: "CRLF split across chunks", chunks: []string{atkMessage + "hello\r", "\n.\r\n" + atkSmuggled}, codes: []int{250, 250}, stored: true},
		{name: "bare CR at a chunk end", chunks: []string{atkMessage + "hello\r", ".\r" + atkSmuggled}, codes: []int{250, 550}, enh: "5.5.2"},
		{name: "message ends in a bare CR", chunks: []string{atkMessage + "hello\r"}, codes: []int{550}, enh: "5.5.2"},
	}
	for _, v := range atkSmugVariants {
		tv := variant{name: fmt.Sprintf("%s/%q", v.id, v.seq), chunks: []string{atkMessage + "hello" + v.seq + atkSmuggled}, codes: []int{250}, stored: true}
		if v.bare {
			tv.codes, tv.enh, tv.stored = []int{550}, "5.5.2", false
		}
		tests = append(tests, tv)
		if v.bare { // bare LF in a non-LAST chunk: refused at once, and at LAST
			tests = append(tests, variant{name: tv.name + "/then LAST", chunks: []string{tv.chunks[0], "more\r\n"}, codes: []int{550, 550}, enh: "5.5.2"})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := atkStart(t, smtpserver.Options{})
			c := atkGreeted(t, env.addr)
			c.openTx()
			var b strings.Builder
			for i, ch := range tt.chunks {
				last := ""
				if i == len(tt.chunks)-1 {
					last = " LAST"
				}
				fmt.Fprintf(&b, "BDAT %d%s\r\n%s", len(ch), last, ch)
			}
			b.WriteString("QUIT\r\n")
			c.send(b.String()) // all chunks pipelined in one write
			rs := c.repliesUntilClose()
			if len(rs) != len(tt.codes)+1 || rs[len(rs)-1].code != 221 {
				t.Fatalf("want %d chunk replies then 221, got %v", len(tt.codes), rs)
			}
			for i, code := range tt.codes {
				if rs[i].code != code {
					t.Errorf("chunk %d: got %v, want %d", i, rs[i], code)
				}
			}
			if tt.enh != "" && rs[len(tt.codes)-1].enh() != tt.enh {
				t.Errorf("last chunk: got %v, want %s", rs[len(tt.codes)-1], tt.enh)
			}
			env.stop()
			env.checkNoSpoof(t, 1)
			msgs := env.be.Messages()
			if tt.stored != (len(msgs) == 1) {
				t.Fatalf("stored %d messages, want stored=%v", len(msgs), tt.stored)
			}
			if tt.stored && string(msgs[0].Data) != strings.Join(tt.chunks, "") {
				t.Errorf("stored %q, want the chunks verbatim", msgs[0].Data)
			}
		})
	}
}

// TestAttackCommandLineLength: S-SMTP-13 / S-DOS-02. An over-long command
// line (RFC 5321 §4.5.3.1.4: 512 octets with CRLF) gets one 500 5.5.2
// reply, is never split into several commands, and the session goes on:
// the NOOP after it gets 250. Sizes are total octets including CRLF.
func TestAttackCommandLineLength(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	sizes := []int{513, 605, 1025, 4095, 4096, 4097, 4098, 8193, 9005, 1 << 20}
	// A line of n octets (CRLF included) that starts like cmd and hides
	// commands at places where a reader that splits long lines would see
	// a line start.
	line := func(cmd string, n int) string {
		body := []byte(cmd + strings.Repeat("x", n-2-len(cmd)))
		for _, at := range []int{510, 512, 1000, 1024, 4094, 4096, 8192} {
			inj := "RSET"
			if at+len(inj) <= len(body) {
				copy(body[at:], inj)
			}
		}
		return string(body) + "\r\n"
	}
	for _, prefix := range []string{"NOOP ", "MAIL FROM:<a@example.org> SIZE=1 X="} {
		for _, n := range sizes {
			if prefix[0] == 'M' && n <= 1024 {
				continue // MAIL may be up to 1024 octets (parameters); tested below
			}
			t.Run(fmt.Sprintf("%.4s/%d", prefix, n), func(t *testing.T) {
				c := atkGreeted(t, env.addr)
				c.ehlo()
				l := line(prefix, n)
				if len(l) != n {
					t.Fatalf("built %d octets, want %d", len(l), n)
				}
				c.send(l + "NOOP\r\nQUIT\r\n")
				rs := c.repliesUntilClose()
				if len(rs) != 3 || rs[0].code != 500 || rs[0].enh() != "5.5.2" || rs[1].code != 250 || rs[2].code != 221 {
					t.Fatalf("want [500 5.5.2, 250, 221], got %v", rs)
				}
			})
		}
	}

	// Lines that are not commands at all: still one reply each.
	for _, n := range sizes {
		t.Run(fmt.Sprintf("garbage/%d", n), func(t *testing.T) {
			c := atkGreeted(t, env.addr)
			c.ehlo()
			c.send(line("", n) + "NOOP\r\nQUIT\r\n")
			rs := c.repliesUntilClose()
			if len(rs) != 3 || rs[0].code != 500 || rs[1].code != 250 || rs[2].code != 221 {
				t.Fatalf("want [500, 250, 221], got %v", rs)
			}
		})
	}

	// The limits themselves: 512 octets are a command; MAIL with
	// parameters may take 1024.
	t.Run("limits", func(t *testing.T) {
		c := atkGreeted(t, env.addr)
		c.ehlo()
		c.cmd(strings.TrimSuffix(line("NOOP ", 512), "\r\n"), 250, "")
		mail := "MAIL FROM:<a@example.org> X-P="
		mail += strings.Repeat("y", 1022-len(mail)) // 1024 octets with CRLF
		c.cmd(mail, 555, "5.5.4")                   // parsed, not refused as too long
		c.cmd("QUIT", 221, "")
	})

	env.stop()
	env.checkNoSpoof(t, 0)
}

// TestAttackCommandLineLengthCode: S-SMTP-13 asks for "500 5.5.2 line
// too long" for every over-long line, also one whose first word is not a
// verb (before a860718 lines of 513..4096 octets got 500 5.5.1, the verb
// being checked before the length).
func TestAttackCommandLineLengthCode(t *testing.T) {
	env := atkStart(t, smtpserver.Options{})
	c := atkGreeted(t, env.addr)
	for _, n := range []int{513, 1025, 4096} {
		c.cmd(strings.Repeat("x", n-2), 500, "5.5.2")
	}
}

// TestAttackTextLineLength: S-SMTP-14 (RFC 5321 §4.5.3.1.6: a text line is
// at most 1000 octets including CRLF, not counting a transparency dot).
// Longer lines refuse the message with 552 5.5.2 after the real end of
// data, and the session survives; lines ending in "." at every buffer
// boundary never make a premature end of data.
func TestAttackTextLineLength(t *testing.T) {
	type tc struct {
		name string
		line string // one text line, CRLF included, as sent (stuffed)
		ok   bool
	}
	tests := []tc{
		{"1000 octets", strings.Repeat("a", 998) + "\r\n", true},
		{"1001 octets", strings.Repeat("a", 999) + "\r\n", false},
		{"1001 octets with a transparency dot", ".." + strings.Repeat("a", 997) + "\r\n", true},
		{"1002 octets with a transparency dot", ".." + strings.Repeat("a", 998) + "\r\n", false},
	}
	// Lines ending in "." right before CRLF, with "." landing on either
	// side of 512/1000/1024/2048/4096/8192-octet boundaries (the server
	// reads through a 4096-octet buffer, so 4096+1 and 8192+1 put ".\r\n"
	// at the start of a read segment).
	for _, n := range []int{511, 512, 513, 514, 999, 1000, 1001, 1002, 1024, 1025, 1026, 2048, 2049, 2050,
		4095, 4096, 4097, 4098, 4099, 4100, 8191, 8192, 8193, 8194, 8195, 8196} {
		tests = append(tests, tc{fmt.Sprintf("%d octets ending in dot", n), strings.Repeat("a", n-3) + ".\r\n", n <= 1000})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newAtkBackend()
			env := atkStart(t, smtpserver.Options{Backend: be})
			env.be = be
			c := atkGreeted(t, env.addr)
			c.openTx()
			c.cmd("DATA", 354, "")
			// The smuggled transaction after the long line would run if
			// "." at a segment start were taken as the end of data.
			c.send(atkMessage + tt.line + atkSmuggled + ".\r\nNOOP\r\nQUIT\r\n")
			rs := c.repliesUntilClose()
			if len(rs) != 3 || rs[1].code != 250 || rs[2].code != 221 {
				t.Fatalf("want [message reply, 250, 221], got %v", rs)
			}
			if tt.ok && rs[0].code != 250 {
				t.Errorf("got %v, want 250", rs[0])
			}
			if !tt.ok && (rs[0].code != 552 || rs[0].enh() != "5.5.2") {
				t.Errorf("got %v, want 552 5.5.2", rs[0])
			}
			env.stop()
			env.checkNoSpoof(t, 1)
			msgs := be.Messages()
			if tt.ok != (len(msgs) == 1) {
				t.Fatalf("stored %d messages, want ok=%v", len(msgs), tt.ok)
			}
			if tt.ok {
				want := atkMessage + strings.TrimPrefix(tt.line, ".") + atkSmuggled
				if string(msgs[0].Data) != want {
					t.Errorf("stored data differs from what was sent (unstuffed)")
				}
			}
		})
	}
}
