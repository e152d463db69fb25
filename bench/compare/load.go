package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/bench"
	"github.com/petrel-mta/petrel/internal/safeio"
)

// cell is one load of the matrix: Conns sessions at once, PerConn
// messages each, Total messages of Size octets, over STARTTLS with
// PIPELINING.
type cell struct {
	Size, Conns, PerConn, Total int
}

func (c cell) String() string {
	return fmt.Sprintf("%s, %d×%d", sizeName(c.Size), c.Conns, c.PerConn)
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// Message sizes and session shapes of the matrix.
const (
	small = 1024
	large = 100 * 1024
)

// matrix returns the cells, their totals multiplied by scale (rounded to
// whole sessions). On the 2-core machine the benchmark was written on
// (2026-11), the totals gave each server 5 to 15 seconds per cell, and
// at least about 1.5 s to the fastest (Petrel at 1×1); --scale adapts
// them to another machine.
func matrix(quick bool, scale float64) []cell {
	cells := []cell{
		{small, 1, 1, 300},
		{small, 16, 1, 2400},
		{small, 16, 100, 4800},
		{small, 64, 10, 3840},
		{large, 1, 1, 300},
		{large, 16, 1, 1600},
		{large, 16, 100, 3200},
		{large, 64, 10, 3840},
	}
	if quick {
		cells = []cell{{small, 16, 1, 160}, {small, 16, 100, 1600}}
	}
	for i := range cells {
		c := &cells[i]
		per := c.Conns * c.PerConn
		c.Total = max(per, int(math.Round(float64(c.Total)*scale/float64(per)))*per)
	}
	return cells
}

// selectCells keeps the cells of the matrix that spec names: a
// comma-separated list of SIZE:CxM, e.g. "1KiB:16x100,100KiB:16x1"; ""
// keeps them all.
func selectCells(cells []cell, spec string) ([]cell, error) {
	if spec == "" {
		return cells, nil
	}
	var out []cell
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		found := false
		for _, c := range cells {
			if strings.EqualFold(item, c.spec()) {
				out = append(out, c)
				found = true
			}
		}
		if !found {
			var names []string
			for _, c := range cells {
				names = append(names, c.spec())
			}
			return nil, fmt.Errorf("--cells: no cell %q in the matrix; choose from %s", item, strings.Join(names, ","))
		}
	}
	return out, nil
}

// spec is the cell's name for --cells: 1KiB:16x100.
func (c cell) spec() string {
	return fmt.Sprintf("%s:%dx%d", strings.ReplaceAll(sizeName(c.Size), " ", ""), c.Conns, c.PerConn)
}

// variant is a server and the key-exchange group its load offers.
type variant int

const (
	vPostfix        variant = iota // Postfix, X25519, delivering to a Maildir
	vPetrel                        // Petrel, X25519
	vMLKEM                         // Petrel, X25519MLKEM768
	vPostfixDiscard                // Postfix, X25519, queueing then discarding (--postfix-discard)
)

const (
	groupX25519 = "X25519"
	groupMLKEM  = "X25519MLKEM768"
)

// variants, in the order they run in each cell: Postfix and Petrel with
// X25519 (the comparison: Debian 12's Postfix and OpenSSL 3.0 have no
// ML-KEM), then Petrel with X25519MLKEM768, then (discard) Postfix
// doing less than Petrel: queueing each message durably, then discarding
// it instead of writing it to a Maildir.
func variants(discard bool) []variant {
	if discard {
		return []variant{vPostfix, vPetrel, vMLKEM, vPostfixDiscard}
	}
	return []variant{vPostfix, vPetrel, vMLKEM}
}

// Server is the server's name.
func (v variant) Server() string {
	switch v {
	case vPostfix:
		return namePostfix
	case vPostfixDiscard:
		return namePostfixDiscard
	}
	return namePetrel
}

