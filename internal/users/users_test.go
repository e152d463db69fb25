package users

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Known hashes of "password1".
const (
	argonPassword1  = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s"
	bcryptPassword1 = "$2a$04$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u"
)

// cheap are Argon2id parameters that keep the tests fast (64 KiB, 1 pass).
var cheap = argonParams{memory: 64, time: 1, threads: 1, saltLen: 16, keyLen: 32}

// openCheap opens path with cheap parameters for new hashes.
func openCheap(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	db.params = cheap
	return db
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"j.doe", true},
		{"alice@example.com", true},
		{"alice+tag@mail.example.com", true},
		{"o'brien", true},
		{"a!#$%&'*+-/=?^_`{|}~b", true},
		{"élodie@exemple.fr", true},
		{"alice@[192.0.2.1]", true},
		{"", false},
		{"Alice", false},
		{"alice@Example.com", false},
		{"al ice", false},
		{"alice\t", false},
		{"al\x00ice", false},
		{"al\x7fice", false},
		{"alice\u200b", false}, // zero-width space: not printable
		{"alice:x", false},
		{"alice@[IPv6:2001:db8::1]", false}, // ':'
		{`"al ice"@example.com`, false},
		{`"alice"@example.com`, false},
		{"#alice", false},
		{".alice", false},
		{"alice.", false},
		{"al..ice", false},
		{"alice@", false},
		{"@example.com", false},
		{"alice@example..com", false},
		{"alice@-example.com", false},
		{"a(b)", false},
		{"a,b", false},
		{"\xff", false},
		{strings.Repeat("a", 65), false}, // local part over 64 octets
		{strings.Repeat("a", 64), true},
		{"a@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("e", 61), false}, // 255
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrName) {
			t.Errorf("ValidateName(%q) = %v, not ErrName", tc.name, err)
		}
	}
}

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line, name, err string
	}{
		{"alice:" + argonPassword1, "alice", ""},
		{"alice@example.com:" + bcryptPassword1, "alice@example.com", ""},
		{"bob:$2b$04$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "bob", ""},
		{"bob:$2y$10$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "bob", ""},
		{"alice:$argon2id$v=19$m=65536,t=3,p=2$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "alice", ""},
		{"alice:$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s=", "alice", ""}, // padded
		{"", "", ""},
		{"   ", "", ""},
		{"# a comment: with colons", "", ""},
		{"  # indented comment", "", ""},
		{"alice", "", "no ':'"},
		{"alice:", "", "not an argon2id"},
		{":" + argonPassword1, "", "empty"},
		{"Alice:" + argonPassword1, "", "lowercase"},
		{" alice:" + argonPassword1, "", "whitespace"},
		{"alice:" + argonPassword1 + " ", "", "base64"},
		{"alice:" + argonPassword1 + "\r", "", "carriage return"},
		{"alice:" + argonPassword1 + ":1000:1000::/home/alice", "", "Dovecot"},
		{"alice:{BLF-CRYPT}" + bcryptPassword1, "", "not an argon2id"},
		{"alice:plaintext", "", "not an argon2id"},
		{"alice:$1$abc$def", "", "not an argon2id"},
		{"alice:$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "not an argon2id"},
		{"alice:$argon2id$v=16$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "version"},
		{"alice:$argon2id$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "form"},
		{"alice:$argon2id$v=19$t=1,m=64,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "parameters"},
		{"alice:$argon2id$v=19$m=64,t=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "parameters"},
		{"alice:$argon2id$v=19$m=4194304,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "memory"},
		{"alice:$argon2id$v=19$m=7,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "memory"},
		{"alice:$argon2id$v=19$m=64,t=0,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "passes"},
		{"alice:$argon2id$v=19$m=64,t=1,p=0$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "parallelism"},
		{"alice:$argon2id$v=19$m=64,t=1,p=256$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "parallelism"},
		{"alice:$argon2id$v=19$m=64,t=1,p=-1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "number"},
		{"alice:$argon2id$v=19$m=64,t=1,p=1$MDEy$bTIaSHIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "salt"},
		{"alice:$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIaSHIS", "", "hash is not"},
		{"alice:$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$bTIa*HIS7LpIOdivYJdbhmLvOLhJ4YiUhy/thO7m09s", "", "hash is not"},
		{"alice:$2a$04$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9", "", "60"},
		{"alice:$2a$04$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9*", "", "alphabet"},
		{"alice:$2a$99$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "", "bcrypt"},
		{"alice:$2a$07\x00wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "", "form"},
		{"alice:$2a$4$$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "", "form"},
		{"alice:$2x$04$wki6sCMAokLnUFFl7uze.uWmc0ikbUjjNipcxmjyCGa0S4r8Ucd9u", "", "not an argon2id"},
	} {
		name, hash, err := parseLine(tc.line)
		if tc.err == "" {
			if err != nil || name != tc.name {
				t.Errorf("parseLine(%q) = %q, %v; want %q", tc.line, name, err, tc.name)
			}
			if name != "" && formatLine(name, hash) != tc.line {
				t.Errorf("parseLine(%q): hash %q does not give the line back", tc.line, hash)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseLine(%q) = %q, %v; want an error with %q", tc.line, name, err, tc.err)
		}
	}
}

func TestParseFile(t *testing.T) {
	for _, tc := range []struct {
		content string
		names   []string
		err     string
	}{
		{"", nil, ""},
		{"\n", nil, ""},
		{"# users\n\nalice:" + argonPassword1 + "\nbob:" + bcryptPassword1 + "\n", []string{"alice", "bob"}, ""},
		{"alice:" + argonPassword1, []string{"alice"}, ""}, // no final newline
		{"alice:" + argonPassword1 + "\nalice:" + bcryptPassword1 + "\n", nil, `line 2: "alice" already on line 1`},
		{"# users\nalice " + argonPassword1 + "\n", nil, "line 2: no ':'"},
		{"alice:" + argonPassword1 + "\r\n", nil, "line 1: carriage return"},
	} {
		f, err := parseFile([]byte(tc.content))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseFile(%q) = %v, want an error with %q", tc.content, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseFile(%q) = %v", tc.content, err)
			continue
		}
		var names []string
		for n := range f.index {
			names = append(names, n)
		}
		slices.Sort(names)
		if !slices.Equal(names, tc.names) {
			t.Errorf("parseFile(%q) names %q, want %q", tc.content, names, tc.names)
		}
	}
}

func TestOpenMissingAndBad(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(filepath.Join(dir, "nonexistent", "users"))
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if l := db.List(); len(l) != 0 {
		t.Errorf("missing file: List = %q", l)
	}
	bad := filepath.Join(dir, "users")
	writeFile(t, bad, "alice:"+argonPassword1+"\nbob\n")
	if _, err := Open(bad); err == nil || !strings.Contains(err.Error(), bad+": line 2:") {
		t.Errorf("bad file: %v, want an error naming the file and line 2", err)
	}
	if _, err := Open(dir); err == nil {
		t.Error("a directory opened as a users file")
	}
}

// TestVerify: a correct password, a wrong one, an unknown user, with the
// known hashes of each kind and with one made by Add.
func TestVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "argon:"+argonPassword1+"\nbcrypt@example.com:"+bcryptPassword1+"\n")
	db := openCheap(t, path)
	if err := db.Add("added", []byte("correct horse")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"argon", "password1", true},
		{"ARGON", "password1", true}, // names are case-insensitive
		{"argon", "password2", false},
		{"argon", "", false},
		{"argon", "password1\x00", false},
		{"bcrypt@example.com", "password1", true},
		{"bcrypt@example.com", "Password1", false},
		{"bcrypt", "password1", false},
		{"added", "correct horse", true},
		{"added", "correct horse ", false},
		{"unknown", "password1", false},
		{"", "password1", false},
		{"bad name:", "password1", false},
	} {
		if got := db.Verify(ctx, tc.name, []byte(tc.password)); got != tc.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", tc.name, tc.password, got, tc.want)
		}
	}
}

// TestVerifyDefaultParams: what Add writes, and that an unknown user is
// checked the way a known one is: against an Argon2id hash with the
// parameters of new hashes (so it costs the same).
func TestVerifyDefaultParams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	dummy, err := parseArgon2id(db.dummyHash())
	if err != nil {
		t.Fatalf("dummy hash: %v", err)
	}
	if dummy.p != defaultParams() {
		t.Errorf("dummy hash parameters %+v, want those of new hashes %+v", dummy.p, defaultParams())
	}
	if testing.Short() {
		return
	}
	if err := db.Add("alice", []byte("password1")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	content := readFile(t, path)
	if !strings.HasPrefix(content, "alice:$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("file %q, want alice with an argon2id hash of m=65536,t=3,p=2", content)
	}
	ctx := context.Background()
	measure := func(name, password string, want bool) time.Duration {
		start := time.Now()
		if got := db.Verify(ctx, name, []byte(password)); got != want {
			t.Errorf("Verify(%q, %q) = %v, want %v", name, password, got, want)
		}
		return time.Since(start)
	}
	right := measure("alice", "password1", true)
	wrong := measure("alice", "password2", false)
	unknown := measure("nobody", "password1", false)
	t.Logf("right %v, wrong %v, unknown %v", right, wrong, unknown)
	// Very loose, as machines are loaded: a check that skipped the hash
	// would take microseconds, not a tenth of a 64 MiB Argon2id.
	if unknown < right/10 || wrong < right/10 {
		t.Errorf("an unknown user (%v) or a wrong password (%v) answered much faster than a right one (%v)", unknown, wrong, right)
	}
}

func TestVerifyBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "argon:"+argonPassword1+"\n")
	db := openCheap(t, path)
	// Every slot taken: Verify waits, and gives up with its context.
	for range maxHashing {
		db.sem <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if db.Verify(ctx, "argon", []byte("password1")) {
		t.Error("Verify succeeded with every hashing slot taken")
	}
	if ctx.Err() == nil {
		t.Error("Verify returned before its context was done")
	}
	for range maxHashing {
		<-db.sem
	}
	// Many at once, all answered.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			want := i%2 == 0
			pw := "password1"
			if !want {
				pw = "wrong-password"
			}
			if got := db.Verify(context.Background(), "argon", []byte(pw)); got != want {
				t.Errorf("Verify %d = %v", i, got)
			}
		})
	}
	wg.Wait()
	if len(db.sem) != 0 {
		t.Errorf("%d hashing slots still taken", len(db.sem))
	}
}

func TestChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	db := openCheap(t, path)
	ctx := context.Background()
	pw := []byte("password1")

	if err := db.Add("Alice@Example.COM", pw); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		err  error
		want error
	}{
		{"add existing", db.Add("alice@example.com", pw), ErrExists},
		{"add existing, other case", db.Add("ALICE@example.com", pw), ErrExists},
		{"short password", db.Add("bob", []byte("1234567")), ErrPassword},
		{"long password", db.Add("bob", make([]byte, MaxPasswordLen+1)), ErrPassword},
		{"NUL in password", db.Add("bob", []byte("pass\x00word")), ErrPassword},
		{"LF in password", db.Add("bob", []byte("password\n")), ErrPassword},
		{"bad name", db.Add("bob smith", pw), ErrName},
		{"passwd unknown", db.SetPassword("bob", pw), ErrNotFound},
		{"delete unknown", db.Delete("bob"), ErrNotFound},
		{"delete bad name", db.Delete("bob:"), ErrName},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.what, tc.err, tc.want)
		}
	}
	if err := db.Add("bob", []byte("12345678")); err != nil {
		t.Errorf("8-byte password: %v", err)
	}
	if l := db.List(); !slices.Equal(l, []string{"alice@example.com", "bob"}) {
		t.Errorf("List = %q", l)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("file written before Save: %v", err)
	}
	if err := db.SetPassword("alice@example.com", []byte("new password")); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete("BOB"); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	db2 := openCheap(t, path)
	if l := db2.List(); !slices.Equal(l, []string{"alice@example.com"}) {
		t.Errorf("after Save and Open: List = %q", l)
	}
	if !db2.Verify(ctx, "alice@example.com", []byte("new password")) || db2.Verify(ctx, "alice@example.com", pw) {
		t.Error("the password set is not the one that verifies")
	}
}

// TestFileMode: the users file is 0600 whatever it was, and no temporary
// file stays behind.
func TestFileMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "users")
	db := openCheap(t, path)
	if err := db.Add("alice", []byte("password1")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	check := func(p string, want os.FileMode) {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), want)
		}
	}
	check(path, 0o600)
	check(path+".lock", 0o600)
	check(dir, 0o700)

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := db.Add("bob", []byte("password1")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	check(path, 0o600)

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"users", "users.lock"}) {
		t.Errorf("directory holds %q, want users and users.lock", names)
	}
}

