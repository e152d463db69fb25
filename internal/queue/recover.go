package queue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// recover brings the spool back to a consistent state after a crash, and
// loads the index: it empties tmp/, replays the journal, and checks msg/.
// It runs in Open, holding the queue-wide lock exclusively so that no
// attached process is changing anything; the owner lock ensures that no
// other process is putting. It makes the journal that Open starts. See
// Spool for the rules.
func (s *Spool) recover() error {
	lf, err := os.OpenFile(s.lockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	defer lf.Close() // releases the lock
	if err := lock(context.Background(), lf, true); err != nil {
		return fmt.Errorf("queue: %w", err)
	}

	// Files being written when the last owner (or an attached process)
	// died: none of them was ever the only copy of anything.
	tmps, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, ent := range tmps {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, ent.Name())); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if len(tmps) > 0 {
		s.log.Info("queue: removed unfinished files", "count", len(tmps))
	}

	// The journal before msg/: it restores the files of every message
	// whose Put returned and that no checkpoint has synced yet, so the
	// rules below never see them half-written.
	nextSeq, err := s.replay()
	if err != nil {
		return err
	}
	var salt [4]byte
	_, _ = rand.Read(salt[:])
	s.jnl = newJournal(s.journalDir, binary.LittleEndian.Uint32(salt[:]), nextSeq, s.log)

	ents, err := os.ReadDir(s.msgDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	type files struct{ body, state bool }
	found := make(map[string]*files)
	for _, ent := range ents {
		id, ext, _ := strings.Cut(ent.Name(), ".")
		if !ValidID(id) || (ext != "body" && ext != "json") || !ent.Type().IsRegular() {
			s.log.Warn("queue: unknown file in spool left alone", "name", ent.Name())
			continue
		}
		f := found[id]
		if f == nil {
			f = new(files)
			found[id] = f
		}
		if ext == "body" {
			f.body = true
		} else {
			f.state = true
		}
	}

	changed := false
	for _, id := range slices.Sorted(maps.Keys(found)) {
		f := found[id]
		switch {
		case !f.body:
			// A Put whose body link was not persisted, or a removal
			// that unlinked the body first: the message never was
			// acknowledged, or was being removed.
			if err := os.Remove(s.statePath(id)); err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			s.log.Warn("queue: dropped a message without body (unfinished put or removal)", "id", id)
			changed = true
			continue
		case !f.state:
			if err := os.Remove(s.bodyPath(id)); err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			s.log.Info("queue: dropped a body without state (unfinished put or removal)", "id", id)
			changed = true
			continue
		}
		m, err := s.readState(id)
		if err == nil {
			var fi fs.FileInfo
			fi, err = os.Stat(s.bodyPath(id))
			if err == nil && fi.Size() != m.Size {
				err = fmt.Errorf("queue: body of %s has %d bytes, its state file says %d", id, fi.Size(), m.Size)
			}
		}
		if err != nil {
			if qerr := s.quarantine(id); qerr != nil {
				return errors.Join(err, qerr)
			}
			s.log.Error("queue: message set aside in corrupt/", "id", id, "err", err)
			changed = true
			continue
		}
		if finished(&m) {
			// Its removal was interrupted.
			if err := s.removeFilesNoSync(id); err != nil {
				return err
			}
			changed = true
			continue
		}
		s.note(id, &m, keep)
	}
	if changed {
		if err := s.syncMsgDir(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) removeFilesNoSync(id string) error {
	if err := os.Remove(s.statePath(id)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Remove(s.bodyPath(id)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// quarantine moves the files of message id to corrupt/, durably.
func (s *Spool) quarantine(id string) error {
	dir := filepath.Join(s.dir, "corrupt")
	made, err := mkdirSync(dir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if made {
		if err := safeio.SyncDir(s.dir); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	// The body first: a crash between the renames leaves a state file
	// without body, which the next Open drops, and keeps the body.
	for _, p := range []string{s.bodyPath(id), s.statePath(id)} {
		if err := os.Rename(p, filepath.Join(dir, filepath.Base(p))); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if err := safeio.SyncDir(dir); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}
