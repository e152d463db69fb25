package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// Spool is the embedded Queue: a directory on local disk (data_dir/queue).
//
// # Layout
//
//	owner.lock    flock(2)ed exclusively by the owner (the daemon) while it runs
//	lock          flock(2)ed exclusively by Open while it recovers, shared
//	              by an attached process for each change it makes
//	msg/ID.body   the body, written once and never changed
//	msg/ID.json   the state file: envelope and recipients (JSON, versioned);
//	              the message exists if and only if this file exists
//	tmp/          state files being written, emptied by Open
//	notify/       hints from attached processes to the owner (reload.ID,
//	              flush.ID, flush.all)
//	corrupt/      messages that Open could not read, set aside for the postmaster
//
// # Crash safety
//
// The state file is the commit point. Put creates msg/ID.body (O_EXCL,
// which also reserves the ID) and writes the body into it, writes the state
// file under tmp/, fsyncs both files (at once: the file system commits them
// together), links the state file to msg/ID.json, fsyncs msg/ (group
// commit: concurrent Puts and state changes share one directory fsync) and
// only then returns the ID. A state change (Update, Complete, Bounce) writes
// a new state file under tmp/, fsyncs it, renames it over the old one and
// fsyncs msg/, so a state file is always whole: the old one or the new one.
// A removal unlinks the state file, then the body, then fsyncs msg/. Since
// a file's bytes are fsynced before its name is linked or renamed into msg/,
// a state file in msg/ never holds partial content.
//
// After a crash, Open empties tmp/ (an Update whose rename did not happen
// leaves the old state, which is whole) and finds in msg/ either both files
// of a message, or one of them. One file means a Put that did not return or
// a removal that had begun, whatever order the file system persisted the
// names in; the rule is that such a message is dropped and its file
// removed. It is consistent: a Put that did not return was not
// acknowledged (the sender was not told 250 and sends it again), and a
// removal is of a message fully done or deleted by the postmaster. Once Put
// has returned, both names are durable, and only a removal takes them away.
// A message whose state file is there but finished (every recipient
// Delivered, or Failed and Reported) is a removal cut short: Open finishes
// it. A state file that does not decode, or a body whose size differs from
// the state file's, cannot come from a crash (bytes are fsynced before
// names); Open moves such a message to corrupt/ and logs it, rather than
// guessing.
//
// The window for a duplicate delivery is the time between a delivery
// accepted by the next hop and the durable state write of the Update that
// records it: a crash there leaves the recipient Pending or Deferred. A
// crash between the Update that returns failures and the Complete that marks
// them Reported makes the DSN go out twice. A crash after the directory
// fsync of a Put but before Put returned keeps a message whose sender will
// also send it again. Nothing is lost in any window.
//
// SIGKILL of the process at random moments is tested (crash_test.go);
// surviving power loss rests on the fsync ordering above and on the file
// system and disk honouring fsync.
//
// # Processes and locking
//
// One process owns the spool: Open takes owner.lock (or fails with ErrBusy),
// recovers, and keeps an in-memory index of due times, so that Lease costs
// O(due), not O(queue). Only the owner puts and leases; its leases live in
// memory and die with it. Other processes (`petrel queue list|show|flush|
// delete|bounce`) use Attach: they read state files (always whole, thanks to
// rename) and change them under the locks below, then leave a hint in
// notify/ that the owner reads at its next Lease.
//
// Every change to an existing message (by the owner or an attached process)
// holds an exclusive flock(2) on the message's body file, which is never
// replaced, and re-reads the state file under it: changes to one message
// are serialized across processes, and changes to different messages run in
// parallel and share directory fsyncs. An attached process also holds
// the shared queue-wide lock, so that Open never recovers (empties tmp/)
// under its feet.
type Spool struct {
	dir, msgDir, tmpDir, notifyDir string

	owner     bool
	sch       Schedule
	leaseTime time.Duration
	clock     func() time.Time
	log       *slog.Logger
	ownerLock *os.File
	gsync     *groupSync
	pid       int
	tmpSeq    atomic.Uint64
	wake      chan struct{}

	mu     sync.Mutex
	closed bool
	idx    map[string]*entry
	heap   dueHeap
	leased map[*entry]struct{}
}

