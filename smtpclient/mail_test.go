package smtpclient_test

// Mail transactions: extensions the message needs (SMTPUTF8 C-UTF8-01,
// 8BITMIME RFC 6152, SIZE C-SIZE-01), SMTP smuggling (C-SMUG-01), command
// grouping (C-PIPE-01), per-recipient results, HELO fallback, reply
// parsing, connection reuse and the redacted trace.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// sendOne dials addr with opts, sends msg and quits; it returns
// SendMail's result and error.
func sendOne(t *testing.T, addr string, opts smtpclient.Options, env smtpclient.Envelope, msg string) (*smtpclient.Result, error) {
	t.Helper()
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, addr, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	res, err := c.SendMail(ctx, env, []byte(msg))
	if qerr := c.Quit(ctx); qerr != nil {
		t.Errorf("QUIT: %v", qerr)
	}
	return res, err
}

var env1 = smtpclient.Envelope{From: "sender@example.org", To: []string{"rcpt@example.org"}}

// sentOnly checks that the fake server saw exactly these commands.
func sentOnly(t *testing.T, fs *fakeServer, want ...string) {
	t.Helper()
	fs.wait()
	if got := fs.conn(0).commands(); !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
}

// C-UTF8-01 (RFC 6531 §3.2): a non-ASCII envelope address goes only to a
// server that offers SMTPUTF8, with the SMTPUTF8 parameter; otherwise
// SendMail fails permanently with ErrNeedsSMTPUTF8 and sends nothing.
func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	for _, e := range []smtpclient.Envelope{
		{From: "sender@example.org", To: []string{"用户@example.org"}},
		{From: "δοκιμή@example.org", To: []string{"rcpt@example.org"}},
	} {
		fs := newFake(t, fake{ext: []string{"8BITMIME", "PIPELINING"}})
		_, err := sendOne(t, fs.Addr, options(smtpclient.None), e, testMsg)
		if !errors.Is(err, smtpclient.ErrNeedsSMTPUTF8) || smtpclient.Temporary(err) {
			t.Errorf("%v: error %v, want the permanent ErrNeedsSMTPUTF8", e, err)
		}
		if re := replyError(t, err); re.Reply.Code != 553 || re.Reply.Enhanced != smtp.E567NonASCIIAddr {
			t.Errorf("reply %v, want 553 5.6.7", re.Reply)
		}
		sentOnly(t, fs, "EHLO client.example", "QUIT")
	}
	fs := newFake(t, fake{ext: []string{"8BITMIME", "SMTPUTF8"}})
	if _, err := sendOne(t, fs.Addr, options(smtpclient.None), smtpclient.Envelope{From: "δοκιμή@example.org", To: []string{"用户@example.org"}}, testMsg); err != nil {
		t.Fatal(err)
	}
	sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<δοκιμή@example.org> SMTPUTF8", "RCPT TO:<用户@example.org>", "DATA", "QUIT")
}

// RFC 6152: an 8-bit message needs 8BITMIME (the client does not convert):
// without it ErrNeeds8BitMIME and nothing sent; with it BODY=8BITMIME.
func Test8BitMIME(t *testing.T) {
	t.Parallel()
	msg := "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n"
	fs := newFake(t, fake{ext: []string{"PIPELINING"}})
	_, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, msg)
	if !errors.Is(err, smtpclient.ErrNeeds8BitMIME) || smtpclient.Temporary(err) {
		t.Errorf("error %v, want the permanent ErrNeeds8BitMIME", err)
	}
	sentOnly(t, fs, "EHLO client.example", "QUIT")

	fs = newFake(t, fake{ext: []string{"8BITMIME"}})
	if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, msg); err != nil {
		t.Fatal(err)
	}
	sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org> BODY=8BITMIME", "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")
	data, _ := fs.conn(0).payloads()
	if string(data[0]) != msg+".\r\n" {
		t.Errorf("data %q", data[0])
	}
}

