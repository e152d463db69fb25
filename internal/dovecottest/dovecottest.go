// Package dovecottest starts throw-away Dovecot LMTP servers for tests: a
// real, independent LMTP server (RFC 2033) to test Petrel's LMTP client and
// its local delivery against, in the manner of net/http/httptest.
//
// A server lives in a temporary directory of its own (Server.Dir: its
// dovecot.conf, user table, runtime sockets, state, log and delivered mail),
// listens on a free port of 127.0.0.1 or, with Config.Unix, on a unix socket,
// and is stopped, and its processes killed if need be, when the test ends.
// Several servers can run at once, next to a system Dovecot or none. It
// speaks LMTP only: no IMAP, POP3 or submission, no TLS, nothing else
// listening. It needs root (Dovecot's master runs as root and its processes
// switch users) and the Debian packages dovecot-core and dovecot-lmtpd:
// without either, Start skips the test, or fails it when the environment sets
// PETREL_INTEROP_REQUIRED=1 (test/interop/install-deps.sh installs them).
//
// What the server does with mail:
//
//   - It has one mailbox per Config.Users entry (default alice and bob), the
//     address user@lmtp.test (Domain). The address is case-insensitive, and
//     a "+detail" is dropped (Alice+tag@lmtp.test is alice). RCPT to any
//     other address, of this domain or another, or a bare local part, gets
//     "550 5.1.1 <addr> User doesn't exist: addr".
//   - After DATA it answers once per accepted recipient, in RCPT order
//     (RFC 2033 §4.2), "250 2.0.0 <addr> <session id> Saved", and stores
//     each recipient's copy in that user's Maildir, Dir/mail/<user>/Maildir,
//     where Messages and WaitMessages read it. Dovecot stores the message
//     with LF line ends (not CRLF) and adds, above the client's headers,
//     "Return-Path: <mail-from>" and a Received header "by mx.lmtp.test with
//     LMTP"; only when the transaction has a single recipient does it add
//     "Delivered-To: <rcpt>" too, the address as the client gave it.
//   - With Config.Quotas, Dovecot's quota plugin limits those users: a
//     message that would take a user over Quota.Bytes is refused for that
//     recipient alone after DATA, "552 5.2.2 <addr> Quota exceeded (mailbox
//     for user is full)", while the others get their 250; and a user who
//     already holds Quota.Messages messages is refused at RCPT with the same
//     text. With Config.QuotaTempfail both are temporary: "452 4.2.2 ...".
//
// Its LMTP greeting is "220 mx.lmtp.test Dovecot (<base name of Dir>) ready."
// and it advertises 8BITMIME, CHUNKING, ENHANCEDSTATUSCODES and PIPELINING,
// but not SIZE: "MAIL FROM:<...> SIZE=n" gets "555 5.5.4 Unsupported
// parameters". Its log (Log, WaitLog) has a line per session and one per
// recipient ("saved mail to INBOX", or "save failed to INBOX: <why>").
//
// A test that delivers over LMTP:
//
//	dc := dovecottest.Start(t, dovecottest.Config{})
//	// ... LMTP to dc.Network, dc.Addr: RCPT TO:<alice@lmtp.test> ...
//	msg := dc.WaitMessages(t, "alice", 1, 10*time.Second)[0]
//
// A failed test gets the server's log in its output. Start takes about 0.1 s
// and the stop at cleanup about 1 s.
//
// What running a second Dovecot this way needs, learnt here (Dovecot
// 2.3.19, as root in a container):
//
//   - `dovecot -F -c <conf>` as a child process: -F keeps the master in the
//     foreground, and it keeps its children in its process group (which
//     Start makes a new one), so the group finds them all. A port taken
//     makes it exit at once (status 89, "Address already in use" on its
//     stderr).
//   - A configuration file of its own, which must not include the system's
//     /etc/dovecot/conf.d, with its own base_dir (master.pid, the "already
//     running" check and every internal socket), state_dir (else it writes
//     /var/lib/dovecot/instances), log_path, and a distinct instance_name,
//     which names every process but the master: "dovecot-<name>/lmtp" (the
//     master's command line has the configuration's path).
//   - protocols = lmtp: the lmtp service is the only one listening. ssl = no
//     is not needed to start, but spares a certificate.
//   - A passdb, even for LMTP alone: without one the auth process dies ("No
//     passdbs specified in configuration file. PLAIN mechanism needs one")
//     and every RCPT gets 451 4.3.0. The passwd-file serves as both passdb
//     and userdb.
//   - Mail owned by an existing unprivileged user: the system user "mail"
//     (uid 8) here, which needs first_valid_uid lowered from 500 ("Mail
//     access for users with UID 8 not permitted"), and the temporary
//     directory made 0755 so that it and Dovecot's internal users get in.
//   - Recipients looked up by full address (auth_username_format = %Lu), so
//     that the user table lists user@lmtp.test and other domains are
//     unknown; mail_location then uses %n, the local part.
//   - Quotas: quota_full_tempfail is a global setting, not a plugin one;
//     numbered quota_rule settings must have no gap (quota_rule2 alone is
//     ignored); and lmtp_rcpt_check_quota refuses at RCPT only a user with
//     no room for an empty message, which a byte quota never reaches: hence
//     Quota.Messages for refusals at RCPT.
//   - Logging goes through Dovecot's log process, a moment after the event
//     (hence WaitLog). On SIGTERM the master tells its children to stop,
//     waits for them (up to 5 s for an idle lmtp process that is slow to
//     notice), then closes the log process, which writes what it still has
//     and exits, about a second later. Killing the log process sooner loses
//     lines, even ones sent long before, so Stop never does.
package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// Domain is the mail domain of the server's mailboxes.
	Domain = "lmtp.test"
	// Hostname is the server's host name: its greeting, its LHLO reply and
	// its Received headers.
	Hostname = "mx." + Domain
)