// Group is the only key-exchange group the load generator offers.
func (v variant) Group() string {
	if v == vMLKEM {
		return groupMLKEM
	}
	return groupX25519
}

func (v variant) String() string { return v.Server() + " " + v.Group() }

// loadSample is one cell run against one server.
type loadSample struct {
	Rate     float64 // messages/s, from the load generator
	P50, P99 float64 // final-reply latency, ms
	CPU      float64 // server CPU seconds per 1000 messages, until its queue drained
	Drain    float64 // seconds from the end of the load to an empty queue
	Messages uint64
	Failed   uint64
	Errors   uint64
	TLS      string // the parameters most sessions negotiated
	// Delivered is how many messages were in the Maildirs when the CPU
	// time was read; Drained, whether the queue was empty then (false:
	// the drain timed out, and CPU covers receiving every message but
	// delivering only Delivered).
	Delivered int
	Drained   bool
	Problem   string // why the sample is not to be trusted; "" when fine
}

// tools runs the load generator and the sink: `petrel bench` and `petrel
// bench sink` of a petrel binary.
type tools struct {
	bin string
}

// run runs `petrel bench ARGS --json --progress 0` and returns its report.
// A report with errors is returned without error (the caller looks at
// Errors); bad usage, or no report, is an error.
func (t tools) run(ctx context.Context, args ...string) (*bench.Report, error) {
	args = append(append([]string{"bench"}, args...), "--json", "--progress", "0")
	cmd := exec.CommandContext(ctx, t.bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return nil, fmt.Errorf("petrel %s: %v: %s", strings.Join(args, " "), err, lastOf(errb.String()))
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("petrel %s: no JSON report (%v): %s", strings.Join(args, " "), err, lastOf(errb.String()))
	}
	return &rep, nil
}

// lastOf returns the last non-empty line of s.
func lastOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// loadArgs are the load generator's flags for a cell.
func loadArgs(addr string, c cell, group, to string) []string {
	return []string{
		"--server", addr, "--starttls", "--tls-group", group, "--pipelining",
		"--conns", strconv.Itoa(c.Conns), "--msgs-per-conn", strconv.Itoa(c.PerConn),
		"--total", strconv.Itoa(c.Total), "--size", strconv.Itoa(c.Size),
		"--from", senderAddr, "--to", to, "--timeout", "60s",
	}
}

// runLoad runs a cell against a server: CPU time before, the load, the
// wait until every accepted message is delivered (the queue empty and as
// many files in the Maildirs) or drainTimeout, CPU time after; then the
// delivered files are removed. When the queue did not drain, the caller
// must empty it before the next run (Drained false).
func runLoad(ctx context.Context, t tools, srv server, c cell, group string, drainTimeout time.Duration) (s loadSample) {
	problems, problem := problemList(&s.Problem)
	defer problems.done()

	cpu0, err := srv.CPU()
	if err != nil {
		problem("%v", err)
		return s
	}
	rep, err := t.run(ctx, loadArgs(srv.Addr(), c, group, rcptAddr)...)
	if err != nil {
		problem("%v", err)
		return s
	}
	end := time.Now()
	s.Rate, s.Messages, s.Failed, s.Errors = rep.MessagesPerSec, rep.Messages, rep.Failed, rep.ErrorsTotal
	if rep.Latency != nil {
		s.P50, s.P99 = rep.Latency.Final.P50Ms, rep.Latency.Final.P99Ms
	}
	if len(rep.TLS) > 0 {
		s.TLS = rep.TLS[0].String()
	}
	if rep.ErrorsTotal > 0 || rep.Failed > 0 {
		problem("%d messages failed, %d errors: %s", rep.Failed, rep.ErrorsTotal, errorSummary(rep))
	}
	if rep.QuickAcked != rep.Sessions {
		problem("%d of %d sessions re-armed TCP_QUICKACK around the handshake: the figures may hold a delayed-ACK stall (is --tools a petrel from before issue 10?)", rep.QuickAcked, rep.Sessions)
	}
	if rep.Messages == 0 {
		problem("no message accepted")
		return s
	}
	err = waitDrained(ctx, srv, int(rep.Messages), drainTimeout)
	s.Drained = err == nil
	if err != nil {
		problem("%v", err)
	}
	s.Drain = time.Since(end).Seconds()
	cpu1, err := srv.CPU()
	if err != nil {
		problem("%v", err)
		return s
	}
	s.CPU = (cpu1 - cpu0).Seconds() / float64(rep.Messages) * 1000
	if srv.Maildir() == "" {
		if s.Drained {
			s.Delivered = int(rep.Messages) // discarded
		}
	} else if files, err := maildirFiles(srv.Maildir()); err == nil {
		s.Delivered = len(files)
	}
	if !s.Drained {
		problem("the CPU time covers receiving all %d messages but delivering only %d", rep.Messages, s.Delivered)
	}
	if err := clearMaildir(srv); err != nil {
		problem("%v", err)
	}
	return s
}