// TestKeepsLines: comments, blank lines and the order of users survive.
func TestKeepsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "# Petrel users\n\nzoe:"+argonPassword1+"\n# imported from Dovecot\nbob:"+bcryptPassword1+"\ncarl:"+argonPassword1+"\n")
	db := openCheap(t, path)
	if err := db.Delete("bob"); err != nil {
		t.Fatal(err)
	}
	if err := db.Add("alice", []byte("password1")); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPassword("zoe", []byte("password2")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(readFile(t, path), "\n"), "\n")
	var shape []string
	for _, l := range lines {
		name, _, _ := strings.Cut(l, ":")
		shape = append(shape, name)
	}
	want := []string{"# Petrel users", "", "zoe", "# imported from Dovecot", "carl", "alice"}
	if !slices.Equal(shape, want) {
		t.Errorf("lines %q, want %q", shape, want)
	}
	if lines[2] == "zoe:"+argonPassword1 {
		t.Error("zoe's hash unchanged")
	}
	if lines[4] != "carl:"+argonPassword1 {
		t.Errorf("carl's line changed: %q", lines[4])
	}
}

// TestSaveMerges: two commands that opened the file at once lose no
// update, and one that conflicts saves nothing.
func TestSaveMerges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "carl:"+argonPassword1+"\n")
	a, b := openCheap(t, path), openCheap(t, path)
	pw := []byte("password1")
	if err := a.Add("alice", pw); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("bob", pw); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	if l := openCheap(t, path).List(); !slices.Equal(l, []string{"alice", "bob", "carl"}) {
		t.Errorf("after two saves: %q", l)
	}
	if l := b.List(); !slices.Equal(l, []string{"alice", "bob", "carl"}) {
		t.Errorf("the second saver sees %q", l)
	}

	// Both add dave: the second save fails and writes nothing.
	if err := a.Add("dave", pw); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("dave", []byte("other password")); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, path)
	if err := b.Save(); !errors.Is(err, ErrExists) {
		t.Errorf("second add of dave saved: %v", err)
	}
	if readFile(t, path) != before {
		t.Error("a failed Save changed the file")
	}

	// a deletes carl; b's password change for carl then fails.
	c := openCheap(t, path)
	if err := a.Delete("carl"); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPassword("carl", pw); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); !errors.Is(err, ErrNotFound) {
		t.Errorf("password of a deleted user saved: %v", err)
	}
}

