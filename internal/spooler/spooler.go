// Package spooler runs Petrel's delivery loop: it leases the messages that
// have work due from the queue, hands their due recipients to a Deliverer,
// records the outcomes (the queue schedules the retries), and reports the
// recipients that failed to the sender with a delivery status notification
// (RFC 3464), queued like any other message. A null sender never gets one
// (RFC 5321 §4.5.5), nor a recipient whose NOTIFY excludes FAILURE (RFC 3461
// §4.1).
//
// Delivery is at least once: a crash between a delivery and its Update, or
// between queueing a report and Complete, repeats that step after restart,
// never loses it (internal/queue's contract).
package spooler

import (
	"bytes"
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

// Deliverer attempts the recipients in msg.Rcpts (the due ones) and returns
// one result per recipient. body opens the message; it may be called more
// than once.
type Deliverer interface {
	Deliver(ctx context.Context, msg queue.Message, body func() (io.ReadCloser, error)) []queue.Result
}

// Options configure a Runner.
type Options struct {
	Queue     queue.Queue
	Deliverer Deliverer
	// Hostname is the Reporting-MTA of delivery status notifications.
	Hostname string
	// Workers bounds the messages delivered at once (default 8).
	Workers int
	// Poll is how often the queue is asked for due work when it gives no
	// notification (default 1 s).
	Poll   time.Duration
	Logger *slog.Logger
	// Now is the clock of the reports; nil is time.Now.
	Now func() time.Time
}

// Runner is the delivery loop.
type Runner struct {
	o   Options
	log *slog.Logger
}

// New returns a Runner.
func New(o Options) *Runner {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{o: o, log: log}
}

// Run delivers until ctx is done, then waits for the deliveries in
// progress (they see ctx cancelled) and returns.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, r.o.Workers)
	var wake <-chan struct{}
	if n, ok := r.o.Queue.(queue.Notifier); ok {
		wake = n.Notify()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		free := r.o.Workers - len(slots)
		var leases []*queue.Lease
		if free > 0 {
			var err error
			leases, err = r.o.Queue.Lease(ctx, free)
			if err != nil && ctx.Err() == nil {
				r.log.Error("queue lease failed", "err", err)
			}
		}
		for _, l := range leases {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				r.handle(ctx, l)
			}()
		}
		if len(leases) > 0 && len(leases) == free {
			continue // there may be more due
		}
		timer.Reset(r.o.Poll)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-timer.C:
		}
	}
}

// handle delivers one leased message and records the outcome.
func (r *Runner) handle(ctx context.Context, l *queue.Lease) {
	msg := l.Message
	log := r.log.With("id", msg.ID)
	var results []queue.Result
	if len(l.Due) > 0 {
		m := msg
		m.Rcpts = l.Due
		results = r.o.Deliverer.Deliver(ctx, m, func() (io.ReadCloser, error) { return r.o.Queue.Body(ctx, msg.ID) })
	}
	failed, err := r.o.Queue.Update(ctx, l, results)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("recording delivery results failed; the attempt will be repeated", "err", err)
		}
		return
	}
	if err := r.report(ctx, msg, failed); err != nil {
		log.Error("delivery status notification not queued; retrying later", "err", err)
		_ = r.o.Queue.Release(ctx, l)
		return
	}
	if err := r.o.Queue.Complete(ctx, l); err != nil && ctx.Err() == nil {
		log.Error("completing the delivery failed", "err", err)
	}
}

// report queues one delivery status notification for the failed
// recipients that asked for it.
func (r *Runner) report(ctx context.Context, msg queue.Message, failed []queue.Recipient) error {
	if len(failed) == 0 || msg.From == "" {
		return nil
	}
	var rcpts []dsn.Recipient
	for _, f := range failed {
		if f.Notify != "" && !strings.Contains(strings.ToUpper(f.Notify), "FAILURE") {
			continue
		}
		rcpts = append(rcpts, dsn.Recipient{
			Addr: f.Addr, ORCPT: f.ORCPT, Action: dsn.ActionFailed,
			Reply: f.LastReply, RemoteMTA: f.RemoteMTA, LastAttempt: f.LastAttempt,
		})
	}
	if len(rcpts) == 0 {
		return nil
	}
	body, err := r.o.Queue.Body(ctx, msg.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	report, err := dsn.New(dsn.Report{
		ReportingMTA: r.o.Hostname, Sender: msg.From, QueueID: msg.ID, Arrival: msg.Received,
		EnvID: msg.Attrs[queue.AttrDSNEnvID], Ret: ret(msg.Attrs[queue.AttrDSNRet]),
		Message: body, Recipients: rcpts, Now: r.o.Now(),
	})
	if errors.Is(err, dsn.ErrNullSender) {
		return nil
	}
	if err != nil {
		return err
	}
	id, err := r.o.Queue.Put(ctx, queue.Envelope{From: "", Rcpts: []queue.Recipient{{Addr: msg.From}}}, bytes.NewReader(report))
	if err != nil {
		return err
	}
	r.log.Info("delivery status notification queued", "id", id, "for", msg.ID, "to", msg.From, "failed", len(rcpts))
	return nil
}

func ret(s string) dsn.Ret {
	switch strings.ToUpper(s) {
	case "FULL":
		return dsn.RetFull
	case "HDRS":
		return dsn.RetHdrs
	}
	return dsn.RetDefault
}