// C-SIZE-01 (RFC 1870 §5): SIZE=n with the size as sent (after CRLF
// normalisation) when the server offers SIZE; a message over the
// advertised limit fails with ErrTooBig before MAIL; "SIZE" without a
// number (or 0) sets no limit.
func TestSize(t *testing.T) {
	t.Parallel()
	// LF line ends: the size is that of the CRLF form on the wire.
	body := func(n int) string {
		s := "Subject: size\n\n"
		for len(s) < n {
			s += strings.Repeat("x", 70) + "\n"
		}
		return s
	}
	crlfLen := func(s string) int { return len(strings.ReplaceAll(s, "\n", "\r\n")) }

	small := body(400)
	fs := newFake(t, fake{ext: []string{"SIZE 1000"}})
	if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, small); err != nil {
		t.Fatal(err)
	}
	sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org> SIZE="+strconv.Itoa(crlfLen(small)), "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")

	exact := strings.Repeat("y", 998) // + CRLF = 1000: at the limit
	fs = newFake(t, fake{ext: []string{"SIZE 1000"}})
	if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, exact); err != nil {
		t.Errorf("a message of exactly SIZE octets: %v", err)
	}

	big := body(2000)
	fs = newFake(t, fake{ext: []string{"SIZE 1000", "PIPELINING"}})
	_, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, big)
	if !errors.Is(err, smtpclient.ErrTooBig) || smtpclient.Temporary(err) {
		t.Errorf("error %v, want the permanent ErrTooBig", err)
	}
	if re := replyError(t, err); re.Reply.Code != 552 || re.Reply.Enhanced != smtp.E534MsgTooBig {
		t.Errorf("reply %v, want 552 5.3.4", re.Reply)
	}
	sentOnly(t, fs, "EHLO client.example", "QUIT")

	for _, kw := range []string{"SIZE", "SIZE 0"} {
		fs = newFake(t, fake{ext: []string{kw}})
		if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, big); err != nil {
			t.Errorf("%q: %v", kw, err)
		}
		sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org> SIZE="+strconv.Itoa(crlfLen(big)), "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")
	}

	fs = newFake(t, fake{})
	if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, big); err != nil {
		t.Fatal(err)
	}
	sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org>", "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")
}

// smugglingVariants are the end-of-data look-alikes of requirements §5.3
// (S-SMUG-01..08), bare CR and LF, and a real <CRLF>.<CRLF> inside the
// content.
var smugglingVariants = []struct{ name, seq string }{
	{"LF.LF", "\n.\n"},
	{"LF.CRLF", "\n.\r\n"},
	{"CRLF.LF", "\r\n.\n"},
	{"CR.CR", "\r.\r"},
	{"CR.CRLF", "\r.\r\n"},
	{"CRLF.CR", "\r\n.\r"},
	{"CRLF-NUL.CRLF", "\r\n\x00.\r\n"},
	{"CRLF.NUL-CRLF", "\r\n.\x00\r\n"},
	{"bare-LF", "\n"},
	{"bare-CR", "\r"},
	{"CR-CRLF", "\r\r\n"},
	{"CRLF.CRLF", "\r\n.\r\n"},
}

// smuggle is a message that, were seq taken as the end of data, would make
// the next server run a second, spoofed transaction.
func smuggle(seq string) string {
	return "From: <sender@example.org>\r\nSubject: smuggling\r\n\r\nfirst line" + seq +
		"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" +
		"From: <admin@example.org>\r\n\r\nspoofed" + seq + "last line without an end"
}

// canonical is msg with every line end (CRLF, bare CR, bare LF) a CRLF and
// a CRLF at the end: RFC 5321 §2.3.8.
func canonical(msg string) string {
	s := strings.ReplaceAll(msg, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

// bareCRLF returns the offset of the first CR not followed by LF or LF not
// preceded by CR, or -1.
func bareCRLF(b []byte) int {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return i
		}
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return i
		}
	}
	return -1
}

