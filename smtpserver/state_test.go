package smtpserver_test

// The session state machine, verb × state (style.md §10.10), and
// S-SMTP-18 (RFC 2034 §4, RFC 3463 §2): every reply but the greeting and
// the EHLO/HELO replies carries an enhanced status code whose class is the
// reply code's first digit.

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtptest"
)

// checkedClient wraps a client so that every reply it reads is checked
// for its enhanced status code (S-SMTP-18).
type checkedClient struct {
	t *testing.T
	c *smtptest.Client
}

// cmd sends line and returns the reply, after checking its enhanced codes.
func (cc checkedClient) cmd(line string) *smtptest.Reply {
	cc.t.Helper()
	rep, err := cc.c.Cmd(line)
	if err != nil {
		cc.t.Fatalf("%q: %v (got %v)", line, err, rep)
	}
	checkEnhanced(cc.t, line, rep)
	return rep
}

// want sends line and checks the reply code and, when enh is not empty,
// the enhanced code of its last line.
func (cc checkedClient) want(line string, code int, enh string) *smtptest.Reply {
	cc.t.Helper()
	rep := cc.cmd(line)
	if rep.Code != code {
		cc.t.Fatalf("%q: got %q, want %d %s", line, rep, code, enh)
	}
	if enh != "" {
		if got, _ := enhancedOf(rep.Lines[len(rep.Lines)-1]); got != enh {
			cc.t.Fatalf("%q: got %q, want %d %s", line, rep, code, enh)
		}
	}
	return rep
}

// enhancedOf returns the enhanced status code at the start of a reply
// line's text, "" when there is none.
func enhancedOf(line string) (string, smtp.EnhancedCode) {
	if len(line) < 4 {
		return "", smtp.NoEnhancedCode
	}
	word, _, _ := strings.Cut(line[4:], " ")
	e, err := smtp.ParseEnhancedCode(word)
	if err != nil {
		return "", smtp.NoEnhancedCode
	}
	return word, e
}

// checkEnhanced is S-SMTP-18 for one reply to cmd: each line has an
// enhanced code of the reply's class. Exempt are the replies to EHLO and
// HELO (RFC 2034 §4), and 3xx replies (354, 334): RFC 3463 §3.1 defines the
// classes 2, 4 and 5 only. The greeting is read by dialEngine, not here.
func checkEnhanced(t *testing.T, cmd string, rep *smtptest.Reply) {
	t.Helper()
	verb, _, _ := strings.Cut(strings.ToUpper(cmd), " ")
	if (verb == "EHLO" || verb == "HELO") && rep.Code == 250 {
		return
	}
	if rep.Code/100 == 3 {
		return
	}
	for _, l := range rep.Lines {
		word, e := enhancedOf(l)
		if word == "" {
			t.Errorf("S-SMTP-18: reply %q to %q has no enhanced status code", l, cmd)
		} else if e.Class != rep.Code/100 {
			t.Errorf("S-SMTP-18: reply %q to %q: enhanced class %d, reply class %d", l, cmd, e.Class, rep.Code/100)
		}
	}
}

// sessionState is a state a verb is tried in, reached by its setup.
type sessionState struct {
	name  string
	setup func(cc checkedClient, clientTLS *tls.Config)
}

var sessionStates = []sessionState{
	{"connected", func(checkedClient, *tls.Config) {}},
	{"greeted", func(cc checkedClient, _ *tls.Config) {
		cc.want("EHLO client.example", 250, "")
	}},
	{"in MAIL", func(cc checkedClient, _ *tls.Config) {
		cc.want("EHLO client.example", 250, "")
		cc.want("MAIL FROM:<alice@client.example>", 250, "2.1.0")
	}},
	{"after RCPT", func(cc checkedClient, _ *tls.Config) {
		cc.want("EHLO client.example", 250, "")
		cc.want("MAIL FROM:<alice@client.example>", 250, "2.1.0")
		cc.want("RCPT TO:<bob@mx.example.test>", 250, "2.1.5")
	}},
	// RFC 3207 §4.2: after the handshake, the state after the greeting,
	// with TLS active (S-TLS-05, S-TLS-07).
	{"after STARTTLS", func(cc checkedClient, clientTLS *tls.Config) {
		cc.want("EHLO client.example", 250, "")
		cc.want("MAIL FROM:<alice@client.example>", 250, "2.1.0")
		cc.want("STARTTLS", 220, "2.0.0")
		if _, err := cc.c.StartTLS(clientTLS); err != nil {
			cc.t.Fatal(err)
		}
	}},
}

