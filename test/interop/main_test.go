package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/testbin"
)

// Bounds on everything the tests wait for.
const (
	readyTimeout    = 10 * time.Second
	clientTimeout   = 60 * time.Second
	deliveryTimeout = 10 * time.Second
	stopGrace       = 5 * time.Second
)

// petrelBin is the daemon built by TestMain.
var petrelBin string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, "interop", &petrelBin)) }

// requireTool returns the path of a client program, looking in PATH and
// then in the sbin directories (root's PATH may lack them). When it is
// missing the test is skipped, or fails if PETREL_INTEROP_REQUIRED=1.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed: run test/interop/install-deps.sh (as root) to install the interop clients", name)
	if os.Getenv("PETREL_INTEROP_REQUIRED") == "1" {
		t.Fatal(msg + " (PETREL_INTEROP_REQUIRED=1)")
	}
	t.Skip(msg)
	return ""
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemon is one running `petrel serve`.
type daemon struct {
	Dir                     string // --data
	MX, Submission, Submits string // listener addresses, 127.0.0.1:port
	cmd                     *exec.Cmd
	stderr                  *syncBuffer
	exited                  chan struct{}
	waitErr                 error
}

// CertFile is the self-signed certificate the daemon made on first start.
// The submission user of every daemon (AUTH PLAIN/LOGIN, inside TLS).
const (
	SubmitUser     = "submitter@localhost"
	SubmitPassword = "interop password 1"
)

func (d *daemon) CertFile() string { return filepath.Join(d.Dir, "tls", "cert.pem") }

// Port returns the port of one of the daemon's addresses.
func Port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startDaemon starts a fresh daemon with a new data directory on free
// ports, waits until its listeners accept connections and its certificate
// exists, and stops it when the test ends (SIGTERM, then SIGKILL after 5s),
// logging its stderr if the test failed. A start that fails because a port
// was taken in the meantime is retried with new ports.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		d, exited, err := tryStartDaemon(t)
		if err == nil {
			return d
		}
		last = err
		if !exited {
			break
		}
		t.Logf("daemon start attempt %d failed: %v", attempt+1, err)
	}
	t.Fatalf("petrel serve did not start: %v", last)
	return nil
}

// tryStartDaemon starts a daemon and waits until it is ready. exited
// reports whether a failed daemon exited by itself (say, because a port was
// taken), which is worth another try.
func tryStartDaemon(t *testing.T) (d *daemon, exited bool, err error) {
	d = &daemon{
		Dir:        filepath.Join(t.TempDir(), "data"),
		MX:         freePort(t),
		Submission: freePort(t),
		Submits:    freePort(t),
		stderr:     &syncBuffer{},
		exited:     make(chan struct{}),
	}
	// Interop tests are about transport: every local part exists. One
	// user, for the submission listeners, which require AUTH (RFC 6409).
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return nil, false, err
	}
	cfg := filepath.Join(d.Dir, "petrel.toml")
	if err := os.WriteFile(cfg, []byte("[local]\nrecipients = \"any\"\n"), 0o600); err != nil {
		return nil, false, err
	}
	add := exec.Command(petrelBin, "user", "add", SubmitUser, "--data", d.Dir)
	add.Stdin = strings.NewReader(SubmitPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		return nil, false, fmt.Errorf("petrel user add: %v: %s", err, out)
	}
	d.cmd = exec.Command(petrelBin, "serve",
		"--config", cfg,
		"--data", d.Dir,
		"--hostname", "localhost",
		"--domain", "localhost",
		"--mx", d.MX,
		"--submission", d.Submission,
		"--submissions", d.Submits,
	)
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, false, err
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("petrel serve (--data %s) stderr:\n%s", d.Dir, d.stderr.String())
		}
	})

	deadline := time.Now().Add(readyTimeout)
	pending := []string{d.MX, d.Submission, d.Submits}
	for len(pending) > 0 || !fileExists(d.CertFile()) {
		select {
		case <-d.exited:
			return nil, true, fmt.Errorf("exited before ready (%v); stderr:\n%s", d.waitErr, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			d.stop(t)
			return nil, false, fmt.Errorf("not ready after %v: no listener on %v or no %s; stderr:\n%s",
				readyTimeout, pending, d.CertFile(), d.stderr.String())
		}
		if len(pending) > 0 {
			c, err := net.DialTimeout("tcp", pending[0], 200*time.Millisecond)
			if err == nil {
				// Say goodbye properly, so the probe leaves a clean
				// line in the daemon's log rather than an error.
				quit(c, pending[0] == d.Submits)
				pending = pending[1:]
				continue
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d, false, nil
}

// quit reads the greeting on c (after a TLS handshake if implicitTLS),
// sends QUIT, reads the reply and closes c, bounded by 5s; errors are
// ignored: the port accepted a connection, which is what readiness means.
func quit(c net.Conn, implicitTLS bool) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if implicitTLS {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // a readiness probe only
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
		return
	}
	if _, err := io.WriteString(c, "QUIT\r\n"); err != nil {
		return
	}
	_, _ = r.ReadString('\n')
}

// stop sends SIGTERM and, after stopGrace, SIGKILL.
func (d *daemon) stop(t *testing.T) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return
	case <-time.After(stopGrace):
	}
	t.Errorf("petrel serve did not exit within %v of SIGTERM; killing it", stopGrace)
	_ = d.cmd.Process.Kill()
	<-d.exited
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Mailbox is the new/ directory of a local part.
func (d *daemon) Mailbox(local string) string {
	return filepath.Join(d.Dir, "maildir", strings.ToLower(local), "new")
}

// waitMessage waits up to timeout for a file in the new/ directory of
// local, checks that exactly one is there (after a short settle time, so a
// duplicate delivery is seen) and returns its content.
func (d *daemon) waitMessage(t *testing.T, local string, timeout time.Duration) []byte {
	t.Helper()
	dir := d.Mailbox(local)
	deadline := time.Now().Add(timeout)
	for {
		names := listFiles(dir)
		if len(names) > 0 {
			time.Sleep(300 * time.Millisecond)
			names = listFiles(dir)
			if len(names) != 1 {
				t.Fatalf("want exactly one message in %s, found %d: %v", dir, len(names), names)
			}
			b, err := os.ReadFile(filepath.Join(dir, names[0]))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message in %s after %v; files under the data directory:\n%s", dir, timeout, tree(d.Dir))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func listFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names
}

// tree lists the files under root, for failure messages.
func tree(root string) string {
	var b strings.Builder
	_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "  %s\n", p)
		}
		return nil
	})
	return b.String()
}