// unstuff removes the transparency dots (RFC 5321 §4.5.2) from DATA
// content without its end of data.
func unstuff(b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		n := bytes.Index(b, []byte("\r\n")) + 2
		if n < 2 {
			n = len(b)
		}
		line := b[:n]
		b = b[n:]
		if line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

// C-SMUG-01 (RFC 5321 §2.3.8, §4.1.1.4, §4.5.2; CVE-2023-51764 class): on
// the wire, with DATA, exactly one end of data, at the end, no bare CR or
// LF anywhere, and the content dot-stuffed; with BDAT (RFC 3030) one LAST
// chunk of canonical CRLF content. The fake server then sees no command
// but QUIT: nothing was smuggled.
func TestSmugglingOnTheWire(t *testing.T) {
	t.Parallel()
	for _, v := range smugglingVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			msg := smuggle(v.seq)
			want := canonical(msg)
			t.Run("DATA", func(t *testing.T) {
				fs := newFake(t, fake{ext: []string{"PIPELINING"}})
				if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, msg); err != nil {
					t.Fatal(err)
				}
				sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org>", "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")
				data, _ := fs.conn(0).payloads()
				if len(data) != 1 {
					t.Fatalf("%d DATA payloads", len(data))
				}
				d := data[0]
				if i := bytes.Index(d, []byte("\r\n.\r\n")); i != len(d)-5 {
					t.Errorf("end of data at %d of %d: %q", i, len(d), d)
				}
				if i := bareCRLF(d); i >= 0 {
					t.Errorf("bare CR or LF at %d: %q", i, d)
				}
				if got := unstuff(d[:len(d)-3]); string(got) != want {
					t.Errorf("content (unstuffed)\n%q, want\n%q", got, want)
				}
			})
			t.Run("BDAT", func(t *testing.T) {
				fs := newFake(t, fake{ext: []string{"PIPELINING", "CHUNKING"}})
				if _, err := sendOne(t, fs.Addr, options(smtpclient.None), env1, msg); err != nil {
					t.Fatal(err)
				}
				sentOnly(t, fs, "EHLO client.example", "MAIL FROM:<sender@example.org>", "RCPT TO:<rcpt@example.org>",
					fmt.Sprintf("BDAT %d LAST", len(want)), "QUIT")
				_, chunks := fs.conn(0).payloads()
				if len(chunks) != 1 || string(chunks[0]) != want {
					t.Fatalf("chunks %q, want one: %q", chunks, want)
				}
				if i := bareCRLF(chunks[0]); i >= 0 {
					t.Errorf("bare CR or LF at %d", i)
				}
			})
		})
	}
}

// The same messages to Petrel's server, which refuses bare CR and LF
// (550 5.5.2): each arrives as exactly one message, canonical, over DATA and
// BDAT.
func TestSmugglingPetrel(t *testing.T) {
	t.Parallel()
	for _, chunking := range []bool{false, true} {
		t.Run(map[bool]string{false: "DATA", true: "BDAT"}[chunking], func(t *testing.T) {
			t.Parallel()
			p := startPetrel(t, smtpserver.Options{})
			opts := options(smtpclient.None)
			opts.NoChunking = !chunking
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, p.Addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, v := range smugglingVariants {
				if strings.Contains(v.seq, "\x00") {
					continue // NUL is content, but not Petrel's to judge here
				}
				msg := smuggle(v.seq)
				want = append(want, canonical(msg))
				if _, err := c.SendMail(ctx, env1, []byte(msg)); err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
			}
			if err := c.Quit(ctx); err != nil {
				t.Error(err)
			}
			msgs := p.backend.Messages()
			if len(msgs) != len(want) {
				t.Fatalf("%d messages, want %d", len(msgs), len(want))
			}
			for i, m := range msgs {
				if string(m.Data) != want[i] || len(m.To) != 1 || m.To[0].String() != "rcpt@example.org" {
					t.Errorf("message %d to %v:\n%q, want\n%q", i, m.To, m.Data, want[i])
				}
			}
		})
	}
}

