// Package postfixtest starts throw-away Postfix instances for tests: a real,
// independent SMTP server (and, optionally, relay) to test Petrel's SMTP
// client and commands against, in the manner of net/http/httptest.
//
// An instance lives in a temporary directory of its own (configuration,
// queue, data, maillog and delivered mail), listens on a free port of
// 127.0.0.1, and is stopped, and its processes killed if need be, when the
// test ends. Several instances can run at once, next to a system Postfix or
// none. It needs root (Postfix's master runs as root and its daemons switch
// to the postfix user) and the Debian postfix package: without either, Start
// skips the test, or fails it when the environment sets
// PETREL_INTEROP_REQUIRED=1 (test/interop/install-deps.sh installs Postfix).
//
// What the instance does with mail:
//
//   - It accepts mail for the domain "postfix.test" (Domain, or
//     Config.Domain) and delivers
//     each recipient's copy, as a file of its own that starts with
//     "Delivered-To: <recipient>", to one Maildir, Dir/mail/inbox/, where
//     Messages and WaitMessages read it. A local part must start with a
//     letter or digit and hold only letters, digits and "-_.+"; local parts
//     that start with "unknown" are refused at RCPT with 550 5.1.1, so that
//     per-recipient failures can be tested. (Postfix's virtual delivery
//     agent allows no regexp substitution, hence one Maildir for all.)
//   - With Config.RelayHost set, it relays mail for every other domain from
//     127.0.0.0/8 to that host (Postfix's smtp client; set smtp_tls_* in
//     Config.MainCF, and Config.RelayCAFile to trust the relay host's
//     certificate), bounces included. Without it, mail for other domains
//     is refused with 554 5.7.1 (relay access denied), and the bounces it
//     would send are discarded: an instance never looks up DNS or connects
//     anywhere but to its relay host.
//   - With Config.CertFile and Config.KeyFile, its smtpd offers STARTTLS
//     (RFC 3207) at Config.TLSLevel: "may" (offered, the default) or
//     "encrypt" (required: 530 5.7.0 before STARTTLS).
//
// Its host name is "mx.postfix.test" (Hostname; "mx." + Config.Domain): the
// name to put in the server certificate and to verify. Its maillog (Log, WaitLog) records
// every session with smtpd_tls_loglevel = 1, and every delivery with
// status=sent.
//
// A test that sends to Postfix over STARTTLS:
//
//	cert, _ := smtptest.Certificate([]string{postfixtest.Hostname, "127.0.0.1"}, notBefore, notAfter)
//	certFile, keyFile := postfixtest.WriteCertificate(t, cert)
//	pf := postfixtest.Start(t, postfixtest.Config{CertFile: certFile, KeyFile: keyFile})
//	// ... send to pf.Addr, RCPT TO:<alice@postfix.test> ...
//	msg := pf.WaitMessages(t, "alice", 1, time.Minute)[0]
//	log := pf.WaitLog(t, "status=sent", 10*time.Second)
//
// A failed test gets the instance's maillog in its output.
//
// Outside tests (the benchmark in bench/compare), Launch starts an instance
// and returns an error instead of failing a test, and Close stops it and
// removes its directory; Config.Domain, Config.Dir and
// Config.SMTPDProcessLimit adapt it, and MasterPID, Processes and Queued
// let a caller measure it.
//
// What running a second Postfix instance needs, learnt in test/interop: its
// own config_directory (main.cf and master.cf, given with postfix -c),
// queue_directory and data_directory, which `postfix start` fills in with the
// right owners; every directory above them traversable by the postfix user;
// meta_directory left at /etc/postfix (postfix-files, dynamicmaps.cf); a
// master.cf of its own with no chroot and a postlogd service, so that
// maillog_file works; and maillog_file_prefixes allowing the directory.
// Learnt here: master.cf also needs the pickup service, or `postfix flush`
// fails ("Cannot flush mail queue - mail system is down"), and the virtual
// delivery agent takes no regexp substitution in virtual_mailbox_maps.
package postfixtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
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
	// Domain is the mail domain an instance accepts mail for, unless
	// Config.Domain says otherwise.
	Domain = "postfix.test"
	// Hostname is the instance's myhostname: its greeting, its Received
	// headers, and the name its certificate should carry ("mx." +
	// Config.Domain when that is set).
	Hostname = "mx." + Domain
)

