package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// startSink starts a Sink on a loopback port.
func startSink(t testing.TB, opts SinkOptions) (*Sink, string) {
	t.Helper()
	k, err := NewSink(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = k.Serve(l) }()
	t.Cleanup(func() { _ = k.Close() })
	return k, l.Addr().String()
}

func runBench(t testing.TB, o Options) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// wantClean checks a report without failures.
func wantClean(t *testing.T, rep *Report, messages int) {
	t.Helper()
	if rep.Messages != uint64(messages) || rep.Failed != 0 || rep.ErrorsTotal != 0 {
		t.Errorf("%d messages, %d failed, errors %v (%v); want %d, none", rep.Messages, rep.Failed, rep.Errors, rep.ErrorSamples, messages)
	}
	if rep.Latency == nil || rep.Latency.Final.Count != uint64(messages) || rep.Latency.Message.Count != uint64(messages) {
		t.Errorf("latency samples: %+v", rep.Latency)
	}
}

func TestBenchAgainstSink(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		k, addr := startSink(t, SinkOptions{ImplicitTLS: implicit})
		var secs []Security
		if implicit {
			secs = []Security{ImplicitTLS}
		} else {
			secs = []Security{Plaintext, StartTLS}
		}
		for _, sec := range secs {
			for _, pipe := range []bool{false, true} {
				for _, bdat := range []bool{false, true} {
					name := sec.String()
					if pipe {
						name += "+pipelining"
					}
					if bdat {
						name += "+bdat"
					}
					t.Run(name, func(t *testing.T) {
						before := k.Stats()
						const conns, perConn, total = 3, 4, 24
						rep := runBench(t, Options{Server: addr, Security: sec, Conns: conns, MsgsPerConn: perConn, Total: total,
							Pipelining: pipe, BDAT: bdat, Rcpts: 2, To: "user%d@localhost"})
						wantClean(t, rep, total)
						after := k.Stats()
						if got := after.Messages - before.Messages; got != total {
							t.Errorf("sink got %d messages, want %d", got, total)
						}
						if got := after.Bytes - before.Bytes; got != total*1024 {
							t.Errorf("sink got %d octets, want %d", got, total*1024)
						}
						if got := after.Rcpts - before.Rcpts; got != 2*total {
							t.Errorf("sink accepted %d recipients, want %d", got, 2*total)
						}
						// A session stops short when another took the last
						// messages: at most one per connection more.
						if rep.Sessions < total/perConn || rep.Sessions > total/perConn+conns {
							t.Errorf("%d sessions, want %d", rep.Sessions, total/perConn)
						}
						if rep.Pipelining != pipe || rep.BDAT != bdat {
							t.Errorf("report says pipelining %v, BDAT %v", rep.Pipelining, rep.BDAT)
						}
						tlsSessions := after.TLSSessions - before.TLSSessions
						if sec == Plaintext {
							if len(rep.TLS) != 0 || tlsSessions != 0 || rep.Certificate != "" {
								t.Errorf("plaintext run: TLS %v, sink TLS sessions %d, certificate %q", rep.TLS, tlsSessions, rep.Certificate)
							}
							return
						}
						if len(rep.TLS) != 1 || rep.TLS[0].Version != "TLSv1.3" || rep.TLS[0].Sessions != rep.Sessions {
							t.Errorf("TLS seen: %+v", rep.TLS)
						}
						if tlsSessions != rep.Sessions {
							t.Errorf("the sink saw %d TLS sessions, want %d", tlsSessions, rep.Sessions)
						}
						if !strings.Contains(rep.Certificate, "not verified") || !strings.Contains(rep.Certificate, "unknown authority") {
							t.Errorf("certificate note %q", rep.Certificate)
						}
					})
				}
			}
		}
	}
}

