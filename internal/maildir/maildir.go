// Package maildir delivers messages durably into Maildirs
// (https://cr.yp.to/proto/maildir.html), one per local mailbox, under a root
// directory.
//
// A message is written once to a spool file and made durable (on Linux by
// a syncfs(2) shared by the deliveries writing at that moment, elsewhere by
// an fsync of the file); it is then hard-linked into the new/ directory of
// each recipient mailbox but the last and renamed into the last one's, and
// each new/ directory is fsynced (one fsync shared by the deliveries into
// it at that moment) before [Store.Deliver] returns: once it returns nil, a
// crash loses nothing (the durability rule of the design: 250 only after
// fsync). A crash during delivery may leave a spool file, which
// [Store.Cleanup] removes, and may have delivered to some mailboxes of the
// message but not to others; the sender has not been told of success, so it
// retries, and those mailboxes get the message twice, never zero times.
//
// Mailbox names come from the network (the local part of a recipient
// address), so they are mapped to directory names that cannot leave the
// root: see [Store.Dir].
package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// spoolDir is the directory under the root that holds messages being
// delivered. Its leading dot keeps it apart from mailbox names, which never
// start with a dot.
const spoolDir = ".spool"

// maxNameLen bounds the length of a mapped mailbox name; most file systems
// allow 255 bytes in a file name.
const maxNameLen = 255

// Store delivers messages into the Maildirs under one root directory. A
// Store is safe for concurrent use; it must not be copied.
type Store struct {
	root    string
	spool   string
	host    string // sanitized host name for unique file names
	pid     int
	counter atomic.Uint64
	mkMu    sync.Mutex     // serialises the creation of mailboxes
	durable sync.Map       // mailbox directory known to be durable → *safeio.GroupSync of its new/
	bufs    sync.Pool      // *[]byte, 32 KiB copy buffers
	fsync   *safeio.FSSync // syncfs of the root's file system; nil: fsync each file

	// DeliverBytes's batcher.
	startBatcher sync.Once
	reqs         chan *batchReq
	stop         chan struct{}
	batchMu      sync.Mutex
	closed       bool
	batchWG      sync.WaitGroup // DeliverBytes calls in progress
}

