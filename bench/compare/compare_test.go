package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/testbin"
	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may set.
	line := "4242 (smtpd (x) y) S 1717 4242 4242 0 -1 4194560 300 0 0 0 123 45 6 7 20 0 1 0 100 1000 200 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 4242, ppid: 1717, state: 'S', utime: 123, stime: 45, cutime: 6, cstime: 7}
	if st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "42 nocomm S 1", "42 (x) S 1 2 3"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) did not fail", bad)
		}
	}
	// This process, for real.
	self, err := readStat(os.Getpid())
	if err != nil || self.pid != os.Getpid() || self.ppid != os.Getppid() {
		t.Errorf("readStat(self) = %+v, %v", self, err)
	}
}

func TestParseRollup(t *testing.T) {
	b := []byte("55d0c0a8f000-7ffd4b3fe000 ---p 00000000 00:00 0 [rollup]\nRss:               12340 kB\nPss:                5678 kB\nPss_Dirty:          1000 kB\n")
	rss, pss, err := parseRollup(b)
	if err != nil || rss != 12340<<10 || pss != 5678<<10 {
		t.Errorf("parseRollup = %d, %d, %v", rss, pss, err)
	}
	if _, _, err := parseRollup([]byte("Rss: 1 MB\n")); err == nil {
		t.Error("parseRollup accepted MB")
	}
	m, err := memoryOf([]int{os.Getpid(), 1 << 30}) // the second does not exist
	if err != nil || m.Processes != 1 || m.RSS <= 0 || m.PSS <= 0 {
		t.Errorf("memoryOf(self, none) = %+v, %v", m, err)
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want string
	}{
		{nil, "?"},
		{[]float64{math.NaN()}, "?"},
		{[]float64{3}, "3.00"},
		{[]float64{5, 1, 3}, "3.00 (1.00–5.00)"},
		{[]float64{4, 1, math.NaN(), 2, 8}, "3.00 (1.00–8.00)"},
		{[]float64{1234.4, 1234.4}, "1234"},
	} {
		if got := spreadOf(tc.in).format(sig3); got != tc.want {
			t.Errorf("spreadOf(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for v, want := range map[float64]string{0.45: "0.45×", 11.349: "11.35×", 0.0023: "0.0023×"} {
		if got := times(v); got != want {
			t.Errorf("times(%v) = %q, want %q", v, got, want)
		}
	}
	if got := kib(13066 * 1024); got != "12.8 MiB" {
		t.Errorf("kib(13066 KiB) = %q", got)
	}
	r := ratios([]float64{10, 0, 9}, []float64{5, 1})
	if len(r) != 2 || r[0] != 2 || !math.IsNaN(r[1]) {
		t.Errorf("ratios = %v", r)
	}
}

func TestMatrix(t *testing.T) {
	full := matrix(false, 1)
	if len(full) != 8 {
		t.Fatalf("%d cells, want 8", len(full))
	}
	for _, c := range matrix(false, 0.37) {
		if per := c.Conns * c.PerConn; c.Total < per || c.Total%per != 0 {
			t.Errorf("%v: total %d is not whole sessions of %d", c, c.Total, per)
		}
	}
	if q := matrix(true, 1); len(q) != 2 {
		t.Errorf("quick: %d cells, want 2", len(q))
	}
}

func TestSelectCells(t *testing.T) {
	full := matrix(false, 1)
	got, err := selectCells(full, "1KiB:16x100, 100kib:16x1")
	if err != nil || len(got) != 2 || got[0] != (cell{small, 16, 100, 4800}) || got[1].Size != large || got[1].PerConn != 1 {
		t.Errorf("selectCells = %v, %v", got, err)
	}
	if all, err := selectCells(full, ""); err != nil || len(all) != len(full) {
		t.Errorf("selectCells(\"\") = %d cells, %v", len(all), err)
	}
	if _, err := selectCells(full, "1KiB:2x2"); err == nil || !strings.Contains(err.Error(), "1KiB:16x100") {
		t.Errorf("an unknown cell: %v, want an error listing the cells", err)
	}
}

func TestFlagsPostfix(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "petrel")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"--petrel", bin, "--postfix-set", "in_flow_delay=0", "--postfix-set", "smtpd_tls_loglevel = 1", "--postfix-discard"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := postfixMainCF(o.postfixSet)
	if m["in_flow_delay"] != "0" || m["smtpd_tls_loglevel"] != "1" || m["virtual_mailbox_maps"] != "static:inbox/" || !o.postfixDiscard {
		t.Errorf("main.cf %v, discard %v", m, o.postfixDiscard)
	}
	if d := withDiscard(m); !strings.HasPrefix(d["virtual_transport"], "discard:") || m["virtual_transport"] != "" {
		t.Errorf("withDiscard: %v (and the original %v)", d, m)
	}
	if _, err := parseFlags([]string{"--petrel", bin, "--postfix-set", "novalue"}, io.Discard); err == nil {
		t.Error("--postfix-set without = accepted")
	}
}

// The lines the program reads from other processes' output.
func TestOutputPatterns(t *testing.T) {
	if m := listeningRE.FindStringSubmatch("petrel: mx          on 127.0.0.1:41753 (STARTTLS offered)"); m == nil || m[1] != "127.0.0.1:41753" {
		t.Errorf("listeningRE: %q", m)
	}
	if m := sinkListenRE.FindStringSubmatch("petrel bench sink: listening on 127.0.0.1:3333 (STARTTLS offered, cert.pem); NOT durable"); m == nil || m[1] != "127.0.0.1:3333" {
		t.Errorf("sinkListenRE: %q", m)
	}
	if m := openRE.FindStringSubmatch("bench:   2.5s  open 732/1000  sessions 732  errors 0"); m == nil || m[1] != "732" {
		t.Errorf("openRE: %q", m)
	}
	pf := "Nov 28 16:50:52 mx postfix/smtp[1234]: Anonymous TLS connection established to 127.0.0.1[127.0.0.1]:40001: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256"
	if m := postfixGroupRE.FindStringSubmatch(pf); m == nil || m[1] != "TLSv1.3" || m[3] != "X25519" {
		t.Errorf("postfixGroupRE: %q", m)
	}
	pe := `time=2026-11-28T16:51:00.000Z level=INFO msg="delivery attempt" id=M8 mx=127.0.0.1 tls="TLS 1.3" cipher=TLS_AES_128_GCM_SHA256 group=X25519MLKEM768 cert=unverified rcpt=sink@sink.test result=delivered`
	if m := petrelGroupRE.FindStringSubmatch(pe); m == nil || m[1] != "TLS 1.3" || m[3] != "X25519MLKEM768" {
		t.Errorf("petrelGroupRE: %q", m)
	}
}

func TestPetrelConfig(t *testing.T) {
	c := petrelConfig{dataDir: "/tmp/d", certFile: "/tmp/c.pem", keyFile: "/tmp/k.pem"}
	in := c.toml()
	for _, want := range []string{`domains = ["bench.test"]`, `recipients = "any"`, "max_connections_per_ip = 20000", `mx = "127.0.0.1:0"`} {
		if !strings.Contains(in, want) {
			t.Errorf("configuration has no %s:\n%s", want, in)
		}
	}
	if strings.Contains(in, "smarthost") || strings.Contains(in, "trusted_networks") {
		t.Errorf("inbound configuration relays:\n%s", in)
	}
	c.smarthost = "127.0.0.1:9"
	if out := c.toml(); !strings.Contains(out, `smarthost = "127.0.0.1:9"`) || !strings.Contains(out, `smarthost_tls = "encrypt"`) {
		t.Errorf("outbound configuration:\n%s", out)
	}
}

// emptyCells returns the table cells of a Markdown report that hold "?",
// with their lines.
func emptyCells(report string) []string {
	var bad []string
	for _, line := range strings.Split(report, "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| |") {
			continue
		}
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			if c = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(c), "*")); c == "?" || c == "" {
				bad = append(bad, line)
				break
			}
		}
	}
	return bad
}

