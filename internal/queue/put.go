package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sync"
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// defaultInlineMax is the largest body that Put journals (Spool.inlineMax);
// larger ones are streamed to msg/ with their own fsyncs.
const defaultInlineMax = 1 << 20

// recBufs holds buffers for journal records, which Put reads bodies into.
var recBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// maxPooledRecBuf bounds the buffers kept in recBufs.
const maxPooledRecBuf = 4 << 20

// Put implements Queue. On a storage error (a full disk, say) the server
// answers 452 4.3.1. See Spool for how the message is made durable.
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
	if err := s.reserve(id); err != nil {
		return "", err
	}
	reserved := true
	defer func() {
		if reserved {
			s.unreserve(id)
		}
	}()

	bp := recBufs.Get().(*[]byte)
	rec, err := readInline(ctx, body, (*bp)[:recBodyOff], s.inlineMax)
	pooled := true // rec goes back to recBufs
	defer func() {
		if pooled && cap(rec) <= maxPooledRecBuf {
			*bp = rec[:0]
			recBufs.Put(bp)
		}
	}()
	if err != nil {
		return "", err
	}
	m := Message{ID: id, From: env.From, Rcpts: rcpts, Received: now, Attrs: maps.Clone(env.Attrs)}
	var res *resident
	var seg *segment
	if bodyLen := len(rec) - recBodyOff; bodyLen > s.inlineMax {
		err = s.putFile(ctx, &m, rec[recBodyOff:], body)
	} else {
		m.Size = int64(bodyLen)
		var handedOff bool
		rec, res, seg, handedOff, err = s.putJournal(ctx, &m, rec)
		if handedOff {
			reserved, pooled = false, false // the waiting goroutine's now
		}
	}
	if err != nil {
		return "", err
	}

	s.mu.Lock()
	delete(s.putting, id)
	reserved = false
	s.note(id, &m, keep)
	e := s.idx[id]
	if e != nil && res != nil {
		e.res = res
	}
	s.mu.Unlock()
	if e == nil && res != nil {
		// Not in the index (it cannot happen: a new message has work),
		// so no checkpoint would find it: give it its files now.
		err = s.materializeOne(id, res)
	}
	if seg != nil {
		// The checkpoint of seg may materialize the message now.
		seg.pending.Done()
	}
	if err != nil {
		return "", err
	}
	s.signal()
	return id, nil
}

// putJournal stores message m, whose record buffer rec holds the body after
// recBodyOff, through the journal: it submits the record and waits until
// the committer has written and fdatasynced it. The message is then
// durable, and resident (res): its state and a copy of its body stay in
// memory, and it has no files until a checkpoint writes them. The caller
// puts res in the index, then calls seg.pending.Done (the checkpoint of seg
// waits for that). It returns rec (grown by the state file).
//
// If ctx ends before the record is durable, putJournal returns at once
// (handedOff): a goroutine waits for the committer, undoes the Put (a
// tombstone for the record) and then releases the ID and rec.
func (s *Spool) putJournal(ctx context.Context, m *Message, rec []byte) (_ []byte, res *resident, seg *segment, handedOff bool, err error) {
	id := m.ID
	bodyLen := int(m.Size)
	state, err := encodeState(m)
	if err != nil {
		return rec, nil, nil, false, err
	}
	rec = append(rec, state...)
	finishPutRecord(s.jnl.salt, rec, id, bodyLen)
	done := make(chan jresult, 1)
	if err := s.jnl.submit(&jreq{kind: recPut, id: id, rec: rec, done: done}); err != nil {
		return rec, nil, nil, false, err
	}
	// While the committer works (both only read rec).
	res = newResident(m, rec[recBodyOff:recBodyOff+bodyLen])

	// undo takes back a Put that will not return its ID.
	undo := func(r jresult) {
		// The record may be on disk even if its batch failed.
		s.jnl.tombstone(id)
		if r.err == nil {
			r.seg.pending.Done()
		}
	}
	var r jresult
	select {
	case r = <-done:
	case <-ctx.Done():
		select {
		case r = <-done:
		default:
			go func() {
				undo(<-done)
				s.unreserve(id)
			}()
			return rec, nil, nil, true, fmt.Errorf("queue: %w", ctx.Err())
		}
	}
	if r.err != nil {
		undo(r)
		return rec, nil, nil, false, r.err
	}
	return rec, res, r.seg, false, nil
}

// reserve claims id for a Put, or fails with ErrExists if a message or a
// Put in progress has it. Only the owner puts, and every message in msg/
// is in its index from Open on (Open removes or sets aside the others), so
// the index, the Puts in progress and the journal are all there is to
// check.
func (s *Spool) reserve(id string) error {
	s.mu.Lock()
	_, queued := s.idx[id]
	_, busy := s.putting[id]
	if !queued && !busy {
		s.putting[id] = struct{}{}
	}
	s.mu.Unlock()
	// An ID still in the journal is refused too, even if its message is
	// gone: a tombstone there must not remove another message at replay.
	if queued || busy || s.jnl.isLive(id) {
		if !queued && !busy {
			s.unreserve(id)
		}
		return fmt.Errorf("%w: %s", ErrExists, id)
	}
	return nil
}

func (s *Spool) unreserve(id string) {
	s.mu.Lock()
	delete(s.putting, id)
	s.mu.Unlock()
}

// readInline appends to buf what r yields, until EOF or until more than
// max bytes were appended. It checks ctx before each read.
func readInline(ctx context.Context, r io.Reader, buf []byte, max int) ([]byte, error) {
	start := len(buf)
	for {
		if err := ctx.Err(); err != nil {
			return buf, fmt.Errorf("queue: %w", err)
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), start+max+1))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("queue: reading message: %w", err)
		}
		if len(buf)-start > max {
			return buf, nil
		}
	}
}

// putFile stores message m, whose body is head and then the rest of r,
// without the journal: body and state file fsynced, the state file linked
// into msg/, msg/ fsynced. It sets m.Size.
func (s *Spool) putFile(ctx context.Context, m *Message, head []byte, r io.Reader) error {
	id := m.ID
	// The body goes straight to msg/: without a state file it is no
	// message, and O_EXCL reserves the ID.
	bodyFile, err := os.OpenFile(s.bodyPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			bodyFile.Close()
			os.Remove(s.statePath(id))
			os.Remove(s.bodyPath(id))
		}
	}()
	if _, err := bodyFile.Write(head); err != nil {
		return fmt.Errorf("queue: writing body: %w", err)
	}
	size, err := copyBody(ctx, bodyFile, r)
	if err != nil {
		return err
	}
	m.Size = int64(len(head)) + size
	data, err := encodeState(m)
	if err != nil {
		return err
	}
	tmpState := s.tmpPath(id, "json")
	stateFile, err := os.OpenFile(tmpState, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
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
		return fmt.Errorf("queue: writing message: %w", err)
	}

	// The link of the state file makes the message exist; the fsync of
	// msg/ makes it (and the body's name) durable.
	if err := os.Link(tmpState, s.statePath(id)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, id)
		}
		return fmt.Errorf("queue: %w", err)
	}
	if err := s.syncMsgDir(); err != nil {
		return err
	}
	committed = true
	return nil
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