func TestBenchTLSGroups(t *testing.T) {
	_, addr := startSink(t, SinkOptions{})
	for _, tc := range []struct {
		group   string
		max     uint16
		version string
	}{
		{"X25519", 0, "TLSv1.3"},
		{"X25519MLKEM768", 0, "TLSv1.3"},
		{"P-256", 0, "TLSv1.3"},
		{"", 0, "TLSv1.3"}, // Go's default: the hybrid group first
		{"X25519", tls.VersionTLS12, "TLSv1.2"},
		{"P-256", tls.VersionTLS12, "TLSv1.2"},
	} {
		t.Run(tc.group+"/"+tc.version, func(t *testing.T) {
			o := Options{Server: addr, Security: StartTLS, Total: 2, TLSMaxVersion: tc.max}
			want := tc.group
			if tc.group != "" {
				g, err := ParseGroup(tc.group)
				if err != nil {
					t.Fatal(err)
				}
				o.Group = g
			} else {
				want = "X25519MLKEM768"
			}
			rep := runBench(t, o)
			wantClean(t, rep, 2)
			if len(rep.TLS) != 1 || rep.TLS[0].Group != want || rep.TLS[0].Version != tc.version {
				t.Errorf("negotiated %+v, want %s %s", rep.TLS, tc.version, want)
			}
		})
	}
}

func TestBenchLargeMessage(t *testing.T) {
	k, addr := startSink(t, SinkOptions{})
	for _, bdat := range []bool{false, true} {
		before := k.Stats()
		rep := runBench(t, Options{Server: addr, Security: StartTLS, Size: 100000, Total: 5, Pipelining: true, BDAT: bdat, Rcpts: 3})
		wantClean(t, rep, 5)
		after := k.Stats()
		if got := after.Bytes - before.Bytes; got != 5*100000 || rep.Bytes != 5*100000 {
			t.Errorf("BDAT %v: the sink read %d octets, the report says %d; want %d", bdat, got, rep.Bytes, 5*100000)
		}
		if got := after.Rcpts - before.Rcpts; got != 15 {
			t.Errorf("BDAT %v: the sink accepted %d recipients, want 15", bdat, got)
		}
	}
}

// TestBenchSmtptest loads the project's test server, which keeps what it
// receives: the messages arrive whole, to the recipients of the template.
func TestBenchSmtptest(t *testing.T) {
	serverTLS, clientTLS, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	be := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Hostname: "mx.test", Backend: be, TLSConfig: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rep := runBench(t, Options{Server: srv.Addr, Security: StartTLS, Conns: 2, MsgsPerConn: 3, Total: 6, Rcpts: 3,
		To: "user%d@example.org", From: "sender@example.net", Pipelining: true, Size: 2000,
		Verify: true, RootCAs: clientTLS.RootCAs, ServerName: "localhost"})
	wantClean(t, rep, 6)
	if rep.Certificate != "verified for localhost" {
		t.Errorf("certificate note %q", rep.Certificate)
	}
	msgs := be.Messages()
	if len(msgs) != 6 {
		t.Fatalf("the server kept %d messages, want 6", len(msgs))
	}
	want, err := Message(2000, "sender@example.net", "user1@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !m.TLS || m.From.String() != "sender@example.net" || len(m.To) != 3 || m.To[2].String() != "user3@example.org" {
			t.Errorf("message: TLS %v from %s to %v", m.TLS, m.From, m.To)
		}
		if len(m.Data) != 2000 || !bytes.Equal(m.Data[bytes.Index(m.Data, []byte("\r\n\r\n")):], want[bytes.Index(want, []byte("\r\n\r\n")):]) {
			t.Errorf("message body differs from Message's (%d octets)", len(m.Data))
		}
		if m.Opts.Size != 2000 {
			t.Errorf("MAIL SIZE=%d, want 2000", m.Opts.Size)
		}
	}
}

