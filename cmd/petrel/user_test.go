package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-mta/petrel/internal/users"
)

func runUser(t *testing.T, stdin io.Reader, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := user(ctx, args, stdin, &out, &errb)
	r := cmdResult{code, out.String(), errb.String()}
	t.Logf("petrel user %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	if strings.Count(r.stderr, "\n") > 1 && code != 0 {
		t.Errorf("error output of more than one line: %q", r.stderr)
	}
	return r
}

func pw(s string) io.Reader { return strings.NewReader(s) }

// verify opens the users file and checks a password.
func verify(t *testing.T, path, name, password string) bool {
	t.Helper()
	db, err := users.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db.Verify(context.Background(), name, []byte(password))
}

func TestUserCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "users")

	runUser(t, nil, "list", "--data", dir).want(t, 0, "no users in "+path)

	r := runUser(t, pw("first password\nignored second line\n"), "add", "Alice@Example.com", "--data", dir)
	r.want(t, 0, "added alice@example.com ("+path+")")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("users file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "alice@example.com:$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Errorf("users file %q", b)
	}
	if !verify(t, path, "alice@example.com", "first password") {
		t.Error("the password given is not the one stored")
	}

	runUser(t, pw("another password\n"), "add", "alice@example.com", "--data", dir).
		want(t, 1, "alice@example.com already exists", "petrel user passwd alice@example.com")

	// CRLF and no final newline are both fine; flags before the command too.
	runUser(t, pw("bob password\r\n"), "--data", dir, "add", "bob").want(t, 0, "added bob")
	if !verify(t, path, "bob", "bob password") {
		t.Error("a CRLF-terminated password kept its CR")
	}

	r = runUser(t, nil, "list", "--data", dir)
	r.want(t, 0)
	if r.stdout != "alice@example.com\nbob\n" {
		t.Errorf("list printed %q", r.stdout)
	}

	runUser(t, pw("new password"), "passwd", "alice@example.com", "--data", dir).
		want(t, 0, "changed the password of alice@example.com")
	if !verify(t, path, "alice@example.com", "new password") {
		t.Error("passwd did not set the new password")
	}
	runUser(t, pw("new password"), "passwd", "carol", "--data", dir).want(t, 1, "no user carol", "petrel user list")

	runUser(t, nil, "del", "BOB", "--data", dir).want(t, 0, "deleted bob")
	runUser(t, nil, "del", "bob", "--data", dir).want(t, 1, "no user bob")
	r = runUser(t, nil, "list", "--data", dir)
	if r.code != 0 || r.stdout != "alice@example.com\n" {
		t.Errorf("list after del: %d %q", r.code, r.stdout)
	}
}

func TestUserPasswordInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		what  string
		stdin io.Reader
		want  string
	}{
		{"no standard input", nil, "no password"},
		{"empty standard input", pw(""), "no password on standard input"},
		{"empty first line", pw("\nsecond line\n"), "no password on standard input"},
		{"short password", pw("1234567\n"), "shorter than 8 bytes"},
		{"long password", pw(strings.Repeat("x", users.MaxPasswordLen+1) + "\n"), "longer than 1024 bytes"},
		{"NUL in the password", pw("pass\x00word\n"), "NUL"},
	} {
		r := runUser(t, tc.stdin, "add", "alice", "--data", dir)
		r.want(t, 1, tc.want, "nothing changed")
		if r.code != 1 {
			t.Errorf("%s: exit %d", tc.what, r.code)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "users")); !os.IsNotExist(err) {
		t.Errorf("a refused password created the users file: %v", err)
	}
	// Exactly the bounds.
	runUser(t, pw("12345678"), "add", "alice", "--data", dir).want(t, 0, "added alice")
	long := strings.Repeat("y", users.MaxPasswordLen)
	runUser(t, pw(long+"\r\n"), "add", "bob", "--data", dir).want(t, 0, "added bob")
	if !verify(t, filepath.Join(dir, "users"), "bob", long) {
		t.Error("the longest password does not verify")
	}
}

func TestUserUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give a command"},
		{[]string{"--data", dir}, "give a command"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"add"}, "add takes one NAME (got 0)"},
		{[]string{"add", "a", "b"}, "add takes one NAME (got 2)"},
		{[]string{"del"}, "del takes one NAME"},
		{[]string{"passwd"}, "passwd takes one NAME"},
		{[]string{"list", "alice"}, "list takes no argument"},
		{[]string{"list", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"list", "--data"}, "flag needs an argument"},
		{[]string{"list", "--data", ""}, "--data must not be empty"},
		{[]string{"add", "al ice"}, "whitespace"},
		{[]string{"add", "alice:x"}, "':'"},
		{[]string{"add", "alice@"}, "neither a local part (alice) nor an address (alice@example.com)"},
		{[]string{"del", "#alice"}, "comment"},
	} {
		runUser(t, pw("password1\n"), tc.args...).want(t, 2, tc.want)
	}
	if _, err := os.Stat(filepath.Join(dir, "users")); !os.IsNotExist(err) {
		t.Errorf("a usage error created the users file: %v", err)
	}
	r := runUser(t, nil, "-h")
	r.want(t, 0, "petrel user add NAME", "-file", "-data")
	runUser(t, nil, "add", "-h").want(t, 0, "Usage:")
}

func TestUserFileFlag(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "etc", "petrel-users")
	runUser(t, pw("password1\n"), "add", "alice", "--data", filepath.Join(tmp, "data"), "--file", file).want(t, 0, "added alice ("+file+")")
	if !verify(t, file, "alice", "password1") {
		t.Error("--file not used")
	}
	if _, err := os.Stat(filepath.Join(tmp, "data")); !os.IsNotExist(err) {
		t.Errorf("--data used despite --file: %v", err)
	}

	// A name that begins with '-' after "--".
	runUser(t, pw("password1\n"), "--file", file, "add", "--", "-dash").want(t, 0, "added -dash")

	// A broken file: the line is named, nothing is changed.
	if err := os.WriteFile(file, []byte("alice:not a hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runUser(t, pw("password1\n"), "add", "bob", "--file", file).want(t, 1, file+": line 1:", "fix the file")
	if b, _ := os.ReadFile(file); string(b) != "alice:not a hash\n" {
		t.Errorf("a broken file was rewritten: %q", b)
	}
}

// TestUserDefaultData: without --data, ./petrel-data as petrel serve; and
// run() dispatches "user".
func TestUserDefaultData(t *testing.T) {
	tmp := t.TempDir()
	t.Chdir(tmp)
	runUser(t, pw("password1\n"), "add", "alice").want(t, 0, "added alice (petrel-data/users)")
	if _, err := os.Stat(filepath.Join(tmp, "petrel-data", "users")); err != nil {
		t.Error(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"user", "list"}, &out, &errb); code != 0 || out.String() != "alice\n" {
		t.Errorf("run user list: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	run(context.Background(), []string{"help"}, &out, &errb)
	if !strings.Contains(out.String(), "petrel user") {
		t.Errorf("the usage does not mention petrel user: %q", out.String())
	}
}
