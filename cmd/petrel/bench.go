package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-mta/petrel/internal/bench"
)

// Exit statuses of petrel bench and petrel bench sink.
const (
	benchOK     = 0
	benchFailed = 1 // some messages or sessions failed, or the run was given up
	benchUsage  = 2
)

const benchHelp = `Usage: petrel bench --server HOST:PORT [--starttls | --implicit-tls] [flags]
       petrel bench --server HOST:PORT --idle N [--duration D] [flags]
       petrel bench sink [flags]   (petrel bench sink -h)

Generates SMTP load, as Postfix's smtp-source does, with TLS: --conns
sessions at once, each sending --msgs-per-conn messages then QUIT and a new
session, until --total messages (default 1000) or --duration. Every reply is
checked; a message counts once the final 250 is in. A failed session is
counted by kind and replaced. The report gives messages/s, TLS sessions/s,
the latency of the final reply (from the end of the data) and of the whole
message (from MAIL), errors by kind, and the TLS version, cipher and
key-exchange group negotiated.

TLS is 1.3 by default (--tls-min/--tls-max 1.2 to change). The certificate
is not verified on each handshake unless --ca or --servername is given (a
verification costs the load generator CPU); the first one is still checked
and the report says what a verifying client would have found.

--idle N opens N sessions (TLS set up, EHLO done) and holds them idle until
--duration or Ctrl-C, to measure a server's memory per idle connection.

Exit status: 0 no errors; 1 some messages or sessions failed; 2 bad usage.

Flags:
`

const benchSinkHelp = `Usage: petrel bench sink [--listen ADDR] [--implicit-tls] [--cert FILE --key FILE] [flags]

A receiving SMTP server for benchmarks: Petrel's SMTP server engine (its
limits, STARTTLS offered, or implicit TLS) with a backend that reads every
message to its end and throws it away. It is NOT durable: a 250 from the
sink means nothing; never point real mail at it. --tempfail and --permfail
refuse that fraction of recipients at RCPT (451 4.3.0, 550 5.1.1),
pseudo-randomly but the same for each --seed. Counts are printed on Ctrl-C,
and every second with --progress. --exit-after N stops the sink once N
messages have been accepted, with the counts and when the first and the
N-th message arrived: to time a sender that delivers a batch of N.

Flags:
`

