package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/postfixtest"
)

// server is one MTA under test, as the measurements see it.
type server interface {
	Name() string
	Addr() string
	// CPU is the CPU time its processes have used so far.
	CPU() (time.Duration, error)
	// Memory sums the resident memory of its processes now.
	Memory() (memory, error)
	// Queued is the number of messages in its queue.
	Queued(ctx context.Context) (int, error)
	// Maildir is the root of the Maildirs it delivers to; "" when it
	// delivers nothing (Postfix with discard).
	Maildir() string
}

// Names of the two servers, and the local domain both accept mail for.
const (
	namePostfix        = "Postfix"
	namePostfixDiscard = "Postfix (discard)"
	namePetrel         = "Petrel"
	localDomain        = "bench.test"
	hostname           = "mx." + localDomain
	rcptAddr           = "bench@" + localDomain
	senderAddr         = "bench@client.test"
	remoteAddr         = "sink@sink.test" // outbound: not a local domain, goes to the sink
)

// postfixServer is a throw-away Postfix instance (internal/postfixtest).
type postfixServer struct {
	in      *postfixtest.Instance
	discard bool // mail for the local domain is queued, then discarded
}

func (p *postfixServer) Name() string {
	if p.discard {
		return namePostfixDiscard
	}
	return namePostfix
}

func (p *postfixServer) Addr() string { return p.in.Addr }

func (p *postfixServer) Maildir() string {
	if p.discard {
		return ""
	}
	return filepath.Join(p.in.Dir, "mail")
}

func (p *postfixServer) CPU() (time.Duration, error) {
	pid, err := p.in.MasterPID()
	if err != nil {
		return 0, err
	}
	return treeCPU(pid)
}

func (p *postfixServer) Memory() (memory, error) { return memoryOf(p.in.Processes()) }

func (p *postfixServer) Queued(context.Context) (int, error) { return p.in.Queued() }

// postfixMainCF is what the benchmark changes in a postfixtest instance's
// main.cf (besides what postfixtest sets, smtpd_peername_lookup = no among
// it), then set: --postfix-set overrides. It is Postfix in its fastest
// honest configuration for the work Petrel does (issue 10): every message
// durably queued (Postfix's default fsync of the queue file) before the
// 250, then delivered by virtual(8) to a Maildir (fsync too):
//   - no per-client limits, so that 64 sessions and 1000 idle sessions from
//     127.0.0.1 are served; a process limit that lets every daemon run as
//     many processes as the load asks for;
//   - the recipient table a static map (no regular expression per RCPT);
//   - no DNS for the SMTP client, no TLS log lines beyond the session's
//     connect and disconnect lines (smtpd_tls_loglevel = 0).
//
// Logging stays on, to a file through postlogd, as Petrel logs to a file.
func postfixMainCF(set map[string]string) map[string]string {
	m := map[string]string{
		"smtpd_client_connection_count_limit":     "0",
		"smtpd_client_connection_rate_limit":      "0",
		"smtpd_client_message_rate_limit":         "0",
		"smtpd_client_recipient_rate_limit":       "0",
		"smtpd_client_new_tls_session_rate_limit": "0",
		"default_process_limit":                   strconv.Itoa(postfixProcessLimit),
		"virtual_mailbox_maps":                    "static:inbox/",
		"smtp_dns_support_level":                  "disabled",
		"smtpd_tls_loglevel":                      "0",
	}
	maps.Copy(m, set)
	return m
}

// withDiscard returns main.cf for Postfix (discard): as mainCF, with mail
// for the local domain queued, then handed to discard(8).
func withDiscard(mainCF map[string]string) map[string]string {
	m := maps.Clone(mainCF)
	m["virtual_transport"] = "discard:queued, then discarded (bench/compare --postfix-discard)"
	return m
}

// postfixProcessLimit is the smtpd process limit: 1000 idle sessions and
// more.
const postfixProcessLimit = 1200

