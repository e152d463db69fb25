package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// The journal (journal/ in the spool) is the write-ahead log that makes a
// Put durable with one fdatasync shared by every Put waiting at that moment
// (group commit). See Spool for how it fits the crash-safety rules.
//
// A segment is a file journal/SEQ-SALT.wal (SEQ: 16 hex digits, increasing;
// SALT: 8 hex digits, random per Open) holding records back to back:
//
//	0   uint32 LE  n, the length of the payload
//	4   uint32 LE  CRC-32C of the payload, seeded with SALT
//	8   uint32 LE  CRC-32C of bytes 0-7, seeded with SALT
//	12  payload:   kind byte, 16-byte message ID, then for kind 'P' (a Put)
//	               uint32 LE body length, the body, the state file as Put
//	               writes it; for kind 'S' (a state change of a message
//	               still resident, see Spool) the new state file; kind 'T'
//	               (a tombstone: the message was removed) has nothing more
//
// The header checksum lets a reader that meets a damaged record find the
// next whole one by trying each offset (resync) without reading a bogus
// length's worth of bytes each time. The salt, which never leaves the
// segment's name, makes the checksums unforgeable from the outside: a
// message body that embeds bytes laid out like a record cannot pass for one
// during a resync.
const (
	recHeaderLen = 12
	recIDOff     = recHeaderLen + 1
	recBodyOff   = recIDOff + 16 + 4 // where a Put record's body starts
	recPut       = 'P'
	recState     = 'S'
	recTombstone = 'T'
	recRotate    = 0 // not a record: a request to end the segment

	// maxRecordLen bounds the payload a decoder accepts. Put journals
	// bodies up to Spool.inlineMax only.
	maxRecordLen = 64 << 20

	segmentExt = ".wal"
)

// Limits of one batch (one write and one fdatasync). A batch is cut short
// of them only by what is waiting: a lone Put never waits for others.
const (
	maxBatchRecords = 1024     // IOV_MAX
	maxBatchBytes   = 16 << 20 // bounds the time to the first fdatasync
)

// defaultMaxSegment is the size past which the committer asks for an early
// checkpoint (which rotates the segment).
const defaultMaxSegment = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of decodeRecord. errShortRecord is what the end of a torn write
// looks like; the others, what damage looks like.
var (
	errShortRecord = errors.New("queue: journal record cut short")
	errBadRecord   = errors.New("queue: journal record malformed")
	errBadChecksum = errors.New("queue: journal record checksum mismatch")
)

// record is a decoded journal record; its slices point into the segment.
type record struct {
	kind  byte
	id    string
	body  []byte // recPut only
	state []byte // recPut and recState
}

// sealRecord fills in the length and checksums of rec, whose payload starts
// at recHeaderLen.
func sealRecord(salt uint32, rec []byte) {
	payload := rec[recHeaderLen:]
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Update(salt, castagnoli, payload))
	binary.LittleEndian.PutUint32(rec[8:], crc32.Update(salt, castagnoli, rec[:8]))
}

// finishPutRecord completes a Put record in buf: buf holds room for the
// header, kind, ID and body length, then the body (bodyLen bytes), then the
// state file.
func finishPutRecord(salt uint32, buf []byte, id string, bodyLen int) {
	buf[recHeaderLen] = recPut
	copy(buf[recIDOff:], id)
	binary.LittleEndian.PutUint32(buf[recBodyOff-4:], uint32(bodyLen))
	sealRecord(salt, buf)
}

// appendPutRecord appends a whole Put record to buf.
func appendPutRecord(buf []byte, salt uint32, id string, body, state []byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, recBodyOff)...)
	buf = append(buf, body...)
	buf = append(buf, state...)
	finishPutRecord(salt, buf[start:], id, len(body))
	return buf
}

// appendTombstone appends a tombstone record for id to buf.
func appendTombstone(buf []byte, salt uint32, id string) []byte {
	return appendIDRecord(buf, salt, recTombstone, id, nil)
}

// appendStateRecord appends a state record for id to buf.
func appendStateRecord(buf []byte, salt uint32, id string, state []byte) []byte {
	return appendIDRecord(buf, salt, recState, id, state)
}

// appendIDRecord appends a record of kind for id, with rest after the ID,
// to buf.
func appendIDRecord(buf []byte, salt uint32, kind byte, id string, rest []byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, recHeaderLen)...)
	buf = append(buf, kind)
	buf = append(buf, id...)
	buf = append(buf, rest...)
	sealRecord(salt, buf[start:])
	return buf
}