// problemLog collects the problems of a run for its sample's Problem.
type problemLog struct {
	dst  *string
	list []string
}

// problemList returns a problemLog writing to *dst, and its add method.
// Defer its done.
func problemList(dst *string) (*problemLog, func(format string, args ...any)) {
	p := &problemLog{dst: dst}
	return p, p.add
}

func (p *problemLog) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// done writes the problems noted, joined, to the sample.
func (p *problemLog) done() { *p.dst = strings.Join(p.list, "; ") }

func errorSummary(rep *bench.Report) string {
	var parts []string
	for k, n := range rep.Errors {
		parts = append(parts, fmt.Sprintf("%s %d (%s)", k, n, rep.ErrorSamples[k]))
	}
	if rep.Aborted != "" {
		parts = append(parts, "aborted: "+rep.Aborted)
	}
	return strings.Join(parts, ", ")
}

// waitDrained waits until the server's queue is empty and its Maildirs
// hold at least want messages.
func waitDrained(ctx context.Context, srv server, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		q, err := srv.Queued(ctx)
		if err != nil {
			return err
		}
		if q == 0 && srv.Maildir() == "" {
			return nil // nothing to count: discarded
		}
		if q == 0 {
			files, err := maildirFiles(srv.Maildir())
			if err != nil {
				return err
			}
			if len(files) >= want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("queue empty but %d of %d accepted messages in the Maildirs after %v", len(files), want, timeout)
			}
		} else if time.Now().After(deadline) {
			return fmt.Errorf("queue not drained: %d messages still queued %v after the load", q, timeout)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// clearMaildir moves the delivered messages out of the server's Maildir
// (into a directory next to it, removed with the run's directory at the
// end), so that the next run starts with an empty Maildir, then syncs the
// file systems. It moves rather than deletes them: on ext4 without a
// journal (as here) a file created within 30 s of many deletions pays for
// it (the inode allocator skips recently deleted inodes, reading each
// one's inode block), and deleting a run's files would bill that to
// whichever server runs next; the sync(2) likewise keeps the next server's
// syncfs and fsyncs from writing back what the last run and the moves left
// dirty.
func clearMaildir(srv server) error {
	if srv.Maildir() == "" {
		syscall.Sync()
		return nil
	}
	files, err := maildirFiles(srv.Maildir())
	if err != nil {
		return err
	}
	trash := srv.Maildir() + ".delivered"
	if err := os.MkdirAll(trash, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		err := safeio.RenameNoReplace(f, filepath.Join(trash, filepath.Base(f)))
		if errors.Is(err, fs.ErrExist) {
			err = os.Remove(f) // a name seen before: cannot happen with Maildir names
		}
		if err != nil {
			return err
		}
	}
	// Write back what the moves dirtied (and the last run's files), so
	// that the next server's syncs and fsyncs do not do it for them.
	syscall.Sync()
	return nil
}
