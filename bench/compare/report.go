package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// results are everything a run measured.
type results struct {
	Cmdline  string
	Started  time.Time
	Elapsed  time.Duration
	Rounds   int // rounds asked for
	Done     int // rounds completed
	Machine  machine
	Dir      string
	Cells    []cell
	Variants []variant // in the order they ran in each cell
	// PostfixMainCF is what the run set in the measured Postfix's main.cf
	// (postfixMainCF, with --postfix-set).
	PostfixMainCF map[string]string
	// SpreadDirs is why the servers' directories could not be put in
	// block groups of their own (spreadSubdirs); "" when they were.
	SpreadDirs string
	// NoIdle, NoOutbound: the memory or the outbound part was skipped.
	NoIdle, NoOutbound bool
	Idle               int // idle sessions per server
	IdleAlone          int // idle sessions, Petrel alone
	Outbound           int // messages per outbound batch

	DrainTimeout, OutboundTimeout time.Duration

	Load      map[loadKey][]loadSample
	IdleRuns  map[variant][]idleSample
	AloneRuns []idleSample
	Out       map[string][]outSample
}

type loadKey struct {
	Cell int
	V    variant
}

func newResults() *results {
	return &results{Load: map[loadKey][]loadSample{}, IdleRuns: map[variant][]idleSample{}, Out: map[string][]outSample{}}
}

// load returns f of every run of a cell and variant; NaN for a run without
// a value.
func (r *results) load(c int, v variant, f func(loadSample) float64) []float64 {
	var out []float64
	for _, s := range r.Load[loadKey{c, v}] {
		x := math.NaN()
		if s.Messages > 0 {
			if y := f(s); y > 0 {
				x = y
			}
		}
		out = append(out, x)
	}
	return out
}

// flagged is " *" when a run of the cell and variant had a problem.
func (r *results) flagged(c int, v variant) string {
	for _, s := range r.Load[loadKey{c, v}] {
		if s.Problem != "" {
			return " *"
		}
	}
	return ""
}

func rate(s loadSample) float64 { return s.Rate }
func p50(s loadSample) float64  { return s.P50 }
func p99(s loadSample) float64  { return s.P99 }
func cpu(s loadSample) float64  { return s.CPU }

// cellRatio is the round-by-round ratio Petrel/Postfix of f in cell c.
func (r *results) cellRatio(c int, f func(loadSample) float64) spread {
	return spreadOf(ratios(r.load(c, vPetrel, f), r.load(c, vPostfix, f)))
}

// discard reports whether the run measured Postfix (discard).
func (r *results) discard() bool { return slices.Contains(r.Variants, vPostfixDiscard) }

// discardHead and discardCols are the table columns of Postfix (discard),
// when the run has it: its figure and Petrel's over it.
func (r *results) discardHead(head, rule string) (string, string) {
	if !r.discard() {
		return "", ""
	}
	return head, rule
}

func (r *results) discardCols(c int, f func(loadSample) float64) string {
	if !r.discard() {
		return ""
	}
	return fmt.Sprintf(" %s%s | %s |", spreadOf(r.load(c, vPostfixDiscard, f)).format(sig3), r.flagged(c, vPostfixDiscard),
		spreadOf(ratios(r.load(c, vPetrel, f), r.load(c, vPostfixDiscard, f))).format(times))
}