// C-PIPE-01 (RFC 2920 §3.1): with PIPELINING, MAIL, the RCPTs and DATA go
// in one write, DATA last; EHLO and STARTTLS end their groups (each alone).
// Without PIPELINING, or with NoPipelining, one command per round trip.
func TestPipelining(t *testing.T) {
	t.Parallel()
	env := smtpclient.Envelope{From: "sender@example.org", To: []string{"a@example.org", "b@example.org"}}
	t.Run("group", func(t *testing.T) {
		wl := &writeLog{}
		fs := newFake(t, fake{ext: []string{"PIPELINING", "SIZE 100000"}, wlog: wl})
		opts := options(smtpclient.None)
		opts.Dialer = wl.dialer()
		if _, err := sendOne(t, fs.Addr, opts, env, testMsg); err != nil {
			t.Fatal(err)
		}
		group := fmt.Sprintf("C:MAIL FROM:<sender@example.org> SIZE=%d\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n", len(testMsg))
		writes := wl.all()
		if !slices.Contains(writes, group) || !slices.Contains(writes, "C:EHLO client.example\r\n") {
			t.Errorf("writes %q\nwant the group %q and EHLO alone", writes, group)
		}
	})
	for _, tc := range []struct {
		name string
		ext  []string
		no   bool
	}{{"not-offered", nil, false}, {"NoPipelining", []string{"PIPELINING"}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			wl := &writeLog{}
			fs := newFake(t, fake{ext: tc.ext, wlog: wl})
			opts := options(smtpclient.None)
			opts.Dialer = wl.dialer()
			opts.NoPipelining = tc.no
			if _, err := sendOne(t, fs.Addr, opts, env, testMsg); err != nil {
				t.Fatal(err)
			}
			writes := wl.all()
			i := slices.Index(writes, "C:MAIL FROM:<sender@example.org>\r\n")
			want := []string{"C:MAIL FROM:<sender@example.org>\r\n", "S:250 2.1.0 OK\r\n",
				"C:RCPT TO:<a@example.org>\r\n", "S:250 2.1.5 OK\r\n",
				"C:RCPT TO:<b@example.org>\r\n", "S:250 2.1.5 OK\r\n",
				"C:DATA\r\n", "S:354 End data with <CR><LF>.<CR><LF>\r\n"}
			if i < 0 || len(writes) < i+len(want) || !slices.Equal(writes[i:i+len(want)], want) {
				t.Errorf("exchange %q\nwant one command per round trip: %q", writes, want)
			}
		})
	}
	t.Run("STARTTLS-alone", func(t *testing.T) {
		cert := selfSigned(t, []string{"mx.example"})
		wl := &writeLog{}
		fs := newFake(t, fake{ext: []string{"PIPELINING", "STARTTLS"}, tls: serverTLS(cert), wlog: wl})
		opts := options(smtpclient.Encrypt)
		opts.Dialer = wl.dialer()
		if _, err := sendOne(t, fs.Addr, opts, env, testMsg); err != nil {
			t.Fatal(err)
		}
		writes := wl.all()
		i := slices.Index(writes, "C:STARTTLS\r\n")
		if i < 0 || len(writes) < i+3 || writes[i+1] != "S:220 2.0.0 Ready to start TLS\r\n" || writes[i+2][2] != 0x16 {
			t.Errorf("STARTTLS not alone, or not followed by the 220 and a TLS handshake record: %q", writes)
		}
	})
}

