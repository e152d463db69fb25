package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/bench"
	"github.com/petrel-mta/petrel/internal/postfixtest"
)

// outSample is one outbound run: an MTA delivers a queued batch to the
// sink.
type outSample struct {
	N         int     // messages in the batch
	Delivered int     // at the sink: N, or fewer when the time ran out
	Rate      float64 // Delivered / Seconds
	Seconds   float64 // from the release to the N-th message at the sink, or to the timeout
	First     float64 // from the release to the first message at the sink
	CPU       float64 // MTA CPU seconds per 1000 messages delivered, from the release to an empty queue (or the timeout)
	Conns     uint64  // connections the sink served
	Group     string  // key exchange the MTA's client negotiated, from its log
	FillRate  float64 // messages/s while the batch was queued
	Problem   string
}

// sinkProc is a `petrel bench sink --exit-after N` process.
type sinkProc struct {
	cmd  *exec.Cmd
	addr string
	out  bytes.Buffer // standard output after the listening line: the JSON counts
	errb bytes.Buffer
	done chan struct{}
	err  error
}

var sinkListenRE = regexp.MustCompile(`listening on (\S+) `)

// startSink starts the sink on a free loopback port with the run's
// certificate; it exits once n messages have arrived.
func (t tools) startSink(ctx context.Context, certFile, keyFile string, n int) (*sinkProc, error) {
	k := &sinkProc{done: make(chan struct{})}
	k.cmd = exec.Command(t.bin, "bench", "sink", "--listen", "127.0.0.1:0", "--cert", certFile, "--key", keyFile,
		"--exit-after", strconv.Itoa(n), "--json")
	k.cmd.Stderr = &k.errb
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := k.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("petrel bench sink: %w", err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		listening := false
		for sc.Scan() {
			if m := sinkListenRE.FindStringSubmatch(sc.Text()); m != nil && !listening {
				listening = true
				addrc <- m[1]
				continue
			}
			k.out.WriteString(sc.Text() + "\n")
		}
		k.err = k.cmd.Wait()
		close(k.done)
	}()
	select {
	case k.addr = <-addrc:
		return k, nil
	case <-k.done:
		return nil, fmt.Errorf("petrel bench sink exited (%v): %s", k.err, lastOf(k.errb.String()))
	case <-time.After(30 * time.Second):
		k.stop()
		return nil, errors.New("petrel bench sink did not listen within 30s")
	case <-ctx.Done():
		k.stop()
		return nil, ctx.Err()
	}
}

// wait waits for the sink to exit by itself (the n messages arrived), or
// stops it after timeout, and returns its counts and when it stopped
// waiting; st.Reached is zero when the n messages did not all arrive.
func (k *sinkProc) wait(ctx context.Context, timeout time.Duration) (st bench.SinkStats, end time.Time, err error) {
	select {
	case <-k.done:
	case <-time.After(timeout):
		k.stop()
	case <-ctx.Done():
		k.stop()
		return st, time.Now(), ctx.Err()
	}
	end = time.Now()
	if k.err != nil {
		return st, end, fmt.Errorf("petrel bench sink: %v: %s", k.err, lastOf(k.errb.String()))
	}
	if err := json.Unmarshal(k.out.Bytes(), &st); err != nil {
		return st, end, fmt.Errorf("petrel bench sink: no JSON counts: %v", err)
	}
	return st, end, nil
}