// splitHeaderField splits off the first header field of b, with its folded
// continuation lines (RFC 5322 §2.2.3): the field ends at the first line
// that does not start with a space or a tab. Lines end in LF (CRLF is
// accepted as the same).
func splitHeaderField(b []byte) (field, rest []byte, ok bool) {
	i := 0
	for {
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return nil, nil, false
		}
		i += nl + 1
		if i >= len(b) || (b[i] != ' ' && b[i] != '\t') {
			return b[:i], b[i:], true
		}
	}
}

// reWithESMTPS matches the RFC 3848 / RFC 6531 protocol types of a TLS
// session in a Received header field.
var reWithESMTPS = regexp.MustCompile(`\bwith (ESMTPSA?|UTF8SMTPSA?)\b`)

// checkDelivered checks a delivered Maildir file: Petrel's Received header
// field first, showing a TLS session, then exactly want. It returns
// Petrel's Received field.
func checkDelivered(t *testing.T, got, want []byte) string {
	t.Helper()
	if !bytes.HasPrefix(got, []byte("Received: from ")) {
		t.Fatalf("delivered file does not start with Petrel's \"Received: from \":\n%s", quoteHead(got))
	}
	field, rest, ok := splitHeaderField(got)
	if !ok {
		t.Fatalf("delivered file has no complete first header field:\n%s", quoteHead(got))
	}
	recv := string(field)
	if !reWithESMTPS.MatchString(recv) {
		t.Errorf("Petrel's Received field does not say \"with ESMTPS\" (RFC 3848) for a TLS session:\n%s", recv)
	}
	if !strings.Contains(recv, "TLSv1.") {
		t.Errorf("Petrel's Received field does not name the TLS version (TLSv1.x):\n%s", recv)
	}
	if !bytes.Equal(rest, want) {
		t.Errorf("message after Petrel's Received field differs from what the client sent\n%s", diffBytes(rest, want))
	}
	return recv
}

// quoteHead shows the start of b with control characters visible.
func quoteHead(b []byte) string {
	if len(b) > 2000 {
		b = b[:2000]
	}
	return fmt.Sprintf("%q", b)
}

// diffBytes describes where got and want first differ, with context.
func diffBytes(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-80)
	ctx := func(b []byte) string {
		hi := min(len(b), i+80)
		if lo > len(b) {
			return `""`
		}
		return fmt.Sprintf("%q", b[lo:hi])
	}
	return fmt.Sprintf("got %d bytes, want %d; first difference at offset %d\n  got:  …%s…\n  want: …%s…\nfull got:\n%q",
		len(got), len(want), i, ctx(got), ctx(want), got)
}

// testMessage is a message with CRLF line endings, as it is to be stored:
// unique Message-ID, 8-bit UTF-8 text (RFC 6152), lines starting with a dot
// (including one that is a lone dot, which the client must dot-stuff, RFC
// 5321 §4.5.2), and a 900-octet line (under the 998 of RFC 5322 §2.1.1).
func testMessage(t *testing.T, to string) []byte {
	t.Helper()
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	msgID := fmt.Sprintf("<%s.%d.%s@interop.petrel.example>", name, time.Now().UnixNano(), hex.EncodeToString(rnd[:]))
	var long strings.Builder
	for long.Len() < 900 {
		long.WriteString("0123456789abcdefghijklmnopqrstuvwxyz")
	}
	lines := []string{
		"From: Interop Sender <a@example.org>",
		"To: <" + to + ">",
		"Subject: Petrel interop test " + t.Name(),
		"Date: " + time.Now().UTC().Format(time.RFC1123Z),
		"Message-ID: " + msgID,
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"",
		"Hello from " + t.Name() + ".",
		".This line starts with a dot.",
		"..This one with two dots.",
		".",
		"The line above is a lone dot; the next one is long.",
		long.String()[:900],
		"8-bit UTF-8: Grüße aus Köln, ça marche, 日本語のテキスト, ✓ — Ελληνικά.",
		"",
		"Last line.",
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// writeFile writes b to a new file in the test's temp directory.
func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runClient runs a client program with a bounded time, stdin from stdin
// (may be nil), and returns its combined output. The output is logged if
// the test fails later.
func runClient(t *testing.T, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %v)", err, clientTimeout)
	}
	s := out.String()
	shown := make([]string, len(args))
	for i, a := range args {
		if len(a) > 200 || strings.Contains(a, "\n") {
			a = "<script>"
		}
		shown[i] = a
	}
	label := filepath.Base(name) + " " + strings.Join(shown, " ")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client output of %s (err %v):\n%s", label, err, s)
		}
	})
	return s, err
}