// A report of a complete (made-up) run has every cell filled; a missing
// run shows as "?".
func TestReportFilled(t *testing.T) {
	res := fakeResults(1)
	var b strings.Builder
	res.write(&b)
	if bad := emptyCells(b.String()); len(bad) > 0 {
		t.Errorf("empty cells in:\n%s", strings.Join(bad, "\n"))
	}
	for _, want := range []string{"| command | `compare --quick` |", "Petrel / Postfix", "## Targets", "## Method"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report without %q", want)
		}
	}
	delete(res.Load, loadKey{0, vMLKEM})
	b.Reset()
	res.write(&b)
	if bad := emptyCells(b.String()); len(bad) == 0 {
		t.Errorf("a missing run left no empty cell:\n%s", b.String())
	}
}

// fakeResults makes the results of a quick run with every figure filled.
func fakeResults(rounds int) *results {
	res := newResults()
	res.Cmdline, res.Started, res.Elapsed, res.Rounds, res.Done = "compare --quick", time.Now(), time.Minute, rounds, rounds
	res.Cells, res.Idle, res.IdleAlone, res.Outbound = matrix(true, 1), 100, 500, 300
	res.Variants, res.PostfixMainCF = variants(true), postfixMainCF(nil)
	res.Machine = machine{NProc: 2, CPUModel: "cpu", Memory: "1 GiB", Kernel: "Linux", FileSystem: "/tmp", Postfix: "Postfix 3.7", OpenSSL: "OpenSSL 3.0", Go: "go1.26", Petrel: "abc1234"}
	for i := range res.Cells {
		for _, v := range res.Variants {
			for range rounds {
				res.Load[loadKey{i, v}] = append(res.Load[loadKey{i, v}], loadSample{Rate: 100, P50: 1, P99: 2, CPU: 3, Messages: 10, Delivered: 10, Drained: true, TLS: "TLSv1.3 X " + v.Group()})
			}
		}
	}
	idle := idleSample{Target: 100, Open: 100, Base: memory{RSS: 1 << 20, PSS: 1 << 20, Processes: 1}, Loaded: memory{RSS: 4 << 20, PSS: 3 << 20, Processes: 1}, RSS: 30000, PSS: 20000, TLS: "TLSv1.3"}
	for _, v := range res.Variants {
		res.IdleRuns[v] = []idleSample{idle}
	}
	res.AloneRuns = []idleSample{idle}
	out := outSample{N: 300, Delivered: 300, Rate: 100, Seconds: 3, First: 0.1, CPU: 2, Conns: 4, Group: "TLSv1.3 X25519", FillRate: 500}
	res.Out[namePostfix] = []outSample{out}
	res.Out[namePetrel] = []outSample{out}
	return res
}

