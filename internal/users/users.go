// Package users keeps the users who may authenticate to Petrel (SMTP AUTH,
// RFC 4954, on submission: RFC 6409) and checks their passwords.
//
// The users live in one file, by default <data_dir>/users (DefaultPath), one
// user a line:
//
//	name:hash
//
// where name is lowercase, a local part ("alice") or an address
// ("alice@example.com") (ValidateName), and hash is an Argon2id string in the
// PHC format (RFC 9106), $argon2id$v=19$m=65536,t=3,p=2$salt$hash, which is
// what this package writes, or a bcrypt hash ($2a$, $2b$, $2y$), so that users
// can be imported from Dovecot or Postfix (Cyrus SASL) setups. Blank lines and
// lines beginning with '#' are kept as they are.
//
// The threats it answers: a stolen file (slow, salted hashes; the file is
// written 0600), lost updates when two `petrel user` commands run at once
// (Save locks a lock file, re-reads the file under the lock and replaces it
// atomically), probing for user names (Verify costs the same whether or not
// the user exists), and a flood of AUTH attempts (at most four hashes are
// computed at once, each Argon2id taking 64 MiB).
package users

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// Password bounds. The lower one is NIST SP 800-63B's minimum; the upper one
// bounds the work of hashing. bcrypt hashes only the first 72 bytes.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// maxHashing is how many password hashes a DB computes at once; others wait.
const maxHashing = 4

// Errors, wrapped with details.
var (
	ErrExists   = errors.New("users: user already exists")
	ErrNotFound = errors.New("users: no such user")
	ErrName     = errors.New("users: invalid name")
	ErrPassword = errors.New("users: unacceptable password")
)

// DefaultPath is the users file in a data directory: <dataDir>/users.
func DefaultPath(dataDir string) string { return filepath.Join(dataDir, "users") }

// DB is the users file in memory. Its methods are safe for concurrent use.
// Add, SetPassword and Delete change the DB in memory; Save writes the
// changes to the file.
type DB struct {
	path   string
	params argonParams   // of new hashes and of the dummy
	sem    chan struct{} // hashes being computed

	// dummySalt and dummyKey stand in for an unknown user's hash.
	dummySalt, dummyKey []byte

	saveMu sync.Mutex // one Save at a time

	mu      sync.RWMutex
	view    *file    // the file as last read or saved, with pending applied
	pending []change // not yet saved
}

// Open reads the users file at path. A missing file is an empty DB (Save
// creates it). A line that is not a valid user, comment or blank line is an
// error naming the line.
func Open(path string) (*DB, error) {
	db := &DB{
		path:      path,
		params:    defaultParams(),
		sem:       make(chan struct{}, maxHashing),
		dummySalt: make([]byte, defaultParams().saltLen),
		dummyKey:  make([]byte, defaultParams().keyLen),
		view:      newFile(),
	}
	rand.Read(db.dummySalt)
	rand.Read(db.dummyKey)
	if err := db.Reload(); err != nil {
		return nil, err
	}
	return db, nil
}

// Path is the file's path.
func (db *DB) Path() string { return db.path }

// Reload reads the file again (the daemon does on SIGHUP), so that changes
// made on disk are picked up. On error the DB is unchanged. Changes not
// yet saved are kept, made again over what was read.
func (db *DB) Reload() error {
	f, _, err := db.read()
	if err != nil {
		return err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, c := range db.pending {
		f.apply(c, false)
	}
	db.view = f
	return nil
}

// read reads and parses the file; info is nil when it does not exist.
func (db *DB) read() (*file, fs.FileInfo, error) {
	data, err := os.ReadFile(db.path)
	if errors.Is(err, fs.ErrNotExist) {
		return newFile(), nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("users: %v", err)
	}
	f, err := parseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("users: %s: %v", db.path, err)
	}
	info, err := os.Stat(db.path)
	if err != nil {
		return nil, nil, fmt.Errorf("users: %v", err)
	}
	return f, info, nil
}

