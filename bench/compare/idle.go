package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/bench"
)

// idleSample is the memory of a server holding idle TLS sessions.
type idleSample struct {
	Target       int
	Open         int    // sessions open when the memory was sampled
	Dropped      uint64 // sessions the server dropped while held
	Errors       uint64
	Base, Loaded memory
	RSS, PSS     float64 // bytes per session: (Loaded - Base) / Open
	Ramp         float64 // seconds until all were open
	TLS          string
	Problem      string
}

var openRE = regexp.MustCompile(`open (\d+)/(\d+)`)

// settleTime is waited between the last session open and the sample.
const settleTime = 3 * time.Second

// measureIdle samples the server's memory, opens n idle STARTTLS sessions
// with `petrel bench --idle` (TLS 1.3, the given group, EHLO done), waits
// until all are open, samples again, and ends the sessions.
func measureIdle(ctx context.Context, t tools, srv server, n int, group string) (s idleSample) {
	s.Target = n
	problems, problem := problemList(&s.Problem)
	defer problems.done()

	base, err := srv.Memory()
	if err != nil {
		problem("%v", err)
		return s
	}
	s.Base = base
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"bench", "--server", srv.Addr(), "--idle", strconv.Itoa(n), "--starttls", "--tls-group", group,
		"--duration", "1h", "--progress", "250ms", "--json", "--timeout", "60s"}
	cmd := exec.CommandContext(hctx, t.bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = time.Minute
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		problem("%v", err)
		return s
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		problem("petrel bench --idle: %v", err)
		return s
	}
	var open atomic.Int64
	allOpen := make(chan struct{})
	lastErr := make(chan string, 1)
	waitErr := make(chan error, 1)
	go func() {
		// Read standard error to its end, then Wait (which closes the
		// pipe).
		defer func() { waitErr <- cmd.Wait() }()
		sc := bufio.NewScanner(stderr)
		signalled := false
		last := ""
		for sc.Scan() {
			line := sc.Text()
			if m := openRE.FindStringSubmatch(line); m != nil {
				o, _ := strconv.Atoi(m[1])
				open.Store(int64(o))
				if o >= n && !signalled {
					signalled = true
					close(allOpen)
				}
			} else if strings.TrimSpace(line) != "" {
				last = line
			}
		}
		lastErr <- last
	}()

	rampTimeout := time.Minute + time.Duration(n)*20*time.Millisecond
	select {
	case <-allOpen:
		s.Ramp = time.Since(start).Seconds()
		if err := sleep(ctx, settleTime); err != nil {
			problem("%v", err)
		}
		s.Open = int(open.Load())
		loaded, err := srv.Memory()
		if err != nil {
			problem("%v", err)
		}
		s.Loaded = loaded
	case err := <-waitErr:
		problem("petrel bench --idle %d ended before all sessions were open (%v): %s", n, err, <-lastErr)
		return s
	case <-time.After(rampTimeout):
		problem("only %d of %d idle sessions open after %v", open.Load(), n, rampTimeout)
	case <-ctx.Done():
		problem("%v", ctx.Err())
	}
	cancel() // SIGINT: the bench closes its sessions and prints its report
	<-waitErr
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		problem("petrel bench --idle: no JSON report (%v): %s", err, <-lastErr)
		return s
	}
	if rep.Idle != nil {
		s.Dropped = rep.Idle.Dropped
	}
	s.Errors = rep.ErrorsTotal
	if len(rep.TLS) > 0 {
		s.TLS = rep.TLS[0].String()
	}
	if rep.ErrorsTotal > 0 {
		problem("%d errors: %s", rep.ErrorsTotal, errorSummary(&rep))
	}
	if s.Open > 0 && s.Loaded.Processes > 0 {
		s.RSS = float64(s.Loaded.RSS-s.Base.RSS) / float64(s.Open)
		s.PSS = float64(s.Loaded.PSS-s.Base.PSS) / float64(s.Open)
	} else if len(problems.list) == 0 {
		problem("no sample")
	}
	return s
}