// Bounds. A busy machine starts Postfix in a few seconds; these are the
// limits after which Start gives up.
const (
	commandTimeout = 60 * time.Second // one `postfix` command (start runs its integrity check)
	readyTimeout   = 30 * time.Second // from `postfix start` to the greeting
	stopTimeout    = 10 * time.Second // from `postfix stop` to no process left
	startAttempts  = 3                // ports taken in the meantime: try again with another
)

// ErrUnavailable is wrapped by Launch's error when Postfix cannot be run
// here at all: it is not installed, there is no postfix user, or the
// process is not root.
var ErrUnavailable = errors.New("postfixtest: Postfix unavailable")

// Config says what instance to start. The zero Config is a plaintext-only
// server for Domain.
type Config struct {
	// CertFile and KeyFile are the PEM certificate (chain, leaf first) and
	// private key of its smtpd. Both empty: no STARTTLS offered. They are
	// copied into the instance's directory, so any readable files do.
	CertFile, KeyFile string
	// TLSLevel is smtpd_tls_security_level: "may" (STARTTLS offered; the
	// default with a certificate) or "encrypt" (STARTTLS required; RFC
	// 3207 §4's 530 before it). Ignored without a certificate.
	TLSLevel string
	// MainCF holds extra main.cf settings; they override the instance's own
	// (for example "smtpd_forbid_bare_newline": "reject", or
	// "smtp_tls_security_level": "encrypt" for relaying). A file a setting
	// names must be readable by the postfix user.
	MainCF map[string]string
	// RelayHost is Postfix's relayhost, e.g. "[127.0.0.1]:2525": mail for
	// domains other than the instance's from 127.0.0.0/8 is relayed
	// there. Empty: no relaying.
	RelayHost string
	// RelayCAFile is a PEM file of certificates the smtp client trusts
	// (smtp_tls_CAfile), e.g. the relay host's self-signed certificate:
	// its TLS sessions to the relay host are then logged as "Trusted TLS
	// connection established". Whether TLS is used and verified is up to
	// smtp_tls_security_level in MainCF. It is copied into the instance's
	// directory, so any readable file does. Needs RelayHost; empty: the
	// default (no CA file).
	RelayCAFile string
	// Domain is the mail domain the instance accepts mail for; empty:
	// Domain ("postfix.test"). Its host name is "mx." + Domain.
	Domain string
	// Dir is the directory the instance's own directory is made in; it
	// must be traversable by the postfix user (mode 0755 or so). Empty:
	// the system's temporary directory.
	Dir string
	// SMTPDProcessLimit is the smtpd service's process limit in
	// master.cf, that is, how many SMTP sessions are served at once (one
	// smtpd process each); 0 leaves Postfix's default_process_limit, 100.
	SMTPDProcessLimit int
}

// Instance is a running throw-away Postfix.
type Instance struct {
	// Addr is its smtpd's address, 127.0.0.1:port.
	Addr string
	// Dir is its directory: conf/ (main.cf, master.cf), queue/, data/,
	// mail/inbox/ (the Maildir) and maillog.
	Dir string
	// Domain is the mail domain it accepts mail for, and Hostname its
	// myhostname.
	Domain, Hostname string

	conf    string
	postfix string
	banner  string // a token in its greeting: proves the port is ours
	once    sync.Once
	stopErr error
}

// Message is one delivered message.
type Message struct {
	Local string // the recipient's local part, from Delivered-To
	Path  string // the file
	Data  []byte // as delivered, with Postfix's Return-Path, Delivered-To and Received headers
}

// Start starts an instance and stops it when the test ends (t.Cleanup),
// logging its maillog if the test failed. It waits until its smtpd greets;
// a port taken by someone else in the meantime is retried with another.
// It fails t when Postfix does not come up, and skips t when Postfix or root
// is missing (see the package comment).
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()
	in, err := launch(t.Context(), cfg, func(format string, args ...any) { t.Logf(format, args...) })
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv("PETREL_INTEROP_REQUIRED") == "1" {
			t.Fatalf("%v (PETREL_INTEROP_REQUIRED=1)", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("postfixtest: maillog of the instance at %s:\n%s", in.Addr, in.Log())
		}
		_ = os.RemoveAll(in.Dir)
	})
	return in
}