// New returns a Store rooted at root, creating root and its spool directory
// (mode 0700) if needed. Mailboxes are created on first delivery.
func New(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	spool := filepath.Join(abs, spoolDir)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	s := &Store{
		root:  abs,
		spool: spool,
		host:  sanitizeHost(host),
		pid:   os.Getpid(),
		reqs:  make(chan *batchReq, maxBatch),
		stop:  make(chan struct{}),
	}
	s.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	if fs, err := safeio.OpenFSSync(abs); err == nil {
		s.fsync = fs
	} else if !errors.Is(err, errors.ErrUnsupported) {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	return s, nil
}

// sanitizeHost makes a host name safe in a Maildir unique name: the
// specification asks for "/" as \057 and ":" as \072; for simplicity every
// byte other than a letter, digit, "-" or "." is written as a backslash and
// three octal digits (so "," cannot be confused with the ",S=" suffix).
func sanitizeHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\%03o`, c)
		}
	}
	return b.String()
}

// MailboxName maps a mailbox name (the local part of an address) to the name
// of its directory under the root. ASCII letters are lowercased, so "Alice"
// and "alice" are one mailbox. Every byte other than a-z, 0-9, ".", "_", "+"
// and "-", and a leading ".", is written as "%" and two uppercase hex
// digits; the mapping is one-to-one on lowercased names, and the result never
// contains "/" and is never "", "." or "..". It fails for an empty name and
// for a name whose mapped form is longer than 255 bytes.
func MailboxName(mailbox string) (string, error) {
	if mailbox == "" {
		return "", errors.New("maildir: empty mailbox name")
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(mailbox); i++ {
		c := mailbox[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '+', c == '-', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	if b.Len() > maxNameLen {
		return "", fmt.Errorf("maildir: mailbox name of %d bytes is too long", len(mailbox))
	}
	return b.String(), nil
}

// Dir returns the Maildir directory of mailbox (which holds tmp, new and cur),
// always a direct child of the root. It does not create it.
func (s *Store) Dir(mailbox string) (string, error) {
	name, err := MailboxName(mailbox)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.root, name), nil
}

// Deliver reads msg to its end and delivers it to each of mailboxes
// (duplicates, after mapping, get one copy). The bytes are stored as they
// are; the caller chooses the line endings. It returns the unique file name
// of the message, the same in every new/ directory, and its size in bytes.
//
// Deliver returns only when the message is durable in every mailbox. On any
// error (an invalid mailbox name, ctx cancelled, an error from msg, a storage
// error such as a full disk) it removes the files it created and returns the
// error; errors from msg and ctx.Err() are wrapped and can be tested with
// errors.Is and errors.As. The caller answers 452 4.3.1 to a storage error.
//
// ctx is checked before each read from msg and before each mailbox; a Read
// that blocks is not interrupted, so msg should carry its own deadline (a
// network connection's read deadline). Mailbox directories must be on the
// same file system as the root, since messages are hard-linked.
func (s *Store) Deliver(ctx context.Context, mailboxes []string, msg io.Reader) (id string, size int64, err error) {
	dirs, err := s.dirsOf(mailboxes)
	if err != nil {
		return "", 0, err
	}
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("maildir: %w", err)
	}

	syncs := make([]*safeio.GroupSync, 0, len(dirs))
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return "", 0, fmt.Errorf("maildir: %w", err)
		}
		gs, err := s.ensureMailbox(d)
		if err != nil {
			return "", 0, err
		}
		syncs = append(syncs, gs)
	}
	spoolFile, base, size, err := s.writeSpool(ctx, msg)
	if err != nil {
		return "", 0, err
	}
	id = base + ",S=" + strconv.FormatInt(size, 10)
	linked, err := publish(spoolFile, dirs, id)
	if err != nil {
		os.Remove(spoolFile)
		return "", 0, err
	}
	// Concurrent deliveries into a mailbox share its fsyncs of new/.
	for _, gs := range syncs {
		if err := gs.Sync(); err != nil {
			for _, l := range linked {
				os.Remove(l)
			}
			return "", 0, fmt.Errorf("maildir: %w", err)
		}
	}
	return id, size, nil
}

// publish gives the durable spool file its names: it links it into new/ of
// each of dirs but the last, as id, and renames it into the last one's (a
// rename is one system call where a link and an unlink are two), never over
// a message already there, should a unique name repeat (a clock stepped
// back, a reused PID). On error it removes the names it made; the spool
// file is then still there. It returns the names.
func publish(spoolFile string, dirs []string, id string) ([]string, error) {
	linked := make([]string, 0, len(dirs))
	for i, d := range dirs {
		dst := filepath.Join(d, "new", id)
		var err error
		if i == len(dirs)-1 {
			err = safeio.RenameNoReplace(spoolFile, dst)
		} else {
			err = os.Link(spoolFile, dst)
		}
		if err != nil {
			for _, l := range linked {
				os.Remove(l)
			}
			return nil, fmt.Errorf("maildir: %w", err)
		}
		linked = append(linked, dst)
	}
	return linked, nil
}

// dirsOf maps mailboxes to their directories, without duplicates.
func (s *Store) dirsOf(mailboxes []string) ([]string, error) {
	if len(mailboxes) == 0 {
		return nil, errors.New("maildir: no mailbox to deliver to")
	}
	dirs := make([]string, 0, len(mailboxes))
	for _, m := range mailboxes {
		d, err := s.Dir(m)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}

// createSpool creates a new spool file, open for writing, and returns it
// with its path and base name (a Maildir unique name without the size).
func (s *Store) createSpool() (f *safeio.RawFile, path, base string, err error) {
	for range 10 { // a name can only be taken by another Store in this process
		base = s.uniqueName(time.Now())
		path = filepath.Join(s.spool, base)
		f, err = safeio.CreateNew(path, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("maildir: %w", err)
	}
	return f, path, base, nil
}

// writeSpool copies msg into a new file in the spool directory and fsyncs
// it. It returns the file's path, its base name (a Maildir unique name
// without the size) and the number of bytes written. On error it leaves no
// file. A msg that is an io.WriterTo (a *bytes.Reader: the queue's body in
// memory) writes itself, without a copy.
func (s *Store) writeSpool(ctx context.Context, msg io.Reader) (spoolFile, base string, n int64, err error) {
	f, tmp, name, err := s.createSpool()
	if err != nil {
		return "", "", 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()

	if err := ctx.Err(); err != nil {
		return "", "", 0, fmt.Errorf("maildir: %w", err)
	}
	if wt, ok := msg.(io.WriterTo); ok {
		n, err = wt.WriteTo(f)
		if err != nil {
			return "", "", 0, fmt.Errorf("maildir: writing spool file: %w", err)
		}
	} else {
		bp := s.bufs.Get().(*[]byte)
		defer s.bufs.Put(bp)
		buf := *bp
		for {
			if err := ctx.Err(); err != nil {
				return "", "", 0, fmt.Errorf("maildir: %w", err)
			}
			nr, rerr := msg.Read(buf)
			if nr > 0 {
				nw, werr := f.Write(buf[:nr])
				n += int64(nw)
				if werr != nil {
					return "", "", 0, fmt.Errorf("maildir: writing spool file: %w", werr)
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return "", "", 0, fmt.Errorf("maildir: reading message: %w", rerr)
			}
		}
	}
	if s.fsync == nil {
		if err := f.Sync(); err != nil {
			return "", "", 0, fmt.Errorf("maildir: writing spool file: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return "", "", 0, fmt.Errorf("maildir: writing spool file: %w", err)
	}
	if s.fsync != nil {
		// One syncfs for all the deliveries writing at this moment.
		if err := s.fsync.Sync(); err != nil {
			os.Remove(tmp)
			return "", "", 0, fmt.Errorf("maildir: writing spool file: %w", err)
		}
	}
	return tmp, name, n, nil
}

// uniqueName returns a Maildir unique name without the ",S=" suffix:
// "<seconds>.M<microseconds>P<pid>Q<counter>.<host>".
func (s *Store) uniqueName(now time.Time) string {
	q := s.counter.Add(1)
	return fmt.Sprintf("%d.M%dP%dQ%d.%s", now.Unix(), now.Nanosecond()/1000, s.pid, q, s.host)
}

// ensureMailbox creates dir and its tmp, new and cur subdirectories if they
// are missing, and makes the new entries durable. It returns the group
// fsync of dir/new.
func (s *Store) ensureMailbox(dir string) (*safeio.GroupSync, error) {
	if gs, ok := s.durable.Load(dir); ok {
		return gs.(*safeio.GroupSync), nil
	}
	// Slow path, once per mailbox and process: create what is missing
	// and fsync the mailbox and the root before any delivery into it is
	// acknowledged, even when another delivery created the directories.
	s.mkMu.Lock()
	defer s.mkMu.Unlock()
	if gs, ok := s.durable.Load(dir); ok {
		return gs.(*safeio.GroupSync), nil
	}
	if _, err := mkdir(dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if _, err := mkdir(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}
	if err := safeio.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	if err := safeio.SyncDir(s.root); err != nil {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	gs := safeio.NewGroupSync(filepath.Join(dir, "new"), nil)
	s.durable.Store(dir, gs)
	return gs, nil
}

// mkdir creates dir with mode 0700 and reports whether it did; an existing
// directory is not an error (another delivery may have created it).
func mkdir(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrExist):
		if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
			return false, nil
		}
		return false, fmt.Errorf("maildir: %w", err)
	default:
		return false, fmt.Errorf("maildir: %w", err)
	}
}

// Cleanup removes the spool files last modified more than olderThan ago:
// files a crash left behind. olderThan must exceed the longest delivery
// (Deliver keeps its spool file while it reads the message), so that a
// delivery in progress is not disturbed. It returns all errors met, joined.
func (s *Store) Cleanup(olderThan time.Duration) error {
	entries, err := os.ReadDir(s.spool)
	if err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	cutoff := time.Now().Add(-olderThan)
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // finished meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("maildir: %w", err))
			continue
		}
		if fi.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(s.spool, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("maildir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// List returns the names of the messages in the new/ directory of mailbox,
// sorted; a mailbox that does not exist yet is empty. Names starting with a
// dot are skipped, as the Maildir specification asks.
func (s *Store) List(mailbox string) ([]string, error) {
	dir, err := s.Dir(mailbox)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