// TestConcurrentSaves: many processes' worth of Open, Add, Save at once
// (flock locks are per open file, so goroutines stand for processes).
func TestConcurrentSaves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			db, err := Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			db.params = cheap
			if err := db.Add(fmt.Sprintf("user%02d", i), []byte("password1")); err != nil {
				t.Error(err)
				return
			}
			if err := db.Save(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if l := openCheap(t, path).List(); len(l) != n {
		t.Errorf("%d users saved of %d: %q", len(l), n, l)
	}
}

// TestReload: the daemon's DB picks up what a command saved, and keeps
// what it has when the file turns bad.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	daemon := openCheap(t, path)
	cmd := openCheap(t, path)
	ctx := context.Background()
	pw := []byte("password1")
	if err := cmd.Add("alice", pw); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Save(); err != nil {
		t.Fatal(err)
	}
	if daemon.Verify(ctx, "alice", pw) {
		t.Error("alice verified before Reload")
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if !daemon.Verify(ctx, "alice", pw) {
		t.Error("alice not verified after Reload")
	}

	// Edited in place (same inode, maybe the same mtime): picked up too.
	writeFile(t, path, "bob:"+argonPassword1+"\n")
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if daemon.Verify(ctx, "alice", pw) || !daemon.Verify(ctx, "bob", pw) {
		t.Error("an edit in place not picked up")
	}

	writeFile(t, path, "bob:"+argonPassword1+"\nbroken line\n")
	if err := daemon.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Reload of a bad file: %v", err)
	}
	if !daemon.Verify(ctx, "bob", pw) {
		t.Error("a failed Reload lost the users")
	}

	// Unsaved changes survive a Reload.
	writeFile(t, path, "bob:"+argonPassword1+"\n")
	if err := daemon.Add("carl", pw); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if l := daemon.List(); !slices.Equal(l, []string{"bob", "carl"}) {
		t.Errorf("after Reload with an unsaved add: %q", l)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if daemon.Verify(ctx, "bob", pw) {
		t.Error("bob verified after the file was removed")
	}
}