// Per-recipient results: one RCPT refused (550 5.1.1) is reported for that
// recipient, and the message still goes to the others; all refused: the
// first refusal is the error, nothing is sent, and the connection stays
// usable.
func TestPerRecipientResults(t *testing.T) {
	t.Parallel()
	backend := &smtptest.Backend{RejectRcpt: func(to smtp.Path) error {
		if strings.HasPrefix(to.Local, "bad") {
			return &smtp.Error{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "No such user " + to.Local}
		}
		return nil
	}}
	p := startPetrel(t, smtpserver.Options{Backend: backend})
	for _, noPipe := range []bool{false, true} {
		opts := options(smtpclient.None)
		opts.NoPipelining = noPipe
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, p.Addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org",
			To: []string{"a@example.org", "bad1@example.org", "c@example.org"}}, []byte(testMsg))
		if err != nil || res.Accepted != 2 || len(res.Rcpts) != 3 || res.Reply == "" {
			t.Fatalf("pipelining=%v: %v, %+v", !noPipe, err, res)
		}
		for i, r := range res.Rcpts {
			if (r.Err != nil) != (i == 1) {
				t.Errorf("recipient %d %s: %v", i, r.To, r.Err)
			}
			// The shared reply to the end of data, for the accepted
			// recipients only.
			if want := map[bool]string{true: "", false: res.Reply}[i == 1]; r.Reply != want {
				t.Errorf("recipient %d %s: Reply %q, want %q", i, r.To, r.Reply, want)
			}
		}
		re := replyError(t, res.Rcpts[1].Err)
		if re.Command != "RCPT" || re.Reply.Code != 550 || re.Reply.Enhanced != smtp.E511BadMailbox || re.Reply.Message != "No such user bad1" {
			t.Errorf("refusal %#v", re.Reply)
		}
		res, err = c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org", To: []string{"bad2@example.org", "bad3@example.org"}}, []byte(testMsg))
		if re := replyError(t, err); re.Reply.Message != "No such user bad2" || res.Accepted != 0 || len(res.Rcpts) != 2 {
			t.Errorf("all refused: %v, %+v", err, res)
		}
		if _, err := c.SendMail(ctx, env1, []byte(testMsg)); err != nil {
			t.Errorf("after a refused transaction: %v", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Error(err)
		}
	}
	msgs := backend.Messages()
	if len(msgs) != 4 || len(msgs[0].To) != 2 || msgs[0].To[1].String() != "c@example.org" {
		t.Errorf("messages %+v", msgs)
	}
}

// RFC 5321 §4.1.1.1: a server that refuses EHLO with 5xx (here 502) gets
// HELO; the session then uses no extension. A 4xx to EHLO is an error, not
// a reason to try HELO. At a mandatory level, no STARTTLS: TLSError.
func TestHELOFallback(t *testing.T) {
	t.Parallel()
	old := fake{ehlo: "502 5.5.1 EHLO not implemented\r\n"}
	fs := newFake(t, old)
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, fs.Addr, options(smtpclient.May))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("PIPELINING"); ok || c.Fallback() != "STARTTLS not offered" {
		t.Errorf("extensions after HELO; fallback %q", c.Fallback())
	}
	if _, err := c.SendMail(ctx, env1, []byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit(ctx)
	sentOnly(t, fs, "EHLO client.example", "HELO client.example", "MAIL FROM:<sender@example.org>", "RCPT TO:<rcpt@example.org>", "DATA", "QUIT")

	fs = newFake(t, old)
	_, err = smtpclient.Dial(ctx, fs.Addr, options(smtpclient.Encrypt))
	tlsError(t, err)

	fs = newFake(t, fake{ehlo: "421 4.3.2 Shutting down\r\n"})
	_, err = smtpclient.Dial(ctx, fs.Addr, options(smtpclient.None))
	if re := replyError(t, err); re.Command != "EHLO" || re.Reply.Code != 421 || !smtpclient.Temporary(err) {
		t.Errorf("EHLO 421: %v", err)
	}
	fs.wait()
	if fs.conn(0).hasCommand("HELO") {
		t.Error("HELO after a 421 to EHLO")
	}
}

