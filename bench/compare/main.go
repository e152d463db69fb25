// Command compare benchmarks Petrel against Postfix, side by side, on
// loopback: bench/compare.sh builds and runs it (as root: Postfix's master
// runs as root).
//
//	bench/compare.sh [--rounds N] [--quick] [--outbound N] [--petrel PATH] [--out FILE] ...
//
// It makes an ECDSA P-256 certificate for the run, starts a throw-away
// Postfix (internal/postfixtest) and `petrel serve`, both durable (queue
// fsynced, delivery to Maildirs) and accepting mail for bench.test, and in
// each round runs against each of them, one after the other:
//
//   - the load matrix: 1 KiB and 100 KiB messages × (sessions, messages
//     per session) in (1, 1), (16, 1), (16, 100), (64, 10), over STARTTLS
//     with TLS 1.3 and PIPELINING: messages/s and final-reply latency
//     (`petrel bench --json`), and server CPU time per 1000 messages, until
//     the queue drained. Postfix and Petrel with X25519 (Debian 12's
//     Postfix with OpenSSL 3.0 has no ML-KEM), Petrel also with
//     X25519MLKEM768;
//   - memory: RSS and PSS of all the server's processes with 1000 idle
//     TLS sessions (`petrel bench --idle`), per session, and Petrel alone
//     with 10,000;
//   - outbound: each MTA delivers a held batch (10,000 messages) to
//     `petrel bench sink --exit-after N` over STARTTLS.
//
// It writes a Markdown report (medians with min–max over the rounds, and
// the ratios Petrel/Postfix) to a file and to standard output. The
// report's Method section says exactly how each figure is measured.
// Progress goes to standard error. Every process and temporary directory
// is removed at the end, on Ctrl-C too.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/postfixtest"
	"github.com/petrel-mta/petrel/smtptest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const help = `Usage: bench/compare.sh [flags]

Benchmarks Petrel against a throw-away Postfix on loopback, side by side,
in alternation, and writes a Markdown report to a file and to standard
output (progress on standard error). Needs root and Postfix. A full run
takes 15 to 30 minutes; --quick about a minute.

