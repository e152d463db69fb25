package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashDirEnv makes the test binary run as the child of TestCrash;
// crashModeEnv says how the child opens the spool.
const (
	crashDirEnv  = "PETREL_QUEUE_CRASH_DIR"
	crashModeEnv = "PETREL_QUEUE_CRASH_MODE"
)

// TestCrash kills a process that puts and delivers messages with SIGKILL
// at random moments, several times, and checks after each kill that every
// message whose Put returned is there and intact, and that nothing is
// corrupt.
//
// The child prints, each on its own line (a write of under PIPE_BUF bytes
// to a pipe is atomic, and only whole lines are read):
//
//	PUT id sha256 size   after Put returned
//	GO id                before an Update or Complete that may remove id
//	ATT id n             after an Update returned: n attempts recorded in all
//	RM id                after an Update or Complete that removed id returned
//
// It runs twice: with the default options (kills land during Puts, journal
// writes and state changes), and with a checkpoint every 2 ms and bodies
// over 32 KiB streamed to msg/ instead of journaled (kills land during
// checkpoints too, and during both kinds of Put).
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills subprocesses")
	}
	for _, mode := range []string{"default", "checkpoints"} {
		t.Run(mode, func(t *testing.T) { testCrash(t, mode) })
	}
}

func testCrash(t *testing.T, mode string) {
	dir := t.TempDir()
	type putInfo struct {
		sum  string
		size int64
	}
	puts := map[string]putInfo{}
	mayGo := map[string]bool{}
	removed := map[string]bool{}
	attempts := map[string]int{}
	rounds := 6
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		// A data race in the child ends it at once, with another
		// status than SIGKILL's, which fails the round.
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashModeEnv+"="+mode, "GORACE=halt_on_error=1")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			r := bufio.NewReader(out)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return // a partial last line is dropped
				}
				lines <- strings.TrimSuffix(line, "\n")
			}
		}()
		var kill <-chan time.Time
		n := 0
		for line := range lines {
			f := strings.Fields(line)
			switch {
			case len(f) == 1 && f[0] == "READY":
				kill = time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond)
				go func() {
					<-kill
					cmd.Process.Signal(syscall.SIGKILL)
				}()
			case len(f) == 4 && f[0] == "PUT":
				size, _ := strconv.ParseInt(f[3], 10, 64)
				puts[f[1]] = putInfo{f[2], size}
				n++
			case len(f) == 2 && f[0] == "GO":
				mayGo[f[1]] = true
			case len(f) == 2 && f[0] == "RM":
				removed[f[1]] = true
			case len(f) == 3 && f[0] == "ATT":
				a, _ := strconv.Atoi(f[2])
				attempts[f[1]] = max(attempts[f[1]], a)
			default:
				t.Errorf("child: %q", line)
			}
		}
		werr := cmd.Wait()
		if kill == nil {
			t.Fatalf("round %d: child never got ready: %v", round, werr)
		}
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL", round, werr)
		}

		// Recover as the next daemon would, and check.
		segs := len(journalFiles(t, dir))
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: Open after the crash: %v", round, err)
		}
		ctx := context.Background()
		present := map[string]Message{}
		list, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			present[m.ID] = m
		}
		for id, p := range puts {
			m, ok := present[id]
			switch {
			case removed[id] && ok:
				t.Errorf("round %d: %s is back after its removal returned", round, id)
			case !ok && !mayGo[id]:
				t.Errorf("round %d: %s lost: its Put returned and it was never done", round, id)
			case ok:
				checkBody(t, s, m, p.sum, p.size)
				sum := 0
				for _, r := range m.Rcpts {
					sum += r.Attempts
				}
				if sum < attempts[id] {
					t.Errorf("round %d: %s has %d attempts recorded, an Update that returned had made %d", round, id, sum, attempts[id])
				}
			}
		}
		unacked := 0
		for id := range present {
			if _, ok := puts[id]; !ok {
				// A Put that had not returned when the child died:
				// kept, which is allowed (Open checked its size).
				unacked++
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "corrupt")); err == nil {
			t.Errorf("round %d: Open set messages aside as corrupt", round)
		}
		if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
			t.Errorf("round %d: tmp/ not emptied", round)
		}
		files, _ := os.ReadDir(filepath.Join(dir, "msg"))
		if len(files) != 2*len(present) {
			t.Errorf("round %d: %d files in msg/ for %d messages", round, len(files), len(present))
		}
		s.Close()
		t.Logf("round %d: %d Puts acknowledged, %d messages queued, %d of them from Puts that never returned; %d journal segments replayed", round, n, len(present), unacked, segs)
	}
	if len(puts) < 20 {
		t.Errorf("only %d Puts in %d rounds: the test proves little", len(puts), rounds)
	}
}