// Bounds. A busy machine starts Dovecot in well under a second; these are
// the limits after which Start gives up.
const (
	readyTimeout  = 30 * time.Second        // from starting the master to the greeting
	stopTimeout   = 10 * time.Second        // from SIGTERM to no process left
	nudgeAfter    = 1500 * time.Millisecond // from SIGTERM to the master to SIGTERM to its lingering children
	startAttempts = 3                       // port taken in the meantime: try again with another
)

// Config says what server to start. The zero Config is an LMTP server on
// 127.0.0.1 with the mailboxes alice@lmtp.test and bob@lmtp.test, without
// quotas.
type Config struct {
	// Users are the local parts of the mailboxes that exist (default
	// {"alice", "bob"}): lower-case letters, digits and "._-", starting
	// with a letter or digit. RCPT to any other user gets 550 5.1.1.
	Users []string
	// Unix makes the server listen on a unix socket, Dir/lmtp (then
	// Server.Network is "unix" and Server.Addr the socket's path), instead
	// of 127.0.0.1:port.
	Unix bool
	// Quotas limits some of Users (keys are local parts); see the package
	// comment for the replies.
	Quotas map[string]Quota
	// QuotaTempfail makes quota refusals temporary (452 4.2.2) instead of
	// permanent (552 5.2.2): Dovecot's quota_full_tempfail.
	QuotaTempfail bool
	// Conf is appended to the generated dovecot.conf; a setting given
	// again there overrides the generated one (for example
	// "lmtp_add_received_header = no\n"). A file it names must be
	// readable by the dovecot user.
	Conf string
}

// Quota is one user's limits in Dovecot's quota plugin (count driver). Zero
// means no limit.
type Quota struct {
	// Bytes is the storage limit, as Dovecot counts a message: its size
	// with CRLF line ends, the headers Dovecot adds included (about 150
	// bytes more than the client sent). A message that would exceed it is
	// refused after DATA.
	Bytes int64
	// Messages is the message count limit. A user who holds that many is
	// refused at RCPT, and a message beyond it after DATA.
	Messages int
}

// Server is a running throw-away Dovecot LMTP server.
type Server struct {
	// Addr is where it listens: 127.0.0.1:port, or the socket's path.
	Addr string
	// Network is "tcp" or "unix" (Config.Unix), for net.Dial.
	Network string
	// Dir is its directory: dovecot.conf, users (the passwd-file), run/
	// (base_dir), state/, dovecot.log, dovecot.out (the master's own
	// output), mail/<user>/Maildir and, with Config.Unix, the socket lmtp.
	Dir string

	name    string // instance_name, in every process title and the greeting
	users   map[string]bool
	dovecot string

	cmd  *exec.Cmd
	done chan struct{} // closed when the master has exited
	once sync.Once
}