// List returns the names, sorted.
func (db *DB) List() []string {
	db.mu.RLock()
	defer db.mu.RUnlock()
	names := make([]string, 0, len(db.view.index))
	for n := range db.view.index {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Exists reports whether name (lowercased first) is a user: the relay
// backend asks it whether a local recipient has a mailbox.
func (db *DB) Exists(name string) bool {
	db.mu.RLock()
	defer db.mu.RUnlock()
	_, ok := db.view.hash(normalize(name))
	return ok
}

// Add adds a user with an Argon2id hash of password. The name is lowercased
// first. It is an error (ErrExists) if the user exists, and the password
// must be MinPasswordLen to MaxPasswordLen bytes without NUL, CR or LF
// (ErrPassword).
func (db *DB) Add(name string, password []byte) error {
	return db.set('a', name, password)
}

// SetPassword replaces the password of a user who exists (else ErrNotFound).
func (db *DB) SetPassword(name string, password []byte) error {
	return db.set('s', name, password)
}

func (db *DB) set(op byte, name string, password []byte) error {
	name = normalize(name)
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	// Fail early, before the slow hash; checked again below.
	if err := db.check(op, name); err != nil {
		return err
	}
	db.sem <- struct{}{}
	hash := newHash(db.params, password)
	<-db.sem
	return db.change(change{op: op, name: name, hash: hash})
}

// Delete removes a user (else ErrNotFound).
func (db *DB) Delete(name string) error {
	name = normalize(name)
	if err := ValidateName(name); err != nil {
		return err
	}
	return db.change(change{op: 'd', name: name})
}

func (db *DB) check(op byte, name string) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.view.clone().apply(change{op: op, name: name}, true)
}

func (db *DB) change(c change) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.view.apply(c, true); err != nil {
		return err
	}
	db.pending = append(db.pending, c)
	return nil
}

func checkPassword(p []byte) error {
	switch {
	case len(p) < MinPasswordLen:
		return fmt.Errorf("%w: shorter than %d bytes", ErrPassword, MinPasswordLen)
	case len(p) > MaxPasswordLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrPassword, MaxPasswordLen)
	case slices.ContainsFunc(p, func(c byte) bool { return c == 0 || c == '\r' || c == '\n' }):
		// AUTH PLAIN separates its fields with NUL (RFC 4616).
		return fmt.Errorf("%w: contains NUL, CR or LF", ErrPassword)
	}
	return nil
}

// Save writes the changes made since Open, the last Save or Reload to the
// file, merged with what another process may have written meanwhile: under
// an exclusive lock on <path>.lock it reads the file again and makes the
// changes over it; adding a user who now exists (ErrExists) or changing one
// who is gone (ErrNotFound) is an error, and then nothing is written and
// the changes stay unsaved. The file is replaced atomically: a temporary
// file (mode 0600, the old file's owner) is written and fsynced, renamed over
// the file, and the directory fsynced. The directory is created (0700) if
// missing.
func (db *DB) Save() error {
	db.saveMu.Lock()
	defer db.saveMu.Unlock()

	db.mu.RLock()
	changes := slices.Clone(db.pending)
	db.mu.RUnlock()

	dir := filepath.Dir(db.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("users: %v", err)
	}
	unlock, err := lockFile(db.path + ".lock")
	if err != nil {
		return fmt.Errorf("users: locking: %v", err)
	}
	defer unlock()

	f, old, err := db.read()
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := f.apply(c, true); err != nil {
			return fmt.Errorf("%w (changed by someone else meanwhile); nothing saved", err)
		}
	}
	if err := writeAtomic(db.path, f.bytes(), old); err != nil {
		return fmt.Errorf("users: %v", err)
	}

	db.mu.Lock()
	defer db.mu.Unlock()
	db.pending = db.pending[len(changes):] // those made during the Save stay
	view := f.clone()
	for _, c := range db.pending {
		view.apply(c, false)
	}
	db.view = view
	return nil
}

// writeAtomic replaces path with data: temporary file, fsync, rename, fsync
// of the directory. old is the file being replaced, or nil.
func writeAtomic(path string, data []byte, old fs.FileInfo) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if old != nil {
		if err = keepOwner(tmp, old); err != nil {
			return fmt.Errorf("giving the new file the owner of %s: %v", path, err)
		}
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return safeio.SyncDir(dir)
}

// Verify reports whether password is name's password. The name is
// lowercased first. It costs the same whether the user exists or not (an
// unknown user's password is hashed all the same, with the parameters of new
// hashes), so that AUTH does not reveal which users exist; a user imported
// with a bcrypt hash or other Argon2id parameters costs what that hash costs.
// At most four hashes are computed at once per DB; Verify waits for its turn
// and returns false when ctx is done first.
func (db *DB) Verify(ctx context.Context, name string, password []byte) bool {
	name = normalize(name)
	db.mu.RLock()
	hash, ok := db.view.hash(name)
	db.mu.RUnlock()

	select {
	case db.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-db.sem }()
	if ctx.Err() != nil {
		return false
	}
	if !ok {
		hash = db.dummyHash()
	}
	return verifyHash(hash, password) && ok
}

// dummyHash is the hash an unknown user's password is checked against: the
// parameters of new hashes, a random salt and a random key that no password
// gives.
func (db *DB) dummyHash() string {
	return formatArgon2id(db.params, db.dummySalt, db.dummyKey)
}
