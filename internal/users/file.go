package users

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/petrel-mta/petrel/smtp"
)

// maxNameLen bounds a name: an RFC 5321 path holds at most 256 octets with
// its angle brackets (§4.5.3.1.3).
const maxNameLen = 254

// ValidateName reports whether name may be stored: lowercase, either a
// local part (a Dot-string of RFC 5321 §4.1.2, UTF-8 allowed as in RFC
// 6531: "alice", "j.doe") or a whole address ("alice@example.com"), with no
// ':', whitespace or control character, not quoted, and not beginning with
// '#' (a comment line in the file). The errors wrap ErrName.
func ValidateName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrName, name, why) }
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrName)
	case len(name) > maxNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxNameLen))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case name[0] == '#':
		return bad("begins with '#', which starts a comment line in the file")
	}
	for _, r := range name {
		switch {
		case r == ':':
			return bad("contains ':', which separates the name from the hash")
		case r == ' ' || !unicode.IsPrint(r):
			return bad("contains whitespace or a control character")
		case r == '"' || r == '\\':
			return bad("quoted local parts are not accepted")
		}
	}
	if strings.ToLower(name) != name {
		return bad("must be lowercase")
	}
	addr := name
	if !strings.Contains(name, "@") {
		addr = name + "@localhost"
	}
	if _, err := smtp.ParseMailbox(addr, true); err != nil {
		return bad("neither a local part (alice) nor an address (alice@example.com)")
	}
	return nil
}

// normalize is the form names are stored and looked up in.
func normalize(name string) string { return strings.ToLower(name) }

// file is the users file as lines, so that comments, blank lines and the
// order of the users survive a rewrite.
type file struct {
	lines []string       // without their "\n"
	index map[string]int // name → its line
}

func newFile() *file { return &file{index: map[string]int{}} }

// parseFile parses the whole file: one "name:hash" a line; blank lines and
// lines beginning with '#' are kept as they are. Errors name the line.
func parseFile(data []byte) (*file, error) {
	f := newFile()
	if len(data) == 0 {
		return f, nil
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	for i, line := range strings.Split(string(data), "\n") {
		name, _, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		if name != "" {
			if prev, dup := f.index[name]; dup {
				return nil, fmt.Errorf("line %d: %q already on line %d", i+1, name, prev+1)
			}
			f.index[name] = len(f.lines)
		}
		f.lines = append(f.lines, line)
	}
	return f, nil
}

// parseLine parses one line of the file (without its "\n"): "name:hash",
// or a blank or comment line, for which name is "".
func parseLine(line string) (name, hash string, err error) {
	trimmed := strings.TrimLeft(line, " \t")
	if trimmed == "" || trimmed[0] == '#' {
		return "", "", nil
	}
	if strings.ContainsRune(line, '\r') {
		return "", "", errors.New("carriage return in the line: the file must have LF line ends")
	}
	name, hash, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", errors.New("no ':' between the name and the hash")
	}
	if err := ValidateName(name); err != nil {
		return "", "", errors.New(strings.TrimPrefix(err.Error(), "users: "))
	}
	if strings.Contains(hash, ":") {
		return "", "", errors.New("more than one ':' (from a Dovecot passwd-file? keep only name:hash)")
	}
	if err := checkHash(hash); err != nil {
		return "", "", fmt.Errorf("%s: %v", name, err)
	}
	return name, hash, nil
}

func formatLine(name, hash string) string { return name + ":" + hash }

func (f *file) bytes() []byte {
	var b bytes.Buffer
	for _, l := range f.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (f *file) hash(name string) (string, bool) {
	i, ok := f.index[name]
	if !ok {
		return "", false
	}
	_, hash, _ := strings.Cut(f.lines[i], ":")
	return hash, true
}

func (f *file) clone() *file {
	c := &file{lines: append([]string(nil), f.lines...), index: make(map[string]int, len(f.index))}
	for k, v := range f.index {
		c.index[k] = v
	}
	return c
}

// change is one Add, SetPassword or Delete not yet saved.
type change struct {
	op   byte // 'a'dd, 's'et, 'd'elete
	name string
	hash string
}

// apply makes c on f. Strictly (when saving), adding a user who exists or
// changing or deleting one who does not is an error; leniently (replaying
// unsaved changes over a reloaded file) an add replaces and a missing user
// is ignored.
func (f *file) apply(c change, strict bool) error {
	i, exists := f.index[c.name]
	switch {
	case c.op == 'a' && exists && strict:
		return fmt.Errorf("%w: %s", ErrExists, c.name)
	case c.op != 'a' && !exists && strict:
		return fmt.Errorf("%w: %s", ErrNotFound, c.name)
	case c.op == 'd' && exists:
		f.lines = append(f.lines[:i], f.lines[i+1:]...)
		delete(f.index, c.name)
		for n, j := range f.index {
			if j > i {
				f.index[n] = j - 1
			}
		}
	case c.op != 'd' && exists:
		f.lines[i] = formatLine(c.name, c.hash)
	case c.op == 'a':
		f.index[c.name] = len(f.lines)
		f.lines = append(f.lines, formatLine(c.name, c.hash))
	}
	return nil
}