// RFC 5321 §4.2.1 multi-line replies and RFC 2034/3463 enhanced codes:
// every line's code is parsed, the enhanced code split off each line when
// its class matches the reply's, the text kept line by line.
func TestReplyParsing(t *testing.T) {
	t.Parallel()
	fs := newFake(t, fake{
		greeting: "220-fake.example ESMTP\r\n220-second line\r\n220 third line\r\n",
		ext:      []string{"PIPELINING", "ENHANCEDSTATUSCODES"},
		rcpt: func(arg string) string {
			switch {
			case strings.Contains(arg, "multi"):
				return "550-5.1.1 first line\r\n550-5.1.1 second line\r\n550 5.1.1 third line\r\n"
			case strings.Contains(arg, "mismatch"):
				return "450 5.2.2 class differs from the code\r\n"
			case strings.Contains(arg, "plain"):
				return "551 User not local\r\n"
			}
			return "250 2.1.5 OK\r\n"
		},
	})
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, fs.Addr, options(smtpclient.None))
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Greeting(); g != "fake.example ESMTP\nsecond line\nthird line" {
		t.Errorf("greeting %q", g)
	}
	res, err := c.SendMail(ctx, smtpclient.Envelope{From: "sender@example.org",
		To: []string{"multi@example.org", "mismatch@example.org", "plain@example.org", "ok@example.org"}}, []byte(testMsg))
	if err != nil || res.Accepted != 1 || res.Reply != "2.0.0 Ok: queued as FAKE1" {
		t.Fatalf("%v %+v", err, res)
	}
	want := []*smtp.Error{
		{Code: 550, Enhanced: smtp.E511BadMailbox, Message: "first line\nsecond line\nthird line"},
		{Code: 450, Message: "5.2.2 class differs from the code"},
		{Code: 551, Message: "User not local"},
	}
	for i, w := range want {
		re := replyError(t, res.Rcpts[i].Err)
		if *re.Reply != *w {
			t.Errorf("recipient %d: %#v, want %#v", i, *re.Reply, *w)
		}
		if i == 1 && !smtpclient.Temporary(res.Rcpts[i].Err) || i != 1 && smtpclient.Temporary(res.Rcpts[i].Err) {
			t.Errorf("recipient %d: temporary=%v", i, smtpclient.Temporary(res.Rcpts[i].Err))
		}
	}
	if got := res.Rcpts[0].Err.Error(); got != "RCPT: 550 5.1.1 first line; second line; third line" {
		t.Errorf("Error() = %q", got)
	}
	_ = c.Quit(ctx)
}

// Replies that break RFC 5321 §4.2 make the client fail with a (temporary)
// ProtocolError: a line beyond its limits, a malformed code, a code that
// changes within a reply, a reply of too many lines.
func TestMalformedReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, greeting string }{
		{"line-3000", "220 " + strings.Repeat("x", 3000) + "\r\n"},
		{"line-5000", "220 " + strings.Repeat("x", 5000) + "\r\n"},
		{"no-end", "220 " + strings.Repeat("x", 10000)},
		{"letter-in-code", "2x0 hello\r\n"},
		{"no-separator", "220hello\r\n"},
		{"bad-separator", "220_hello\r\n"},
		{"short", "22\r\n"},
		{"code-below-200", "199 hello\r\n"},
		{"code-600", "600 hello\r\n"},
		{"code-changes", "220-hello\r\n250 there\r\n"},
		{"101-lines", strings.Repeat("220-x\r\n", 101) + "220 end\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFake(t, fake{greeting: tc.greeting})
			_, err := smtpclient.Dial(ctxT(t), fs.Addr, options(smtpclient.None))
			var pe *smtpclient.ProtocolError
			if !errors.As(err, &pe) || !smtpclient.Temporary(err) {
				t.Errorf("error %v (%T), want a ProtocolError", err, err)
			}
		})
	}
	t.Run("in-transaction", func(t *testing.T) {
		fs := newFake(t, fake{rcpt: func(string) string { return "25O 2.1.5 OK\r\n" }})
		ctx := ctxT(t)
		c, err := smtpclient.Dial(ctx, fs.Addr, options(smtpclient.None))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SendMail(ctx, env1, []byte(testMsg))
		var pe *smtpclient.ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("error %v, want a ProtocolError", err)
		}
		c.Close()
		fs.wait()
		if fs.conn(0).hasCommand("DATA") {
			t.Error("DATA after a malformed RCPT reply")
		}
	})
	t.Run("greeting-not-220", func(t *testing.T) {
		fs := newFake(t, fake{greeting: "554 5.7.1 go away\r\n"})
		_, err := smtpclient.Dial(ctxT(t), fs.Addr, options(smtpclient.None))
		if re := replyError(t, err); re.Command != "greeting" || re.Reply.Code != 554 {
			t.Errorf("error %v", err)
		}
	})
}

