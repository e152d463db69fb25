package users

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// argonParams are the Argon2id cost parameters (RFC 9106 §3.1).
type argonParams struct {
	memory  uint32 // KiB
	time    uint32 // passes
	threads uint8
	saltLen uint32
	keyLen  uint32
}

// defaultParams are the parameters of new hashes: 64 MiB, 3 passes, 2 lanes
// (RFC 9106 §4's second recommended option uses 64 MiB with 3 passes).
func defaultParams() argonParams {
	return argonParams{memory: 64 * 1024, time: 3, threads: 2, saltLen: 16, keyLen: 32}
}

// Bounds on the parameters accepted from the file. The memory bound keeps a
// hash in the file from making one verification allocate more than 256 MiB
// (four run at once: see maxHashing).
const (
	maxArgonMemory = 256 * 1024 // KiB
	maxArgonTime   = 32
	minArgonSalt   = 8
	maxArgonSalt   = 64
	minArgonKey    = 16
	maxArgonKey    = 64
)

// argonHash is a parsed $argon2id$ PHC string.
type argonHash struct {
	p         argonParams
	salt, key []byte
}

// b64 is the PHC string format's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding

// newHash returns the Argon2id PHC string of password with p and a random salt:
// $argon2id$v=19$m=65536,t=3,p=2$<salt>$<key>.
func newHash(p argonParams, password []byte) string {
	salt := make([]byte, p.saltLen)
	rand.Read(salt) // never fails (crypto/rand)
	return formatArgon2id(p, salt, argon2.IDKey(password, salt, p.time, p.memory, p.threads, p.keyLen))
}

func formatArgon2id(p argonParams, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

var errHashFormat = errors.New("not an argon2id ($argon2id$v=19$m=…,t=…,p=…$salt$hash) or bcrypt ($2a$, $2b$, $2y$) hash")

// checkHash reports whether s is a hash this package can verify, without
// computing anything.
func checkHash(s string) error {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		_, err := parseArgon2id(s)
		return err
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return checkBcrypt(s)
	}
	return errHashFormat
}

// checkBcrypt checks a modular crypt bcrypt hash: $2x$NN$ and 53 characters
// of bcrypt's base64 (22 of salt, 31 of hash).
func checkBcrypt(s string) error {
	if len(s) != 60 {
		return fmt.Errorf("bcrypt hash of %d characters, want 60", len(s))
	}
	if s[4] < '0' || s[4] > '9' || s[5] < '0' || s[5] > '9' || s[6] != '$' {
		return errors.New("bcrypt hash not of the form $2x$NN$…")
	}
	for i := 7; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '/') {
			return errors.New("bcrypt hash with a character outside its alphabet")
		}
	}
	if _, err := bcrypt.Cost([]byte(s)); err != nil {
		return fmt.Errorf("bad bcrypt hash: %v", strings.TrimPrefix(err.Error(), "crypto/bcrypt: "))
	}
	return nil
}

// parseArgon2id parses $argon2id$v=19$m=M,t=T,p=P$salt$key (the PHC string
// format as libargon2, Dovecot and passlib write it) within the bounds above.
func parseArgon2id(s string) (argonHash, error) {
	var h argonHash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return h, errors.New("argon2id hash not of the form $argon2id$v=19$m=M,t=T,p=P$salt$hash")
	}
	if parts[2] != "v=19" {
		return h, fmt.Errorf("argon2id version %q, want v=19", parts[2])
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return h, fmt.Errorf("argon2id parameters %q, want m=M,t=T,p=P", parts[3])
	}
	var v [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		num, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return h, fmt.Errorf("argon2id parameters %q, want m=M,t=T,p=P", parts[3])
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			return h, fmt.Errorf("argon2id parameter %q is not a number", params[i])
		}
		v[i] = n
	}
	m, t, p := v[0], v[1], v[2]
	switch {
	case p < 1 || p > 255:
		return h, fmt.Errorf("argon2id parallelism p=%d outside 1..255", p)
	case t < 1 || t > maxArgonTime:
		return h, fmt.Errorf("argon2id passes t=%d outside 1..%d", t, maxArgonTime)
	case m < 8*p || m > maxArgonMemory:
		return h, fmt.Errorf("argon2id memory m=%d outside %d..%d KiB", m, 8*p, maxArgonMemory)
	}
	var err error
	if h.salt, err = decodeB64(parts[4]); err != nil || len(h.salt) < minArgonSalt || len(h.salt) > maxArgonSalt {
		return h, fmt.Errorf("argon2id salt is not %d to %d bytes of base64", minArgonSalt, maxArgonSalt)
	}
	if h.key, err = decodeB64(parts[5]); err != nil || len(h.key) < minArgonKey || len(h.key) > maxArgonKey {
		return h, fmt.Errorf("argon2id hash is not %d to %d bytes of base64", minArgonKey, maxArgonKey)
	}
	h.p = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(p), saltLen: uint32(len(h.salt)), keyLen: uint32(len(h.key))}
	return h, nil
}

// decodeB64 decodes unpadded standard base64, tolerating padding (but not
// the CR and LF that package base64 skips).
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return nil, errors.New("not base64")
		}
	}
	return b64.DecodeString(s)
}

// verifyHash reports whether password matches hash (argon2id or bcrypt),
// comparing in constant time.
func verifyHash(hash string, password []byte) bool {
	if strings.HasPrefix(hash, "$argon2id$") {
		h, err := parseArgon2id(hash)
		if err != nil {
			return false
		}
		key := argon2.IDKey(password, h.salt, h.p.time, h.p.memory, h.p.threads, h.p.keyLen)
		return subtle.ConstantTimeCompare(key, h.key) == 1
	}
	if checkHash(hash) != nil {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), password) == nil
}
