package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/internal/quickack"
)

// runner is the state of one Run or Hold.
type runner struct {
	opts      Options
	job       *job
	tlsConfig *tls.Config
	dialer    dialer
	dials     atomic.Uint64

	messages, failed, sessions atomic.Uint64
	quickAcked                 atomic.Uint64 // sessions whose first reads inside TLS re-armed quick ACKs
	errs                       [numKinds]atomic.Uint64
	pipelined, chunked         atomic.Bool

	stop     atomic.Bool  // no new transactions or sessions
	claimed  atomic.Int64 // transactions started, against Total
	paced    atomic.Int64 // transactions started, for Options.Rate
	start    time.Time    // of the run, for Options.Rate
	everOK   atomic.Bool  // a session was set up
	failRun  atomic.Int64 // session setups failed in a row
	abortMsg atomic.Pointer[string]

	certCheck sync.WaitGroup // the check of the first certificate

	mu      sync.Mutex
	samples map[Kind]string // the first error of each kind
	cert    string          // what the certificate check said
}

// maxSetupFailures in a row end a run: the server is gone. Before any
// session succeeded, fewer do (setupFailuresFirst per connection).
const (
	maxSetupFailures   = 100
	setupFailuresFirst = 3
)

func newRunner(o Options, needJob bool) (*runner, error) {
	r := &runner{opts: o, samples: map[Kind]string{}, dialer: dialer{timeout: o.Timeout, locals: o.LocalAddrs}}
	if needJob {
		j, err := newJob(&r.opts)
		if err != nil {
			return nil, err
		}
		r.job = j
	}
	if o.Security != Plaintext {
		r.tlsConfig = r.newTLSConfig()
	}
	return r, nil
}

// newTLSConfig is the client configuration of every session.
func (r *runner) newTLSConfig() *tls.Config {
	o := &r.opts
	cfg := &tls.Config{
		MinVersion: o.TLSMinVersion,
		MaxVersion: o.TLSMaxVersion,
		RootCAs:    o.RootCAs,
		ServerName: o.ServerName,
	}
	if o.Group != 0 {
		cfg.CurvePreferences = []tls.CurveID{o.Group}
	}
	if o.Resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(max(o.Conns, o.Idle, 64))
	}
	if o.Verify {
		r.cert = "verified for " + o.ServerName
		return cfg
	}
	// The check costs the load generator CPU on every handshake: skip it,
	// but check the first session's certificate once, beside the run (the
	// first check may load the system's roots), so the report says what a
	// verifying client would have found.
	var first atomic.Bool
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if !first.CompareAndSwap(false, true) {
			return nil
		}
		certs := cs.PeerCertificates
		r.certCheck.Go(func() {
			note := "not verified (--insecure); it would pass for " + o.ServerName
			if err := verifyChain(certs, o.RootCAs, o.ServerName); err != nil {
				note = "not verified (--insecure); it would fail: " + err.Error()
			}
			r.mu.Lock()
			r.cert = note
			r.mu.Unlock()
		})
		return nil
	}
	return cfg
}