// write writes the report as Markdown.
func (r *results) write(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "# Petrel and Postfix side by side\n\n")
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| date | %s (the run took %s) |\n", r.Started.UTC().Format("2006-01-02 15:04:05 UTC"), r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "| command | `%s` |\n", r.Cmdline)
	fmt.Fprintf(w, "| machine | %d CPUs (nproc), %s, %s RAM, %s |\n", m.NProc, m.CPUModel, m.Memory, m.Kernel)
	fmt.Fprintf(w, "| data directories | %s; Postfix's queue and Maildir and Petrel's data directory are all there |\n", m.FileSystem)
	fmt.Fprintf(w, "| Postfix | %s, with %s |\n", m.Postfix, m.OpenSSL)
	fmt.Fprintf(w, "| Petrel | commit %s (`%s`), built with %s |\n", m.Petrel, m.PetrelPath, m.Go)
	if m.Tools != "" {
		fmt.Fprintf(w, "| load generator and sink | `petrel bench` of %s |\n", m.Tools)
	}
	fmt.Fprintf(w, "| rounds | %d of %d |\n\n", r.Done, r.Rounds)
	var order []string
	for _, v := range r.Variants {
		order = append(order, v.Server()+" ("+v.Group()+")")
	}
	fmt.Fprintf(w, "Each figure is the median over the rounds, with the minimum and maximum in parentheses. In every\n"+
		"round, each cell runs against %s, one after\n"+
		"the other; a ratio is taken round by round (Petrel's run over the Postfix run of the same round) and\n"+
		"its median given. `*`: a run had a problem, listed at the end. `?`: no value.\n\n", strings.Join(order, ", then "))

	r.writeLoad(w)
	r.writeIdle(w)
	r.writeOutbound(w)
	r.writeTargets(w)
	r.writeTLS(w)
	r.writeMethod(w)
	r.writeProblems(w)
}

func (r *results) writeLoad(w io.Writer) {
	fmt.Fprintf(w, "## Inbound: messages per second\n\n")
	fmt.Fprintf(w, "STARTTLS, TLS 1.3, PIPELINING, one recipient, a full handshake per session.\n\n")
	h, rule := r.discardHead(" Postfix (discard) X25519 | Petrel / Postfix (discard) |", "--:|--:|")
	fmt.Fprintf(w, "| message | sessions × messages | messages per run | Postfix X25519 | Petrel X25519 | Petrel / Postfix | Petrel X25519MLKEM768 | Postfix X25519MLKEM768 |%s\n", h)
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|---|%s\n", rule)
	for i, c := range r.Cells {
		fmt.Fprintf(w, "| %s | %d × %d | %d | %s%s | %s%s | %s | %s%s | n/a |%s\n", sizeName(c.Size), c.Conns, c.PerConn, c.Total,
			spreadOf(r.load(i, vPostfix, rate)).format(sig3), r.flagged(i, vPostfix),
			spreadOf(r.load(i, vPetrel, rate)).format(sig3), r.flagged(i, vPetrel),
			r.cellRatio(i, rate).format(times),
			spreadOf(r.load(i, vMLKEM, rate)).format(sig3), r.flagged(i, vMLKEM), r.discardCols(i, rate))
	}
	fmt.Fprintf(w, "\n## Inbound: final-reply latency, ms\n\n")
	fmt.Fprintf(w, "From the end of the message data to the server's final reply (its commit), as the load generator saw it.\n\n")
	h, rule = r.discardHead(" Postfix (discard) p99 | Petrel p99 / Postfix (discard) p99 |", "--:|--:|")
	fmt.Fprintf(w, "| message | sessions × messages | Postfix p50 | Postfix p99 | Petrel p50 | Petrel p99 | Petrel p99 / Postfix p99 | Petrel ML-KEM p50 | Petrel ML-KEM p99 | Postfix ML-KEM |%s\n", h)
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|%s\n", rule)
	for i, c := range r.Cells {
		fmt.Fprintf(w, "| %s | %d × %d | %s | %s | %s | %s | %s | %s | %s | n/a |%s\n", sizeName(c.Size), c.Conns, c.PerConn,
			spreadOf(r.load(i, vPostfix, p50)).format(sig3), spreadOf(r.load(i, vPostfix, p99)).format(sig3),
			spreadOf(r.load(i, vPetrel, p50)).format(sig3), spreadOf(r.load(i, vPetrel, p99)).format(sig3),
			r.cellRatio(i, p99).format(times),
			spreadOf(r.load(i, vMLKEM, p50)).format(sig3), spreadOf(r.load(i, vMLKEM, p99)).format(sig3), r.discardCols(i, p99))
	}
	fmt.Fprintf(w, "\n## Inbound: server CPU seconds per 1000 messages\n\n")
	fmt.Fprintf(w, "Receiving and local delivery to the Maildir (Postfix (discard): receiving, queueing and discarding): from the start of the load until the queue was empty.\n\n")
	h, rule = r.discardHead(" Postfix (discard) X25519 | Petrel / Postfix (discard) |", "--:|--:|")
	fmt.Fprintf(w, "| message | sessions × messages | Postfix X25519 | Petrel X25519 | Petrel / Postfix | Petrel X25519MLKEM768 | Postfix X25519MLKEM768 |%s\n", h)
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|---|%s\n", rule)
	for i, c := range r.Cells {
		fmt.Fprintf(w, "| %s | %d × %d | %s | %s | %s | %s | n/a |%s\n", sizeName(c.Size), c.Conns, c.PerConn,
			spreadOf(r.load(i, vPostfix, cpu)).format(sig3), spreadOf(r.load(i, vPetrel, cpu)).format(sig3),
			r.cellRatio(i, cpu).format(times), spreadOf(r.load(i, vMLKEM, cpu)).format(sig3), r.discardCols(i, cpu))
	}
	fmt.Fprintln(w)
}