Flags:
`

// options are the command's flags.
type options struct {
	petrel, tools, out, workdir, cmdline string
	petrelCommit, toolsCommit            string
	rounds, outbound, idle, idleAlone    int
	quick, postfixDiscard                bool
	noIdle, noOutbound                   bool
	cells                                string
	postfixSet                           map[string]string
	scale                                float64
	drainTimeout, outboundTimeout        time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, help)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.petrel, "petrel", "", "the petrel `binary` to measure (compare.sh builds the working tree's by default)")
	fs.StringVar(&o.petrelCommit, "petrel-commit", "", "the commit --petrel was built from, for the report (default: from the binary's build information, or the git tree it is in)")
	fs.StringVar(&o.toolsCommit, "tools-commit", "", "the commit --tools was built from, for the report")
	fs.StringVar(&o.tools, "tools", "", "the petrel `binary` whose bench and bench sink make the load (default --petrel; it needs bench sink --exit-after)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the whole matrix, `N` (at least 1)")
	fs.BoolVar(&o.quick, "quick", false, "a smoke run of a minute or two: 1 round, 2 small cells, 100 and 500 idle sessions, an outbound batch of 300, --drain-timeout 10s, --outbound-timeout 15s")
	fs.IntVar(&o.outbound, "outbound", 10000, "messages `N` in each outbound batch")
	fs.IntVar(&o.idle, "idle", 1000, "idle TLS sessions `N` per server for the memory figures")
	fs.IntVar(&o.idleAlone, "idle-petrel", 10000, "idle TLS sessions `N` for Petrel alone")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "after each run, wait up to `D` for the server's queue to drain; then its CPU time is read and what is left is thrown away (flagged in the report)")
	fs.DurationVar(&o.outboundTimeout, "outbound-timeout", 10*time.Minute, "wait up to `D` for an outbound batch to reach the sink; messages/s is then over D (flagged)")
	fs.Float64Var(&o.scale, "scale", 1, "multiply the messages per run of every cell by `F` (for a faster or slower machine)")
	fs.BoolVar(&o.postfixDiscard, "postfix-discard", false, "also measure a second Postfix that queues each message durably, then discards it (doing less than Petrel, which delivers to a Maildir), and report it beside the others")
	fs.StringVar(&o.cells, "cells", "", "measure only these cells of the matrix, comma-separated `SIZE:CxM` (e.g. 1KiB:16x100,100KiB:16x1; default all)")
	fs.BoolVar(&o.noIdle, "no-idle", false, "skip the idle-session memory measurements")
	fs.BoolVar(&o.noOutbound, "no-outbound", false, "skip the outbound batches")
	o.postfixSet = map[string]string{}
	fs.Func("postfix-set", "override a main.cf setting of the measured Postfix, `NAME=VALUE` (repeatable; shown in the report)", func(v string) error {
		name, value, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("want NAME=VALUE, got %q", v)
		}
		o.postfixSet[strings.TrimSpace(name)] = strings.TrimSpace(value)
		return nil
	})
	fs.StringVar(&o.out, "out", "", "write the report to `FILE` (default bench/results/<UTC date-time>.md)")
	fs.StringVar(&o.workdir, "workdir", os.TempDir(), "make the run's directory (certificate, Postfix's and Petrel's data) in `DIR`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; see --help", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if set["rounds"] && o.rounds != 1 {
			return o, errors.New("--quick runs 1 round: drop --rounds")
		}
		o.rounds = 1
		if !set["outbound"] {
			o.outbound = 300
		}
		if !set["idle"] {
			o.idle = 100
		}
		if !set["idle-petrel"] {
			o.idleAlone = 500
		}
		if !set["drain-timeout"] {
			o.drainTimeout = 10 * time.Second
		}
		if !set["outbound-timeout"] {
			o.outboundTimeout = 15 * time.Second
		}
	}
	switch {
	case o.petrel == "":
		return o, errors.New("--petrel PATH is required (compare.sh builds one): the petrel binary to measure")
	case o.rounds < 1 || o.outbound < 1 || o.idle < 1 || o.idleAlone < 1:
		return o, errors.New("--rounds, --outbound, --idle and --idle-petrel must be at least 1")
	case o.scale <= 0:
		return o, errors.New("--scale must be positive")
	case o.drainTimeout <= 0 || o.outboundTimeout <= 0:
		return o, errors.New("--drain-timeout and --outbound-timeout must be positive")
	}
	if o.tools == "" {
		o.tools, o.toolsCommit = o.petrel, o.petrelCommit
	}
	for _, p := range []*string{&o.petrel, &o.tools} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, err
		}
		if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return o, fmt.Errorf("%s is not an executable petrel binary", *p)
		}
		*p = abs
	}
	o.cmdline = os.Getenv("PETREL_COMPARE_CMDLINE")
	if o.cmdline == "" {
		o.cmdline = strings.Join(append([]string{"compare"}, args...), " ")
	}
	return o, nil
}

// runCtx is what the phases of a run share.
type runCtx struct {
	tools             tools
	petrel            string // binary under test
	dir               string // the run's directory
	certFile, keyFile string
	log               io.Writer // progress
}

func (r *runCtx) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "compare: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "compare: %v\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "compare: run as root: the throw-away Postfix's master runs as root (sudo bench/compare.sh)")
		return 2
	}
	res, err := measure(ctx, o, stderr)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "compare: interrupted; every process and directory it started was stopped and removed")
		return 130
	}
	if err != nil {
		fmt.Fprintf(stderr, "compare: %v\n", err)
		return 1
	}
	out := o.out
	if out == "" {
		out = filepath.Join("bench", "results", res.Started.UTC().Format("2006-01-02T15-04-05Z")+".md")
	}
	var b strings.Builder
	res.write(&b)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		fmt.Fprintf(stderr, "compare: cannot write the report: %v\n", err)
		return 1
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintf(stderr, "compare: cannot write the report: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, b.String())
	fmt.Fprintf(stderr, "compare: report written to %s\n", out)
	return 0
}

// measure sets up the run and goes through the rounds. On return every
// process it started is stopped and its directory removed.
func measure(ctx context.Context, o options, logw io.Writer) (*results, error) {
	res := newResults()
	res.Cmdline, res.Started, res.Rounds = o.cmdline, time.Now(), o.rounds
	cells, err := selectCells(matrix(o.quick, o.scale), o.cells)
	if err != nil {
		return nil, err
	}
	res.Cells, res.Variants = cells, variants(o.postfixDiscard)
	res.PostfixMainCF = postfixMainCF(o.postfixSet)
	res.NoIdle, res.NoOutbound = o.noIdle, o.noOutbound
	res.Idle, res.IdleAlone, res.Outbound = o.idle, o.idleAlone, o.outbound
	res.DrainTimeout, res.OutboundTimeout = o.drainTimeout, o.outboundTimeout

	dir, err := os.MkdirTemp(o.workdir, "petrel-compare-")
	if err != nil {
		return nil, fmt.Errorf("cannot make the run's directory: %v (choose another --workdir)", err)
	}
	defer os.RemoveAll(dir)
	// Postfix's daemons run as the postfix user and reach their queue
	// inside dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := spreadSubdirs(dir); err != nil {
		res.SpreadDirs = err.Error()
	}
	r := &runCtx{tools: tools{bin: o.tools}, petrel: o.petrel, dir: dir, log: logw}
	if r.certFile, r.keyFile, err = writeCertificate(dir); err != nil {
		return nil, err
	}
	res.Machine = describeMachine(ctx, dir, o.petrel, o.tools, o.petrelCommit, o.toolsCommit)
	res.Dir = dir

	r.logf("starting Postfix and Petrel in %s", dir)
	launchPostfix := func(mainCF map[string]string) (*postfixtest.Instance, error) {
		pf, err := postfixtest.Launch(ctx, postfixtest.Config{
			CertFile: r.certFile, KeyFile: r.keyFile, TLSLevel: "may", Domain: localDomain, Dir: dir,
			SMTPDProcessLimit: postfixProcessLimit, MainCF: mainCF,
		})
		if err != nil {
			return nil, fmt.Errorf("cannot start Postfix: %v", strings.TrimPrefix(err.Error(), "postfixtest: "))
		}
		return pf, nil
	}
	pf, err := launchPostfix(res.PostfixMainCF)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := pf.Close(); cerr != nil {
			r.logf("%v", cerr)
		}
	}()
	res.Machine.Postfix = "Postfix " + strings.TrimSpace(runOut(pf.Run(ctx, "postconf", "-h", "mail_version")))
	postfix := &postfixServer{in: pf}
	var postfixDiscard *postfixServer
	if o.postfixDiscard {
		pfd, err := launchPostfix(withDiscard(res.PostfixMainCF))
		if err != nil {
			return nil, err
		}
		defer func() {
			if cerr := pfd.Close(); cerr != nil {
				r.logf("%v", cerr)
			}
		}()
		postfixDiscard = &postfixServer{in: pfd, discard: true}
	}

	pcfg := petrelConfig{dataDir: filepath.Join(dir, "petrel"), certFile: r.certFile, keyFile: r.keyFile}
	petrel, err := startPetrel(ctx, o.petrel, pcfg, false)
	if err != nil {
		return nil, fmt.Errorf("cannot start Petrel: %v", err)
	}
	defer func() {
		if serr := petrel.stop(); serr != nil {
			r.logf("%v", serr)
		}
	}()
	// restartPetrel starts Petrel again; fresh: with an empty data
	// directory (throwing away a queue that did not drain).
	restartPetrel := func(fresh bool) error {
		if err := petrel.stop(); err != nil {
			return err
		}
		if fresh {
			if err := os.RemoveAll(pcfg.dataDir); err != nil {
				return err
			}
		}
		p, err := startPetrel(ctx, o.petrel, pcfg, false)
		if err != nil {
			return fmt.Errorf("cannot start Petrel again: %v", err)
		}
		petrel = p
		return sleep(ctx, time.Second)
	}
	r.logf("Postfix on %s, Petrel on %s; %d cells × %d variants, %d rounds", pf.Addr, petrel.Addr(), len(res.Cells), len(res.Variants), o.rounds)

	interrupted := errors.New("interrupted")
	for round := 1; round <= o.rounds; round++ {
		if round > 1 && !o.noIdle {
			// The smtpd processes of the last round's idle sessions
			// exit after max_idle (100 s); they must not do so, and be
			// billed for it, during this round's runs. (A postfix
			// reload with a thousand of them left Postfix unable to
			// serve.)
			start := time.Now()
			if err := postfix.waitNoSMTPD(ctx, 3*time.Minute); err != nil {
				r.logf("%v", err)
			} else if d := time.Since(start); d > time.Second {
				r.logf("waited %v for Postfix's idle smtpd processes to exit", d.Round(time.Second))
			}
		}
		for i, c := range res.Cells {
			for _, v := range res.Variants {
				var srv server = postfix
				switch v {
				case vPetrel, vMLKEM:
					srv = petrel
				case vPostfixDiscard:
					srv = postfixDiscard
				}
				s := runLoad(ctx, r.tools, srv, c, v.Group(), o.drainTimeout)
				if ctx.Err() != nil {
					return nil, interrupted
				}
				res.Load[loadKey{i, v}] = append(res.Load[loadKey{i, v}], s)
				r.logf("round %d/%d  %-16s %-22s %7.0f msg/s  p50 %7.2f ms  p99 %8.2f ms  CPU %6.3f s/1000  drain %5.1fs %s",
					round, o.rounds, c, v, s.Rate, s.P50, s.P99, s.CPU, s.Drain, s.Problem)
				if s.Drained {
					continue
				}
				// Throw the rest away, so that it is not billed to the
				// next run.
				if q, err := srv.Queued(ctx); err == nil && q == 0 {
					continue
				}
				r.logf("%s's queue did not drain: emptying it", v.Server())
				if v.Server() == namePetrel {
					if err := restartPetrel(true); err != nil {
						return nil, err
					}
				} else if err := discardPostfix(ctx, srv.(*postfixServer).in); err != nil {
					r.logf("%v", err) // the next runs say whether Postfix still works
				}
				if err := clearMaildir(srv); err != nil {
					return nil, err
				}
			}
		}

		if !o.noIdle {
			// Memory: Postfix without idle smtpd processes, Petrel fresh.
			if out, err := pf.Command("reload"); err != nil {
				return nil, fmt.Errorf("postfix reload: %v: %s", err, lastOf(out))
			}
			idleRun := func(srv server, v variant, n int) idleSample {
				s := measureIdle(ctx, r.tools, srv, n, v.Group())
				r.logf("round %d/%d  %d idle sessions  %-22s RSS %s/session, PSS %s/session (open %d after %.1fs) %s",
					round, o.rounds, n, v, kib(s.RSS), kib(s.PSS), s.Open, s.Ramp, s.Problem)
				return s
			}
			var s idleSample
			if err := postfix.waitNoSMTPD(ctx, 2*time.Minute); err != nil {
				s = idleSample{Target: o.idle, Problem: err.Error()}
			} else {
				s = idleRun(postfix, vPostfix, o.idle)
			}
			res.IdleRuns[vPostfix] = append(res.IdleRuns[vPostfix], s)
			for _, v := range []variant{vPetrel, vMLKEM} {
				if err := restartPetrel(false); err != nil {
					return nil, err
				}
				res.IdleRuns[v] = append(res.IdleRuns[v], idleRun(petrel, v, o.idle))
			}
			if err := restartPetrel(false); err != nil {
				return nil, err
			}
			res.AloneRuns = append(res.AloneRuns, idleRun(petrel, vPetrel, o.idleAlone))
		}
		if ctx.Err() != nil {
			return nil, interrupted
		}

		if !o.noOutbound {
			// Outbound.
			for _, name := range []string{namePostfix, namePetrel} {
				var s outSample
				if name == namePostfix {
					s = outboundPostfix(ctx, r, res.PostfixMainCF, o.outbound, o.outboundTimeout)
				} else {
					s = outboundPetrel(ctx, r, o.outbound, round, o.outboundTimeout)
				}
				if ctx.Err() != nil {
					return nil, interrupted
				}
				res.Out[name] = append(res.Out[name], s)
				r.logf("round %d/%d  outbound %d  %-8s %7.0f msg/s  %d in %.1fs (first after %.2fs)  CPU %.3f s/1000  %d conns  %s %s",
					round, o.rounds, o.outbound, name, s.Rate, s.Delivered, s.Seconds, s.First, s.CPU, s.Conns, s.Group, s.Problem)
			}
		}
		res.Done = round
	}
	res.Elapsed = time.Since(res.Started)
	return res, nil
}

// discardPostfix deletes every queued message of the instance.
func discardPostfix(ctx context.Context, pf *postfixtest.Instance) error {
	if out, err := pf.Run(ctx, "postsuper", "-d", "ALL"); err != nil {
		return fmt.Errorf("postsuper -d ALL: %v: %s", err, lastOf(out))
	}
	return nil
}

// runOut returns a command's output, or what went wrong.
func runOut(out string, err error) string {
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	return out
}

// writeCertificate makes the run's ECDSA P-256 certificate (for
// mx.bench.test, localhost and 127.0.0.1) and writes it and its key as PEM
// files in dir.
func writeCertificate(dir string) (certFile, keyFile string, err error) {
	now := time.Now()
	cert, err := smtptest.Certificate([]string{hostname, "localhost", "127.0.0.1"}, now.Add(-time.Hour), now.AddDate(0, 0, 7))
	if err != nil {
		return "", "", fmt.Errorf("making the certificate: %w", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("the certificate's key: %w", err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