// decodeRecord decodes the record at the start of b and returns it with its
// length. It checks the framing, the checksums and the ID; a Put record's
// state file is checked by the caller (decodeState).
func decodeRecord(salt uint32, b []byte) (record, int, error) {
	if len(b) < recHeaderLen {
		return record{}, 0, errShortRecord
	}
	if crc32.Update(salt, castagnoli, b[:8]) != binary.LittleEndian.Uint32(b[8:]) {
		return record{}, 0, errBadChecksum
	}
	n := binary.LittleEndian.Uint32(b[0:])
	if n > maxRecordLen || n < 1+16 {
		return record{}, 0, errBadRecord
	}
	if uint64(len(b)-recHeaderLen) < uint64(n) {
		return record{}, 0, errShortRecord
	}
	payload := b[recHeaderLen : recHeaderLen+int(n)]
	if crc32.Update(salt, castagnoli, payload) != binary.LittleEndian.Uint32(b[4:]) {
		return record{}, 0, errBadChecksum
	}
	r := record{kind: payload[0], id: string(payload[1:17])}
	if !ValidID(r.id) {
		return record{}, 0, errBadRecord
	}
	switch r.kind {
	case recTombstone:
		if n != 1+16 {
			return record{}, 0, errBadRecord
		}
	case recPut:
		if n < 1+16+4 {
			return record{}, 0, errBadRecord
		}
		bl := binary.LittleEndian.Uint32(payload[17:])
		rest := payload[21:]
		if uint64(bl) >= uint64(len(rest)) { // the state file is never empty
			return record{}, 0, errBadRecord
		}
		r.body, r.state = rest[:bl], rest[bl:]
	case recState:
		if n == 1+16 { // the state file is never empty
			return record{}, 0, errBadRecord
		}
		r.state = payload[17:]
	default:
		return record{}, 0, errBadRecord
	}
	return r, recHeaderLen + int(n), nil
}

// segmentName returns the file name of segment seq written with salt.
func segmentName(seq uint64, salt uint32) string {
	return fmt.Sprintf("%016x-%08x%s", seq, salt, segmentExt)
}

// parseSegmentName is the inverse of segmentName.
func parseSegmentName(name string) (seq uint64, salt uint32, ok bool) {
	base, found := strings.CutSuffix(name, segmentExt)
	s1, s2, found2 := strings.Cut(base, "-")
	if !found || !found2 || len(s1) != 16 || len(s2) != 8 {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(s1, 16, 64)
	sl, err2 := strconv.ParseUint(s2, 16, 32)
	if err1 != nil || err2 != nil || segmentName(seq, uint32(sl)) != name {
		return 0, 0, false
	}
	return seq, uint32(sl), true
}

// segment is one journal file.
type segment struct {
	seq  uint64
	path string

	// Owned by the committer while the segment is current.
	f      *os.File
	size   int64
	dirty  bool // written since the last fdatasync
	broken bool // a write or fdatasync failed: append no more

	ids     []string  // of the Put records in it; guarded by journal.mu
	retired time.Time // when it stopped taking records; guarded by journal.mu

	// pending counts the Puts committed to this segment that have not
	// yet written their files to msg/; a checkpoint waits for them.
	pending sync.WaitGroup
}

// jreq is a request to the committer: a record to append (Put or
// tombstone), or a rotation.
type jreq struct {
	kind byte
	id   string
	rec  []byte
	done chan jresult // nil for tombstones: nobody waits for them
}

// jresult answers a jreq: the segment a Put record went to.
type jresult struct {
	seg *segment
	err error
}

// journal appends records to the current segment from one goroutine, the
// committer (run), which gathers every record waiting, writes them with one
// writev(2), fdatasyncs once, and answers every Put of the batch.
type journal struct {
	dir        string
	salt       uint32
	log        *slog.Logger
	maxSegment int64

	kick    chan struct{} // a request is queued, or the journal closed
	full    chan struct{} // the current segment passed maxSegment
	stopped chan struct{} // the committer returned

	cur *segment // owned by the committer (by checkpoint once stopped)

	mu       sync.Mutex
	queue    []*jreq
	closed   bool
	syncFn   func(*os.File) error // datasync; replaced in tests
	nextSeq  uint64
	finished []*segment          // rotated out, waiting for a checkpoint
	live     map[string]*segment // message ID → segment of its Put record
	syncs    uint64              // fdatasyncs of batches, for tests
}

func newJournal(dir string, salt uint32, nextSeq uint64, log *slog.Logger) *journal {
	return &journal{
		dir:        dir,
		salt:       salt,
		log:        log,
		maxSegment: defaultMaxSegment,
		kick:       make(chan struct{}, 1),
		full:       make(chan struct{}, 1),
		stopped:    make(chan struct{}),
		syncFn:     datasync,
		nextSeq:    nextSeq,
		live:       make(map[string]*segment),
	}
}

// submit queues r for the committer.
func (j *journal) submit(r *jreq) error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.queue = append(j.queue, r)
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return nil
}

