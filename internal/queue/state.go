package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// stateVersion is the version of the state file format. A spool with state
// files of another version is not read: they are quarantined by Open.
const stateVersion = 1

// stateFile is the JSON form of a message's state file: the Message with a
// version number.
type stateFile struct {
	V int `json:"v"`
	Message
}

// encodeState returns the state file of m.
func encodeState(m *Message) ([]byte, error) {
	b, err := json.Marshal(stateFile{V: stateVersion, Message: *m})
	if err != nil {
		return nil, fmt.Errorf("queue: encoding state of %s: %w", m.ID, err)
	}
	return append(b, '\n'), nil
}

// decodeState parses and checks a state file. It is strict: unknown fields,
// trailing data, another version, an invalid ID or recipient are errors, so
// that a state file is never rewritten with something it held dropped.
func decodeState(data []byte) (Message, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var sf stateFile
	if err := dec.Decode(&sf); err != nil {
		return Message{}, fmt.Errorf("queue: state file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, errors.New("queue: state file: trailing data")
	}
	if sf.V != stateVersion {
		return Message{}, fmt.Errorf("queue: state file: version %d, want %d", sf.V, stateVersion)
	}
	m := sf.Message
	if err := checkMessage(&m); err != nil {
		return Message{}, err
	}
	return m, nil
}

// checkMessage checks the invariants of a decoded message.
func checkMessage(m *Message) error {
	if !ValidID(m.ID) {
		return fmt.Errorf("queue: state file: invalid ID %q", m.ID)
	}
	if m.Size < 0 {
		return fmt.Errorf("queue: state file of %s: negative size", m.ID)
	}
	if len(m.Rcpts) == 0 {
		return fmt.Errorf("queue: state file of %s: no recipients", m.ID)
	}
	seen := make(map[string]bool, len(m.Rcpts))
	for i := range m.Rcpts {
		r := &m.Rcpts[i]
		switch {
		case r.Addr == "":
			return fmt.Errorf("queue: state file of %s: empty recipient", m.ID)
		case seen[r.Addr]:
			return fmt.Errorf("queue: state file of %s: recipient %q twice", m.ID, r.Addr)
		case r.State > Failed:
			return fmt.Errorf("queue: state file of %s: invalid state", m.ID)
		case r.Attempts < 0:
			return fmt.Errorf("queue: state file of %s: negative attempts", m.ID)
		case (r.Expired || r.Reported) && r.State != Failed:
			return fmt.Errorf("queue: state file of %s: %q is expired or reported but not failed", m.ID, r.Addr)
		}
		seen[r.Addr] = true
	}
	return nil
}

// checkEnvelope checks what Put is given and returns its recipients,
// deduplicated, Pending.
func checkEnvelope(env *Envelope) ([]Recipient, error) {
	if env.ID != "" && !ValidID(env.ID) {
		return nil, fmt.Errorf("queue: invalid message ID %q", env.ID)
	}
	if !utf8.ValidString(env.From) {
		return nil, errors.New("queue: reverse-path is not valid UTF-8")
	}
	for k, v := range env.Attrs {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, errors.New("queue: attribute is not valid UTF-8")
		}
	}
	if len(env.Rcpts) == 0 {
		return nil, errors.New("queue: no recipients")
	}
	rcpts := make([]Recipient, 0, len(env.Rcpts))
	seen := make(map[string]bool, len(env.Rcpts))
	for _, r := range env.Rcpts {
		if r.Addr == "" {
			return nil, errors.New("queue: empty recipient")
		}
		if !utf8.ValidString(r.Addr) || !utf8.ValidString(r.ORCPT) || !utf8.ValidString(r.Notify) {
			return nil, errors.New("queue: recipient is not valid UTF-8")
		}
		if seen[r.Addr] {
			continue
		}
		seen[r.Addr] = true
		rcpts = append(rcpts, Recipient{Addr: r.Addr, ORCPT: r.ORCPT, Notify: r.Notify})
	}
	return rcpts, nil
}

// applyResults records delivery outcomes at now. Results for recipients
// that are done are ignored; a Deferred result for a recipient that failed
// meanwhile (bounced by the postmaster) too. A Delivered result overrides an
// unreported failure: the message did arrive.
func applyResults(m *Message, results []Result, now time.Time, sch Schedule) error {
	index := make(map[string]int, len(m.Rcpts))
	for i, r := range m.Rcpts {
		index[r.Addr] = i
	}
	for _, res := range results {
		if _, ok := index[res.Addr]; !ok {
			return fmt.Errorf("queue: message %s has no recipient %q", m.ID, res.Addr)
		}
		if res.State != Delivered && res.State != Deferred && res.State != Failed {
			return fmt.Errorf("queue: result for %q: invalid state %v", res.Addr, res.State)
		}
	}
	for _, res := range results {
		r := &m.Rcpts[index[res.Addr]]
		if r.done() || (res.State == Deferred && r.State == Failed) {
			continue
		}
		r.Attempts++
		r.LastAttempt = now
		r.LastReply = res.Reply
		r.RemoteMTA = res.RemoteMTA
		r.Expired = false
		r.NextAttempt = time.Time{}
		r.State = res.State
		if res.State == Deferred {
			next, expired := sch.Next(m.From, m.Received, now, r.Attempts)
			if expired {
				r.State = Failed
				r.Expired = true
			} else {
				r.NextAttempt = next
			}
		}
	}
	return nil
}

// dueAt returns when m next has work: at once (the zero time) if a failure
// is unreported, else the earliest next attempt of a Pending or Deferred
// recipient. ok is false when nothing is left to do.
func dueAt(m *Message) (due time.Time, ok bool) {
	for _, r := range m.Rcpts {
		switch {
		case r.State == Failed && !r.Reported:
			return time.Time{}, true
		case r.State == Pending || r.State == Deferred:
			if !ok || r.NextAttempt.Before(due) {
				due, ok = r.NextAttempt, true
			}
		}
	}
	return due, ok
}

// dueRcpts returns the recipients of m to attempt at now: Pending or
// Deferred, and due (or all of them if flush is set).
func dueRcpts(m *Message, now time.Time, flush bool) []Recipient {
	var out []Recipient
	for _, r := range m.Rcpts {
		if (r.State == Pending || r.State == Deferred) && (flush || !r.NextAttempt.After(now)) {
			out = append(out, r)
		}
	}
	return out
}

// unreported returns the Failed recipients of m not yet reported.
func unreported(m *Message) []Recipient {
	var out []Recipient
	for _, r := range m.Rcpts {
		if r.State == Failed && !r.Reported {
			out = append(out, r)
		}
	}
	return out
}

// finished reports whether nothing is left to do for m.
func finished(m *Message) bool {
	for i := range m.Rcpts {
		if !m.Rcpts[i].done() {
			return false
		}
	}
	return true
}
