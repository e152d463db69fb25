package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"

	"github.com/petrel-mta/petrel/internal/users"
)

const userHelp = `Usage:
  petrel user add NAME      add a user
  petrel user passwd NAME   change a user's password
  petrel user del NAME      delete a user
  petrel user list          list the users, one a line

Manages the users who may authenticate (SMTP AUTH): the file DIR/users, one
"name:hash" a line, with Argon2id hashes; bcrypt hashes ($2a$, $2b$, $2y$)
imported from Dovecot or Postfix are accepted too. A name is a local part
(alice) or an address (alice@example.com), stored lowercase.

The password is the first line of standard input when standard input is not
a terminal (echo "$PW" | petrel user add alice), else it is asked twice
without echo. It must be 8 to 1024 bytes.

Exit status: 0 done; 1 failure (nothing changed); 2 bad usage.

Flags:
`

func user(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("petrel user", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	dataDir := fs.String("data", "./petrel-data", "data `dir`ectory, as for petrel serve; the users file is DIR/users")
	file := fs.String("file", "", "the users `file` (overrides --data)")
	usageFail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel user: "+format+"\n", args...)
		return 2
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "petrel user: "+format+"\n", args...)
		return 1
	}

	// Flags may come before or after the command and its operands.
	words, code, ok := parseWords(fs, args, "petrel user", userHelp, stderr)
	if !ok {
		return code
	}
	if len(words) == 0 {
		return usageFail("give a command: add, passwd, del or list; run 'petrel user -h' for help")
	}
	cmd, words := words[0], words[1:]
	switch cmd {
	case "add", "passwd", "del":
		if len(words) != 1 {
			return usageFail("%s takes one NAME (got %d): petrel user %s NAME", cmd, len(words), cmd)
		}
	case "list":
		if len(words) != 0 {
			return usageFail("list takes no argument (got %q)", words[0])
		}
	default:
		return usageFail("unknown command %q: use add, passwd, del or list", cmd)
	}
	path := *file
	if path == "" {
		if *dataDir == "" {
			return usageFail("--data must not be empty (or give the users file with --file)")
		}
		path = users.DefaultPath(*dataDir)
	}
	var name string
	if len(words) == 1 {
		name = strings.ToLower(words[0])
		if err := users.ValidateName(name); err != nil {
			return usageFail("%s", strings.TrimPrefix(err.Error(), "users: "))
		}
	}

	db, err := users.Open(path)
	if err != nil {
		return fail("%s; fix the file, or give another with --file", strings.TrimPrefix(err.Error(), "users: "))
	}
	exists := slices.Contains(db.List(), name)
	switch cmd {
	case "list":
		names := db.List()
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
		if len(names) == 0 {
			fmt.Fprintf(stderr, "petrel user: no users in %s; add one with 'petrel user add NAME'\n", path)
		}
		return 0
	case "add":
		if exists {
			return fail("%s already exists in %s; change the password with 'petrel user passwd %s'", name, path, name)
		}
	case "passwd", "del":
		if !exists {
			return fail("no user %s in %s; see 'petrel user list'", name, path)
		}
	}

	switch cmd {
	case "del":
		err = db.Delete(name)
	default:
		var pw []byte
		pw, err = readNewPassword(ctx, stdin, stderr, name)
		if err != nil {
			return fail("%v; nothing changed", err)
		}
		defer clear(pw)
		if cmd == "add" {
			err = db.Add(name, pw)
		} else {
			err = db.SetPassword(name, pw)
		}
	}
	if err == nil {
		err = db.Save()
	}
	switch {
	case errors.Is(err, users.ErrExists):
		return fail("%s was added to %s meanwhile by someone else; nothing changed", name, path)
	case errors.Is(err, users.ErrNotFound):
		return fail("%s was deleted from %s meanwhile by someone else; nothing changed", name, path)
	case err != nil:
		return fail("%s; nothing changed", strings.TrimPrefix(err.Error(), "users: "))
	}
	done := map[string]string{"add": "added", "passwd": "changed the password of", "del": "deleted"}[cmd]
	fmt.Fprintf(stdout, "%s %s (%s)\n", done, name, path)
	return 0
}

// readNewPassword reads the new password: the first line of stdin (without
// its LF or CRLF) when stdin is not a terminal, else typed twice at the
// terminal without echo, the prompts on stderr.
func readNewPassword(ctx context.Context, stdin io.Reader, stderr io.Writer, name string) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		pw, err := promptPassword(ctx, fd, stderr, "New password for "+name+": ")
		if err != nil {
			return nil, err
		}
		if len(pw) < users.MinPasswordLen {
			return nil, fmt.Errorf("the password is shorter than %d bytes", users.MinPasswordLen)
		}
		again, err := promptPassword(ctx, fd, stderr, "Retype the password: ")
		if err != nil {
			return nil, err
		}
		defer clear(again)
		if !bytes.Equal(pw, again) {
			return nil, errors.New("the two passwords differ")
		}
		return pw, nil
	}
	if stdin == nil {
		return nil, errors.New("no password: give it on standard input, or run from a terminal to be asked")
	}
	// One byte past the longest password and its CRLF is enough to tell.
	line, err := bufio.NewReader(io.LimitReader(stdin, users.MaxPasswordLen+3)).ReadBytes('\n')
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the password from standard input: %v", err)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, errors.New("no password on standard input: give it as the first line, or run from a terminal to be asked")
	}
	return line, nil
}

// promptPassword reads a line at the terminal fd without echo. An
// interrupt (ctx done: main's signal.NotifyContext catches SIGINT) gives
// the terminal its echo back and returns at once.
func promptPassword(ctx context.Context, fd int, stderr io.Writer, prompt string) ([]byte, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return nil, fmt.Errorf("reading the password: %v", err)
	}
	fmt.Fprint(stderr, prompt)
	type result struct {
		pw  []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		pw, err := term.ReadPassword(fd)
		done <- result{pw, err}
	}()
	select {
	case r := <-done:
		fmt.Fprintln(stderr)
		if r.err != nil {
			return nil, fmt.Errorf("reading the password: %v", r.err)
		}
		return r.pw, nil
	case <-ctx.Done():
		term.Restore(fd, state)
		fmt.Fprintln(stderr)
		return nil, errors.New("interrupted")
	}
}