// idleValues returns f of each idle run; NaN for a run without a sample.
func idleValues(runs []idleSample, f func(idleSample) float64) []float64 {
	var out []float64
	for _, s := range runs {
		if s.Open > 0 && s.Loaded.Processes > 0 {
			out = append(out, f(s))
		} else {
			out = append(out, math.NaN())
		}
	}
	return out
}

func (r *results) writeIdle(w io.Writer) {
	fmt.Fprintf(w, "## Memory of idle TLS sessions\n\n")
	if r.NoIdle {
		fmt.Fprintf(w, "Not measured in this run (--no-idle).\n\n")
		return
	}
	fmt.Fprintf(w, "`petrel bench --idle N --starttls`: N sessions open (TLS 1.3 set up, EHLO said) and idle. Per session:\n"+
		"(memory with the N sessions − memory before) / N, summed over all the server's processes. RSS counts\n"+
		"pages shared by several processes (Postfix's smtpd processes) once per process; PSS shares them out.\n\n")
	fmt.Fprintf(w, "| server | group | sessions | RSS per session | PSS per session | RSS before → with the sessions | PSS before → with the sessions | processes with the sessions | sessions dropped, errors |\n")
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	row := func(name, group string, n int, runs []idleSample) {
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s → %s | %s → %s | %s | %s |\n", name, group, n,
			spreadOf(idleValues(runs, func(s idleSample) float64 { return s.RSS })).format(kib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return s.PSS })).format(kib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return float64(s.Base.RSS) })).format(mib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return float64(s.Loaded.RSS) })).format(mib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return float64(s.Base.PSS) })).format(mib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return float64(s.Loaded.PSS) })).format(mib),
			spreadOf(idleValues(runs, func(s idleSample) float64 { return float64(s.Loaded.Processes) })).format(sig3),
			idleErrors(runs))
	}
	row(namePostfix, groupX25519, r.Idle, r.IdleRuns[vPostfix])
	row(namePetrel, groupX25519, r.Idle, r.IdleRuns[vPetrel])
	row(namePetrel, groupMLKEM, r.Idle, r.IdleRuns[vMLKEM])
	fmt.Fprintf(w, "| %s | n/a | %d | n/a | n/a | n/a | n/a | n/a | n/a |\n", namePostfix, r.Idle)
	row(namePetrel+" alone", groupX25519, r.IdleAlone, r.AloneRuns)
	fmt.Fprintf(w, "\nPetrel / Postfix per idle session (X25519, %d sessions): RSS %s, PSS %s.\n\n", r.Idle,
		spreadOf(ratios(idleValues(r.IdleRuns[vPetrel], func(s idleSample) float64 { return s.RSS }),
			idleValues(r.IdleRuns[vPostfix], func(s idleSample) float64 { return s.RSS }))).format(times),
		spreadOf(ratios(idleValues(r.IdleRuns[vPetrel], func(s idleSample) float64 { return s.PSS }),
			idleValues(r.IdleRuns[vPostfix], func(s idleSample) float64 { return s.PSS }))).format(times))
}

