package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/bench"
)

// benchBuffer is a bytes.Buffer that a command running in a goroutine can
// write while the test reads.
type benchBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *benchBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *benchBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runBenchCmd(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"bench"}, args...), &out, &errb)
	r := cmdResult{code, out.String(), errb.String()}
	t.Logf("petrel bench %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// benchSinkCmd runs `petrel bench sink` in a goroutine and returns the
// address it listens on and a function that stops it (as Ctrl-C does) and
// returns its exit status and output.
func benchSinkCmd(t *testing.T, args ...string) (addr string, stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errb := &benchBuffer{}, &benchBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"bench", "sink", "--listen", "127.0.0.1:0"}, args...), out, errb)
	}()
	re := regexp.MustCompile(`listening on (\S+) `)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("petrel bench sink exited with %d: %s%s", code, out, errb)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("petrel bench sink did not start: %s%s", out, errb)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var once sync.Once
	var code int
	stop = func() (int, string) {
		once.Do(func() {
			cancel()
			code = <-done
		})
		return code, out.String() + errb.String()
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func TestBenchCLIUsage(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--server HOST:PORT is required"},
		{[]string{"--server", "localhost"}, "HOST:PORT"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--implicit-tls"}, "exclude each other"},
		{[]string{"--server", "127.0.0.1:1", "--total", "5", "--duration", "1s"}, "--total and --duration"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--tls-group", "X448"}, "unknown TLS group"},
		{[]string{"--server", "127.0.0.1:1", "--tls-group", "X25519"}, "needs TLS"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--tls-min", "1.1"}, "--tls-min"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--tls-max", "1.2", "--tls-group", "X25519MLKEM768"}, "needs TLS 1.3"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--insecure", "--servername", "mx"}, "--insecure excludes"},
		{[]string{"--server", "127.0.0.1:1", "--starttls", "--ca", ca}, "--ca"},
		{[]string{"--server", "127.0.0.1:1", "--idle", "5", "--total", "3"}, "--total does not go with --idle"},
		{[]string{"--server", "127.0.0.1:1", "--ramp", "5"}, "--ramp goes with --idle"},
		{[]string{"--server", "127.0.0.1:1", "--size", "10"}, "smaller than the message header"},
		{[]string{"--server", "127.0.0.1:1", "--conns", "0"}, "at least 1"},
		{[]string{"--server", "127.0.0.1:1", "--to", "user%s@x"}, "%d"},
		{[]string{"--server", "127.0.0.1:1", "--bind", "localhost"}, "--bind"},
		{[]string{"--server", "127.0.0.1:1", "--bogus"}, "flag provided but not defined"},
		{[]string{"--server", "127.0.0.1:1", "extra"}, "unexpected argument"},
		{[]string{"sink", "--tempfail", "2"}, "fractions"},
		{[]string{"sink", "--cert", "x.pem"}, "--cert and --key go together"},
		{[]string{"sink", "--cert", ca, "--key", ca}, "cannot load"},
		{[]string{"sink", "--progress=fast"}, "duration"},
		{[]string{"sink", "extra"}, "unexpected argument"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runBenchCmd(t, tc.args...)
			if r.code != benchUsage {
				t.Errorf("exit %d, want %d", r.code, benchUsage)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if lines := strings.Count(r.stderr, "\n"); lines != 1 || !strings.HasPrefix(r.stderr, "petrel bench") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q: want one line with %q", r.stderr, tc.want)
			}
		})
	}
}

func TestBenchCLIFileLimit(t *testing.T) {
	limit, err := bench.RaiseFileLimit()
	if err != nil || limit == 0 || limit > 1<<24 {
		t.Skipf("open-file limit %d (%v): cannot ask for more", limit, err)
	}
	r := runBenchCmd(t, "--server", "127.0.0.1:1", "--starttls", "--idle", strconv.FormatUint(limit+1, 10))
	r.want(t, benchUsage, "open files", "ulimit -Hn")
}

func TestBenchCLIHelp(t *testing.T) {
	r := runBenchCmd(t, "-h")
	r.want(t, 0, "Usage: petrel bench", "-tls-group", "-idle", "Exit status")
	r = runBenchCmd(t, "sink", "-h")
	r.want(t, 0, "Usage: petrel bench sink", "NOT durable", "--tempfail")
}

// TestBenchCLIAgainstSink runs both commands: the sink refuses some
// recipients, the bench reports them in JSON and exits 1, and the sink's
// counts at exit agree.
func TestBenchCLIAgainstSink(t *testing.T) {
	addr, stop := benchSinkCmd(t, "--tempfail", "0.1", "--permfail", "0.05", "--seed", "9")
	r := runBenchCmd(t, "--server", addr, "--starttls", "--conns", "2", "--msgs-per-conn", "5", "--total", "40",
		"--pipelining", "--rcpts", "2", "--to", "user%d@localhost", "--json", "--progress", "0")
	var want4, want5 uint64
	for n := range uint64(80) {
		switch bench.Verdict(9, n, 0.1, 0.05) {
		case 4:
			want4++
		case 5:
			want5++
		}
	}
	if want4+want5 == 0 {
		t.Fatal("the seed refuses nothing: choose another")
	}
	if r.code != benchFailed || !strings.Contains(r.stderr, "errors") {
		t.Errorf("exit %d, stderr %q: want 1 and a line about the errors", r.code, r.stderr)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r.stdout)
	}
	for _, field := range []string{"messages", "messages_failed", "duration_s", "messages_per_s", "sessions", "sessions_per_s",
		"latency", "errors", "errors_total", "tls", "certificate", "bytes"} {
		if _, ok := rep[field]; !ok {
			t.Errorf("JSON lacks %q", field)
		}
	}
	lat := rep["latency"].(map[string]any)
	for _, l := range []string{"final_reply", "message", "session_setup"} {
		s, _ := lat[l].(map[string]any)
		for _, q := range []string{"p50_ms", "p90_ms", "p99_ms", "max_ms"} {
			if _, ok := s[q]; !ok {
				t.Errorf("JSON latency.%s lacks %s", l, q)
			}
		}
	}
	errs := rep["errors"].(map[string]any)
	if errs["rcpt_4xx"] != float64(want4) || errs["rcpt_5xx"] != float64(want5) {
		t.Errorf("errors %v, want rcpt_4xx %d, rcpt_5xx %d", errs, want4, want5)
	}
	if tls := rep["tls"].([]any); len(tls) != 1 || tls[0].(map[string]any)["group"] != "X25519MLKEM768" {
		t.Errorf("tls %v", tls)
	}
	messages := rep["messages"].(float64)
	code, out := stop()
	if code != 0 {
		t.Errorf("the sink exited %d", code)
	}
	wantLine := "sink: " + strconv.Itoa(int(messages)) + " messages, " + strconv.Itoa(int(messages)*1024) + " octets"
	if !strings.Contains(out, wantLine) || !strings.Contains(out, strconv.FormatUint(want4, 10)+" refused 451, "+strconv.FormatUint(want5, 10)+" refused 550") {
		t.Errorf("sink output %q lacks %q and the refusals", out, wantLine)
	}
}