func TestBenchVerifyFails(t *testing.T) {
	_, addr := startSink(t, SinkOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Server: addr, Security: StartTLS, Total: 3, Verify: true, RootCAs: x509.NewCertPool()})
	if err == nil || !strings.Contains(err.Error(), "session setups failed") {
		t.Errorf("Run: %v, want it to give up", err)
	}
	if rep == nil || rep.Errors["tls"] == 0 || rep.Messages != 0 || !strings.Contains(rep.ErrorSamples["tls"], "certificate") {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchInjectedFailures checks that every refusal the sink injects is
// counted by kind, and that the numbers are those Verdict predicts.
func TestBenchInjectedFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pipe, bdat bool
		rcpts      int
	}{
		{"one by one", false, false, 1},
		{"pipelined", true, false, 1},
		{"pipelined BDAT", true, true, 1},
		{"BDAT", false, true, 1},
		{"3 rcpts pipelined", true, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const seed, temp, perm, total = 42, 0.2, 0.1, 60
			k, addr := startSink(t, SinkOptions{TempFail: temp, PermFail: perm, Seed: seed})
			rep := runBench(t, Options{Server: addr, Security: StartTLS, Conns: 3, MsgsPerConn: 5, Total: total,
				Pipelining: tc.pipe, BDAT: tc.bdat, Rcpts: tc.rcpts})
			// The sink numbers RCPTs in the order they arrive, so the
			// totals are known though not which message gets which.
			var want4, want5 uint64
			for n := range uint64(total * tc.rcpts) {
				switch Verdict(seed, n, temp, perm) {
				case 4:
					want4++
				case 5:
					want5++
				}
			}
			st := k.Stats()
			if st.TempFail != want4 || st.PermFail != want5 {
				t.Errorf("the sink refused %d/%d, Verdict predicts %d/%d", st.TempFail, st.PermFail, want4, want5)
			}
			if rep.Errors["rcpt_4xx"] != want4 || rep.Errors["rcpt_5xx"] != want5 || rep.ErrorsTotal != want4+want5 {
				t.Errorf("errors %v, want rcpt_4xx %d, rcpt_5xx %d and nothing else (%v)", rep.Errors, want4, want5, rep.ErrorSamples)
			}
			if rep.Messages+rep.Failed != total || rep.Messages != st.Messages {
				t.Errorf("%d messages + %d failed, the sink took %d; want %d in all", rep.Messages, rep.Failed, st.Messages, total)
			}
			if tc.rcpts == 1 && rep.Failed != want4+want5 {
				t.Errorf("%d failed, want %d", rep.Failed, want4+want5)
			}
			if st.Rcpts != uint64(total*tc.rcpts)-want4-want5 {
				t.Errorf("the sink delivered to %d recipients, want %d", st.Rcpts, uint64(total*tc.rcpts)-want4-want5)
			}
			if !strings.HasPrefix(rep.ErrorSamples["rcpt_4xx"], "RCPT: 451 4.3.0") {
				t.Errorf("sample %q", rep.ErrorSamples["rcpt_4xx"])
			}
			if rep.Sessions > total/5+3 {
				t.Errorf("%d sessions, want %d: refusals must not break sessions", rep.Sessions, total/5)
			}
		})
	}
}

func TestBenchHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		sec  Security
		noop time.Duration
	}{
		{"starttls", StartTLS, 0},
		{"implicit tls with noop", ImplicitTLS, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 50
			k, addr := startSink(t, SinkOptions{ImplicitTLS: tc.sec == ImplicitTLS})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan *Report, 1)
			go func() {
				rep, err := Hold(ctx, Options{Server: addr, Security: tc.sec, Idle: n, IdleNoop: tc.noop, Timeout: 20 * time.Second})
				if err != nil {
					t.Error(err)
				}
				done <- rep
			}()
			deadline := time.Now().Add(45 * time.Second)
			for k.Stats().Open != n || k.Stats().TLSSessions != n {
				if time.Now().After(deadline) {
					t.Fatalf("the sink sees %+v, want %d open TLS sessions", k.Stats(), n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // a few NOOPs
			if st := k.Stats(); st.Open != n || st.Connections != n {
				t.Errorf("the sink sees %+v: the sessions did not stay", st)
			}
			cancel()
			rep := <-done
			if rep.Idle.Open != n || rep.Idle.Peak != n || rep.Idle.Dropped != 0 || rep.ErrorsTotal != 0 || rep.Sessions != n {
				t.Errorf("report: %+v idle %+v errors %v", rep, rep.Idle, rep.ErrorSamples)
			}
			if len(rep.TLS) != 1 || rep.TLS[0].Sessions != n {
				t.Errorf("TLS seen %+v", rep.TLS)
			}
			deadline = time.Now().Add(10 * time.Second)
			for k.Stats().Open != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if st := k.Stats(); st.Open != 0 {
				t.Errorf("%d sessions still open after Hold returned", st.Open)
			}
		})
	}
}