func idleErrors(runs []idleSample) string {
	if len(runs) == 0 {
		return "?"
	}
	var dropped, errs uint64
	flag := ""
	for _, s := range runs {
		dropped += s.Dropped
		errs += s.Errors
		if s.Problem != "" {
			flag = " *"
		}
	}
	return fmt.Sprintf("%d, %d in %d runs%s", dropped, errs, len(runs), flag)
}

func outValues(runs []outSample, f func(outSample) float64) []float64 {
	var out []float64
	for _, s := range runs {
		if s.Rate > 0 {
			out = append(out, f(s))
		} else {
			out = append(out, math.NaN())
		}
	}
	return out
}

func (r *results) writeOutbound(w io.Writer) {
	fmt.Fprintf(w, "## Outbound: delivering a queued batch\n\n")
	if r.NoOutbound {
		fmt.Fprintf(w, "Not measured in this run (--no-outbound).\n\n")
		return
	}
	fmt.Fprintf(w, "Each MTA relays a batch of %d queued 1 KiB messages, all for one domain, to `petrel bench sink` over STARTTLS\n"+
		"(encryption required, certificate not verified). Time: from the release of the held batch to the last\n"+
		"message at the sink.\n\n", r.Outbound)
	fmt.Fprintf(w, "| MTA | messages/s | at the sink | seconds | first message at the sink after, s | CPU s per 1000 messages | connections to the sink | client TLS (from the MTA's log) | queueing the batch, messages/s |\n")
	fmt.Fprintf(w, "|---|--:|--:|--:|--:|--:|--:|---|--:|\n")
	for _, name := range []string{namePostfix, namePetrel} {
		runs := r.Out[name]
		flag, group := "", "?"
		for _, s := range runs {
			if s.Problem != "" {
				flag = " *"
			}
			if s.Group != "" {
				group = s.Group
			}
		}
		fmt.Fprintf(w, "| %s | %s%s | %s | %s | %s | %s | %s | %s | %s |\n", name,
			spreadOf(outValues(runs, func(s outSample) float64 { return s.Rate })).format(sig3), flag,
			spreadOf(outValues(runs, func(s outSample) float64 { return float64(s.Delivered) })).format(sig3),
			spreadOf(outValues(runs, func(s outSample) float64 { return s.Seconds })).format(sig3),
			spreadOf(outValues(runs, func(s outSample) float64 { return s.First })).format(sig3),
			spreadOf(outValues(runs, func(s outSample) float64 { return s.CPU })).format(sig3),
			spreadOf(outValues(runs, func(s outSample) float64 { return float64(s.Conns) })).format(sig3),
			group,
			spreadOf(outValues(runs, func(s outSample) float64 { return s.FillRate })).format(sig3))
	}
	fmt.Fprintf(w, "\nPetrel / Postfix: messages/s %s, CPU per message %s.\n\n", r.outRatio(func(s outSample) float64 { return s.Rate }).format(times),
		r.outRatio(func(s outSample) float64 { return s.CPU }).format(times))
}

func (r *results) outRatio(f func(outSample) float64) spread {
	return spreadOf(ratios(outValues(r.Out[namePetrel], f), outValues(r.Out[namePostfix], f)))
}

// target is one goal of issues 5 and 10 and how the run did against it.
type target struct {
	what, measured string
	met            bool
	known          bool // measured
	skipped        bool // not part of the run
}

// cellIndex finds a cell of the matrix; -1 if the run had none such.
func (r *results) cellIndex(size, conns, perConn int) int {
	for i, c := range r.Cells {
		if c.Size == size && c.Conns == conns && c.PerConn == perConn {
			return i
		}
	}
	return -1
}