// Launch starts an instance, as Start does, for a caller that is not a
// test: it waits until the instance's smtpd greets (a port taken by someone
// else in the meantime is retried with another) and returns it; the caller
// must Close it. The error wraps ErrUnavailable when Postfix or root is
// missing; otherwise it says, on one line, why Postfix did not start. On
// error nothing is left running and the directory is removed.
func Launch(ctx context.Context, cfg Config) (*Instance, error) {
	return launch(ctx, cfg, func(string, ...any) {})
}

func launch(ctx context.Context, cfg Config, logf func(format string, args ...any)) (*Instance, error) {
	postfix, err := requirements()
	if err != nil {
		return nil, err
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("postfixtest: CertFile and KeyFile go together")
	}
	switch cfg.TLSLevel {
	case "", "may", "encrypt":
	default:
		return nil, fmt.Errorf("postfixtest: TLSLevel %q: want \"may\" or \"encrypt\"", cfg.TLSLevel)
	}
	if cfg.RelayCAFile != "" && cfg.RelayHost == "" {
		return nil, errors.New("postfixtest: RelayCAFile needs RelayHost")
	}
	if cfg.SMTPDProcessLimit < 0 {
		return nil, errors.New("postfixtest: SMTPDProcessLimit must not be negative")
	}
	domain := strings.ToLower(cfg.Domain)
	if domain == "" {
		domain = Domain
	}

	dir, err := os.MkdirTemp(cfg.Dir, "petrel-postfix-")
	if err != nil {
		return nil, fmt.Errorf("postfixtest: %w", err)
	}
	if err := traversable(filepath.Dir(dir)); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	in := &Instance{Dir: dir, Domain: domain, Hostname: "mx." + domain, conf: filepath.Join(dir, "conf"), postfix: postfix}
	fail := func(err error) (*Instance, error) {
		_ = in.Stop()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := in.prepare(cfg); err != nil {
		return fail(fmt.Errorf("postfixtest: %w", err))
	}
	var last error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if last = in.start(ctx, cfg); last == nil {
			return in, nil
		}
		if ctx.Err() != nil {
			break
		}
		logf("postfixtest: start attempt %d: %v", attempt, last)
		if err := in.stop(); err != nil {
			logf("%v", err)
		}
	}
	if why := lastProblem(in.Log()); why != "" {
		last = fmt.Errorf("%v; the maillog's last complaint: %s", last, why)
	}
	return fail(fmt.Errorf("postfixtest: Postfix did not start: %v", last))
}

// lastProblem returns the last "fatal:", "panic:" or "error:" line of a
// maillog, or "".
func lastProblem(maillog string) string {
	lines := strings.Split(maillog, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		for _, k := range []string{"fatal: ", "panic: ", "error: "} {
			if _, after, ok := strings.Cut(lines[i], k); ok {
				return k + strings.TrimSpace(after)
			}
		}
	}
	return ""
}

// traversable checks that the postfix user can reach inside dir: that it
// and every directory above it let others search them.
func traversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("postfixtest: the postfix user cannot reach %s: %s has mode %v (chmod o+x it, or choose another Config.Dir)", abs, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// requirements returns the path of the postfix command, or an error
// wrapping ErrUnavailable when Postfix or root is missing.
func requirements() (string, error) {
	postfix, err := exec.LookPath("postfix")
	if err != nil {
		postfix = ""
		for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"} {
			p := filepath.Join(d, "postfix")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				postfix = p
				break
			}
		}
	}
	if postfix == "" {
		return "", fmt.Errorf("%w: Postfix is not installed: run test/interop/install-deps.sh (as root) to install it", ErrUnavailable)
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return "", fmt.Errorf("%w: there is no postfix user: run test/interop/install-deps.sh (as root) to install Postfix", ErrUnavailable)
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: a throw-away Postfix instance needs root (its master runs as root)", ErrUnavailable)
	}
	return postfix, nil
}