// benchFlags are the parsed flags of petrel bench.
type benchFlags struct {
	server, tlsGroup, tlsMin, tlsMax, ca, serverName    string
	to, from, ehlo                                      string
	starttls, implicitTLS, insecure, resume, noQuickAck bool
	pipelining, bdat, jsonOut, verbose                  bool
	conns, msgsPerConn, total, size, rcpts              int
	idle, ramp                                          int
	duration, progress, timeout, idleNoop               time.Duration
	rate                                                float64
	bind                                                stringList
	set                                                 map[string]bool
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sink" {
		return benchSink(ctx, args[1:], stdout, stderr)
	}
	f := &benchFlags{set: map[string]bool{}}
	fs := flag.NewFlagSet("petrel bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.server, "server", "", "the server to load, `HOST:PORT` (required)")
	fs.BoolVar(&f.starttls, "starttls", false, "STARTTLS after EHLO (RFC 3207); a server without it is a tls error")
	fs.BoolVar(&f.implicitTLS, "implicit-tls", false, "TLS from the first byte (RFC 8314, port 465)")
	fs.StringVar(&f.tlsGroup, "tls-group", "", "offer only this key-exchange `group`: X25519, X25519MLKEM768 or P-256 (default Go's preference, X25519MLKEM768 first)")
	fs.StringVar(&f.tlsMin, "tls-min", "1.3", "lowest TLS `version`, 1.2 or 1.3")
	fs.StringVar(&f.tlsMax, "tls-max", "1.3", "highest TLS `version`, 1.2 or 1.3")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the certificate (the default without --ca and --servername)")
	fs.StringVar(&f.ca, "ca", "", "verify the certificate against the system's roots and those in this PEM `FILE`")
	fs.StringVar(&f.serverName, "servername", "", "verify the certificate for `NAME` (also sent as SNI); default the host of --server")
	fs.BoolVar(&f.resume, "resume", false, "resume TLS sessions (default: a full handshake every session)")
	fs.BoolVar(&f.noQuickAck, "no-quickack", false, "do not re-arm TCP_QUICKACK around the TLS handshake (only to show the ≈40 ms stall it avoids against OpenSSL servers such as Postfix)")
	fs.IntVar(&f.conns, "conns", 1, "concurrent sessions `C`")
	fs.IntVar(&f.msgsPerConn, "msgs-per-conn", 1, "messages `M` per session before QUIT")
	fs.IntVar(&f.total, "total", 0, "stop after `N` messages, sent or failed (default 1000 unless --duration)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after `D` (the messages under way finish); with --idle, hold for D")
	fs.Float64Var(&f.rate, "rate", 0, "send at a steady `R` messages/s over all sessions (soak tests; 0: as fast as they go)")
	fs.IntVar(&f.size, "size", 1024, "message size in octets, `N` (header and 76-character lines)")
	fs.IntVar(&f.rcpts, "rcpts", 1, "recipients `R` per message")
	fs.StringVar(&f.to, "to", "bench@localhost", "recipient `TEMPLATE`: %d becomes the recipient's number, 1 to R (e.g. user%d@localhost)")
	fs.StringVar(&f.from, "from", "bench@localhost", "envelope sender `ADDR` (<> for the null sender)")
	fs.BoolVar(&f.pipelining, "pipelining", false, "send MAIL, RCPT and DATA (or BDAT and the message) in one group when PIPELINING is offered")
	fs.BoolVar(&f.bdat, "bdat", false, "send the message with BDAT when CHUNKING is offered, instead of DATA")
	fs.StringVar(&f.ehlo, "ehlo", "", "EHLO `NAME` (default this host's name)")
	fs.IntVar(&f.idle, "idle", 0, "open `N` sessions and hold them idle (memory per idle connection)")
	fs.DurationVar(&f.idleNoop, "idle-noop", time.Minute, "with --idle, send NOOP every `D` on each session; 0 never (servers time out idle sessions after 5 minutes)")
	fs.IntVar(&f.ramp, "ramp", 32, "with --idle, open `N` sessions at a time")
	fs.Var(&f.bind, "bind", "connect from this local `IP` (repeatable, used in turn: spreads sessions over a server's per-address limits)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "time `D` allowed for connect, the TLS handshake, each reply and each whole transaction")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.DurationVar(&f.progress, "progress", time.Second, "a progress line on standard error every `D`; 0 for none")
	fs.BoolVar(&f.verbose, "v", false, "log every failure on standard error")
	words, code, ok := parseWords(fs, args, "petrel bench", benchHelp, stderr)
	if !ok {
		return code
	}
	usage := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel bench: %s\n", fmt.Sprintf(format, args...))
		return benchUsage
	}
	if len(words) > 0 {
		return usage("unexpected argument %q; run 'petrel bench -h' for the flags", words[0])
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	opts, err := f.options()
	if err != nil {
		return usage("%v", err)
	}
	if err := opts.Check(f.idle > 0); err != nil {
		return usage("%v", err)
	}
	// Each session is a file descriptor.
	need := max(f.conns, f.idle) + 64
	if limit, err := bench.RaiseFileLimit(); err == nil && limit > 0 && uint64(need) > limit {
		what := fmt.Sprintf("--conns %d", f.conns)
		if f.idle > 0 {
			what = fmt.Sprintf("--idle %d", f.idle)
		}
		return usage("%s needs about %d open files, over this process's limit of %d: raise the hard limit (ulimit -Hn, LimitNOFILE=) or ask for fewer", what, need, limit)
	}
	if f.verbose {
		opts.Logger = newBenchLogger(stderr)
	}
	if f.progress > 0 {
		opts.ProgressEvery = f.progress
		opts.Progress = func(p bench.Progress) {
			if f.idle > 0 {
				fmt.Fprintf(stderr, "bench: %5.1fs  open %d/%d  sessions %d  errors %d\n",
					p.Elapsed.Seconds(), p.Open, p.Target, p.Sessions, p.Errors)
				return
			}
			fmt.Fprintf(stderr, "bench: %5.1fs  messages %d (%.0f/s)  failed %d  sessions %d  errors %d\n",
				p.Elapsed.Seconds(), p.Messages, p.Rate, p.Failed, p.Sessions, p.Errors)
		}
	}
	var rep *bench.Report
	if f.idle > 0 {
		rep, err = bench.Hold(ctx, opts)
	} else {
		rep, err = bench.Run(ctx, opts)
	}
	if rep == nil {
		return usage("%v", err) // options refused
	}
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "petrel bench: %v\n", err)
			return benchFailed
		}
	} else {
		rep.WriteText(stdout)
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "petrel bench: %v; check --server and that the server is running\n", err)
		return benchFailed
	case rep.ErrorsTotal > 0 || rep.Failed > 0:
		fmt.Fprintf(stderr, "petrel bench: %d errors; see the report (-v logs each one)\n", rep.ErrorsTotal)
		return benchFailed
	}
	return benchOK
}