func (r *results) targets() []target {
	var ts []target
	ratioTarget := func(what string, size, conns, perConn int, f func(loadSample) float64, ok func(float64) bool) {
		i := r.cellIndex(size, conns, perConn)
		if i < 0 {
			ts = append(ts, target{what: what, measured: "not in this run's matrix", skipped: true})
			return
		}
		s := r.cellRatio(i, f)
		ts = append(ts, target{what: what, measured: s.format(times), met: s.N > 0 && ok(s.Median), known: s.N > 0})
	}
	ge := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	le := func(x float64) func(float64) bool { return func(v float64) bool { return v <= x } }
	ratioTarget("≥ 5× Postfix's messages/s, 1 KiB, 16 × 100", small, 16, 100, rate, ge(5))
	ratioTarget("≥ 4× Postfix's messages/s, 100 KiB, 16 × 100", large, 16, 100, rate, ge(4))
	ratioTarget("≥ 2.5× Postfix's messages/s, 1 KiB, 16 × 1", small, 16, 1, rate, ge(2.5))
	ratioTarget("≥ 2.5× Postfix's messages/s, 100 KiB, 16 × 1", large, 16, 1, rate, ge(2.5))
	// The CPU target is the reused-connection cell's; the CPU table
	// gives the others.
	ratioTarget("≤ 0.15× Postfix's CPU per message, 1 KiB, 16 × 100", small, 16, 100, cpu, le(0.15))
	for _, c := range r.Cells {
		ratioTarget(fmt.Sprintf("p99 ≤ Postfix's, %s", c), c.Size, c.Conns, c.PerConn, p99, le(1))
	}
	for _, x := range []struct {
		what string
		runs []idleSample
	}{
		{fmt.Sprintf("≤ 32 KiB per idle session, %d sessions (RSS)", r.Idle), r.IdleRuns[vPetrel]},
		{fmt.Sprintf("≤ 32 KiB per idle session, X25519MLKEM768, %d sessions (RSS)", r.Idle), r.IdleRuns[vMLKEM]},
		{fmt.Sprintf("≤ 32 KiB per idle session, Petrel alone, %d sessions (RSS)", r.IdleAlone), r.AloneRuns},
	} {
		if r.NoIdle {
			ts = append(ts, target{what: x.what, measured: "not in this run (--no-idle)", skipped: true})
			continue
		}
		s := spreadOf(idleValues(x.runs, func(s idleSample) float64 { return s.RSS }))
		ts = append(ts, target{what: x.what, measured: s.format(kib), met: s.N > 0 && s.Median <= 32*1024, known: s.N > 0})
	}
	const out = "outbound ≥ 2× Postfix's messages/s"
	if r.NoOutbound {
		return append(ts, target{what: out, measured: "not in this run (--no-outbound)", skipped: true})
	}
	s := r.outRatio(func(s outSample) float64 { return s.Rate })
	return append(ts, target{what: out, measured: s.format(times), met: s.N > 0 && s.Median >= 2, known: s.N > 0})
}

func (r *results) writeTargets(w io.Writer) {
	fmt.Fprintf(w, "## Targets (issues 5 and 10)\n\n")
	fmt.Fprintf(w, "Judged on the median.\n\n| target | Petrel / Postfix or per session | verdict |\n|---|--:|---|\n")
	for _, t := range r.targets() {
		verdict := "**missed**"
		switch {
		case t.skipped:
			verdict = "not measured"
		case !t.known:
			verdict = "?"
		case t.met:
			verdict = "met"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.what, t.measured, verdict)
	}
	fmt.Fprintln(w)
}

func (r *results) writeTLS(w io.Writer) {
	fmt.Fprintf(w, "## TLS negotiated by the load generator\n\n| server | offered | negotiated (the load generator's tls line) |\n|---|---|---|\n")
	for _, v := range r.Variants {
		seen := map[string]bool{}
		var list []string
		for k, runs := range r.Load {
			if k.V != v {
				continue
			}
			for _, s := range runs {
				if s.TLS != "" && !seen[s.TLS] {
					seen[s.TLS] = true
					list = append(list, s.TLS)
				}
			}
		}
		for _, s := range r.IdleRuns[v] {
			if s.TLS != "" && !seen[s.TLS] {
				seen[s.TLS] = true
				list = append(list, s.TLS)
			}
		}
		got := strings.Join(list, "; ")
		if got == "" {
			got = "?"
		}
		fmt.Fprintf(w, "| %s | %s only | %s |\n", v.Server(), v.Group(), got)
	}
	fmt.Fprintln(w)
}

