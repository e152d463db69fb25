package queue

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// replay writes into msg/ the messages of the journal segments left by the
// last owner, makes them durable and deletes the segments. It runs in Open
// (from recover, holding the queue-wide lock) before msg/ is scanned, and
// returns the sequence number for the next segment.
//
// Records are taken in journal order (segment, then offset). The last
// record about an ID decides. A tombstone means the message was removed
// after its Put: it is not brought back, and its files, if the removal's
// unlinks did not survive, are removed. A Put record is replayed:
//
//   - msg/ID.body is rewritten from the record, always, even when it looks
//     right: it may look right only in the page cache (a previous owner's
//     checkpoint that failed to write it back), and a fresh file makes the
//     sync below write it for real;
//   - msg/ID.json is written from the record when it is missing, does not
//     decode, names another message or size, or holds exactly the record's
//     state (rewritten for the reason above); a valid state file that
//     differs was written by a later state change, durably, and is kept.
//
// Then every replayed file is synced (syncMsgFiles), msg/ is fsynced, and
// the segments are deleted. A crash during the replay leaves the segments,
// and the next Open replays them again. Each segment is read whole into
// memory (64 MiB, or a little more, unless checkpoints kept failing).
func (s *Spool) replay() (nextSeq uint64, err error) {
	segs, unknown, err := listSegments(s.journalDir)
	if err != nil {
		return 0, err
	}
	for _, name := range unknown {
		s.log.Warn("queue: unknown file in journal left alone", "name", name)
	}
	if len(segs) == 0 {
		return 1, nil
	}

	// Pass 1: the last record about each ID, its last Put record, and
	// the state of its last state record.
	type pos struct {
		seg, off int
		kind     byte
	}
	last := make(map[string]pos)
	lastPut := make(map[string]pos)
	lastState := make(map[string][]byte)
	for i, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if err != nil {
			return 0, fmt.Errorf("queue: journal: %w", err)
		}
		damaged, tail := scanSegment(sg.salt, data, func(off int, r record) {
			p := pos{i, off, r.kind}
			last[r.id] = p
			switch r.kind {
			case recPut:
				lastPut[r.id] = p
				delete(lastState, r.id)
			case recState:
				lastState[r.id] = bytes.Clone(r.state)
			}
		})
		name := filepath.Base(sg.path)
		for _, d := range damaged {
			s.log.Error("queue: journal: damaged bytes skipped; a message put there is lost unless its files were durable already",
				"segment", name, "offset", d[0], "bytes", d[1]-d[0])
		}
		switch {
		case tail > 0 && i == len(segs)-1:
			s.log.Info("queue: journal: unfinished write at its end ignored (Puts that had not returned)", "segment", name, "bytes", tail)
		case tail > 0:
			s.log.Warn("queue: journal: segment ends in an unfinished write (a write that failed)", "segment", name, "bytes", tail)
		}
	}

	// Pass 2: replay the records that have the last word.
	var ids []string
	var states, removed int
	for i, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if err != nil {
			return 0, fmt.Errorf("queue: journal: %w", err)
		}
		var perr error
		scanSegment(sg.salt, data, func(off int, r record) {
			if perr != nil {
				return
			}
			p := pos{i, off, r.kind}
			if l := last[r.id]; l != p {
				// A Put followed by state records only: replayed
				// here, with the last state.
				if r.kind != recPut || l.kind != recState || lastPut[r.id] != p {
					return
				}
				r.state = lastState[r.id]
			}
			switch r.kind {
			case recState:
				// Replayed with its Put record above if that is still
				// in the journal; if not, a checkpoint gave the message
				// its files, with this state or a later one.
				return
			case recTombstone:
				var did bool
				did, perr = s.replayTombstone(r.id)
				if did {
					removed++
				}
				return
			}
			var wrote bool
			wrote, perr = s.replayPut(r)
			if perr == nil {
				ids = append(ids, r.id)
			}
			if wrote {
				states++
			}
		})
		if perr != nil {
			return 0, perr
		}
	}
	if len(ids) > 0 {
		if err := s.syncMsgFiles(ids); err != nil {
			return 0, fmt.Errorf("queue: journal replay: %w", err)
		}
	}
	if len(ids) > 0 || removed > 0 {
		if err := s.syncMsgDir(); err != nil {
			return 0, err
		}
	}
	for _, sg := range segs {
		if err := os.Remove(sg.path); err != nil {
			return 0, fmt.Errorf("queue: journal: %w", err)
		}
	}
	if err := safeio.SyncDir(s.journalDir); err != nil {
		return 0, fmt.Errorf("queue: journal: %w", err)
	}
	s.log.Info("queue: journal replayed", "segments", len(segs), "messages", len(ids), "states written", states, "removals finished", removed)
	return segs[len(segs)-1].seq + 1, nil
}