// One connection carries several transactions (RFC 5321 §4.1.4: a new MAIL
// after the end of data), with NOOP and RSET between them.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	p := startPetrel(t, smtpserver.Options{})
	ctx := ctxT(t)
	c, err := smtpclient.Dial(ctx, p.Addr, options(smtpclient.None))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		env := smtpclient.Envelope{From: "sender@example.org", To: []string{fmt.Sprintf("r%d@example.org", i)}}
		if _, err := c.SendMail(ctx, env, []byte(testMsg)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if err := c.Noop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Reset(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := p.backend.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	for i, m := range msgs {
		if m.ConnID != msgs[0].ConnID || m.To[0].String() != fmt.Sprintf("r%d@example.org", i) {
			t.Errorf("message %d: conn %s to %v", i, m.ConnID, m.To)
		}
	}
	if made, _ := p.backend.Sessions(); made != 1 {
		t.Errorf("%d sessions, want 1", made)
	}
}

// The trace shows the protocol but never credentials (O-LOG-01): AUTH PLAIN
// and AUTH LOGIN are redacted, and so is the plaintext AUTH allowed by
// AllowInsecureAuth to a loopback server.
func TestTraceRedactsAuth(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, []string{"mx.example"})
	secrets := []string{"alice", "s3cr3t", "YWxpY2U", "czNjcjN0", "AGFsaWNlAHMzY3IzdA"}
	for _, tc := range []struct {
		name   string
		fk     fake
		opts   smtpclient.Options
		redact []string
	}{
		{"PLAIN", fake{tls: serverTLS(cert), ext: []string{"STARTTLS"}, tlsExt: []string{"AUTH PLAIN LOGIN"}},
			trusting(cert, smtpclient.Secure), []string{"C: AUTH PLAIN [redacted]\n"}},
		{"LOGIN", fake{tls: serverTLS(cert), ext: []string{"STARTTLS"}, tlsExt: []string{"AUTH LOGIN"}},
			trusting(cert, smtpclient.Secure), []string{"C: AUTH LOGIN [redacted]\nS: 334 VXNlcm5hbWU6\nC: [redacted]\nS: 334 UGFzc3dvcmQ6\nC: [redacted]\n"}},
		{"plaintext-loopback", fake{ext: []string{"AUTH PLAIN"}},
			func() smtpclient.Options { o := options(smtpclient.None); o.AllowInsecureAuth = true; return o }(),
			[]string{"C: AUTH PLAIN [redacted]\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFake(t, tc.fk)
			var trace strings.Builder
			tc.opts.Trace = &trace
			ctx := ctxT(t)
			c, err := smtpclient.Dial(ctx, fs.Addr, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Auth(ctx, "alice", "s3cr3t"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.SendMail(ctx, env1, []byte(testMsg)); err != nil {
				t.Fatal(err)
			}
			_ = c.Quit(ctx)
			fs.wait()
			if got := fs.conn(0).credentials(); !slices.Equal(got, []string{"alice:s3cr3t"}) {
				t.Fatalf("server got credentials %q", got)
			}
			tr := trace.String()
			for _, r := range tc.redact {
				if !strings.Contains(tr, r) {
					t.Errorf("trace lacks %q:\n%s", r, tr)
				}
			}
			for _, s := range secrets {
				if strings.Contains(tr, s) {
					t.Errorf("trace holds %q:\n%s", s, tr)
				}
			}
			if !strings.Contains(tr, "C: MAIL FROM:<sender@example.org>\n") || !strings.Contains(tr, "S: 235 2.7.0 Authentication successful\n") {
				t.Errorf("trace incomplete:\n%s", tr)
			}
		})
	}
}