// TestVerbState runs every verb in every state on a fresh connection,
// checks the reply (basic and enhanced code), and then that the session is
// where it should be: still usable (NOOP → 250), closed after QUIT, inside
// TLS after STARTTLS, and in the message after 354.
func TestVerbState(t *testing.T) {
	type want struct {
		code int
		enh  string // "" for the EHLO/HELO replies and 354
	}
	ok := want{250, "2.0.0"}
	ehlo := want{250, ""}
	badSeq := want{503, "5.5.1"}
	noRcpt := want{554, "5.5.1"} // RFC 2920 §3.2 (2), S-PIPE-02
	notImpl := want{502, "5.5.1"}
	tests := []struct {
		verb string
		// want per state, in the order of sessionStates.
		want [5]want
	}{
		// RFC 5321 §4.1.1.1, §4.1.4: EHLO/HELO are allowed in every state.
		{"EHLO client.example", [5]want{ehlo, ehlo, ehlo, ehlo, ehlo}},
		{"HELO client.example", [5]want{ehlo, ehlo, ehlo, ehlo, ehlo}},
		// §4.1.4: MAIL needs EHLO/HELO first (and again after TLS,
		// S-TLS-07); nested MAIL is 503 (S-SMTP-10).
		{"MAIL FROM:<carol@client.example>", [5]want{badSeq, {250, "2.1.0"}, badSeq, badSeq, badSeq}},
		// §3.3: RCPT without MAIL is 503 (S-SMTP-06).
		{"RCPT TO:<dave@mx.example.test>", [5]want{badSeq, badSeq, {250, "2.1.5"}, {250, "2.1.5"}, badSeq}},
		// §4.1.1.4, S-SMTP-07: DATA only after a valid RCPT.
		{"DATA", [5]want{badSeq, badSeq, noRcpt, {354, ""}, badSeq}},
		// RFC 3030 §2: BDAT follows the same sequence rules.
		{"BDAT 0 LAST", [5]want{badSeq, badSeq, noRcpt, ok, badSeq}},
		// §4.1.1.5, §4.1.1.9: RSET and NOOP always 250.
		{"RSET", [5]want{ok, ok, ok, ok, ok}},
		{"NOOP", [5]want{ok, ok, ok, ok, ok}},
		// §3.5.3: 252 when the server will not verify.
		{"VRFY x", [5]want{{252, "2.0.0"}, {252, "2.0.0"}, {252, "2.0.0"}, {252, "2.0.0"}, {252, "2.0.0"}}},
		{"HELP", [5]want{{214, "2.0.0"}, {214, "2.0.0"}, {214, "2.0.0"}, {214, "2.0.0"}, {214, "2.0.0"}}},
		// §4.1.1.10: QUIT → 221 in every state.
		{"QUIT", [5]want{{221, "2.0.0"}, {221, "2.0.0"}, {221, "2.0.0"}, {221, "2.0.0"}, {221, "2.0.0"}}},
		// RFC 3207 §4: 220 in plaintext in any state (it resets the
		// transaction, §4.2); 503 once TLS is active (S-TLS-05).
		{"STARTTLS", [5]want{{220, "2.0.0"}, {220, "2.0.0"}, {220, "2.0.0"}, {220, "2.0.0"}, badSeq}},
		// Recognised but not implemented (§4.2.4, S-SMTP-05): 502.
		{"AUTH PLAIN", [5]want{notImpl, notImpl, notImpl, notImpl, notImpl}},
		{"EXPN x", [5]want{notImpl, notImpl, notImpl, notImpl, notImpl}},
		// Unrecognised (§4.2.4, S-SMTP-04): 500.
		{"FOO", [5]want{{500, "5.5.1"}, {500, "5.5.1"}, {500, "5.5.1"}, {500, "5.5.1"}, {500, "5.5.1"}}},
	}
	srv, _, clientTLS := startEngine(t, nil)
	for _, tt := range tests {
		for si, st := range sessionStates {
			w := tt.want[si]
			t.Run(fmt.Sprintf("%s/%s", st.name, tt.verb), func(t *testing.T) {
				t.Parallel()
				cc := checkedClient{t, dialEngine(t, srv.Addr)}
				st.setup(cc, clientTLS)
				cc.want(tt.verb, w.code, w.enh)

				verb, _, _ := strings.Cut(tt.verb, " ")
				switch {
				case verb == "QUIT":
					engineExpectClose(t, cc.c)
				case verb == "STARTTLS" && w.code == 220:
					if _, err := cc.c.StartTLS(clientTLS); err != nil {
						t.Fatal(err)
					}
					// §4.2: back to the state after the greeting.
					cc.want("MAIL FROM:<alice@client.example>", 503, "5.5.1")
					cc.want("EHLO client.example", 250, "")
					cc.want("NOOP", 250, "2.0.0")
				case w.code == 354:
					if err := cc.c.Write("Subject: state test\r\n\r\n.\r\n"); err != nil {
						t.Fatal(err)
					}
					rep, err := cc.c.ReadReply()
					if err != nil {
						t.Fatal(err)
					}
					checkEnhanced(t, "<end of data>", rep)
					if rep.Code != 250 {
						t.Fatalf("end of data: got %q", rep)
					}
					cc.want("NOOP", 250, "2.0.0")
				default:
					cc.want("NOOP", 250, "2.0.0")
				}
			})
		}
	}
}