func (r *results) writeMethod(w io.Writer) {
	fmt.Fprintf(w, "## Method\n\n")
	lines := []string{
		"Both servers run on 127.0.0.1 at the same time, with the same ECDSA P-256 certificate made for the run, and accept mail for `" + localDomain + "`; every message goes to `" + rcptAddr + "` from `" + senderAddr + "`.",
		"Postfix: a throw-away instance (`internal/postfixtest`: its own configuration, queue and data directories, nothing shared with a system Postfix), queue files written with Postfix's default fsync (a 250 only once the queue file is on disk), delivery by virtual(8) to one Maildir (fsynced too); `smtpd_tls_security_level = may`, Postfix's default TLS settings (OpenSSL's default groups: X25519 first; no TLS session cache; TLS 1.3 session tickets issued, never used: the load does not resume), the smtpd process limit " + fmt.Sprint(postfixProcessLimit) + " in master.cf, its maillog written to a file through postlogd. main.cf beyond postfixtest's own settings (`smtpd_peername_lookup = no` among them): " + r.mainCF() + ". Everything else is Postfix's default, including `in_flow_delay = 1s` (smtpd slows down when mail arrives faster than it is delivered).",
		r.spreadLine(),
		"Petrel: `petrel serve` with `[local] recipients = \"any\"` (Maildir delivery), `[limits] max_connections = max_connections_per_ip = 20000`, log level info to a file. Its data directory is next to Postfix's, on the same file system.",
		"Load: `petrel bench --starttls --tls-group GROUP --pipelining --conns C --msgs-per-conn M --total N --size S`: one key-exchange group offered (X25519, or X25519MLKEM768 for Petrel's second column), a full TLS 1.3 handshake per session (no resumption), the certificate verified once (the first session), not per session, TCP_QUICKACK re-armed from the ClientHello to the first EHLO reply inside TLS (as Petrel's SMTP client does: without it, OpenSSL servers such as Postfix wait ≈ 40 ms per session for the client's delayed ACK; the run checks that every TLS session was re-armed). The load generator is a separate process on the same CPUs; its CPU time is not counted. Messages per run (`--total`) are in the first table; they give the slower server several seconds on the machine they were chosen on; `--scale F` multiplies them.",
		"CPU: the server's user + system time over the run, from just before the load until its queue was empty and every accepted message was in the Maildir (so local delivery is included), divided by the messages accepted. Petrel: utime + stime of its one process (/proc/PID/stat). Postfix: the master's utime + stime + cutime + cstime (the children it has reaped) plus utime + stime of each of its live children (smtpd, cleanup, qmgr, trivial-rewrite, virtual, tlsmgr, anvil, postlogd, ...): a daemon that lives through the run, starts in it or exits in it is counted once. Clock ticks are 10 ms.",
		"Between runs each server's queue drains (Postfix: its queue directories are empty; Petrel: `petrel queue list --json` is empty) and the delivered files are moved out of the Maildir (not deleted until the end: on ext4 without a journal, files created within 30 s of many deletions are slower to create, which would bill one server's cleanup to the next run) and the file systems are synced (sync(2)), so a run's background deliveries are billed to that run only. A queue that has not drained " + r.DrainTimeout.String() + " after the load (`--drain-timeout`) is not waited for longer: the CPU time is read then (it covers receiving every message and delivering those in the Maildir; flagged) and the rest is thrown away (Petrel: restarted with an empty data directory; Postfix: `postsuper -d ALL`).",
		"Memory: Postfix is reloaded first and measured once no smtpd process is left (before the next round's runs, the idle sessions' smtpd processes are left to exit, after Postfix's max_idle of 100 s, so that they are not billed to a run); Petrel is restarted. RSS and PSS come from /proc/PID/smaps_rollup of every process of the server (Postfix: every process with the instance's MAIL_CONFIG; Petrel: its process), sampled before the sessions and " + settleTime.String() + " after the last one opened.",
		"Outbound: Postfix queues the batch on hold (a second instance with `smtpd_data_restrictions = check_client_access static:HOLD`, `relayhost = [127.0.0.1]:SINK`, `smtp_tls_security_level = encrypt`; Postfix's default `smtp_tls_connection_reuse = no` and destination concurrency 20); the release is `postsuper -H ALL` then `postqueue -f`, so no delivery was ever attempted and no retry backoff applies. Petrel queues it with `petrel serve --hold` (`smarthost = \"127.0.0.1:SINK\"`, `smarthost_tls = \"encrypt\"`, 127.0.0.1 a trusted network); the release is its restart without `--hold`, whose start-up is inside the time. `petrel bench sink --exit-after N` records when the first and the N-th message arrived. A batch not all at the sink " + r.OutboundTimeout.String() + " after the release (`--outbound-timeout`) is given up: messages/s is then the messages at the sink over that time (flagged). CPU: Postfix as above, from the release to an empty queue; Petrel's new process from its start to an empty queue; per message delivered.",
	}
	for _, l := range lines {
		fmt.Fprintf(w, "- %s\n", l)
	}
	fmt.Fprintln(w)
}