// tombstone appends a tombstone for message id, which was removed, if its
// Put record may still be in a segment, and returns without waiting for it:
// it becomes durable with the next batch or rotation. Losing it costs a
// duplicate delivery at most (the message comes back from the journal).
func (j *journal) tombstone(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.live[id] == nil {
		return
	}
	j.queue = append(j.queue, &jreq{kind: recTombstone, id: id, rec: appendTombstone(nil, j.salt, id)})
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// tombstoneSync appends a tombstone for message id, if its Put record may
// still be in a segment (journaled), and waits until it is durable (in a
// batch, like a Put).
func (j *journal) tombstoneSync(id string) (journaled bool, err error) {
	j.mu.Lock()
	if j.closed || j.live[id] == nil {
		j.mu.Unlock()
		return false, nil
	}
	done := make(chan jresult, 1)
	j.queue = append(j.queue, &jreq{kind: recTombstone, id: id, rec: appendTombstone(nil, j.salt, id), done: done})
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return true, (<-done).err
}

// stateSync appends a state record for message id, resident and so with
// its Put record in a segment, and waits until it is durable (in a batch,
// like a Put).
func (j *journal) stateSync(id string, state []byte) error {
	done := make(chan jresult, 1)
	if err := j.submit(&jreq{kind: recState, id: id, rec: appendStateRecord(nil, j.salt, id, state), done: done}); err != nil {
		return err
	}
	return (<-done).err
}

// isLive reports whether a Put record of message id may be in a segment.
func (j *journal) isLive(id string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.live[id] != nil
}

// close stops the committer once it has written everything queued.
func (j *journal) close() {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	<-j.stopped
}

// run is the committer.
func (j *journal) run() {
	defer close(j.stopped)
	var batch []*jreq
	var iovs [][]byte
	for {
		j.mu.Lock()
		for len(j.queue) == 0 && !j.closed {
			j.mu.Unlock()
			<-j.kick
			j.mu.Lock()
		}
		if len(j.queue) == 0 {
			j.mu.Unlock()
			return
		}
		batch = batch[:0]
		if j.queue[0].kind == recRotate {
			batch = append(batch, j.queue[0])
		} else {
			size := 0
			for _, r := range j.queue {
				if r.kind == recRotate || len(batch) == maxBatchRecords ||
					(len(batch) > 0 && size+len(r.rec) > maxBatchBytes) {
					break
				}
				batch = append(batch, r)
				size += len(r.rec)
			}
		}
		rest := copy(j.queue, j.queue[len(batch):])
		clear(j.queue[rest:])
		j.queue = j.queue[:rest]
		syncFn := j.syncFn
		j.mu.Unlock()

		if batch[0].kind == recRotate {
			if j.cur != nil && (j.cur.size > 0 || j.cur.broken) {
				j.retire(syncFn)
			}
			batch[0].done <- jresult{}
			continue
		}
		iovs = iovs[:0]
		for _, r := range batch {
			iovs = append(iovs, r.rec)
		}
		seg, err := j.write(iovs, batch, syncFn)
		for _, r := range batch {
			if r.done != nil {
				r.done <- jresult{seg, err}
			}
		}
		clear(batch)
		clear(iovs)
		if j.cur != nil && j.cur.size >= j.maxSegment {
			select {
			case j.full <- struct{}{}:
			default:
			}
		}
	}
}

// write appends one batch to the current segment (making one if needed)
// and fdatasyncs it if a Put waits for it. It returns the segment.
func (j *journal) write(iovs [][]byte, batch []*jreq, syncFn func(*os.File) error) (*segment, error) {
	if j.cur != nil && j.cur.broken {
		j.retire(syncFn)
	}
	if j.cur == nil {
		seg, err := j.create()
		if err != nil {
			return nil, fmt.Errorf("queue: journal: %w", err)
		}
		j.cur = seg
	}
	seg := j.cur
	waited := false
	for _, r := range batch {
		waited = waited || r.done != nil
	}
	n, err := writeRecords(seg.f, iovs)
	seg.size += n
	if err == nil {
		seg.dirty = true
		if waited {
			err = syncFn(seg.f)
			if err == nil {
				seg.dirty = false
			}
		}
	}
	if err != nil {
		// Whatever reached the file is suspect; later records go to a
		// new segment. The old one is checkpointed with the rest (its
		// earlier batches were acknowledged).
		seg.broken = true
		err = fmt.Errorf("queue: journal: %w", err)
		j.log.Error("queue: journal write failed", "segment", filepath.Base(seg.path), "err", err)
	}
	j.mu.Lock()
	if waited {
		j.syncs++
	}
	for _, r := range batch {
		if r.kind != recPut {
			continue
		}
		// Also after an error: the record may have reached the disk,
		// and Put then writes a tombstone for it.
		j.live[r.id] = seg
		seg.ids = append(seg.ids, r.id)
		if err == nil {
			seg.pending.Add(1)
		}
	}
	j.mu.Unlock()
	return seg, err
}

// create makes a new segment and makes its name durable.
func (j *journal) create() (*segment, error) {
	j.mu.Lock()
	seq := j.nextSeq
	j.nextSeq++
	j.mu.Unlock()
	path := filepath.Join(j.dir, segmentName(seq, j.salt))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := safeio.SyncDir(j.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &segment{seq: seq, path: path, f: f}, nil
}

// retire ends the current segment: what was written without fdatasync
// (tombstones) is synced, and the segment waits for a checkpoint.
func (j *journal) retire(syncFn func(*os.File) error) {
	seg := j.cur
	j.cur = nil
	if seg.dirty && !seg.broken {
		if err := syncFn(seg.f); err != nil {
			// Only tombstones are unsynced: a duplicate delivery at
			// worst.
			j.log.Error("queue: journal sync failed", "segment", filepath.Base(seg.path), "err", err)
		}
	}
	if err := seg.f.Close(); err != nil {
		j.log.Error("queue: journal close failed", "segment", filepath.Base(seg.path), "err", err)
	}
	j.mu.Lock()
	seg.retired = time.Now()
	j.finished = append(j.finished, seg)
	j.mu.Unlock()
}

// rotate ends the current segment (if it has records) and returns every
// segment that waits for a checkpoint. Once the journal is closed it does
// the committer's part itself.
func (j *journal) rotate() []*segment {
	done := make(chan jresult, 1)
	if err := j.submit(&jreq{kind: recRotate, done: done}); err == nil {
		<-done
	} else {
		<-j.stopped
		j.mu.Lock()
		syncFn := j.syncFn
		j.mu.Unlock()
		if j.cur != nil {
			j.retire(syncFn)
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]*segment(nil), j.finished...)
}

// retiredBefore returns the segments of segs (in order) that stopped
// taking records before cut.
func (j *journal) retiredBefore(segs []*segment, cut time.Time) []*segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*segment
	for _, seg := range segs {
		if seg.retired.Before(cut) {
			out = append(out, seg)
		}
	}
	return out
}

// segmentIDs returns the IDs of the Put records in segs.
func (j *journal) segmentIDs(segs []*segment) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var ids []string
	for _, seg := range segs {
		ids = append(ids, seg.ids...)
	}
	return ids
}

// remove deletes segments whose messages are durable in msg/, durably.
func (j *journal) remove(segs []*segment) error {
	var err error
	for _, seg := range segs {
		if rerr := os.Remove(seg.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if err == nil {
		err = safeio.SyncDir(j.dir)
	}
	if err != nil {
		return fmt.Errorf("queue: journal: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	gone := make(map[*segment]bool, len(segs))
	for _, seg := range segs {
		gone[seg] = true
		for _, id := range seg.ids {
			if j.live[id] == seg {
				delete(j.live, id)
			}
		}
	}
	kept := j.finished[:0]
	for _, seg := range j.finished {
		if !gone[seg] {
			kept = append(kept, seg)
		}
	}
	clear(j.finished[len(kept):])
	j.finished = kept
	return nil
}