// TestStateAfterReply checks the state each reply leaves behind (RFC 5321
// §4.1.4: a refused command leaves the state as it was; RSET, EHLO and HELO
// end the transaction; the end of DATA ends it too).
func TestStateAfterReply(t *testing.T) {
	tests := []struct {
		name string
		cmds []string
		// after the commands: does MAIL open a transaction (250) or is
		// one still open (503)?
		mail int
	}{
		{"refused MAIL keeps no transaction", []string{"MAIL FROM:<bad"}, 250},
		{"refused RCPT keeps the transaction", []string{"MAIL FROM:<a@client.example>", "RCPT TO:<bad"}, 503},
		{"RSET ends the transaction", []string{"MAIL FROM:<a@client.example>", "RSET"}, 250},
		{"EHLO ends the transaction", []string{"MAIL FROM:<a@client.example>", "EHLO client.example"}, 250},
		{"HELO ends the transaction", []string{"MAIL FROM:<a@client.example>", "HELO client.example"}, 250},
		{"NOOP keeps the transaction", []string{"MAIL FROM:<a@client.example>", "NOOP"}, 503},
		{"VRFY keeps the transaction", []string{"MAIL FROM:<a@client.example>", "VRFY x"}, 503},
		{"unknown command keeps the transaction", []string{"MAIL FROM:<a@client.example>", "FOO"}, 503},
		{"DATA without RCPT keeps the transaction", []string{"MAIL FROM:<a@client.example>", "DATA"}, 503},
		{"BDAT 0 LAST ends the transaction", []string{"MAIL FROM:<a@client.example>", "RCPT TO:<b@mx.example.test>", "BDAT 0 LAST"}, 250},
	}
	srv, _, _ := startEngine(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cc := checkedClient{t, dialEngine(t, srv.Addr)}
			cc.want("EHLO client.example", 250, "")
			for _, cmd := range tt.cmds {
				cc.cmd(cmd)
			}
			cc.want("MAIL FROM:<z@client.example>", tt.mail, "")
		})
	}
}