// verifyChain is the PKIX check crypto/tls would make.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, name string) error {
	if len(certs) == 0 {
		return fmt.Errorf("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
	return err
}

// count records a failure, unless ctx is done: what fails while the run
// is interrupted is not the server's doing.
func (r *runner) count(ctx context.Context, err *Error) {
	if ctx.Err() != nil || err == nil {
		return
	}
	if r.errs[err.Kind].Add(1) == 1 {
		r.mu.Lock()
		r.samples[err.Kind] = err.Err.Error()
		r.mu.Unlock()
	}
	r.opts.Logger.Debug("bench failure", "kind", err.Kind.String(), "err", err.Err)
}

func (r *runner) errors() uint64 {
	var n uint64
	for i := range r.errs {
		n += r.errs[i].Load()
	}
	return n
}

// setupFailed records a failed session setup and reports whether the run
// should end: the server cannot be reached. parallel is how many sessions
// are set up at once; onlyFirst gives up only before any session worked.
func (r *runner) setupFailed(err *Error, parallel int, onlyFirst bool) bool {
	n := r.failRun.Add(1)
	limit := int64(maxSetupFailures)
	if !r.everOK.Load() {
		limit = int64(setupFailuresFirst * max(parallel, 1))
	} else if onlyFirst {
		return false
	}
	if n < limit {
		return false
	}
	msg := fmt.Sprintf("%d session setups failed in a row, the last with %v", n, err)
	if r.abortMsg.CompareAndSwap(nil, &msg) {
		r.stop.Store(true)
	}
	return true
}

func (r *runner) setupOK() {
	r.failRun.Store(0)
	r.everOK.Store(true)
}

// claim takes the right to start one more transaction.
func (r *runner) claim() bool {
	if r.stop.Load() {
		return false
	}
	if r.opts.Total > 0 {
		for {
			n := r.claimed.Load()
			if n >= int64(r.opts.Total) {
				return false
			}
			if r.claimed.CompareAndSwap(n, n+1) {
				break
			}
		}
	}
	if r.opts.Rate > 0 {
		return r.pace()
	}
	return true
}

// pace waits for this transaction's turn at Options.Rate: the n-th starts
// n/Rate seconds into the run (a steady rate, for soak tests; a late
// transaction starts at once and the schedule does not drift).
func (r *runner) pace() bool {
	n := r.paced.Add(1) - 1
	at := r.start.Add(time.Duration(float64(n) / r.opts.Rate * float64(time.Second)))
	for {
		if r.stop.Load() {
			return false
		}
		d := time.Until(at)
		if d <= 0 {
			return true
		}
		time.Sleep(min(d, 100*time.Millisecond))
	}
}

// unclaim gives back a claim that no transaction used.
func (r *runner) unclaim() {
	if r.opts.Total > 0 {
		r.claimed.Add(-1)
	}
}

// worker is one connection slot of Run: its sessions one after another,
// with its own histograms (merged at the end, no locking while running).
type worker struct {
	final, message, setup Histogram
	tls                   map[TLSParams]uint64
	resumed               uint64
}

func (w *worker) opened(s *session) {
	w.setup.Record(s.setup)
	if s.tls != (TLSParams{}) {
		w.tls[s.tls]++
	}
	if s.resumed {
		w.resumed++
	}
}

// Check checks the options as Run (idle false) or Hold (idle true) would,
// without connecting.
func (o Options) Check(idle bool) error {
	d, err := o.withDefaults(idle)
	if err == nil && !idle {
		_, err = newJob(&d)
	}
	return err
}

// Run runs the load: Conns sessions at once, each carrying MsgsPerConn
// transactions before QUIT and a new session, until Total transactions or
// Duration, or until ctx is done (the report then covers what was done,
// with Interrupted set). A failed session is counted and replaced. The
// error is for options that do not check (the report is then nil) or for a
// run given up because sessions could not be set up (with the report).
func Run(ctx context.Context, opts Options) (*Report, error) {
	o, err := opts.withDefaults(false)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(o, true)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	r.start = start
	if o.Duration > 0 {
		t := time.AfterFunc(o.Duration, func() { r.stop.Store(true) })
		defer t.Stop()
	}
	stopOnCancel := context.AfterFunc(ctx, func() { r.stop.Store(true) })
	defer stopOnCancel()

	workers := make([]*worker, o.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{tls: map[TLSParams]uint64{}}
		workers[i] = w
		wg.Go(func() { r.work(ctx, w) })
	}
	r.progress(&wg, start, nil)
	elapsed := time.Since(start)

	rep := r.report(elapsed)
	rep.Mode = "load"
	var tlsSeen map[TLSParams]uint64
	var final, message, setup Histogram
	for _, w := range workers {
		final.Merge(&w.final)
		message.Merge(&w.message)
		setup.Merge(&w.setup)
		tlsSeen = addCounts(tlsSeen, w.tls)
		rep.Resumed += w.resumed
	}
	rep.setTLS(tlsSeen)
	rep.Latency = &Latency{Final: final.Summary(), Message: message.Summary(), Setup: setup.Summary()}
	rep.Interrupted = ctx.Err() != nil
	if m := r.abortMsg.Load(); m != nil {
		rep.Aborted = *m
		return rep, fmt.Errorf("gave up: %s", *m)
	}
	return rep, nil
}

// work runs one connection slot of Run. It claims a transaction before
// opening a session, so that no session is opened for nothing.
func (r *runner) work(ctx context.Context, w *worker) {
	fails := 0
	for r.claim() {
		s, err := r.open(ctx, r.dials.Add(1), false)
		if err != nil {
			r.unclaim()
			if ctx.Err() != nil {
				return
			}
			r.count(ctx, err)
			if r.setupFailed(err, r.opts.Conns, false) {
				return
			}
			fails++
			backoff(ctx, fails)
			continue
		}
		fails = 0
		r.setupOK()
		r.sessions.Add(1)
		w.opened(s)
		alive := true
		for i := 0; ; i++ {
			res := s.transaction(ctx, r)
			alive = res.alive
			if res.pipelined {
				r.pipelined.Store(true)
			}
			if res.chunked {
				r.chunked.Store(true)
			}
			switch {
			case res.ok:
				r.messages.Add(1)
				w.final.Record(res.final)
				w.message.Record(res.all)
			case ctx.Err() == nil:
				r.failed.Add(1)
			}
			if !alive || i+1 >= r.opts.MsgsPerConn || !r.claim() {
				break
			}
		}
		if alive && ctx.Err() == nil {
			r.count(ctx, s.quit(ctx))
		} else {
			s.close()
		}
	}
}

// backoff waits a little after the n-th failed setup in a row: nothing
// after the first, then 10 ms doubling up to a second.
func backoff(ctx context.Context, n int) {
	if n < 2 {
		return
	}
	d := min(10*time.Millisecond<<min(n-2, 7), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// progress calls Options.Progress every ProgressEvery until wg is done,
// then returns. open, when set, says how many sessions are open (Hold).
func (r *runner) progress(wg *sync.WaitGroup, start time.Time, open func() int) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if r.opts.Progress == nil {
		<-done
		return
	}
	t := time.NewTicker(r.opts.ProgressEvery)
	defer t.Stop()
	var last uint64
	lastT := start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			m := r.messages.Load()
			p := Progress{
				Elapsed:  now.Sub(start),
				Messages: m,
				Failed:   r.failed.Load(),
				Rate:     float64(m-last) / now.Sub(lastT).Seconds(),
				Sessions: r.sessions.Load(),
				Errors:   r.errors(),
				Target:   r.opts.Idle,
			}
			if open != nil {
				p.Open = open()
			}
			last, lastT = m, now
			r.opts.Progress(p)
		}
	}
}