// Start starts a server and stops it when the test ends (t.Cleanup),
// logging its log if the test failed. It waits until the server greets;
// a port taken by someone else in the meantime is retried with another. It
// fails t when Dovecot does not come up, and skips t when Dovecot or root is
// missing (see the package comment).
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	dovecot := requirements(t)
	users := cfg.Users
	if len(users) == 0 {
		users = []string{"alice", "bob"}
	}
	s := &Server{users: map[string]bool{}, dovecot: dovecot}
	for _, u := range users {
		if !validUser(u) {
			t.Fatalf("dovecottest: user %q: want lower-case letters, digits and \"._-\"", u)
		}
		s.users[u] = true
	}
	for u := range cfg.Quotas {
		if !s.users[u] {
			t.Fatalf("dovecottest: quota for %q, who is not in Users", u)
		}
	}

	dir, err := os.MkdirTemp("", "petrel-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	s.Dir, s.name = dir, filepath.Base(dir)
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("dovecottest: log of the server at %s:\n%s", s.Addr, s.Log())
		}
		_ = os.RemoveAll(dir)
	})
	if err := s.prepare(cfg, users); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}

	var last error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if last = s.start(cfg); last == nil {
			return s
		}
		t.Logf("dovecottest: start attempt %d: %v", attempt, last)
		s.stop(t)
		if cfg.Unix {
			break // no port to race for: trying again changes nothing
		}
	}
	t.Fatalf("dovecottest: Dovecot did not start: %v", last)
	return nil
}

// requirements returns the path of the dovecot command, or skips (fails
// with PETREL_INTEROP_REQUIRED=1) when Dovecot or root is missing.
func requirements(t testing.TB) string {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		msg := "dovecottest: " + why
		if os.Getenv("PETREL_INTEROP_REQUIRED") == "1" {
			t.Fatal(msg + " (PETREL_INTEROP_REQUIRED=1)")
		}
		t.Skip(msg)
	}
	dovecot, err := exec.LookPath("dovecot")
	if err != nil {
		dovecot = ""
		for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"} {
			p := filepath.Join(d, "dovecot")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				dovecot = p
				break
			}
		}
	}
	if dovecot == "" {
		missing("Dovecot is not installed: run test/interop/install-deps.sh (as root) to install dovecot-core and dovecot-lmtpd")
	}
	// The lmtp binary sits in Dovecot's libexec directory, next to the
	// master's other services; dovecot-lmtpd brings it.
	if _, err := os.Stat("/usr/lib/dovecot/lmtp"); err != nil {
		missing("Dovecot's LMTP server is not installed: run test/interop/install-deps.sh (as root) to install dovecot-lmtpd")
	}
	for _, u := range []string{"dovecot", "dovenull"} {
		if _, err := user.Lookup(u); err != nil {
			missing("there is no " + u + " user: run test/interop/install-deps.sh (as root) to install Dovecot")
		}
	}
	if os.Geteuid() != 0 {
		missing("a throw-away Dovecot needs root (its master runs as root)")
	}
	return dovecot
}