// TestBenchHoldDropped: a server that closes held sessions is counted, and
// the sessions are opened again.
func TestBenchHoldDropped(t *testing.T) {
	be := &smtptest.Backend{}
	srv, err := smtptest.NewServer(smtpserver.Options{Backend: be, CommandTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rep, err := Hold(context.Background(), Options{Server: srv.Addr, Idle: 2, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Idle.Dropped < 2 || rep.Errors["io"] != rep.Idle.Dropped || rep.Sessions < 4 {
		t.Errorf("idle %+v, errors %v, %d sessions: want the timeouts counted and the sessions opened again", rep.Idle, rep.Errors, rep.Sessions)
	}
	if !strings.Contains(rep.ErrorSamples["io"], "421") {
		t.Errorf("sample %q", rep.ErrorSamples["io"])
	}
}

func TestBenchServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rep, err := Run(context.Background(), Options{Server: addr, Conns: 2, Total: 10})
	if err == nil || rep == nil || rep.Errors["connect"] < 2*setupFailuresFirst || rep.Aborted == "" {
		t.Fatalf("Run: %v, report %+v", err, rep)
	}
}

func TestBenchDuration(t *testing.T) {
	_, addr := startSink(t, SinkOptions{})
	start := time.Now()
	rep := runBench(t, Options{Server: addr, Conns: 2, MsgsPerConn: 1000, Duration: 300 * time.Millisecond})
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the run took %v", d)
	}
	if rep.Messages == 0 || rep.ErrorsTotal != 0 || rep.Failed != 0 {
		t.Errorf("report %+v", rep)
	}
}

func TestBenchInterrupted(t *testing.T) {
	_, addr := startSink(t, SinkOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	rep, err := Run(ctx, Options{Server: addr, Security: StartTLS, Conns: 2, MsgsPerConn: 1000, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.ErrorsTotal != 0 || rep.Failed != 0 {
		t.Errorf("report %+v %v: an interruption is no failure", rep, rep.ErrorSamples)
	}
}

// scripted serves connections with a fake server: it writes the greeting,
// then answers each line read with the reply for its verb (an empty reply
// reads without answering, "CLOSE" closes).
func scripted(t *testing.T, greeting string, replies map[string]string) string {
	return scriptedTLS(t, nil, greeting, replies)
}

// scriptedTLS is scripted with implicit TLS when cfg is not nil.
func scriptedTLS(t *testing.T, cfg *tls.Config, greeting string, replies map[string]string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte(greeting))
				buf := make([]byte, 4096)
				var pending []byte
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					pending = append(pending, buf[:n]...)
					for {
						i := bytes.Index(pending, []byte("\r\n"))
						if i < 0 {
							break
						}
						line := string(pending[:i])
						pending = pending[i+2:]
						verb, _, _ := strings.Cut(line, " ")
						r, ok := replies[verb]
						if !ok {
							r = replies["*"]
						}
						if r == "CLOSE" {
							return
						}
						_, _ = c.Write([]byte(r))
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// okScript is a fake server's script that accepts every message.
func okScript() map[string]string {
	return map[string]string{"EHLO": "250-x\r\n250 PIPELINING\r\n", "MAIL": "250 ok\r\n", "RCPT": "250 ok\r\n",
		"DATA": "354 go\r\n", ".": "250 ok\r\n", "QUIT": "221 bye\r\n", "RSET": "250 ok\r\n", "*": ""}
}

// TestBenchResume: with Resume, sessions after the first resume TLS
// sessions, against a server that keeps one tls.Config (and so its ticket
// keys).
func TestBenchResume(t *testing.T) {
	serverTLS, _, err := smtptest.TLSConfigs()
	if err != nil {
		t.Fatal(err)
	}
	addr := scriptedTLS(t, serverTLS, "220 hi\r\n", okScript())
	for _, resume := range []bool{false, true} {
		rep := runBench(t, Options{Server: addr, Security: ImplicitTLS, Total: 3, Resume: resume})
		wantClean(t, rep, 3)
		want := uint64(0)
		if resume {
			want = 2
		}
		if rep.Resumed != want {
			t.Errorf("Resume %v: %d sessions resumed, want %d", resume, rep.Resumed, want)
		}
	}
}

func TestBenchStrictReplies(t *testing.T) {
	ok := okScript()
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name     string
		greeting string
		replies  map[string]string
		opts     Options
		kind     string
		messages uint64
	}{
		{"fine", "220 hi\r\n", ok, Options{}, "", 1},
		{"greeting refused", "554 go away\r\n", ok, Options{}, "greeting", 0},
		{"greeting bare LF", "220 hi\n", ok, Options{}, "protocol", 0},
		{"greeting garbage", "hello\r\n", ok, Options{}, "protocol", 0},
		{"EHLO refused", "220 hi\r\n", with("EHLO", "502 no\r\n"), Options{}, "ehlo", 0},
		{"no STARTTLS", "220 hi\r\n", ok, Options{Security: StartTLS}, "tls", 0},
		{"code changes", "220 hi\r\n", with("EHLO", "250-x\r\n251 y\r\n"), Options{}, "protocol", 0},
		{"MAIL refused", "220 hi\r\n", with("MAIL", "451 later\r\n"), Options{}, "mail", 0},
		{"RCPT 5xx", "220 hi\r\n", with("RCPT", "550 no\r\n"), Options{}, "rcpt_5xx", 0},
		{"DATA 4xx", "220 hi\r\n", with("DATA", "451 no\r\n"), Options{}, "data_4xx", 0},
		{"end of data 5xx", "220 hi\r\n", with(".", "554 no\r\n"), Options{}, "data_5xx", 0},
		{"421 at MAIL", "220 hi\r\n", with("MAIL", "421 closing\r\n"), Options{}, "mail", 0},
		{"closed at DATA", "220 hi\r\n", with("DATA", "CLOSE"), Options{}, "io", 0},
		{"no reply", "220 hi\r\n", with("DATA", ""), Options{Timeout: 200 * time.Millisecond}, "timeout", 0},
		{"extra reply", "220 hi\r\n", with("MAIL", "250 ok\r\n250 ok\r\n"), Options{}, "protocol", 0},
		{"pipelined", "220 hi\r\n", ok, Options{Pipelining: true}, "", 1},
		{"pipelined RCPT refused", "220 hi\r\n", with("RCPT", "550 no\r\n"), Options{Pipelining: true}, "rcpt_5xx", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scripted(t, tc.greeting, tc.replies)
			o := tc.opts
			o.Server, o.Total, o.Conns = addr, 1, 1
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, _ := Run(ctx, o)
			if rep == nil {
				t.Fatal("no report")
			}
			if rep.Messages != tc.messages {
				t.Errorf("%d messages, want %d", rep.Messages, tc.messages)
			}
			if tc.kind == "" {
				if rep.ErrorsTotal != 0 {
					t.Errorf("errors %v %v", rep.Errors, rep.ErrorSamples)
				}
				return
			}
			if rep.Errors[tc.kind] == 0 {
				t.Errorf("errors %v (%v), want %s", rep.Errors, rep.ErrorSamples, tc.kind)
			}
		})
	}
}

func TestBenchSinkOptions(t *testing.T) {
	for _, o := range []SinkOptions{{TempFail: -0.1}, {TempFail: 0.6, PermFail: 0.6}, {Hostname: "not a name"}} {
		if _, err := NewSink(o); err == nil {
			t.Errorf("NewSink(%+v) did not fail", o)
		}
	}
}

func TestBenchHoldServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rep, err := Hold(context.Background(), Options{Server: addr, Idle: 5, Ramp: 2})
	if err == nil || rep == nil || rep.Errors["connect"] < 2*setupFailuresFirst || rep.Aborted == "" || rep.Idle.Open != 0 {
		t.Fatalf("Hold: %v, report %+v", err, rep)
	}
}

// Rate paces the run: the n-th transaction starts n/Rate seconds in, so 20
// messages at 50/s take at least 19/50 s, over any number of sessions.
func TestBenchRate(t *testing.T) {
	_, addr := startSink(t, SinkOptions{})
	rep := runBench(t, Options{Server: addr, Security: StartTLS, Conns: 4, MsgsPerConn: 5, Total: 20, Rate: 50})
	wantClean(t, rep, 20)
	if min := (19 * time.Second / 50).Seconds(); rep.Duration < min {
		t.Errorf("20 messages at 50/s took %.3f s, less than the schedule's %.3f s", rep.Duration, min)
	}
	if _, err := Run(context.Background(), Options{Server: addr, Rate: -1}); err == nil {
		t.Error("a negative rate was accepted")
	}
}