// TestConcurrentUse: Verify, List and Reload against Add and Save, for the
// race detector.
func TestConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "argon:"+argonPassword1+"\n")
	db := openCheap(t, path)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			switch i % 4 {
			case 0:
				if !db.Verify(ctx, "argon", []byte("password1")) {
					t.Error("argon not verified")
				}
			case 1:
				db.List()
			case 2:
				if err := db.Reload(); err != nil {
					t.Error(err)
				}
			case 3:
				if err := db.Add(fmt.Sprintf("u%d", i), []byte("password1")); err != nil {
					t.Error(err)
				}
				if err := db.Save(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if l := openCheap(t, path).List(); !slices.Equal(l, []string{"argon", "u3", "u7"}) {
		t.Errorf("List = %q", l)
	}
}

func TestBcryptImport(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("imported password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "imported@example.com:"+string(h)+"\n")
	db := openCheap(t, path)
	if !db.Verify(context.Background(), "imported@example.com", []byte("imported password")) {
		t.Error("bcrypt hash not verified")
	}
	// A password change replaces it with argon2id.
	if err := db.SetPassword("imported@example.com", []byte("new password")); err != nil {
		t.Fatal(err)
	}
	if err := db.Save(); err != nil {
		t.Fatal(err)
	}
	if c := readFile(t, path); !strings.HasPrefix(c, "imported@example.com:$argon2id$") {
		t.Errorf("file after passwd: %q", c)
	}
}

// Exists answers the relay's "is this a local recipient" question: names
// are compared in lower case, unsaved additions count, deletions too.
func TestExists(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "users"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add("alice", []byte("correct horse battery")); err != nil {
		t.Fatal(err)
	}
	if err := db.Add("bob@example.org", []byte("correct horse battery")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"alice": true, "ALICE": true, "bob@example.org": true, "bob": false, "carol": false} {
		if got := db.Exists(name); got != want {
			t.Errorf("Exists(%q) = %v, want %v", name, got, want)
		}
	}
	if err := db.Delete("alice"); err != nil {
		t.Fatal(err)
	}
	if db.Exists("alice") {
		t.Error("Exists after Delete")
	}
}