// segFile is a journal segment found on disk.
type segFile struct {
	path string
	seq  uint64
	salt uint32
}

// listSegments returns the segments in the journal directory dir, in order,
// and the names of the other files there.
func listSegments(dir string) (segs []segFile, unknown []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	for _, ent := range ents {
		seq, salt, ok := parseSegmentName(ent.Name())
		if !ok || !ent.Type().IsRegular() {
			unknown = append(unknown, ent.Name())
			continue
		}
		segs = append(segs, segFile{filepath.Join(dir, ent.Name()), seq, salt})
	}
	slices.SortFunc(segs, func(a, b segFile) int { return cmp.Compare(a.seq, b.seq) })
	return segs, unknown, nil
}

// replayPut writes the files of the Put record r into msg/ (see replay).
// It reports whether it wrote the state file.
func (s *Spool) replayPut(r record) (bool, error) {
	m, err := decodeState(r.state)
	if err == nil && (m.ID != r.id || m.Size != int64(len(r.body))) {
		err = errors.New("state does not match the record")
	}
	if err != nil {
		// Checksummed, so written so by a Put: a bug, not a crash.
		s.log.Error("queue: journal record with an invalid state skipped", "id", r.id, "err", err)
		return false, nil
	}
	if err := s.replaceFile(r.id, "body", r.body); err != nil {
		return false, err
	}
	cur, err := os.ReadFile(s.statePath(r.id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("queue: %w", err)
	}
	if err == nil {
		cm, derr := decodeState(cur)
		if derr == nil && cm.ID == r.id && cm.Size == m.Size {
			if !bytes.Equal(cur, r.state) {
				return false, nil // a later state change's, durable
			}
		} else {
			s.log.Warn("queue: state file replaced by the journal's", "id", r.id, "err", derr)
		}
	}
	return true, s.replaceFile(r.id, "json", r.state)
}

// replayTombstone finishes the removal of message id, whose last journal
// record is a tombstone: its files, if still there, go. No other message
// can have the ID: Put refuses IDs that are still in the journal. It
// reports whether it removed anything.
func (s *Spool) replayTombstone(id string) (bool, error) {
	did := false
	for _, p := range []string{s.statePath(id), s.bodyPath(id)} {
		err := os.Remove(p)
		if err == nil {
			did = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("queue: %w", err)
		}
	}
	return did, nil
}

// replaceFile writes data to msg/ID.ext through a new file in tmp/ and a
// rename, without fsync.
func (s *Spool) replaceFile(id, ext string, data []byte) error {
	tmp := s.tmpPath(id, ext)
	if err := writeFileNoSync(tmp, data); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.msgDir, id+"."+ext)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// scanSegment calls fn for each valid record of a segment, in order. When
// it meets bytes that are no record it looks for the next record at every
// later offset: the bytes skipped before a record found are reported as
// damaged, the bytes after the last record as the tail (a torn write).
func scanSegment(salt uint32, data []byte, fn func(off int, r record)) (damaged [][2]int, tail int) {
	off := 0
	for off < len(data) {
		r, n, err := decodeRecord(salt, data[off:])
		if err == nil {
			fn(off, r)
			off += n
			continue
		}
		next := -1
		for p := off + 1; p+recHeaderLen <= len(data); p++ {
			if _, _, err := decodeRecord(salt, data[p:]); err == nil {
				next = p
				break
			}
		}
		if next < 0 {
			return damaged, len(data) - off
		}
		damaged = append(damaged, [2]int{off, next})
		off = next
	}
	return damaged, 0
}