// validUser reports whether u is a local part the server can have: it goes
// into the passwd-file and into a directory name.
func validUser(u string) bool {
	if u == "" || u[0] == '.' || u[0] == '-' || u[0] == '_' {
		return false
	}
	for _, c := range u {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// mailOwner returns the uid and gid mail is stored as: the system user
// "mail", or nobody.
func mailOwner() (uid, gid int, err error) {
	u, err := user.Lookup("mail")
	if err != nil {
		if u, err = user.Lookup("nobody"); err != nil {
			return 0, 0, err
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// prepare makes the directories and writes the user table.
func (s *Server) prepare(cfg Config, users []string) error {
	uid, gid, err := mailOwner()
	if err != nil {
		return err
	}
	// os.MkdirTemp makes 0700; the lmtp process runs as the mail user and
	// the auth process as dovecot, and both must get through.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return err
	}
	mail := filepath.Join(s.Dir, "mail")
	if err := os.Mkdir(mail, 0o755); err != nil {
		return err
	}
	if err := os.Chown(mail, uid, gid); err != nil {
		return err
	}
	// passwd-file: user:password:uid:gid:gecos:home:shell:extra fields.
	// The password is empty: there is no login service to use it.
	var b strings.Builder
	for _, u := range users {
		// Dovecot reads quota_rule, quota_rule2, ... up to the first
		// missing one: number them without gaps.
		var rules, extra []string
		q := cfg.Quotas[u]
		if q.Bytes > 0 {
			rules = append(rules, fmt.Sprintf("*:storage=%dB", q.Bytes))
		}
		if q.Messages > 0 {
			rules = append(rules, fmt.Sprintf("*:messages=%d", q.Messages))
		}
		for i, r := range rules {
			key := "userdb_quota_rule"
			if i > 0 {
				key += strconv.Itoa(i + 1)
			}
			extra = append(extra, key+"="+r)
		}
		fmt.Fprintf(&b, "%s@%s::%d:%d::%s::%s\n", u, Domain, uid, gid, filepath.Join(mail, u), strings.Join(extra, " "))
	}
	return os.WriteFile(filepath.Join(s.Dir, "users"), []byte(b.String()), 0o644)
}

// conf returns dovecot.conf for the server listening at s.Addr.
func (s *Server) conf(cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Throw-away Dovecot LMTP server (internal/dovecottest).
instance_name = %[2]s
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
hostname = %[3]s
login_greeting = Dovecot (%[2]s) ready.
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
first_valid_gid = 1
auth_username_format = %%Lu
mail_location = maildir:%[1]s/mail/%%n/Maildir
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
`, s.Dir, s.name, Hostname)
	if s.Network == "unix" {
		fmt.Fprintf(&b, `service lmtp {
  unix_listener %s {
    mode = 0666
  }
}
`, s.Addr)
	} else {
		host, port, _ := net.SplitHostPort(s.Addr)
		fmt.Fprintf(&b, `service lmtp {
  inet_listener lmtp {
    address = %s
    port = %s
  }
}
`, host, port)
	}
	if len(cfg.Quotas) > 0 {
		tempfail := "no"
		if cfg.QuotaTempfail {
			tempfail = "yes"
		}
		fmt.Fprintf(&b, `mail_plugins = $mail_plugins quota
lmtp_rcpt_check_quota = yes
quota_full_tempfail = %s
plugin {
  quota = count:User quota
  quota_vsizes = yes
}
`, tempfail)
	}
	b.WriteString(cfg.Conf)
	return b.String()
}

// start picks the address, writes the configuration, starts the master and
// waits for this server's greeting.
func (s *Server) start(cfg Config) error {
	if cfg.Unix {
		s.Network, s.Addr = "unix", filepath.Join(s.Dir, "lmtp")
		// sun_path holds 108 bytes with its NUL; a long TMPDIR can exceed it.
		if len(s.Addr) >= 108 {
			return fmt.Errorf("socket path %s too long for a unix socket: set a shorter TMPDIR", s.Addr)
		}
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.Network, s.Addr = "tcp", l.Addr().String()
		l.Close()
	}
	conf := filepath.Join(s.Dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(s.conf(cfg)), 0o644); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(s.Dir, "dovecot.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the master has its own copy
	cmd := exec.Command(s.dovecot, "-F", "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = s.Dir
	// Its own process group, so that Stop finds every process. If the test
	// binary dies (a -timeout panic), the master gets SIGTERM and stops its
	// children. (Linux sends it when the thread that started the master
	// ends, which in Go happens only when a goroutine that locked its
	// thread returns without unlocking it.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.greets()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("the master exited (%v; port %s taken? see the log): %v", cmd.ProcessState, s.Addr, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lmtp on %s not ready after %v: %v", s.Addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// greets connects to the server and reads its greeting, which must carry
// this server's instance name.
func (s *Server) greets() error {
	c, err := net.DialTimeout(s.Network, s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("220 ")) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	if !bytes.Contains(buf[:n], []byte("("+s.name+")")) {
		return fmt.Errorf("another server answers on %s: %q", s.Addr, buf[:n])
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// Log returns the server's log so far, followed by anything the master
// wrote to its output (errors before its log process was up).
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "dovecot.log"))
	if err != nil {
		b = []byte(fmt.Sprintf("(no dovecot.log: %v)\n", err))
	}
	if out, err := os.ReadFile(filepath.Join(s.Dir, "dovecot.out")); err == nil && len(out) > 0 {
		b = append(b, "(dovecot's output:)\n"...)
		b = append(b, out...)
	}
	return string(b)
}

// WaitLog waits up to timeout until the log contains substr and returns
// the log; it fails t if it never does. Dovecot's processes write their
// lines through its log process, a moment after the event.
func (s *Server) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := s.Log()
		if strings.Contains(log, substr) {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecottest: no %q in the log after %v", substr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Maildir returns the directory of user's Maildir (user is a local part of
// Config.Users). Dovecot makes it at the first delivery.
func (s *Server) Maildir(user string) string {
	return filepath.Join(s.Dir, "mail", user, "Maildir")
}

// Messages returns the messages delivered so far to user (a local part of
// Config.Users), as stored: LF line ends, Dovecot's headers on top. They
// are read from the Maildir's new/ and cur/, oldest first (by the time in
// the file name, which Dovecot sets to the delivery's second and
// microsecond). It fails t for a user the server does not have.
func (s *Server) Messages(t testing.TB, user string) [][]byte {
	t.Helper()
	if !s.users[user] {
		t.Fatalf("dovecottest: no user %q (Config.Users)", user)
	}
	type file struct {
		path      string
		sec, usec int64
	}
	var files []file
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(s.Maildir(user), sub)
		ents, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		for _, e := range ents {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			sec, usec := deliveryTime(e.Name())
			files = append(files, file{filepath.Join(dir, e.Name()), sec, usec})
		}
	}
	sort.Slice(files, func(i, j int) bool {
		a, b := files[i], files[j]
		if a.sec != b.sec {
			return a.sec < b.sec
		}
		if a.usec != b.usec {
			return a.usec < b.usec
		}
		return filepath.Base(a.path) < filepath.Base(b.path)
	})
	var msgs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// deliveryTime returns the seconds and microseconds at the start of a
// Maildir file name as Dovecot writes it ("1700000000.M123456P789.host,...",
// the microseconds not zero-padded), or zeros.
func deliveryTime(name string) (sec, usec int64) {
	secs, rest, ok := strings.Cut(name, ".")
	if !ok {
		return 0, 0
	}
	sec, _ = strconv.ParseInt(secs, 10, 64)
	if rest, ok = strings.CutPrefix(rest, "M"); ok {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		usec, _ = strconv.ParseInt(rest[:i], 10, 64)
	}
	return sec, usec
}

// WaitMessages waits up to timeout until at least n messages were delivered
// to user and returns them (as Messages); it fails t when they do not
// arrive. An LMTP server stores the message before it replies to DATA, so
// this matters only when the delivery is someone else's, e.g. the daemon's.
func (s *Server) WaitMessages(t testing.TB, user string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.Messages(t, user)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecottest: %d of %d messages for %s@%s after %v", len(msgs), n, user, Domain, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server: SIGTERM to the master, which tells its children
// to stop, waits for them, then closes its log process and exits when that
// has written every line (about a second in all); after 1.5 s, SIGTERM to
// any child but the log process that is still there (an idle lmtp process
// can keep the master waiting 5 s); after 10 s, SIGKILL to every process
// left. The log process is never hurried: killing it loses lines it has not
// written yet. Start registers Stop with t.Cleanup; calling it again does
// nothing.
func (s *Server) Stop(t testing.TB) {
	s.once.Do(func() { s.stop(t) })
}

func (s *Server) stop(t testing.TB) {
	if s.cmd == nil {
		return
	}
	master := s.cmd.Process.Pid // also the group's id
	defer func() { s.cmd = nil }()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	start := time.Now()
	nudged := false
	for time.Since(start) < stopTimeout {
		pids := processes(master)
		select {
		case <-s.done:
			if len(pids) == 0 {
				return
			}
		default:
		}
		if !nudged && time.Since(start) > nudgeAfter {
			nudged = true
			for _, pid := range pids {
				if pid != master && !s.isLog(pid) {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range processes(master) {
		t.Logf("dovecottest: killing leftover Dovecot process %d", pid)
	}
	_ = syscall.Kill(-master, syscall.SIGKILL)
	<-s.done
}

// isLog reports whether pid is the log process, whose title is
// "dovecot-<instance_name>/log".
func (s *Server) isLog(pid int) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err == nil && bytes.Contains(cmdline, []byte(s.name+"/log"))
}

// processes lists the live (not zombie) processes of process group pgid.
func processes(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[2] != strconv.Itoa(pgid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