// prepare makes the directories, copies the key, the certificate and the
// relay CA file, and writes the recipient table.
func (in *Instance) prepare(cfg Config) error {
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	// os.MkdirTemp makes 0700; Postfix's daemons run as the postfix user
	// and must reach the queue and data directories inside it.
	if err := os.Chmod(in.Dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"conf", "queue", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(in.Dir, d), 0o755); err != nil {
			return err
		}
	}
	// data_directory belongs to postfix; the Maildirs to the uid the
	// virtual delivery agent writes them as.
	for _, d := range []string{"data", "mail"} {
		if err := os.Chown(filepath.Join(in.Dir, d), uid, gid); err != nil {
			return err
		}
	}
	if cfg.CertFile != "" {
		// smtpd reads them as root before it drops privileges.
		for src, dst := range map[string]string{cfg.KeyFile: "key.pem", cfg.CertFile: "cert.pem"} {
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(in.conf, dst), b, 0o600); err != nil {
				return err
			}
		}
	}
	if cfg.RelayCAFile != "" {
		// The smtp client may read it after dropping privileges.
		b, err := os.ReadFile(cfg.RelayCAFile)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(in.conf, "relay-ca.pem"), b, 0o644); err != nil {
			return err
		}
	}
	// Recipients smtpd accepts: unknown* is refused (no match: "User
	// unknown in virtual mailbox table"), any other safe local part is
	// accepted. The virtual agent delivers with its own static map
	// (master.cf).
	vmailbox := fmt.Sprintf(`# recipients smtpd accepts; the result is not used
if !/^unknown/
/^[a-z0-9][-a-z0-9_.+]*@%s$/	inbox/
endif
`, strings.ReplaceAll(in.Domain, ".", `\.`))
	return os.WriteFile(filepath.Join(in.conf, "vmailbox"), []byte(vmailbox), 0o644)
}

// mainCF returns main.cf for the instance.
func (in *Instance) mainCF(cfg Config, uid, gid string) string {
	set := map[string]string{
		"compatibility_level":   "3.6",
		"queue_directory":       in.Dir + "/queue",
		"data_directory":        in.Dir + "/data",
		"meta_directory":        "/etc/postfix",
		"myhostname":            in.Hostname,
		"mydomain":              in.Domain,
		"myorigin":              "$myhostname",
		"mydestination":         "",
		"local_recipient_maps":  "",
		"alias_maps":            "",
		"alias_database":        "",
		"inet_interfaces":       "127.0.0.1",
		"inet_protocols":        "ipv4",
		"smtpd_banner":          "$myhostname ESMTP " + in.banner,
		"smtpd_peername_lookup": "no",
		"biff":                  "no",
		"maillog_file":          in.Dir + "/maillog",
		"maillog_file_prefixes": in.Dir,
		// Mail for the domain: one Maildir for every local part.
		"virtual_mailbox_domains": in.Domain,
		"virtual_mailbox_base":    in.Dir + "/mail",
		"virtual_mailbox_maps":    "regexp:" + in.conf + "/vmailbox",
		"virtual_uid_maps":        "static:" + uid,
		"virtual_gid_maps":        "static:" + gid,
		"virtual_minimum_uid":     "1",
		// Leave the client's headers alone.
		"local_header_rewrite_clients": "",
		"always_add_missing_headers":   "no",
		// Retry fast; the tests wait seconds, not minutes.
		"queue_run_delay":      "5s",
		"minimal_backoff_time": "5s",
		"maximal_backoff_time": "10s",
		"smtp_connect_timeout": "10s",
		"smtp_helo_timeout":    "30s",
	}
	if cfg.RelayHost != "" {
		set["relayhost"] = cfg.RelayHost
		set["mynetworks"] = "127.0.0.0/8"
		set["smtpd_relay_restrictions"] = "permit_mynetworks, reject_unauth_destination"
		set["smtp_address_preference"] = "ipv4"
		set["smtp_tls_loglevel"] = "1"
		if cfg.RelayCAFile != "" {
			set["smtp_tls_CAfile"] = in.conf + "/relay-ca.pem"
		}
	} else {
		set["mynetworks"] = ""
		set["smtpd_relay_restrictions"] = "reject_unauth_destination"
		// Bounces to senders elsewhere: dropped, no DNS, no connection.
		set["default_transport"] = "discard:no relay host"
	}
	if cfg.CertFile != "" {
		level := cfg.TLSLevel
		if level == "" {
			level = "may"
		}
		set["smtpd_tls_chain_files"] = in.conf + "/key.pem, " + in.conf + "/cert.pem"
		set["smtpd_tls_security_level"] = level
		set["smtpd_tls_loglevel"] = "1"
		set["smtpd_tls_received_header"] = "yes"
	}
	for k, v := range cfg.MainCF {
		set[k] = v
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Throw-away Postfix instance (internal/postfixtest).\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, set[k])
	}
	return b.String()
}

