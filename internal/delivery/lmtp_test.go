package delivery_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dovecottest"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/smtpclient"
)

// TestLMTPDovecot delivers local recipients to a real Dovecot LMTP server
// (Debian's dovecot-lmtpd), over TCP and over a unix socket: each recipient
// gets its own outcome from its own reply after the data (RFC 2033 §4.2):
// delivered, unknown (550 at RCPT: failed), over quota (552 after the data:
// failed; 452 with quota_full_tempfail: deferred), while the others are
// delivered; a second message reuses the connection.
func TestLMTPDovecot(t *testing.T) {
	for _, unix := range []bool{false, true} {
		for _, tempfail := range []bool{false, true} {
			name := map[bool]string{false: "tcp", true: "unix"}[unix] + map[bool]string{false: "", true: "-tempfail"}[tempfail]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dc := dovecottest.Start(t, dovecottest.Config{Users: []string{"alice", "bob", "full"}, Unix: unix,
					Quotas: map[string]dovecottest.Quota{"full": {Bytes: 10}}, QuotaTempfail: tempfail})
				lb := &logBuf{}
				d, err := delivery.New(delivery.Options{
					LocalName:    "mx.sender.test",
					LocalDomains: []string{dovecottest.Domain},
					LMTP:         &delivery.LMTP{Network: dc.Network, Addr: dc.Addr},
					Timeouts:     smtpclient.Timeouts{Connect: ioTimeout, Greeting: ioTimeout, Command: ioTimeout, DataStart: ioTimeout, DataBlock: ioTimeout, DataEnd: ioTimeout},
					Logger:       slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = d.Close() })
				rcpts := []string{"alice@lmtp.test", "nobody@lmtp.test", "full@lmtp.test", "Bob+tag@LMTP.test"}
				res := byAddr(t, d.Deliver(ctxT(t), message("L1", rcpts...), body))
				quota := queue.Failed
				quotaReply := "552 5.2.2"
				if tempfail {
					quota, quotaReply = queue.Deferred, "452 4.2.2"
				}
				for addr, want := range map[string]struct {
					state queue.State
					reply string
				}{
					"alice@lmtp.test":   {queue.Delivered, "250 2.0.0 <alice@lmtp.test>"},
					"Bob+tag@LMTP.test": {queue.Delivered, "250 2.0.0 <Bob+tag@LMTP.test>"},
					"nobody@lmtp.test":  {queue.Failed, "550 5.1.1"},
					"full@lmtp.test":    {quota, quotaReply},
				} {
					r := res[addr]
					if r.State != want.state || !strings.HasPrefix(r.Reply, want.reply) {
						t.Errorf("%s: %v %q, want %v %q...\n%s", addr, r.State, r.Reply, want.state, want.reply, lb)
					}
				}
				for _, user := range []string{"alice", "bob"} {
					msg := dc.WaitMessages(t, user, 1, 10*time.Second)[0]
					if !strings.Contains(string(msg), "Subject: test\n\nHello.\n") {
						t.Errorf("%s's copy:\n%s", user, msg)
					}
				}
				if n := len(dc.Messages(t, "full")); n != 0 {
					t.Errorf("full got %d messages", n)
				}

				// A second message: the same connection, RSET between.
				res = byAddr(t, d.Deliver(ctxT(t), message("L2", "alice@lmtp.test"), body))
				if r := res["alice@lmtp.test"]; r.State != queue.Delivered {
					t.Errorf("second message: %+v", r)
				}
				dc.WaitMessages(t, "alice", 2, 10*time.Second)
				if st := d.Stats(); st.ConnsOpened != 1 || st.ConnsReused != 1 {
					t.Errorf("stats %+v: want one connection reused once", st)
				}
				// Level debug: the protocol trace, LHLO and all.
				for _, want := range []string{`msg="C: LHLO mx.sender.test"`, `msg="S: 220 mx.lmtp.test`, `msg="C: RCPT TO:<full@lmtp.test>"`} {
					if !strings.Contains(lb.String(), want) {
						t.Errorf("log lacks %s:\n%s", want, lb)
					}
				}
			})
		}
	}
}

// An LMTP server that is down defers every local recipient.
func TestLMTPDown(t *testing.T) {
	d, err := delivery.New(delivery.Options{
		LocalDomains: []string{"lmtp.test"},
		LMTP:         &delivery.LMTP{Network: "unix", Addr: t.TempDir() + "/no-such-socket"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	res := byAddr(t, d.Deliver(ctxT(t), message("L3", "alice@lmtp.test", "bob@lmtp.test"), body))
	for _, a := range []string{"alice@lmtp.test", "bob@lmtp.test"} {
		if r := res[a]; r.State != queue.Deferred || !strings.HasPrefix(r.Reply, "451 4.4.1") {
			t.Errorf("%s: %+v", a, r)
		}
	}
}

func TestLMTPOptions(t *testing.T) {
	for _, l := range []delivery.LMTP{{Network: "udp", Addr: "x"}, {Network: "tcp", Addr: "no-port"}} {
		if _, err := delivery.New(delivery.Options{LocalDomains: []string{"x.test"}, LMTP: &l}); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}
