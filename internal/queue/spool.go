package queue

import (
	"errors"
	"fmt"
	"log/slog"
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
//	journal/      the write-ahead journal of Puts and of the state changes
//	              of resident messages: segment files
//	              SEQ-SALT.wal (see journal.go for the record format),
//	              written by the owner only, empty after a clean Close (a
//	              Petrel without a journal must not open a spool whose
//	              journal is not empty: it would lose messages)
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
// A message is durable in one of two ways: as records in a journal
// segment, or as msg/ID.body and msg/ID.json synced to disk. Put makes it
// durable the first way, and a checkpoint turns what is still queued then
// into the second.
//
// Put reads the body into memory and encodes one journal record: the ID,
// the state file as Put writes it, the body, a length and CRC-32C
// checksums. It hands the record to the committer, one goroutine that takes
// every record waiting, appends them to the current segment with one
// writev(2), calls fdatasync(2) once and then answers all their Puts (group
// commit: while one fdatasync runs the next batch gathers; a lone Put waits
// for no timer). A new segment's name is made durable (fsync of journal/)
// before its first record is acknowledged. Once the fdatasync that covers
// its record has returned, Put adds the message to the index and returns
// the ID.
//
// # Resident messages
//
// A message put through the journal is resident: its state and a copy of
// its body live in its index entry, and it has no files. Lease, Body, Get
// and the owner's List read it from memory. Its state changes are journal
// records, group-committed with the Puts: Update and Complete append a
// state record (the new state file) and wait for its fdatasync; a removal
// (every recipient done, or Delete) appends a tombstone and waits for it.
// Most messages are delivered well before the next checkpoint, and so never
// touch msg/: no file is created, renamed, fsynced or unlinked for them.
// Attached processes read resident messages from the journal (journalView)
// and, to change one, wait until a checkpoint has given it its files
// (awaitFiles: within about two checkpoint intervals).
//
// A checkpoint runs every Options.CheckpointInterval (1 s by default), when
// the current segment passes 64 MiB, and in Close. It rotates the journal
// (records go to a new segment from then on, so that it covers whole
// segments), waits until each Put committed to the old segments is in the
// index, and materializes the messages of those Puts that are still
// resident: writes msg/ID.body and the current state to tmp/ (no fsync),
// renames the state file to msg/ID.json, and from then on the files decide
// for that message. Then it makes the files durable (one syncfs(2) on
// Linux, see syncMsgFiles; elsewhere an fsync of each file), fsyncs msg/,
// and deletes the old segments (and fsyncs journal/). A materialization
// that fails (a full disk) leaves the messages resident and the segments
// in place, to be tried again at the next checkpoint; a sync that fails is
// not retried: later checkpoints still materialize (memory stays bounded)
// but keep every segment until the next Open, which rewrites their
// messages. Memory thus holds the messages put within about a
// checkpoint interval, plus those being delivered.
//
// Bodies over 1 MiB (inlineMax) are not journaled, so that memory stays
// bounded (a few MiB per Put in progress): Put streams such a body to
// msg/ID.body, writes the state file under tmp/, fsyncs both, links the
// state file to msg/ID.json and fsyncs msg/ (group commit with concurrent
// Puts and state changes) before it returns, as the Spool did before it
// had a journal. Such a message is never resident.
//
// A state change (Update, Complete, Bounce) of a message with files writes
// a new state file under tmp/, fsyncs it, renames it over the old one and
// fsyncs msg/, so a state file it wrote is always whole: the old one or the
// new one. (If the message's Put record is still in the journal, its body
// may not be on disk yet while such a state file is: the replay below
// rewrites the body.) A removal unlinks the state file, then the body,
// then makes that durable: with an fsync of msg/, or, if the message's Put
// record may still be in a segment, by appending a tombstone record to the
// journal and waiting for the fdatasync of its batch (replay would
// otherwise bring the message back from its Put record; with the tombstone
// it finishes the removal instead). Put refuses the ID of a message whose
// records are still in the journal, so a tombstone names one message only.
// A removal made by an attached process (which never writes the journal) is
// tombstoned by the owner when it reads the process's hint, without
// waiting; if a crash comes first, the message comes back: a duplicate
// delivery, which the contract allows.
//
// After a crash, Open empties tmp/, then replays the journal (see replay):
// each Put record whose checksums hold and that no later tombstone cancels
// gets its body rewritten and its state file written, with the state of
// the message's last state record if it has one, unless a valid one,
// written by a materialization or a later state change, is there (a
// materialization writes the latest state, and no state record follows it); the files of a tombstoned
// message are removed; all that is synced, and the segments are deleted. A
// torn write at the end of the journal (the batch whose fdatasync did not
// return) is ignored: those Puts never returned. After the replay, every
// message whose Put returned has whole, durable files, as do the messages
// checkpointed before, and Open scans msg/ with the rules that follow.
//
// Open finds in msg/ either both files of a message, or one of them. One
// file means a Put that did not return or a removal that had begun,
// whatever order the file system persisted the names in; the rule is that
// such a message is dropped and its file removed. It is consistent: a Put
// that did not return was not acknowledged (the sender was not told 250 and
// sends it again), and a removal is of a message fully done or deleted by
// the postmaster. Once Put has returned, both names are durable (or
// restored by the replay), and only a removal takes them away. A message
// whose state file is there but finished (every recipient Delivered, or
// Failed and Reported) is a removal cut short: Open finishes it. A state
// file that does not decode, or a body whose size differs from the state
// file's, cannot come from a crash (files not covered by the journal were
// synced before their segment went); Open moves such a message to corrupt/
// and logs it, rather than guessing.
//
// What can be lost is a record damaged in the middle of a segment (the
// disk returning other bytes than it was given, not a crash): the replay
// finds the next valid record by its header checksum, logs the damaged
// bytes as an error, and goes on; the message put there survives if its
// files had been synced (by writeback, or by a checkpoint cut short) and
// is lost, or set aside to corrupt/, if not.
//
// The window for a duplicate delivery is the time between a delivery
// accepted by the next hop and the durable state write of the Update that
// records it: a crash there leaves the recipient Pending or Deferred. A
// crash between the Update that returns failures and the Complete that marks
// them Reported makes the DSN go out twice. A crash after the fdatasync of a
// Put's record but before Put returned keeps a message whose sender will
// also send it again, and so may a Put that failed after its record was
// written. Nothing is lost in any window.
//
// SIGKILL of the process at random moments, also during journal writes and
// checkpoints, is tested (crash_test.go), and so are torn and damaged
// segments (replay_test.go); surviving power loss rests on the ordering
// above and on the file system and disk honouring fdatasync, fsync and
// syncfs.
//
// # Processes and locking
//
// One process owns the spool: Open takes owner.lock (or fails with ErrBusy),
// recovers, and keeps an in-memory index of due times, so that Lease costs
// O(due), not O(queue). Only the owner puts, leases and writes the journal;
// its leases live in memory and die with it. Other processes (`petrel queue
// list|show|flush|delete|bounce`) use Attach: they read the journal (for
// resident messages) and then state files (always whole, thanks to rename;
// the page cache is shared, so a file that the owner has not synced yet
// reads the same) and change messages that have files under the locks
// below, then leave a hint in notify/ that the owner reads at its next
// Lease.
//
// Every change to a message with files (by the owner or an attached
// process) holds an exclusive flock(2) on the message's body file, which is
// replaced only by a materialization (before anyone can lock it: the
// message had no files) and by the replay in Open (which excludes
// everyone), and re-reads the state file under it: changes to one message
// are serialized across processes, and changes to different messages run
// in parallel and share directory fsyncs. An attached process also holds the shared
// queue-wide lock, so that Open never recovers (empties tmp/, replays the
// journal) under its feet.
type Spool struct {
	dir, msgDir, tmpDir, notifyDir, journalDir string

	owner     bool
	sch       Schedule
	leaseTime time.Duration
	clock     func() time.Time
	log       *slog.Logger
	ownerLock *os.File
	gsync     *safeio.GroupSync
	fssync    *safeio.FSSync // the owner's syncfs; nil elsewhere and where there is none
	pid       int
	tmpSeq    atomic.Uint64
	wake      chan struct{}
	inlineMax int           // the largest body Put journals
	awaitMax  time.Duration // attached: how long to wait for a resident message's files

	// The owner's journal and checkpoints; jnl is nil when attached.
	jnl       *journal
	ckptEvery time.Duration
	ckptStop  chan struct{}
	ckptDone  chan struct{}
	ckptMu    sync.Mutex // one checkpoint at a time
	ckptErr   error      // a failed sync: segments kept; guarded by ckptMu

	mu      sync.Mutex
	closed  bool
	idx     map[string]*entry
	heap    dueHeap
	leased  map[*entry]struct{}
	putting map[string]struct{} // IDs of Puts in progress

	hintMu    sync.Mutex
	hintMtime time.Time // notify/'s modification time at the last look
	hintAt    time.Time // when that look was
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
	// Logger gets what recovery finds and removes, lost leases, and
	// journal and checkpoint failures. Default: discard.
	Logger *slog.Logger
	// CheckpointInterval is how often the owner makes the messages put
	// since the last checkpoint durable in msg/ and deletes their journal
	// segments (see Spool). Shorter means a smaller journal to replay
	// after a crash; longer, fewer syncs. Default 1 second.
	CheckpointInterval time.Duration
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
	if fss, err := safeio.OpenFSSync(s.msgDir); err == nil {
		s.fssync = fss
	} else if !errors.Is(err, errors.ErrUnsupported) {
		f.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := s.recover(); err != nil {
		f.Close()
		if s.fssync != nil {
			s.fssync.Close()
		}
		return nil, err
	}
	s.ckptStop = make(chan struct{})
	s.ckptDone = make(chan struct{})
	go s.jnl.run()
	go s.checkpointLoop(s.ckptStop, s.ckptDone)
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
		dir:        abs,
		msgDir:     filepath.Join(abs, "msg"),
		tmpDir:     filepath.Join(abs, "tmp"),
		notifyDir:  filepath.Join(abs, "notify"),
		journalDir: filepath.Join(abs, "journal"),
		owner:      owner,
		sch:        sch,
		leaseTime:  opts.LeaseTime,
		clock:      opts.Now,
		log:        opts.Logger,
		pid:        os.Getpid(),
		wake:       make(chan struct{}, 1),
		inlineMax:  defaultInlineMax,
		awaitMax:   awaitFilesMax,
		ckptEvery:  opts.CheckpointInterval,
		idx:        make(map[string]*entry),
		leased:     make(map[*entry]struct{}),
		putting:    make(map[string]struct{}),
	}
	if s.ckptEvery <= 0 {
		s.ckptEvery = defaultCheckpointInterval
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
	s.gsync = safeio.NewGroupSync(s.msgDir, nil)
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
	for _, d := range []string{s.msgDir, s.tmpDir, s.notifyDir, s.journalDir} {
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
// void. The owner first writes what is queued for the journal and
// checkpoints, so that the journal is empty after a clean Close; a Put
// still reading its body fails with ErrClosed. Close is idempotent.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for e := range s.leased {
		e.lease = nil
	}
	clear(s.leased)
	s.mu.Unlock()
	var err error
	if s.jnl != nil {
		close(s.ckptStop)
		<-s.ckptDone
		s.jnl.close()
		err = s.checkpoint()
	}
	if s.fssync != nil {
		err = errors.Join(err, s.fssync.Close())
	}
	if s.ownerLock != nil {
		err = errors.Join(err, s.ownerLock.Close())
	}
	return err
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