// spreadLine says how the servers' directories were placed on disk.
func (r *results) spreadLine() string {
	const what = "Directories: the run's directory has ext4's top-directory flag (`chattr +T`), so that each server's directory made in it (each Postfix instance's, Petrel's data directory) gets block groups of its own, as on a machine of its own: on ext4 without a journal a file created in a block group where many inodes were freed in the last 60 s is slow to create (`recently_deleted`), and Postfix frees an inode per message (its queue file); sharing groups would bill Postfix's deletions to the server that runs after it."
	if r.SpreadDirs != "" {
		return what + " **Not done in this run**: " + r.SpreadDirs + "."
	}
	return what
}

// mainCF lists the run's main.cf settings for Postfix as `name = value`.
func (r *results) mainCF() string {
	var list []string
	for _, k := range slices.Sorted(maps.Keys(r.PostfixMainCF)) {
		list = append(list, fmt.Sprintf("`%s = %s`", k, r.PostfixMainCF[k]))
	}
	if r.discard() {
		list = append(list, "and for Postfix (discard) `virtual_transport = discard:` (a second instance: the same, but each message is discarded once queued)")
	}
	return strings.Join(list, ", ")
}

func (r *results) writeProblems(w io.Writer) {
	fmt.Fprintf(w, "## Problems\n\n")
	n := 0
	for i, c := range r.Cells {
		for _, v := range r.Variants {
			for round, s := range r.Load[loadKey{i, v}] {
				if s.Problem != "" {
					fmt.Fprintf(w, "- round %d, %s, %s: %s\n", round+1, c, v, s.Problem)
					n++
				}
			}
		}
	}
	for _, v := range r.Variants {
		for round, s := range r.IdleRuns[v] {
			if s.Problem != "" {
				fmt.Fprintf(w, "- round %d, %d idle sessions, %s: %s\n", round+1, s.Target, v, s.Problem)
				n++
			}
		}
	}
	for round, s := range r.AloneRuns {
		if s.Problem != "" {
			fmt.Fprintf(w, "- round %d, %d idle sessions, Petrel alone: %s\n", round+1, s.Target, s.Problem)
			n++
		}
	}
	for _, name := range []string{namePostfix, namePetrel} {
		for round, s := range r.Out[name] {
			if s.Problem != "" {
				fmt.Fprintf(w, "- round %d, outbound, %s: %s\n", round+1, name, s.Problem)
				n++
			}
		}
	}
	if n == 0 {
		fmt.Fprintf(w, "None: every run accepted and delivered every message without an error.\n")
	}
}
