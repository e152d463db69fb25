package delivery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/petrel-mta/petrel/internal/dsn"
	"github.com/petrel-mta/petrel/internal/queue"
)

// Loop is the delivery loop of the queue package's documentation: it
// leases due messages, delivers them with a Deliverer, records the results
// and queues a failure report (DSN) for the failed recipients.
type Loop struct {
	Queue     queue.Queue
	Deliverer *Deliverer
	// ReportingMTA is this host's name in DSNs. Required.
	ReportingMTA string
	// Workers is how many messages are delivered at once (default 64);
	// the Deliverer's limits still apply. A worker mostly waits (on an
	// fsync, a remote server), so many cost little, and concurrent
	// deliveries share their fsyncs.
	Workers int
	// Poll is how often the queue is asked when it does not notify
	// (default 5 s).
	Poll time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock for the Date of DSNs (the queue has its own, for
	// scheduling); nil is time.Now.
	Now func() time.Time
}

// Run delivers until ctx ends, then waits for the deliveries in progress
// and returns ctx.Err().
func (l *Loop) Run(ctx context.Context) error {
	workers := l.Workers
	if workers <= 0 {
		workers = 64
	}
	poll := l.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	var wake <-chan struct{}
	if n, ok := l.Queue.(queue.Notifier); ok {
		wake = n.Notify()
	}
	slots := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	// freed is signalled when a worker finishes, so that a full loop
	// leases again at once rather than at the next poll.
	freed := make(chan struct{}, 1)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-freed:
		case <-t.C:
		}
		for {
			free := workers - len(slots)
			if free == 0 {
				break
			}
			leases, err := l.Queue.Lease(ctx, free)
			if err != nil {
				if ctx.Err() == nil {
					l.log().Error("queue lease failed", "err", err)
				}
				break
			}
			if len(leases) == 0 {
				break
			}
			for _, ls := range leases {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() {
						<-slots
						select {
						case freed <- struct{}{}:
						default:
						}
					}()
					l.Process(ctx, ls)
				})
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(poll)
	}
}

func (l *Loop) log() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Process delivers one leased message and records the outcome: Update,
// then a DSN for new failures (never for the null reverse-path, nor for a
// recipient whose NOTIFY excludes FAILURE), then Complete. When Update
// fails the lease is released and the attempts are made again later.
func (l *Loop) Process(ctx context.Context, ls *queue.Lease) {
	q := l.Queue
	msg := ls.Message
	msg.Rcpts = ls.Due
	var results []queue.Result
	if len(ls.Due) > 0 {
		results = l.Deliverer.Deliver(ctx, msg, func() (io.ReadCloser, error) { return q.Body(ctx, msg.ID) })
	}
	failed, err := q.Update(ctx, ls, results)
	if err != nil {
		l.log().Error("queue update failed; releasing", "id", msg.ID, "err", err)
		_ = q.Release(context.WithoutCancel(ctx), ls)
		return
	}
	if len(failed) > 0 && ls.Message.From != "" {
		if err := l.bounce(ctx, ls.Message, failed); err != nil {
			// Not completed: the failures stay unreported and come
			// back at the next lease.
			l.log().Error("cannot queue DSN; will retry", "id", msg.ID, "err", err)
			_ = q.Release(context.WithoutCancel(ctx), ls)
			return
		}
	}
	if err := q.Complete(context.WithoutCancel(ctx), ls); err != nil {
		l.log().Error("queue complete failed", "id", msg.ID, "err", err)
	}
}

// wantsFailure reports whether a recipient's NOTIFY asks for (or leaves
// the default of) a failure report (RFC 3461 §4.1).
func wantsFailure(notify string) bool {
	if notify == "" {
		return true
	}
	for _, n := range strings.Split(strings.ToUpper(notify), ",") {
		if strings.TrimSpace(n) == "FAILURE" {
			return true
		}
	}
	return false
}

func (l *Loop) bounce(ctx context.Context, m queue.Message, failed []queue.Recipient) error {
	var rcpts []dsn.Recipient
	for _, r := range failed {
		if !wantsFailure(r.Notify) {
			continue
		}
		rc := dsn.Recipient{Addr: r.Addr, ORCPT: r.ORCPT, Action: dsn.ActionFailed,
			Reply: r.LastReply, RemoteMTA: r.RemoteMTA, LastAttempt: r.LastAttempt}
		if r.Expired {
			// RFC 3463 §3.5: X.4.7, delivery time expired; the last
			// reply stays as the Diagnostic-Code.
			rc.Status = "4.4.7"
		}
		rcpts = append(rcpts, rc)
	}
	if len(rcpts) == 0 {
		return nil
	}
	body, err := l.Queue.Body(ctx, m.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	var now time.Time
	if l.Now != nil {
		now = l.Now()
	}
	ret := dsn.RetDefault
	switch strings.ToUpper(m.Attrs[queue.AttrDSNRet]) {
	case "FULL":
		ret = dsn.RetFull
	case "HDRS":
		ret = dsn.RetHdrs
	}
	report, err := dsn.New(dsn.Report{
		ReportingMTA: l.ReportingMTA,
		Sender:       m.From,
		EnvID:        m.Attrs[queue.AttrDSNEnvID],
		Ret:          ret,
		UTF8:         m.Attrs[queue.AttrSMTPUTF8] == "yes",
		QueueID:      m.ID,
		Arrival:      m.Received,
		Message:      body,
		Recipients:   rcpts,
		Now:          now,
	})
	if errors.Is(err, dsn.ErrNullSender) {
		return nil
	}
	if err != nil {
		return err
	}
	env := queue.Envelope{From: "", Rcpts: []queue.Recipient{{Addr: m.From}}}
	if m.Attrs[queue.AttrSMTPUTF8] == "yes" {
		env.Attrs = map[string]string{queue.AttrSMTPUTF8: "yes"}
	}
	id, err := l.Queue.Put(ctx, env, strings.NewReader(string(report)))
	if err != nil {
		return err
	}
	l.log().Info("DSN queued", "id", m.ID, "dsn", id, "to", m.From, "rcpts", len(rcpts))
	return nil
}