var (
	_ Queue    = (*Spool)(nil)
	_ Notifier = (*Spool)(nil)
)

// Options configure a Spool. The zero value gives the defaults.
type Options struct {
	// Schedule is the retry policy. The zero Schedule means
	// DefaultSchedule(); any other must be valid (Schedule.Validate).
	Schedule Schedule
	// LeaseTime is how long a lease lasts without an Update. It must
	// exceed the longest delivery attempt. Default 1 hour.
	LeaseTime time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger gets what recovery finds and removes, and lost leases.
	// Default: discard.
	Logger *slog.Logger
}

// Open opens the spool in dir as its owner, creating it if needed, and
// recovers it from a crash (see Spool). It fails with ErrBusy if another
// process owns it. The owner is the only one that can Put and Lease.
func Open(dir string, opts Options) (*Spool, error) {
	s, err := newSpool(dir, opts, true)
	if err != nil {
		return nil, err
	}
	if err := s.create(); err != nil {
		return nil, fmt.Errorf("queue: creating spool: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "owner.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	ok, err := tryLock(f, true)
	if err != nil || !ok {
		f.Close()
		if err == nil {
			err = ErrBusy
		}
		return nil, fmt.Errorf("queue: %s: %w", s.dir, err)
	}
	s.ownerLock = f
	if err := s.recover(); err != nil {
		f.Close()
		return nil, err
	}
	s.processMarkers()
	return s, nil
}

// Attach opens an existing spool in dir for a process that does not own it
// (the queue commands, while the daemon may be running): it can Get, List,
// read Bodies, Flush, Bounce and Delete, and tells the owner, if any, of its
// changes. Put and the lease methods fail with ErrNotOwner.
func Attach(dir string, opts Options) (*Spool, error) {
	s, err := newSpool(dir, opts, false)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{s.msgDir, s.tmpDir, s.notifyDir, s.lockPath()} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("queue: %s is not a spool: %w", s.dir, err)
		}
	}
	return s, nil
}

func newSpool(dir string, opts Options, owner bool) (*Spool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	sch := opts.Schedule
	if sch == (Schedule{}) {
		sch = DefaultSchedule()
	} else if err := sch.Validate(); err != nil {
		return nil, err
	}
	s := &Spool{
		dir:       abs,
		msgDir:    filepath.Join(abs, "msg"),
		tmpDir:    filepath.Join(abs, "tmp"),
		notifyDir: filepath.Join(abs, "notify"),
		owner:     owner,
		sch:       sch,
		leaseTime: opts.LeaseTime,
		clock:     opts.Now,
		log:       opts.Logger,
		pid:       os.Getpid(),
		wake:      make(chan struct{}, 1),
		idx:       make(map[string]*entry),
		leased:    make(map[*entry]struct{}),
	}
	if s.leaseTime <= 0 {
		s.leaseTime = time.Hour
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.gsync = newGroupSync(s.msgDir)
	return s, nil
}

// now returns the clock's time in UTC, without a monotonic reading, as it
// will read back from a state file.
func (s *Spool) now() time.Time { return s.clock().UTC() }

func (s *Spool) lockPath() string           { return filepath.Join(s.dir, "lock") }
func (s *Spool) bodyPath(id string) string  { return filepath.Join(s.msgDir, id+".body") }
func (s *Spool) statePath(id string) string { return filepath.Join(s.msgDir, id+".json") }
func (s *Spool) tmpPath(id, ext string) string {
	seq := s.tmpSeq.Add(1)
	return filepath.Join(s.tmpDir, id+"."+strconv.Itoa(s.pid)+"."+strconv.FormatUint(seq, 10)+"."+ext)
}

// create makes the spool's directories and lock file, and makes new
// directory entries durable.
func (s *Spool) create() error {
	if err := os.MkdirAll(filepath.Dir(s.dir), 0o700); err != nil {
		return err
	}
	made, err := mkdirSync(s.dir)
	if err != nil {
		return err
	}
	if made {
		if err := safeio.SyncDir(filepath.Dir(s.dir)); err != nil {
			return err
		}
	}
	created := made
	for _, d := range []string{s.msgDir, s.tmpDir, s.notifyDir} {
		made, err := mkdirSync(d)
		if err != nil {
			return err
		}
		created = created || made
	}
	f, err := os.OpenFile(s.lockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if created {
		return safeio.SyncDir(s.dir)
	}
	return nil
}

// Close releases the spool; the owner gives up its ownership. Leases are
// void. Close is idempotent.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for e := range s.leased {
		e.lease = nil
	}
	clear(s.leased)
	if s.ownerLock != nil {
		return s.ownerLock.Close()
	}
	return nil
}

