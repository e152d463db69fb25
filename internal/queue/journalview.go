package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// journalMsg is a message as the journal tells it: its last state and its
// body (pointing into the segment read).
type journalMsg struct {
	m    Message
	body []byte
}

// journalView reads the journal segments as an attached process sees them
// and returns the messages they hold that are not removed: those put
// through the journal and still resident in the owner's memory (or, if the
// owner died, waiting for the replay). A message that a checkpoint has
// given its files may be there too: its files decide (they are as new or
// newer). Segments are read in order; the last record about an ID decides;
// a state record whose Put record is gone (its segment deleted by a
// checkpoint, so the message has files) is ignored, as is a record that is
// being written (a torn tail) or damaged. A segment deleted meanwhile is
// skipped: a checkpoint gave its messages their files first.
//
// Callers read the journal before msg/, so that a message that moves from
// the one to the other in between is seen at least once.
func (s *Spool) journalView() (map[string]journalMsg, error) {
	segs, _, err := listSegments(s.journalDir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]journalMsg)
	for _, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		scanSegment(sg.salt, data, func(_ int, r record) {
			switch r.kind {
			case recTombstone:
				delete(out, r.id)
			case recPut, recState:
				prev, ok := out[r.id]
				if r.kind == recState && !ok {
					return
				}
				m, err := decodeState(r.state)
				if err != nil || m.ID != r.id {
					return
				}
				body := prev.body
				if r.kind == recPut {
					body = r.body
				}
				if m.Size != int64(len(body)) {
					return
				}
				out[r.id] = journalMsg{m, body}
			}
		})
	}
	return out, nil
}

// journalMessage returns message id from the journal (see journalView).
func (s *Spool) journalMessage(id string) (journalMsg, bool) {
	v, err := s.journalView()
	if err != nil {
		return journalMsg{}, false
	}
	jm, ok := v[id]
	return jm, ok
}

// awaitFiles waits until resident message id has its files (a checkpoint of
// the owner gives them within about two checkpoint intervals), so that an
// attached process can change it. It returns ErrNotFound if the message is
// neither in msg/ nor in the journal (removed meanwhile), and an error if
// the files do not come within maxWait (the owner is not checkpointing: it
// is stopped, or its checkpoints fail).
func (s *Spool) awaitFiles(ctx context.Context, id string, maxWait time.Duration) error {
	deadline := time.Now().Add(maxWait)
	var lastLook time.Time
	for {
		// The journal first (see journalView), at most twice a second:
		// it can be large.
		if now := time.Now(); now.Sub(lastLook) >= 500*time.Millisecond {
			lastLook = now
			if _, ok := s.journalMessage(id); !ok {
				if _, err := os.Stat(s.statePath(id)); err == nil {
					return nil
				}
				return fmt.Errorf("%w: %s", ErrNotFound, id)
			}
		}
		if _, err := os.Stat(s.statePath(id)); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue: %s is held in the memory of the running daemon, and no checkpoint wrote it to disk in %v; try again, or check the daemon's log", id, maxWait)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
