package users

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseLine: parseLine never panics; what it accepts is a valid user
// line that formats back to itself, or a blank or comment line.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"alice:" + argonPassword1,
		"alice@example.com:" + bcryptPassword1,
		"# comment",
		"",
		"alice:$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		name, hash, err := parseLine(line)
		if err != nil {
			if name != "" || hash != "" {
				t.Fatalf("parseLine(%q) failed (%v) but returned %q, %q", line, err, name, hash)
			}
			return
		}
		if name == "" {
			trimmed := strings.TrimLeft(line, " \t")
			if trimmed != "" && trimmed[0] != '#' {
				t.Fatalf("parseLine(%q) accepted a line with no user that is neither blank nor a comment", line)
			}
			return
		}
		if formatLine(name, hash) != line {
			t.Fatalf("parseLine(%q) = %q, %q: not the line back", line, name, hash)
		}
		if err := ValidateName(name); err != nil {
			t.Fatalf("parseLine(%q) accepted the name: %v", line, err)
		}
		if normalize(name) != name || !utf8.ValidString(name) {
			t.Fatalf("parseLine(%q) accepted a name not in its stored form", line)
		}
		if strings.ContainsAny(line, "\r\n\x00") {
			t.Fatalf("parseLine(%q) accepted a line with CR, LF or NUL", line)
		}
		if _, err := parseFile([]byte(line + "\n")); err != nil {
			t.Fatalf("parseLine(%q) accepted, parseFile refused: %v", line, err)
		}
	})
}