func addCounts(dst, src map[TLSParams]uint64) map[TLSParams]uint64 {
	if dst == nil {
		dst = map[TLSParams]uint64{}
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// report fills in what Run and Hold have in common.
func (r *runner) report(elapsed time.Duration) *Report {
	r.certCheck.Wait()
	o := &r.opts
	rep := &Report{
		Server:      o.Server,
		Security:    o.Security.String(),
		QuickAck:    o.Security != Plaintext && !o.NoQuickAck && quickack.Supported,
		Duration:    elapsed.Seconds(),
		Sessions:    r.sessions.Load(),
		QuickAcked:  r.quickAcked.Load(),
		Errors:      map[string]uint64{},
		ErrorsTotal: r.errors(),
	}
	if elapsed > 0 {
		rep.SessionsPerSec = float64(rep.Sessions) / elapsed.Seconds()
	}
	r.mu.Lock()
	for k := range numKinds {
		if n := r.errs[k].Load(); n > 0 {
			rep.Errors[k.String()] = n
			if s, ok := r.samples[k]; ok {
				if rep.ErrorSamples == nil {
					rep.ErrorSamples = map[string]string{}
				}
				rep.ErrorSamples[k.String()] = s
			}
		}
	}
	rep.Certificate = r.cert
	r.mu.Unlock()
	if r.job != nil {
		rep.Conns, rep.MsgsPerConn, rep.Size, rep.Rcpts = o.Conns, o.MsgsPerConn, len(r.job.msg), o.Rcpts
		rep.Messages = r.messages.Load()
		rep.Failed = r.failed.Load()
		rep.Bytes = rep.Messages * uint64(len(r.job.msg))
		if elapsed > 0 {
			rep.MessagesPerSec = float64(rep.Messages) / elapsed.Seconds()
		}
		rep.Pipelining = r.pipelined.Load()
		rep.BDAT = r.chunked.Load()
	}
	return rep
}

// setTLS lists the TLS parameters seen, most frequent first.
func (rep *Report) setTLS(seen map[TLSParams]uint64) {
	for k, n := range seen {
		rep.TLS = append(rep.TLS, TLSSeen{TLSParams: k, Sessions: n})
	}
	sort.Slice(rep.TLS, func(i, j int) bool {
		if rep.TLS[i].Sessions != rep.TLS[j].Sessions {
			return rep.TLS[i].Sessions > rep.TLS[j].Sessions
		}
		return rep.TLS[i].String() < rep.TLS[j].String()
	})
}

// ParseIPs parses IP addresses (for Options.LocalAddrs).
func ParseIPs(list []string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range list {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}
