package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// postfixDeliveryTimeout bounds the wait for Postfix to relay the message.
const postfixDeliveryTimeout = 60 * time.Second

// TestPostfixSTARTTLS uses Postfix as the sending MTA: a throw-away Postfix
// instance on loopback relays everything to Petrel's MX port with
// smtp_tls_security_level = encrypt, so it must use STARTTLS (RFC 3207) or
// defer the message. The message is injected into Postfix's own smtpd in
// plaintext with net/smtp, and must arrive in Petrel's Maildir over TLS:
// Petrel's Received field, then Postfix's, then the message byte for byte
// (Postfix is told not to rewrite or add headers for this client).
func TestPostfixSTARTTLS(t *testing.T) {
	t.Parallel()
	postfix := requireTool(t, "postfix")
	if os.Geteuid() != 0 {
		t.Skip("a throw-away Postfix instance needs root")
	}
	d := startDaemon(t)
	pf := startPostfix(t, postfix, d)

	msg := testMessage(t, "u6@localhost")
	if err := inject(pf.smtpd, "a@example.org", "u6@localhost", msg); err != nil {
		t.Fatalf("injecting into Postfix at %s: %v", pf.smtpd, err)
	}

	// Postfix's queue manager sends at once; a flush after a while covers a
	// deferred first attempt (short backoff times are configured).
	dir := d.Mailbox("u6")
	deadline := time.Now().Add(postfixDeliveryTimeout)
	nextFlush := time.Now().Add(5 * time.Second)
	for len(listFiles(dir)) == 0 && time.Now().Before(deadline) {
		if time.Now().After(nextFlush) {
			pf.run(t, "flush")
			nextFlush = time.Now().Add(5 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := d.waitMessage(t, "u6", time.Second)

	// Petrel's Received field first, then Postfix's, then the message.
	field, rest, ok := splitHeaderField(got)
	if !ok {
		t.Fatalf("delivered file has no complete first header field:\n%s", quoteHead(got))
	}
	pfField, body, ok := splitHeaderField(rest)
	if !ok || !bytes.HasPrefix(pfField, []byte("Received: from ")) || !bytes.Contains(pfField, []byte("(Postfix)")) {
		t.Fatalf("want Postfix's Received field after Petrel's, got:\n%s", quoteHead(rest))
	}
	recv := checkDelivered(t, append(append([]byte{}, field...), body...), msg)
	t.Logf("Petrel's Received field:\n%sPostfix's:\n%s", recv, pfField)

	log := pf.maillog()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "TLS connection established") || strings.Contains(l, "status=") {
			t.Logf("Postfix: %s", l)
		}
	}
	if !strings.Contains(log, "TLS connection established to 127.0.0.1[127.0.0.1]:"+Port(t, d.MX)) {
		t.Errorf("Postfix's log does not show a TLS connection to Petrel")
	}
	if !strings.Contains(log, "status=sent") {
		t.Errorf("Postfix's log does not show status=sent")
	}
}

// postfixInstance is a throw-away Postfix instance.
type postfixInstance struct {
	base, conf string
	smtpd      string // its smtpd's address, 127.0.0.1:port
	postfix    string // path of the postfix command
}

// startPostfix makes a Postfix instance in a temporary directory that
// listens on a free loopback port and relays all mail to d's MX listener
// over mandatory TLS, starts it, waits for its smtpd, and stops it (and
// kills leftover processes) when the test ends, logging its maillog if the
// test failed.
//
// What a second instance needs: its own config_directory (main.cf and
// master.cf, given with postfix -c), queue_directory and data_directory,
// which `postfix start` (its check-fatal step) fills in with the right
// owners; every directory
// above them traversable by the postfix user; meta_directory left at
// /etc/postfix (postfix-files, dynamicmaps.cf); a master.cf of its own with
// no chroot (a chroot would need copies of /etc files in the queue
// directory) and a postlogd service, so that maillog_file works; and
// maillog_file_prefixes allowing the temporary directory.
func startPostfix(t *testing.T, postfix string, d *daemon) *postfixInstance {
	t.Helper()
	if _, err := user.Lookup("postfix"); err != nil {
		t.Fatalf("no postfix user (is the postfix package installed?): %v", err)
	}
	base, err := os.MkdirTemp("", "petrel-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	pf := &postfixInstance{
		base:    base,
		conf:    filepath.Join(base, "conf"),
		smtpd:   freePort(t),
		postfix: postfix,
	}
	t.Cleanup(func() {
		pf.stop(t)
		if t.Failed() {
			t.Logf("Postfix maillog (%s):\n%s", filepath.Join(base, "maillog"), pf.maillog())
		}
		os.RemoveAll(base)
	})
	// os.MkdirTemp makes the directory 0700: Postfix's daemons run as the
	// postfix user and must reach the queue directory inside it.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"conf", "queue", "data"} {
		if err := os.Mkdir(filepath.Join(base, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pfUser, _ := user.Lookup("postfix")
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	if err := os.Chown(filepath.Join(base, "data"), uid, gid); err != nil {
		t.Fatal(err)
	}
	// A copy of Petrel's certificate that the postfix user can read, as the
	// CA file: Postfix then logs "Trusted TLS connection" (encrypt does not
	// require it).
	ca, err := os.ReadFile(d.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(base, "petrel-ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}

	mainCF := fmt.Sprintf(`# Throw-away Postfix instance for Petrel's interop tests.
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
meta_directory = /etc/postfix
myhostname = postfix-sender.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
# Leave the client's headers alone: no address rewriting and no added
# Date/Message-ID/From headers for mail from this client.
local_header_rewrite_clients =
always_add_missing_headers = no
relayhost = [127.0.0.1]:%[2]s
smtp_address_preference = ipv4
smtp_tls_security_level = encrypt
smtp_tls_CAfile = %[3]s
smtp_tls_loglevel = 1
smtp_connect_timeout = 10s
smtp_helo_timeout = 30s
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
biff = no
`, base, Port(t, d.MX), caFile)
	// Only the services this instance uses, none chrooted.
	masterCF := fmt.Sprintf(`# service type  private unpriv  chroot  wakeup  maxproc command + args
%s inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, pf.smtpd)
	if err := os.WriteFile(filepath.Join(pf.conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pf.conf, "master.cf"), []byte(masterCF), 0o644); err != nil {
		t.Fatal(err)
	}

	// start first runs the integrity check (postfix-script check-fatal),
	// which creates the queue directories with their owners and modes.
	if out, err := pf.command("start"); err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s", pf.conf, err, out)
	}

	// Wait for its smtpd to greet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := greets(pf.smtpd)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix smtpd on %s not ready after 30s: %v", pf.smtpd, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return pf
}

// command runs `postfix -c conf args...`, bounded in time (start runs an
// integrity check, which takes seconds on a loaded machine).
func (pf *postfixInstance) command(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pf.postfix, append([]string{"-c", pf.conf}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run runs a postfix command and logs a failure without failing the test.
func (pf *postfixInstance) run(t *testing.T, args ...string) {
	if out, err := pf.command(args...); err != nil {
		t.Logf("postfix -c %s %s: %v\n%s", pf.conf, strings.Join(args, " "), err, out)
	}
}

func (pf *postfixInstance) maillog() string {
	b, err := os.ReadFile(filepath.Join(pf.base, "maillog"))
	if err != nil {
		return fmt.Sprintf("(no maillog: %v)", err)
	}
	return string(b)
}

// stop stops the instance with `postfix stop`, waits up to 10s for its
// processes to go, then kills what is left. The instance's processes are
// found by their MAIL_CONFIG environment variable, which the postfix
// command sets to this instance's configuration directory for the master
// and which the master passes on to every daemon.
func (pf *postfixInstance) stop(t *testing.T) {
	if len(pf.processes()) == 0 {
		return
	}
	pf.run(t, "stop")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(pf.processes()) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	pf.run(t, "abort")
	time.Sleep(500 * time.Millisecond)
	for _, pid := range pf.processes() {
		t.Logf("killing leftover Postfix process %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processes lists the live (not zombie) processes of this instance.
func (pf *postfixInstance) processes() []int {
	want := []byte("MAIL_CONFIG=" + pf.conf + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// greets connects to addr and reads a 220 greeting.
func greets(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
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
	if !bytes.HasPrefix(buf[:n], []byte("220")) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// inject sends msg to the SMTP server at addr in plaintext with net/smtp,
// which dot-stuffs it.
func inject(addr, from, to string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.localhost"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}