// TestQuickSmoke runs bench/compare --quick end to end against a real
// Postfix and the working tree's petrel: only with PETREL_COMPARE_SMOKE=1
// (it needs root and Postfix, and takes a minute or two), as
// `sudo PETREL_COMPARE_SMOKE=1 go test -run QuickSmoke -v ./bench/compare`.
func TestQuickSmoke(t *testing.T) {
	if os.Getenv("PETREL_COMPARE_SMOKE") != "1" {
		t.Skip("set PETREL_COMPARE_SMOKE=1 to run bench/compare --quick against Postfix (root, Postfix, a minute or two)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("PETREL_COMPARE_SMOKE=1 needs root: the throw-away Postfix's master runs as root")
	}
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatalf("building cmd/petrel: %v", err)
	}
	out := filepath.Join(t.TempDir(), "report.md")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--quick", "--petrel", bin, "--out", out}, &stdout, &stderr)
	t.Logf("progress:\n%s", stderr.String())
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	report, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(report) {
		t.Error("the report on standard output differs from the file")
	}
	if bad := emptyCells(string(report)); len(bad) > 0 {
		t.Errorf("report cells without a value:\n%s\n\nreport:\n%s", strings.Join(bad, "\n"), report)
	}
	for _, want := range []string{"| rounds | 1 of 1 |", "X25519MLKEM768", "TLSv1.3"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report without %q:\n%s", want, report)
		}
	}
	t.Logf("report:\n%s", report)
}

// spreadSubdirs sets the top-directory flag where the file system has it
// (ext4 here); elsewhere it says why not.
func TestSpreadSubdirs(t *testing.T) {
	dir := t.TempDir()
	if err := spreadSubdirs(dir); err != nil {
		t.Skipf("%v (not ext4?)", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopDirFlag == 0 {
		t.Errorf("flags %#x, %v: want the top-directory flag set", flags, err)
	}
}