// options turns the flags into bench.Options, refusing contradictions.
func (f *benchFlags) options() (bench.Options, error) {
	o := bench.Options{
		Server: f.server, Conns: f.conns, MsgsPerConn: f.msgsPerConn, Total: f.total, Duration: f.duration, Rate: f.rate,
		Size: f.size, Rcpts: f.rcpts, From: f.from, To: f.to, Pipelining: f.pipelining, BDAT: f.bdat,
		EHLO: f.ehlo, Timeout: f.timeout, Idle: f.idle, IdleNoop: f.idleNoop, Ramp: f.ramp, Resume: f.resume,
		NoQuickAck: f.noQuickAck,
	}
	if f.server == "" {
		return o, errors.New("--server HOST:PORT is required (e.g. --server 127.0.0.1:2526 for petrel bench sink)")
	}
	if f.total < 0 || f.conns < 1 || f.msgsPerConn < 1 || f.rcpts < 1 || f.size < 1 || f.idle < 0 || f.ramp < 1 {
		return o, errors.New("--conns, --msgs-per-conn, --rcpts, --size and --ramp must be at least 1, --total and --idle not negative")
	}
	if f.duration < 0 || f.timeout <= 0 || f.progress < 0 || f.idleNoop < 0 {
		return o, errors.New("--duration, --progress and --idle-noop must not be negative, --timeout must be positive")
	}
	if f.set["total"] && f.set["duration"] {
		return o, errors.New("--total and --duration exclude each other: give one")
	}
	if f.set["total"] && f.total == 0 {
		return o, errors.New("--total must be at least 1")
	}
	if f.idle > 0 {
		for _, name := range []string{"total", "msgs-per-conn", "size", "rcpts", "pipelining", "bdat", "conns", "to", "from"} {
			if f.set[name] {
				return o, fmt.Errorf("--%s does not go with --idle, which sends no mail", name)
			}
		}
	} else {
		for _, name := range []string{"idle-noop", "ramp"} {
			if f.set[name] {
				return o, fmt.Errorf("--%s goes with --idle N", name)
			}
		}
	}
	switch {
	case f.starttls && f.implicitTLS:
		return o, errors.New("--starttls and --implicit-tls exclude each other: choose one")
	case f.starttls:
		o.Security = bench.StartTLS
	case f.implicitTLS:
		o.Security = bench.ImplicitTLS
	}
	if o.Security == bench.Plaintext {
		for _, name := range []string{"tls-group", "tls-min", "tls-max", "insecure", "ca", "servername", "resume", "no-quickack"} {
			if f.set[name] {
				return o, fmt.Errorf("--%s needs TLS: add --starttls or --implicit-tls", name)
			}
		}
	}
	if f.tlsGroup != "" {
		g, err := bench.ParseGroup(f.tlsGroup)
		if err != nil {
			return o, fmt.Errorf("--tls-group: %v", err)
		}
		o.Group = g
	}
	var err error
	if o.TLSMinVersion, err = bench.ParseTLSVersion(f.tlsMin); err != nil {
		return o, fmt.Errorf("--tls-min: %v", err)
	}
	if o.TLSMaxVersion, err = bench.ParseTLSVersion(f.tlsMax); err != nil {
		return o, fmt.Errorf("--tls-max: %v", err)
	}
	if !f.set["tls-min"] {
		o.TLSMinVersion = min(o.TLSMinVersion, o.TLSMaxVersion)
	}
	if o.Group == tls.X25519MLKEM768 && o.TLSMaxVersion < tls.VersionTLS13 {
		return o, errors.New("--tls-group X25519MLKEM768 needs TLS 1.3: drop --tls-max 1.2")
	}
	if f.insecure && (f.ca != "" || f.serverName != "") {
		return o, errors.New("--insecure excludes --ca and --servername, which ask for verification")
	}
	o.ServerName = f.serverName
	if f.ca != "" || f.serverName != "" {
		o.Verify = true
	}
	if f.ca != "" {
		pool, err := loadRoots(f.ca)
		if err != nil {
			return o, fmt.Errorf("--ca: %v", err)
		}
		o.RootCAs = pool
	}
	var ips []string
	for _, b := range f.bind {
		ips = append(ips, strings.Split(b, ",")...)
	}
	if o.LocalAddrs, err = bench.ParseIPs(ips); err != nil {
		return o, fmt.Errorf("--bind: %v", err)
	}
	return o, nil
}