// masterCF lists only the services an instance uses, none chrooted; the
// smtpd line's address and process limit are filled in.
const masterCF = `# service type  private unpriv  chroot  wakeup  maxproc command + args
%s inet n - n - %s smtpd
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
virtual   unix  -       n       n       -       -       virtual
  -o virtual_mailbox_maps=static:inbox/
pickup    unix  n       -       n       60      1       pickup
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// start writes the configuration for a fresh free port, runs `postfix
// start`, and waits for this instance's greeting on the port.
func (in *Instance) start(ctx context.Context, cfg Config) error {
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	in.Addr = l.Addr().String()
	l.Close()
	tok := make([]byte, 6)
	_, _ = rand.Read(tok)
	in.banner = "postfixtest-" + hex.EncodeToString(tok)

	if err := os.WriteFile(filepath.Join(in.conf, "main.cf"), []byte(in.mainCF(cfg, pfUser.Uid, pfUser.Gid)), 0o644); err != nil {
		return err
	}
	maxproc := "-"
	if cfg.SMTPDProcessLimit > 0 {
		maxproc = strconv.Itoa(cfg.SMTPDProcessLimit)
	}
	if err := os.WriteFile(filepath.Join(in.conf, "master.cf"), []byte(fmt.Sprintf(masterCF, in.Addr, maxproc)), 0o644); err != nil {
		return err
	}
	// start first runs the integrity check (postfix-script check-fatal),
	// which makes the queue directories with their owners and modes.
	if out, err := in.command(ctx, "start"); err != nil {
		return fmt.Errorf("postfix -c %s start: %v: %s", in.conf, err, oneLine(out))
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		err := in.greets()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("smtpd on %s not ready after %v: %v", in.Addr, readyTimeout, err)
		}
		if len(in.Processes()) == 0 {
			return fmt.Errorf("the master process exited (port %s taken?): %v", in.Addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// oneLine joins the non-empty lines of a command's output with "; ".
func oneLine(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "no output"
	}
	return strings.Join(lines, "; ")
}

// greets connects to the instance and reads its greeting, which must carry
// this instance's token.
func (in *Instance) greets() error {
	c, err := net.DialTimeout("tcp", in.Addr, time.Second)
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
	if !bytes.Contains(buf[:n], []byte(in.banner)) {
		return fmt.Errorf("another server answers on %s: %q", in.Addr, buf[:n])
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// Command runs `postfix -c <conf> args...` for the instance ("flush",
// "reload", ...), bounded in time, and returns its combined output.
func (in *Instance) Command(args ...string) (string, error) {
	return in.command(context.Background(), args...)
}

func (in *Instance) command(ctx context.Context, args ...string) (string, error) {
	return in.Run(ctx, in.postfix, args...)
}

// Run runs one of Postfix's commands for the instance, such as postsuper
// or postqueue (a bare name is looked up next to the postfix command),
// with "-c <conf>" before args, bounded in time, and returns its combined
// output.
func (in *Instance) Run(ctx context.Context, name string, args ...string) (string, error) {
	if !strings.ContainsRune(name, '/') {
		name = filepath.Join(filepath.Dir(in.postfix), name)
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append([]string{"-c", in.conf}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Log returns the instance's maillog so far. Postfix writes it through its
// postlogd service, a moment after the event: use WaitLog to wait for a
// line.
func (in *Instance) Log() string {
	b, err := os.ReadFile(filepath.Join(in.Dir, "maillog"))
	if err != nil {
		return fmt.Sprintf("(no maillog: %v)", err)
	}
	return string(b)
}

// WaitLog waits up to timeout until the maillog contains substr and
// returns the maillog; it fails t if it never does.
func (in *Instance) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	return in.WaitLogCount(t, substr, 1, timeout)
}

// WaitLogCount waits up to timeout until the maillog contains substr at
// least n times and returns the maillog; it fails t if it never does.
func (in *Instance) WaitLogCount(t testing.TB, substr string, n int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := in.Log()
		if strings.Count(log, substr) >= n {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfixtest: %d of %d %q in the maillog after %v", strings.Count(log, substr), n, substr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Maildir returns the directory of the Maildir all mail is delivered to.
func (in *Instance) Maildir() string {
	return filepath.Join(in.Dir, "mail", "inbox")
}

// Messages returns the messages delivered so far to local@<domain>,
// or, with local empty, to anyone, oldest first (by file name, which
// starts with the delivery time).
func (in *Instance) Messages(local string) []Message {
	dir := filepath.Join(in.Maildir(), "new")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var msgs []Message
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		to := deliveredTo(b)
		l, _, _ := strings.Cut(to, "@")
		if local != "" && !strings.EqualFold(to, local+"@"+in.Domain) {
			continue
		}
		msgs = append(msgs, Message{Local: l, Path: p, Data: b})
	}
	return msgs
}

// deliveredTo returns the address in the first Delivered-To header.
func deliveredTo(msg []byte) string {
	for _, line := range strings.SplitN(string(msg), "\n", 20) {
		if v, ok := strings.CutPrefix(line, "Delivered-To: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// WaitMessages waits up to timeout until at least n messages were delivered
// to local (empty: to anyone), flushing the queue every few seconds, and returns them; it fails
// t when they do not arrive.
func (in *Instance) WaitMessages(t testing.TB, local string, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	nextFlush := time.Now().Add(5 * time.Second)
	for {
		msgs := in.Messages(local)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfixtest: %d of %d messages for %s@%s after %v", len(msgs), n, local, in.Domain, timeout)
		}
		if time.Now().After(nextFlush) {
			_, _ = in.Command("flush")
			nextFlush = time.Now().Add(5 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Queued returns the number of messages in the instance's queue (the
// incoming, active, deferred, hold and maildrop queues): zero once every
// message has been delivered or bounced. It reads the queue directories,
// so it costs Postfix no work.
func (in *Instance) Queued() (int, error) {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		err := filepath.WalkDir(filepath.Join(in.Dir, "queue", q), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.Type().IsRegular() {
				n++
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("postfixtest: counting the queue: %w", err)
		}
	}
	return n, nil
}

// MasterPID returns the process ID of the instance's master, from its
// pid file.
func (in *Instance) MasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(in.Dir, "queue", "pid", "master.pid"))
	if err != nil {
		return 0, fmt.Errorf("postfixtest: the master's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postfixtest: the master's pid file holds %q", bytes.TrimSpace(b))
	}
	return pid, nil
}

// Stop stops the instance: `postfix stop`, a wait of up to 10 s for its
// processes to exit, then `postfix abort` and SIGKILL for what is left. Its
// processes are found by their MAIL_CONFIG environment variable, which the
// postfix command sets to the instance's configuration directory for the
// master and which the master passes on to every daemon. Its directory is
// kept (Log and Messages still work). Start calls it when the test ends;
// calling it again does nothing and returns the first call's error, which
// says what went wrong or what had to be killed.
func (in *Instance) Stop() error {
	in.once.Do(func() { in.stopErr = in.stop() })
	return in.stopErr
}

// Close stops the instance (Stop) and removes its directory.
func (in *Instance) Close() error {
	err := in.Stop()
	if rerr := os.RemoveAll(in.Dir); rerr != nil && err == nil {
		err = fmt.Errorf("postfixtest: %w", rerr)
	}
	return err
}

func (in *Instance) stop() error {
	if len(in.Processes()) == 0 {
		return nil
	}
	var problems []string
	if out, err := in.Command("stop"); err != nil {
		problems = append(problems, fmt.Sprintf("postfix -c %s stop: %v: %s", in.conf, err, oneLine(out)))
	}
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		if len(in.Processes()) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if left := in.Processes(); len(left) > 0 {
		_, _ = in.Command("abort")
		time.Sleep(500 * time.Millisecond)
		left = in.Processes()
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(left) > 0 {
			problems = append(problems, fmt.Sprintf("killed %d leftover Postfix processes %v", len(left), left))
		}
	}
	if len(problems) > 0 {
		return errors.New("postfixtest: " + strings.Join(problems, "; "))
	}
	return nil
}

// Processes lists the live (not zombie) processes of this instance: its
// master and every daemon the master started.
func (in *Instance) Processes() []int {
	want := []byte("\x00MAIL_CONFIG=" + in.conf + "\x00")
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
		if err != nil || !bytes.Contains(append([]byte{0}, env...), want) {
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

// WriteCertificate writes cert's chain and private key as PEM files in a
// new temporary directory of t and returns their names, for Config.CertFile
// and Config.KeyFile (for example a certificate from smtptest.Certificate).
func WriteCertificate(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("postfixtest: private key: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