// check fails if the spool is closed, or if it is not the owner and the
// operation needs it.
func (s *Spool) check(needOwner bool) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case needOwner && !s.owner:
		return ErrNotOwner
	}
	return nil
}

// Notify implements Notifier.
func (s *Spool) Notify() <-chan struct{} { return s.wake }

func (s *Spool) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Put implements Queue. On a storage error (a full disk, say) the server
// answers 452 4.3.1.
func (s *Spool) Put(ctx context.Context, env Envelope, body io.Reader) (string, error) {
	if err := s.check(true); err != nil {
		return "", err
	}
	rcpts, err := checkEnvelope(&env)
	if err != nil {
		return "", err
	}
	now := s.now()
	id := env.ID
	if id == "" {
		id = NewID(now)
	}

	// The body goes straight to msg/: without a state file it is no
	// message, and O_EXCL reserves the ID.
	bodyFile, err := os.OpenFile(s.bodyPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			bodyFile.Close()
			os.Remove(s.statePath(id))
			os.Remove(s.bodyPath(id))
		}
	}()
	size, err := copyBody(ctx, bodyFile, body)
	if err != nil {
		return "", err
	}
	m := Message{ID: id, From: env.From, Rcpts: rcpts, Received: now, Size: size, Attrs: maps.Clone(env.Attrs)}
	data, err := encodeState(&m)
	if err != nil {
		return "", err
	}
	tmpState := s.tmpPath(id, "json")
	stateFile, err := os.OpenFile(tmpState, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	defer os.Remove(tmpState)
	_, err = stateFile.Write(data)
	if err == nil {
		// Two fsyncs at once: the file system commits them together.
		bodyErr := make(chan error, 1)
		go func() { bodyErr <- bodyFile.Sync() }()
		err = errors.Join(stateFile.Sync(), <-bodyErr)
	}
	err = errors.Join(err, stateFile.Close(), bodyFile.Close())
	if err != nil {
		return "", fmt.Errorf("queue: writing message: %w", err)
	}

	// The link of the state file makes the message exist; the fsync of
	// msg/ makes it (and the body's name) durable.
	if err := os.Link(tmpState, s.statePath(id)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%w: %s", ErrExists, id)
		}
		return "", fmt.Errorf("queue: %w", err)
	}
	if err := s.gsync.sync(); err != nil {
		return "", err
	}
	committed = true

	s.mu.Lock()
	s.note(id, &m, keep)
	s.mu.Unlock()
	s.signal()
	return id, nil
}

// copyBody copies r into f. It checks ctx before each read.
func copyBody(ctx context.Context, f *os.File, r io.Reader) (n int64, err error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("queue: %w", err)
		}
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := f.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, fmt.Errorf("queue: writing body: %w", werr)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("queue: reading message: %w", rerr)
		}
	}
}