// durationFlag is a duration flag that may also be given alone, as a
// boolean: "--progress" means every second, "--progress=5s" every 5 s.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0"
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	switch s {
	case "true":
		*f.d = time.Second
	case "false":
		*f.d = 0
	default:
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration such as 1s, got %q", s)
		}
		*f.d = d
	}
	return nil
}

func (f durationFlag) IsBoolFlag() bool { return true }

func benchSink(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		listen, certFile, keyFile, hostname string
		implicitTLS, jsonOut, verbose       bool
		tempFail, permFail                  float64
		seed                                uint64
		maxConns, maxErrors                 int
		exitAfter                           uint64
		progress                            time.Duration
	)
	fs := flag.NewFlagSet("petrel bench sink", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&listen, "listen", "127.0.0.1:2526", "listen on `ADDR`")
	fs.StringVar(&certFile, "cert", "", "PEM certificate chain `FILE` (default: a self-signed ECDSA P-256 certificate made in memory)")
	fs.StringVar(&keyFile, "key", "", "PEM private key `FILE` for --cert")
	fs.BoolVar(&implicitTLS, "implicit-tls", false, "TLS from the first byte (RFC 8314) instead of offering STARTTLS")
	fs.Float64Var(&tempFail, "tempfail", 0, "`fraction` (0..1) of recipients refused with 451 4.3.0")
	fs.Float64Var(&permFail, "permfail", 0, "`fraction` (0..1) of recipients refused with 550 5.1.1")
	fs.Uint64Var(&seed, "seed", 1, "`seed` of the pseudo-random choice of refused recipients")
	fs.StringVar(&hostname, "hostname", "localhost", "server `NAME` in the greeting and the certificate")
	fs.IntVar(&maxConns, "max-conns", 20000, "connections at most, in total and per client address (`N`)")
	fs.IntVar(&maxErrors, "max-errors", 1000, "error replies per session before 421 (`N`); high, so injected refusals do not end sessions")
	fs.Var(durationFlag{&progress}, "progress", "print counts on standard error every second, or every `D` with --progress=D")
	fs.Uint64Var(&exitAfter, "exit-after", 0, "exit once `N` messages have been accepted, saying when the first and the N-th arrived (0: run until Ctrl-C)")
	fs.BoolVar(&jsonOut, "json", false, "print the final counts as JSON")
	fs.BoolVar(&verbose, "v", false, "log connections on standard error")
	words, code, ok := parseWords(fs, args, "petrel bench sink", benchSinkHelp, stderr)
	if !ok {
		return code
	}
	usage := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel bench sink: %s\n", fmt.Sprintf(format, args...))
		return benchUsage
	}
	if len(words) > 0 {
		return usage("unexpected argument %q; run 'petrel bench sink -h' for the flags", words[0])
	}
	opts := bench.SinkOptions{Hostname: hostname, ImplicitTLS: implicitTLS, TempFail: tempFail, PermFail: permFail,
		Seed: seed, MaxConns: maxConns, MaxErrors: maxErrors, Until: exitAfter}
	certNote := "a self-signed certificate made in memory"
	switch {
	case (certFile == "") != (keyFile == ""):
		return usage("--cert and --key go together")
	case certFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return usage("cannot load --cert/--key: %v", err)
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		certNote = certFile
	}
	if maxConns < 1 || maxErrors < 1 {
		return usage("--max-conns and --max-errors must be at least 1")
	}
	if verbose {
		opts.Logger = newBenchLogger(stderr)
	}
	sink, err := bench.NewSink(opts)
	if err != nil {
		return usage("%v", err)
	}
	if limit, err := bench.RaiseFileLimit(); err == nil && limit > 0 && uint64(maxConns) > limit {
		fmt.Fprintf(stderr, "petrel bench sink: warning: --max-conns %d is over this process's open-file limit of %d\n", maxConns, limit)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(stderr, "petrel bench sink: %v; choose another --listen address\n", err)
		return benchFailed
	}
	mode := "STARTTLS offered"
	if implicitTLS {
		mode = "implicit TLS"
	}
	fmt.Fprintf(stdout, "petrel bench sink: listening on %s (%s, %s); NOT durable: every message is read and thrown away\n",
		l.Addr(), mode, certNote)
	serveErr := make(chan error, 1)
	go func() { serveErr <- sink.Serve(l) }()

	var wg sync.WaitGroup
	stopProgress := make(chan struct{})
	if progress > 0 {
		wg.Go(func() { sinkProgress(stderr, sink, progress, stopProgress) })
	}
	var failed error
	select {
	case <-ctx.Done():
	case failed = <-serveErr:
	case <-sink.Reached():
	}
	close(stopProgress)
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = sink.Shutdown(sctx)
	cancel()
	st := sink.Stats()
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		fmt.Fprintf(stdout, "sink: %d messages, %d octets, %d recipients accepted, %d refused 451, %d refused 550; %d connections, %d TLS sessions\n",
			st.Messages, st.Bytes, st.Rcpts, st.TempFail, st.PermFail, st.Connections, st.TLSSessions)
		if !st.Reached.IsZero() {
			fmt.Fprintf(stdout, "sink: message %d at %s, %.3fs after the first (%s)\n", exitAfter,
				st.Reached.UTC().Format(time.RFC3339Nano), st.Reached.Sub(st.FirstMessage).Seconds(), st.FirstMessage.UTC().Format(time.RFC3339Nano))
		}
	}
	if failed != nil {
		fmt.Fprintf(stderr, "petrel bench sink: %v\n", failed)
		return benchFailed
	}
	return benchOK
}

// sinkProgress prints a line of counts every interval until stop.
func sinkProgress(w io.Writer, sink *bench.Sink, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	var last bench.SinkStats
	lastT := start
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			st := sink.Stats()
			rate := float64(st.Messages-last.Messages) / now.Sub(lastT).Seconds()
			fmt.Fprintf(w, "sink: %5.1fs  messages %d (%.0f/s)  octets %s  open %d  connections %d  refused 451 %d, 550 %d\n",
				now.Sub(start).Seconds(), st.Messages, rate, strconv.FormatUint(st.Bytes, 10), st.Open, st.Connections, st.TempFail, st.PermFail)
			last, lastT = st, now
		}
	}
}

// newBenchLogger logs at debug level, for -v.
func newBenchLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