// waitNoSMTPD waits until no smtpd process of the instance is left: after
// `postfix reload` the idle ones exit (so that a memory baseline does not
// hold smtpd processes that idle sessions would then reuse), and without
// one, after max_idle (100 s).
func (p *postfixServer) waitNoSMTPD(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, pid := range p.in.Processes() {
			if commOf(pid) == "smtpd" {
				n++
			}
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d smtpd processes of Postfix still there after %v", n, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// petrelConfig is what differs between the Petrel instances of a run.
type petrelConfig struct {
	dataDir           string
	certFile, keyFile string
	smarthost         string // outbound: relay everything there, STARTTLS required; "" none
}

// toml is the configuration file of `petrel serve`: the local domain with
// every local part a mailbox, the run's certificate, one MX listener on a
// free port, connection limits raised.
func (c petrelConfig) toml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# petrel serve configuration written by bench/compare\n")
	fmt.Fprintf(&b, "hostname = %q\ndata_dir = %q\ndomains = [%q]\n\n", hostname, c.dataDir, localDomain)
	fmt.Fprintf(&b, "[tls]\ncert = %q\nkey = %q\n\n", c.certFile, c.keyFile)
	fmt.Fprintf(&b, "[listeners]\nmx = \"127.0.0.1:0\"\nsubmission = \"\"\nsubmissions = \"\"\n\n")
	fmt.Fprintf(&b, "[limits]\nmax_connections = 20000\nmax_connections_per_ip = 20000\n\n")
	fmt.Fprintf(&b, "[local]\nrecipients = \"any\"\n\n")
	if c.smarthost != "" {
		fmt.Fprintf(&b, "[relay]\ntrusted_networks = [\"127.0.0.1/32\"]\n\n")
		fmt.Fprintf(&b, "[delivery]\nsmarthost = %q\nsmarthost_tls = \"encrypt\"\n\n", c.smarthost)
	}
	fmt.Fprintf(&b, "[log]\nlevel = \"info\"\n")
	return b.String()
}

// petrelServer is a `petrel serve` process.
type petrelServer struct {
	bin, cfgFile, log string
	cfg               petrelConfig
	cmd               *exec.Cmd
	addr              string
	done              chan struct{} // closed when the process has exited
	waitErr           error
}

var listeningRE = regexp.MustCompile(`^petrel: mx\s+on (\S+) `)

// startPetrel starts `petrel serve` (with --hold if hold) and waits until
// its MX listener is up. Its standard output and error go to
// <data dir>.log.
func startPetrel(ctx context.Context, bin string, cfg petrelConfig, hold bool) (*petrelServer, error) {
	p := &petrelServer{bin: bin, cfg: cfg, cfgFile: cfg.dataDir + ".toml", log: cfg.dataDir + ".log", done: make(chan struct{})}
	if err := os.WriteFile(p.cfgFile, []byte(cfg.toml()), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--config", p.cfgFile}
	if hold {
		args = append(args, "--hold")
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("cannot run %s: %w", bin, err)
	}
	addrc := make(chan string, 1)
	go func() {
		// Read the output to its end (the process exited), then Wait:
		// Wait closes the pipe.
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil && len(addrc) == 0 {
				addrc <- m[1]
			}
		}
		_, _ = io.Copy(logf, out)
		p.waitErr = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("petrel serve exited (%v): %s", p.waitErr, lastLine(p.log))
	case <-t.C:
		err = errors.New("petrel serve did not listen within 30s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = p.stop()
	return nil, err
}

func (p *petrelServer) Name() string    { return namePetrel }
func (p *petrelServer) Addr() string    { return p.addr }
func (p *petrelServer) Maildir() string { return filepath.Join(p.cfg.dataDir, "maildir") }

func (p *petrelServer) CPU() (time.Duration, error) { return processCPU(p.cmd.Process.Pid) }

func (p *petrelServer) Memory() (memory, error) { return memoryOf([]int{p.cmd.Process.Pid}) }

// Queued runs `petrel queue list --json`, which reads the spool without
// disturbing the daemon.
func (p *petrelServer) Queued(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.bin, "queue", "list", "--json", "--data", p.cfg.dataDir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("petrel queue list: %v: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, fmt.Errorf("petrel queue list: %w", err)
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(out, &msgs); err != nil {
		return 0, fmt.Errorf("petrel queue list --json: %w", err)
	}
	return len(msgs), nil
}

// stop ends the process with SIGTERM (SIGKILL after 40 s: its shutdown
// grace is 30 s) and waits for it.
func (p *petrelServer) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(40 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("petrel serve did not stop within 40s of SIGTERM; killed")
	}
}

// lastLine returns the last non-empty line of a file, for error messages.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// maildirFiles lists the delivered messages under a Maildir root: the
// files in every new/ directory (directories starting with a dot, such as
// Petrel's .spool, are skipped).
func maildirFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() && path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && filepath.Base(filepath.Dir(path)) == "new" {
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