func checkBody(t *testing.T, s *Spool, m Message, sum string, size int64) {
	t.Helper()
	rc, err := s.Body(context.Background(), m.ID)
	if err != nil {
		t.Errorf("%s: %v", m.ID, err)
		return
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil || n != size || m.Size != size || hex.EncodeToString(h.Sum(nil)) != sum {
		t.Errorf("%s: body of %d bytes (state says %d) differs from the %d bytes put (%v)", m.ID, n, m.Size, size, err)
	}
}

// TestCrashChild is the process TestCrash kills: four goroutines put
// messages (of up to 64 KiB), one delivers them with random outcomes.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	var opts Options
	if os.Getenv(crashModeEnv) == "checkpoints" {
		opts.CheckpointInterval = 2 * time.Millisecond
	}
	s, err := Open(dir, opts)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(3)
	}
	if os.Getenv(crashModeEnv) == "checkpoints" {
		s.inlineMax = 32 << 10 // before any Put
	}
	var mu sync.Mutex
	emit := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		mu.Lock()
		os.Stdout.WriteString(line)
		mu.Unlock()
	}
	ctx := context.Background()
	emit("READY")
	for g := range 4 {
		go func() {
			rnd := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for {
				body := make([]byte, rnd.IntN(64<<10))
				for i := range body {
					body[i] = byte(rnd.Uint32())
				}
				var rcpts []string
				for i := range 1 + rnd.IntN(3) {
					rcpts = append(rcpts, fmt.Sprintf("r%d-%d@example.org", g, i))
				}
				id, err := s.Put(ctx, env("sender@example.org", rcpts...), bytes.NewReader(body))
				if err != nil {
					emit("ERROR put: %v", err)
					continue
				}
				sum := sha256.Sum256(body)
				emit("PUT %s %x %d", id, sum, len(body))
			}
		}()
	}
	for {
		ls, err := s.Lease(ctx, 8)
		if err != nil {
			emit("ERROR lease: %v", err)
			return
		}
		if len(ls) == 0 {
			time.Sleep(time.Millisecond)
		}
		for _, l := range ls {
			var res []Result
			for _, r := range l.Due {
				st := []State{Delivered, Deferred, Failed}[rand.IntN(3)]
				res = append(res, Result{Addr: r.Addr, State: st, Reply: st.String()})
			}
			// May this Update or the Complete after it remove the
			// message? Work it out on a copy.
			m := l.Message
			m.Rcpts = append([]Recipient(nil), m.Rcpts...)
			applyResults(&m, res, time.Now(), DefaultSchedule())
			for i := range m.Rcpts {
				if m.Rcpts[i].State == Failed {
					m.Rcpts[i].Reported = true
				}
			}
			gone := finished(&m)
			if gone {
				emit("GO %s", l.Message.ID)
			}
			_, err := s.Update(ctx, l, res)
			if err != nil {
				emit("ERROR update: %v", err)
				continue
			}
			if cur, err := s.Get(ctx, l.Message.ID); err == nil {
				sum := 0
				for _, r := range cur.Rcpts {
					sum += r.Attempts
				}
				emit("ATT %s %d", l.Message.ID, sum)
			}
			if err := s.Complete(ctx, l); err != nil {
				emit("ERROR complete: %v", err)
				continue
			}
			if gone {
				emit("RM %s", l.Message.ID)
			}
		}
	}
}