func TestBenchCLIText(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sinkArgs  []string
		benchArgs []string
		want      []string
	}{
		{"plaintext", nil, []string{"--total", "10", "--conns", "2"},
			[]string{"10 accepted, 0 failed", "plaintext", "errors:     none"}},
		{"starttls P-256 bdat", nil, []string{"--starttls", "--tls-group", "P-256", "--bdat", "--pipelining", "--total", "6", "--msgs-per-conn", "3"},
			[]string{"6 accepted", "TLSv1.3 TLS_AES_128_GCM_SHA256 P-256 (2 sessions)", "PIPELINING+BDAT", "final reply", "whole message"}},
		{"implicit tls 1.2", []string{"--implicit-tls"}, []string{"--implicit-tls", "--tls-max", "1.2", "--total", "3", "--size", "5000"},
			[]string{"3 accepted", "TLSv1.2", "5000 octets"}},
		{"idle", nil, []string{"--starttls", "--idle", "5", "--duration", "500ms"},
			[]string{"5 of 5 sessions open at the end (peak 5), 0 dropped", "TLSv1.3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, stop := benchSinkCmd(t, tc.sinkArgs...)
			r := runBenchCmd(t, append([]string{"--server", addr, "--progress", "0"}, tc.benchArgs...)...)
			r.want(t, 0, tc.want...)
			if code, out := stop(); code != 0 || !strings.Contains(out, "NOT durable") {
				t.Errorf("sink: exit %d, output %q", code, out)
			}
		})
	}
}

func TestBenchCLIProgress(t *testing.T) {
	addr, _ := benchSinkCmd(t, "--progress=50ms")
	r := runBenchCmd(t, "--server", addr, "--duration", "300ms", "--progress", "50ms", "--conns", "2", "--msgs-per-conn", "10")
	r.want(t, 0, "bench: ", "messages ", "/s)")
}

func TestBenchCLIServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := runBenchCmd(t, "--server", addr, "--progress", "0")
	r.want(t, benchFailed, "connect", "gave up", "check --server")
}