// stop interrupts the sink if it still runs and waits for it.
func (k *sinkProc) stop() {
	select {
	case <-k.done:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
}

// fillBatch queues n messages for the sink's domain through the MTA at
// addr (16 sessions of 100 pipelined 1 KiB messages, STARTTLS, X25519).
func fillBatch(ctx context.Context, t tools, addr string, n int) (float64, error) {
	rep, err := t.run(ctx, loadArgs(addr, cell{Size: small, Conns: 16, PerConn: 100, Total: n}, groupX25519, remoteAddr)...)
	if err != nil {
		return 0, err
	}
	if rep.Messages != uint64(n) {
		return 0, fmt.Errorf("queueing the batch: %d of %d messages accepted: %s", rep.Messages, n, errorSummary(rep))
	}
	return rep.MessagesPerSec, nil
}

// waitEmpty waits until the server's queue is empty.
func waitEmpty(ctx context.Context, srv server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		q, err := srv.Queued(ctx)
		if err != nil {
			return err
		}
		if q == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d messages still queued after %v", srv.Name(), q, timeout)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// finish fills in a sample from the sink's counts, the release time and
// the end of the wait, and reports whether the whole batch arrived.
func (s *outSample) finish(st bench.SinkStats, released, end time.Time, timeout time.Duration) bool {
	s.Delivered = int(min(st.Messages, uint64(s.N)))
	if st.Reached.IsZero() {
		s.Seconds = end.Sub(released).Seconds()
		s.Problem = fmt.Sprintf("only %d of %d messages at the sink %v after the release: messages/s is over that time", st.Messages, s.N, timeout)
	} else {
		s.Seconds = st.Reached.Sub(released).Seconds()
	}
	if !st.FirstMessage.IsZero() {
		s.First = st.FirstMessage.Sub(released).Seconds()
	}
	if s.Seconds > 0 {
		s.Rate = float64(s.Delivered) / s.Seconds
	}
	s.Conns = st.Connections
	return !st.Reached.IsZero()
}

// await waits for the batch at the sink and then for srv's queue to empty,
// and records srv's CPU time since cpu0 per 1000 messages delivered. It
// reports false when the sink could not be waited for at all.
func (s *outSample) await(ctx context.Context, sink *sinkProc, srv server, released time.Time, timeout, cpu0 time.Duration,
	problem func(format string, args ...any)) bool {
	st, end, err := sink.wait(ctx, timeout)
	if err != nil {
		problem("%v", err)
		return false
	}
	if s.finish(st, released, end, timeout) {
		if err := waitEmpty(ctx, srv, time.Minute); err != nil {
			problem("%v", err)
		}
	} else {
		problem("%s", s.Problem)
	}
	if cpu1, err := srv.CPU(); err == nil && s.Delivered > 0 {
		s.CPU = (cpu1 - cpu0).Seconds() / float64(s.Delivered) * 1000
	} else if err != nil {
		problem("%v", err)
	}
	return true
}

var postfixGroupRE = regexp.MustCompile(`TLS connection established to \S+: (\S+) with cipher (\S+) .*key-exchange (\S+)`)

// outboundPostfix: a second Postfix instance relays everything to the sink
// (relayhost, smtp_tls_security_level = encrypt) and puts every message it
// receives on hold (smtpd_data_restrictions = check_client_access
// static:HOLD): the batch is queued without any delivery attempt, so
// without deferrals or retry backoff. The release is `postsuper -H ALL`
// (hold to deferred) and `postqueue -f` (deliver the deferred queue now).
func outboundPostfix(ctx context.Context, r *runCtx, base map[string]string, n int, timeout time.Duration) (s outSample) {
	s.N = n
	problems, problem := problemList(&s.Problem)
	defer problems.done()

	sink, err := r.tools.startSink(ctx, r.certFile, r.keyFile, n)
	if err != nil {
		problem("%v", err)
		return s
	}
	defer sink.stop()
	_, port, _ := net.SplitHostPort(sink.addr)
	mainCF := maps.Clone(base)
	mainCF["smtp_tls_security_level"] = "encrypt"
	mainCF["smtpd_data_restrictions"] = "check_client_access static:HOLD"
	in, err := postfixtest.Launch(ctx, postfixtest.Config{
		CertFile: r.certFile, KeyFile: r.keyFile, TLSLevel: "may", Domain: localDomain, Dir: r.dir,
		SMTPDProcessLimit: postfixProcessLimit, RelayHost: "[127.0.0.1]:" + port, MainCF: mainCF,
	})
	if err != nil {
		problem("%v", err)
		return s
	}
	defer func() {
		if err := in.Close(); err != nil {
			problem("%v", err)
		}
	}()
	srv := &postfixServer{in: in}
	if s.FillRate, err = fillBatch(ctx, r.tools, in.Addr, n); err != nil {
		problem("%v", err)
		return s
	}
	if q, err := in.Queued(); err != nil || q != n {
		problem("%d messages queued on hold (%v), want %d", q, err, n)
		return s
	}
	cpu0, err := srv.CPU()
	if err != nil {
		problem("%v", err)
		return s
	}
	released := time.Now()
	for _, c := range [][]string{{"postsuper", "-H", "ALL"}, {"postqueue", "-f"}} {
		if out, err := in.Run(ctx, c[0], c[1:]...); err != nil {
			problem("%s: %v: %s", strings.Join(c, " "), err, lastOf(out))
			return s
		}
	}
	if !s.await(ctx, sink, srv, released, timeout, cpu0, problem) {
		return s
	}
	if m := postfixGroupRE.FindStringSubmatch(in.Log()); m != nil {
		s.Group = m[1] + " " + m[2] + " " + m[3]
	}
	return s
}

var petrelGroupRE = regexp.MustCompile(`msg="delivery attempt".* tls="?([^"]+?)"? cipher=(\S+) group=(\S+)`)

// outboundPetrel: `petrel serve --hold` with the sink as smarthost
// (smarthost_tls = "encrypt") and 127.0.0.1 trusted to relay queues the
// batch; it is stopped, and the release is starting it again without
// --hold. Its CPU time is the new process's, from its start to an empty
// queue.
func outboundPetrel(ctx context.Context, r *runCtx, n, round int, timeout time.Duration) (s outSample) {
	s.N = n
	problems, problem := problemList(&s.Problem)
	defer problems.done()

	sink, err := r.tools.startSink(ctx, r.certFile, r.keyFile, n)
	if err != nil {
		problem("%v", err)
		return s
	}
	defer sink.stop()
	cfg := petrelConfig{dataDir: filepath.Join(r.dir, fmt.Sprintf("petrel-outbound-%d", round)),
		certFile: r.certFile, keyFile: r.keyFile, smarthost: sink.addr}
	defer os.RemoveAll(cfg.dataDir)
	held, err := startPetrel(ctx, r.petrel, cfg, true)
	if err != nil {
		problem("%v", err)
		return s
	}
	s.FillRate, err = fillBatch(ctx, r.tools, held.Addr(), n)
	if serr := held.stop(); serr != nil {
		problem("%v", serr)
	}
	if err != nil {
		problem("%v", err)
		return s
	}
	if q, err := held.Queued(ctx); err != nil || q != n {
		problem("%d messages queued on hold (%v), want %d", q, err, n)
		return s
	}
	released := time.Now()
	p, err := startPetrel(ctx, r.petrel, cfg, false)
	if err != nil {
		problem("%v", err)
		return s
	}
	defer func() {
		if err := p.stop(); err != nil {
			problem("%v", err)
		}
	}()
	if !s.await(ctx, sink, p, released, timeout, 0, problem) {
		return s
	}
	if b, err := os.ReadFile(p.log); err == nil {
		if m := petrelGroupRE.FindSubmatch(b); m != nil {
			s.Group = fmt.Sprintf("%s %s %s", m[1], m[2], m[3])
		}
	}
	return s
}
