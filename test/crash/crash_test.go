// Package crash kills `petrel serve` with SIGKILL while it is accepting
// mail and checks that every message it acknowledged is delivered.
package crash

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
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

const (
	rounds       = 5
	senders      = 4
	readyTimeout = 10 * time.Second
	drainTimeout = 20 * time.Second
	stopGrace    = 10 * time.Second
	bodyEnd      = "END-OF-BODY"
)

var petrelBin string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, "crash", &petrelBin)) }

// syncBuffer is a bytes.Buffer safe for concurrent use.
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
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// start runs the daemon on dir and addr and waits until addr accepts TCP.
func start(t *testing.T, dir, addr string) *daemon {
	t.Helper()
	d := &daemon{out: &syncBuffer{}, exited: make(chan struct{})}
	cfg := filepath.Join(dir, "petrel.toml")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("[local]\nmailboxes = [\"u\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(petrelBin, "serve",
		"--config", cfg,
		"--data", dir,
		"--hostname", "mx.test",
		"--domain", "crash.test",
		"--mx", addr,
		"--submission", "",
		"--submissions", "",
	)
	d.cmd.Stdout = d.out
	d.cmd.Stderr = d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting petrel serve: %v", err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.kill() })
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("petrel serve exited before accepting on %s:\n%s", addr, d.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("petrel serve did not accept on %s within %v:\n%s", addr, readyTimeout, d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// stop sends SIGTERM and waits for exit, falling back to SIGKILL.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopGrace):
		t.Errorf("petrel serve did not stop on SIGTERM within %v:\n%s", stopGrace, d.out)
		d.kill()
	}
}

func messageID(round, g, n int) string {
	return fmt.Sprintf("<crash-%d-%d-%d@test>", round, g, n)
}

// send delivers one message over plaintext SMTP; a nil error means the
// final DATA reply was 250.
func send(addr, id string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := smtp.NewClient(conn, "mx.test")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@client.test"); err != nil {
		return err
	}
	if err := c.Rcpt("u@crash.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	msg := "From: sender@client.test\r\n" +
		"To: u@crash.test\r\n" +
		"Subject: crash test\r\n" +
		"Message-ID: " + id + "\r\n" +
		"\r\n" +
		"A small body for " + id + ".\r\n" +
		bodyEnd + " " + id + "\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	_ = c.Quit()
	return nil
}

// load runs senders goroutines until stop is closed and returns the
// Message-IDs that were acknowledged with 250.
func load(addr string, round int, stop <-chan struct{}) (acked []string, attempts int) {
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := messageID(round, g, n)
				err := send(addr, id)
				mu.Lock()
				attempts++
				if err == nil {
					acked = append(acked, id)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return acked, attempts
}

func queuedCount(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "queue", "msg", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

var idRE = regexp.MustCompile(`(?mi)^Message-ID:[ \t]*(<crash-[^>]*>)`)

func TestCrashNoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test kills and restarts the daemon; skipped with -short")
	}
	dir := filepath.Join(t.TempDir(), "data")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var acked []string
	for round := 0; round < rounds; round++ {
		d := start(t, dir, addr)
		stop := make(chan struct{})
		type result struct {
			acked    []string
			attempts int
		}
		done := make(chan result, 1)
		go func() {
			a, n := load(addr, round, stop)
			done <- result{a, n}
		}()
		time.Sleep(time.Duration(200+rand.IntN(601)) * time.Millisecond)
		d.kill()
		close(stop)
		r := <-done
		t.Logf("round %d: %d attempts, %d acked before SIGKILL, %d queued", round, r.attempts, len(r.acked), queuedCount(t, dir))
		acked = append(acked, r.acked...)
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged in any round")
	}

	// Final start without load: the queue must drain.
	d := start(t, dir, addr)
	deadline := time.Now().Add(drainTimeout)
	for queuedCount(t, dir) > 0 {
		if time.Now().After(deadline) {
			d.stop(t)
			t.Fatalf("queue not drained within %v: %d messages left\n%s", drainTimeout, queuedCount(t, dir), d.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.stop(t)

	newDir := filepath.Join(dir, "maildir", "u", "new")
	entries, err := os.ReadDir(newDir)
	if err != nil {
		t.Fatalf("reading maildir: %v", err)
	}
	counts := map[string]int{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(newDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m := idRE.FindSubmatch(b)
		if m == nil {
			t.Errorf("maildir file %s has no crash Message-ID:\n%s", e.Name(), b)
			continue
		}
		id := string(m[1])
		counts[id]++
		trimmed := strings.TrimRight(string(b), "\r\n")
		last := trimmed[strings.LastIndexAny(trimmed, "\r\n")+1:]
		if last != bodyEnd+" "+id {
			t.Errorf("maildir file %s (%s) is truncated: last line %q", e.Name(), id, last)
		}
	}

	once, twice := 0, 0
	for _, id := range acked {
		switch n := counts[id]; {
		case n == 1:
			once++
		case n == 2:
			twice++
		case n == 0:
			t.Errorf("acknowledged message %s was lost", id)
		default:
			t.Errorf("acknowledged message %s delivered %d times", id, n)
		}
	}
	t.Logf("acked %d, delivered once %d, delivered twice %d (maildir files %d, distinct ids %d)",
		len(acked), once, twice, len(entries), len(counts))
}
