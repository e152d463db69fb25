package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/smtp"
)

// Hold opens Options.Idle sessions (Ramp at a time: connect, EHLO, TLS,
// EHLO again) and holds them open, idle, sending NOOP every IdleNoop (or
// nothing), until Duration has passed or ctx is done: what a server's
// memory per idle connection is measured with. A session the server drops
// is counted and opened again. The report's Idle says how many were open
// at the end and at most. When no session can be set up at all (3 failures
// per Ramp before any success), Hold gives up with an error and the
// report.
func Hold(ctx context.Context, opts Options) (*Report, error) {
	o, err := opts.withDefaults(true)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(o, false)
	if err != nil {
		return nil, err
	}
	hctx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	if o.Duration > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(hctx, o.Duration)
		defer cancel()
	}
	start := time.Now()
	h := &holder{r: r, ramp: make(chan struct{}, o.Ramp), start: start, giveUp: giveUp}
	var wg sync.WaitGroup
	for range o.Idle {
		wg.Go(func() { h.slot(hctx) })
	}
	r.progress(&wg, start, func() int { return int(h.open.Load()) })
	elapsed := time.Since(start)

	rep := r.report(elapsed)
	rep.Mode = "idle"
	rep.Idle = &IdleStats{
		Target:  o.Idle,
		Open:    int(h.endOpen.Load()),
		Peak:    int(h.peak.Load()),
		Dropped: h.dropped.Load(),
		NoopSec: o.IdleNoop.Seconds(),
	}
	if d := time.Duration(h.rampDone.Load()); d > 0 {
		rep.Idle.RampSec = d.Seconds()
	}
	rep.Resumed = h.resumed
	rep.setTLS(h.tls)
	rep.Latency = &Latency{Setup: h.setup.Summary()}
	rep.Interrupted = ctx.Err() != nil
	if m := r.abortMsg.Load(); m != nil {
		rep.Aborted = *m
		return rep, fmt.Errorf("gave up: %s", *m)
	}
	return rep, nil
}

// holder is the state of Hold.
type holder struct {
	r        *runner
	ramp     chan struct{} // sessions being opened
	open     atomic.Int64
	peak     atomic.Int64
	dropped  atomic.Uint64
	endOpen  atomic.Int64 // sessions held until the end
	start    time.Time
	rampDone atomic.Int64 // when all were first open, since start
	giveUp   context.CancelFunc

	mu      sync.Mutex
	setup   Histogram
	tls     map[TLSParams]uint64
	resumed uint64
}

// slot keeps one session open until ctx is done, opening it again when it
// fails or is dropped.
func (h *holder) slot(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		select {
		case h.ramp <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s, err := h.r.open(ctx, h.r.dials.Add(1), true)
		<-h.ramp
		if err != nil {
			h.r.count(ctx, err)
			if h.r.setupFailed(err, h.r.opts.Ramp, true) {
				h.giveUp() // no session could ever be set up
				return
			}
			fails++
			backoff(ctx, fails+1)
			continue
		}
		fails = 0
		h.r.setupOK()
		h.r.sessions.Add(1)
		h.opened(s)
		n := h.open.Add(1)
		if n == int64(h.r.opts.Idle) {
			h.rampDone.CompareAndSwap(0, int64(time.Since(h.start)))
		}
		for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
		}
		err = s.hold(ctx, h.r.opts.IdleNoop)
		h.open.Add(-1)
		s.close()
		if ctx.Err() != nil {
			h.endOpen.Add(1)
			return
		}
		if err != nil {
			h.r.count(ctx, err)
			h.dropped.Add(1)
			backoff(ctx, 2)
		}
	}
}

func (h *holder) opened(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setup.Record(s.setup)
	if s.tls != (TLSParams{}) {
		if h.tls == nil {
			h.tls = map[TLSParams]uint64{}
		}
		h.tls[s.tls]++
	}
	if s.resumed {
		h.resumed++
	}
}

// hold keeps the session idle until ctx is done (then it returns nil),
// sending NOOP every noop (never when zero), and returns how the session
// ended otherwise: dropped by the server, a refused NOOP, unsolicited
// data. It waits in a read, so that a session the server closes is seen
// at once.
func (s *session) hold(ctx context.Context, noop time.Duration) *Error {
	_ = s.raw.SetWriteDeadline(time.Time{})
	next := time.Time{}
	if noop > 0 {
		// Spread the NOOPs of sessions opened together.
		next = time.Now().Add(noop/2 + rand.N(noop))
	}
	for {
		_ = s.raw.SetReadDeadline(next)
		if ctx.Err() != nil {
			return nil
		}
		_, err := s.r.Peek(1)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			code, text, rerr := s.reply(nil)
			switch {
			case rerr != nil:
				return rerr
			case code == smtp.C421ServiceUnavailable:
				return failf(KindIO, "the server closed the idle session: %d %s", code, text)
			}
			return failf(KindProtocol, "unsolicited reply %d %s", code, text)
		}
		var ne interface{ Timeout() bool }
		if noop > 0 && errors.As(err, &ne) && ne.Timeout() {
			code, text, cerr := s.cmd(ctx, "NOOP")
			switch {
			case cerr != nil:
				if ctx.Err() != nil {
					return nil
				}
				return cerr
			case code == smtp.C421ServiceUnavailable:
				return failf(KindIO, "the server closed the idle session: %d %s", code, text)
			case code != smtp.C250OK:
				return failf(KindProtocol, "NOOP: %d %s", code, text)
			}
			next = time.Now().Add(noop)
			continue
		}
		return netFail(err)
	}
}
