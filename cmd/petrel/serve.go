package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-mta/petrel/internal/certs"
	"github.com/petrel-mta/petrel/internal/config"
	"github.com/petrel-mta/petrel/internal/delivery"
	"github.com/petrel-mta/petrel/internal/dnsx"
	"github.com/petrel-mta/petrel/internal/maildir"
	"github.com/petrel-mta/petrel/internal/queue"
	"github.com/petrel-mta/petrel/internal/relay"
	"github.com/petrel-mta/petrel/internal/users"
	"github.com/petrel-mta/petrel/smtpclient"
	"github.com/petrel-mta/petrel/smtpserver"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// serveConfig turns the flags into the configuration: the file (or the
// defaults), then every flag given on the command line over it.
func serveConfig(args []string, stderr io.Writer) (config.Config, error) {
	fs := flag.NewFlagSet("petrel serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: petrel serve [flags]\n\nRuns the SMTP server. With no flags and no config file it uses ./petrel-data,\na self-signed certificate, and 127.0.0.1 ports 2525 (MX), 2587 (submission)\nand 2465 (implicit TLS).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var (
		cfgFile  = fs.String("config", "", "TOML configuration `file` (every key: internal/config/example.toml); flags override it")
		data     = fs.String("data", "", "data `dir`ectory (default ./petrel-data)")
		domains  stringList
		mx       = fs.String("mx", "", "MX listener `addr`ess, STARTTLS offered (empty string disables)")
		sub      = fs.String("submission", "", "submission listener `addr`ess, STARTTLS required (empty string disables)")
		subs     = fs.String("submissions", "", "implicit-TLS submission listener `addr`ess, RFC 8314 (empty string disables)")
		certFile = fs.String("cert", "", "TLS certificate chain `file` (PEM); needs --key")
		keyFile  = fs.String("key", "", "TLS private key `file` (PEM); needs --cert")
		hostname = fs.String("hostname", "", "server host `name` for the greeting and Received headers")
		resolver = fs.String("resolver", "", "DNS server `HOST:PORT` for MX lookups (default the system's)")
		smart    = fs.String("smarthost", "", "relay all non-local mail to `HOST:PORT` (TLS level verify by default)")
		hold     = fs.Bool("hold", false, "queue accepted mail but deliver none of it (delivery.hold)")
		pprofAt  = fs.String("pprof", "", "serve Go profiles (net/http/pprof) on `HOST:PORT`, loopback only (log.pprof)")
	)
	fs.Var(&domains, "domain", "local `domain` (repeatable; replaces the configured list)")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := config.Default()
	if *cfgFile != "" {
		var err error
		if cfg, err = config.Load(*cfgFile); err != nil {
			return config.Config{}, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data":
			cfg.DataDir = *data
		case "domain":
			cfg.Domains = []string(domains)
		case "mx":
			cfg.Listeners.MX = *mx
		case "submission":
			cfg.Listeners.Submission = *sub
		case "submissions":
			cfg.Listeners.Submissions = *subs
		case "cert":
			cfg.TLS.Cert = *certFile
		case "key":
			cfg.TLS.Key = *keyFile
		case "hostname":
			cfg.Hostname = *hostname
		case "resolver":
			cfg.Delivery.Resolver = *resolver
		case "smarthost":
			cfg.Delivery.Smarthost = *smart
		case "hold":
			cfg.Delivery.Hold = *hold
		case "pprof":
			cfg.Log.Pprof = *pprofAt
		}
	})
	for i, d := range cfg.Domains {
		cfg.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := serveConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "petrel serve: configuration refused:\n%s\n", indent(err.Error()))
		return 2
	}
	log := newLogger(cfg, stderr)
	if os.Getenv("GOGC") == "" {
		// Half Go's default heap headroom: about 3 KiB less per idle TLS
		// session (most of a session's memory is crypto/tls's buffers on
		// the heap), at no measured CPU cost (BENCHMARKS.md). GOGC in
		// the environment wins.
		debug.SetGCPercent(serveGCPercent)
	}
	if err := runServer(ctx, cfg, log, stdout); err != nil {
		fmt.Fprintf(stderr, "petrel serve: %v\n", err)
		return 1
	}
	return 0
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// serveGCPercent is petrel serve's GOGC unless the environment sets one.
const serveGCPercent = 50

// runServer starts the listeners and runs until ctx is done.
func runServer(ctx context.Context, cfg config.Config, log *slog.Logger, stdout io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("cannot create the data directory: %w (choose another with --data)", err)
	}
	if cfg.Log.Pprof != "" {
		stopPprof, err := servePprof(cfg.Log.Pprof, log)
		if err != nil {
			return fmt.Errorf("cannot serve profiles on %s: %w (change log.pprof or --pprof)", cfg.Log.Pprof, err)
		}
		defer stopPprof()
	}
	certFile, keyFile := cfg.TLS.Cert, cfg.TLS.Key
	if certFile == "" {
		var created bool
		var err error
		names := []string{cfg.Hostname}
		certFile, keyFile, created, err = certs.EnsureSelfSigned(filepath.Join(cfg.DataDir, "tls"), names, time.Now())
		if err != nil {
			return fmt.Errorf("cannot make a self-signed certificate: %w", err)
		}
		if created {
			log.Info("self-signed certificate created", "cert", certFile)
		}
	}
	store, err := certs.NewStore(certFile, keyFile, log)
	if err != nil {
		return fmt.Errorf("cannot load the TLS certificate: %w (check --cert and --key)", err)
	}
	md, err := maildir.New(filepath.Join(cfg.DataDir, "maildir"))
	if err != nil {
		return fmt.Errorf("cannot open the Maildir root: %w", err)
	}
	defer md.Close() // after the delivery loop (defers run last first)
	if err := md.Cleanup(time.Hour); err != nil {
		log.Warn("maildir spool cleanup", "err", err)
	}
	usersFile := cfg.Auth.UsersFile
	if usersFile == "" {
		usersFile = users.DefaultPath(cfg.DataDir)
	}
	userDB, err := users.Open(usersFile)
	if err != nil {
		return fmt.Errorf("cannot read the users file: %w (fix it, or manage it with petrel user)", err)
	}
	log.Info("users loaded", "file", usersFile, "users", len(userDB.List()))
	spool, err := queue.Open(filepath.Join(cfg.DataDir, "queue"), queue.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("cannot open the queue: %w (is another petrel serve using --data %s?)", err, cfg.DataDir)
	}
	defer spool.Close()
	dopts, err := deliveryOptions(cfg)
	if err != nil {
		return err
	}
	dopts.Local, dopts.Logger = md, log
	if network, addr := cfg.Local.LMTPAddr(); network != "" {
		level, err := smtpclient.ParseLevel(cfg.Local.LMTPTLS)
		if err != nil {
			return fmt.Errorf("local.lmtp_tls: %w", err)
		}
		dopts.LMTP = &delivery.LMTP{Network: network, Addr: addr, Level: level}
	}
	deliverer, err := delivery.New(dopts)
	if err != nil {
		return err
	}
	defer deliverer.Close()
	aliases := make(map[string][]string, len(cfg.Local.Aliases))
	for k, v := range cfg.Local.Aliases {
		aliases[k] = v
	}
	var direct relay.Direct
	if cfg.Local.DeliverOnAccept && !cfg.Delivery.Hold && dopts.LMTP == nil {
		direct = deliverer // only to Maildirs: DeliverNow declines LMTP and remote mail
	}
	backend := relay.New(relay.Options{Domains: cfg.Domains, Queue: spool, Log: log, Direct: direct,
		Users: userDB, AuthListeners: []string{"submission", "submissions"},
		Trusted: cfg.Relay.TrustedPrefixes(),
		Local: relay.Local{AcceptAny: cfg.Local.Recipients == "any", Users: userDB, Mailboxes: cfg.Local.Mailboxes,
			Aliases: aliases, CatchAll: cfg.Local.CatchAll, Delimiter: cfg.Local.RecipientDelimiter}})
	authLimiter := smtpserver.NewAuthLimiter(smtpserver.DefaultMaxAuthFailures, smtpserver.DefaultAuthFailureWindow)
	tlsConfig := store.TLSConfig()
	limiter := smtpserver.NewConnLimiter(cfg.Limits.MaxConnections, cfg.Limits.MaxConnectionsPerIP)

	// SIGHUP reloads the certificate; registered before any listener
	// is announced, so a reload request is never fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	type listener struct {
		name, addr  string
		requireTLS  bool
		implicitTLS bool
	}
	var servers []*smtpserver.Server
	var lns []net.Listener
	var wg sync.WaitGroup
	serveErr := make(chan error, 3)
	closeAll := func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}
	for _, l := range []listener{
		{"mx", cfg.Listeners.MX, false, false},
		{"submission", cfg.Listeners.Submission, true, false},
		{"submissions", cfg.Listeners.Submissions, false, true},
	} {
		if l.addr == "" {
			continue
		}
		srv, err := smtpserver.New(smtpserver.Options{
			Name:             l.name,
			Hostname:         cfg.Hostname,
			Backend:          backend,
			Logger:           log,
			TLSConfig:        tlsConfig,
			RequireTLS:       l.requireTLS,
			ImplicitTLS:      l.implicitTLS,
			MaxMessageBytes:  cfg.Limits.MaxMessageSize,
			MaxRecipients:    cfg.Limits.MaxRecipients,
			MaxErrors:        cfg.Limits.MaxErrors,
			ConnLimiter:      limiter,
			AuthLimiter:      authLimiter,
			MaxHandshakes:    cfg.Limits.MaxTLSHandshakes,
			CommandTimeout:   cfg.Timeouts.Command.Duration,
			DataTimeout:      cfg.Timeouts.Data.Duration,
			HandshakeTimeout: cfg.Timeouts.TLSHandshake.Duration,
		})
		if err != nil {
			closeAll()
			return err
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("cannot listen for %s on %s: %w (is another server using it? change it with --%s)", l.name, l.addr, err, l.name)
		}
		servers = append(servers, srv)
		lns = append(lns, ln)
		log.Info("listening", "listener", l.name, "addr", ln.Addr().String(), "starttls", !l.implicitTLS, "require_tls", l.requireTLS, "implicit_tls", l.implicitTLS)
		fmt.Fprintf(stdout, "petrel: %-11s on %s (%s)\n", l.name, ln.Addr(), describe(l.requireTLS, l.implicitTLS))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, smtpserver.ErrServerClosed) {
				serveErr <- fmt.Errorf("%s listener: %w", l.name, err)
			}
		}()
	}
	if cfg.Local.LMTP != "" {
		fmt.Fprintf(stdout, "petrel: delivering mail for %s by LMTP to %s\n", strings.Join(cfg.Domains, ", "), cfg.Local.LMTP)
	} else {
		fmt.Fprintf(stdout, "petrel: delivering mail for %s to Maildirs under %s\n", strings.Join(cfg.Domains, ", "), filepath.Join(cfg.DataDir, "maildir"))
	}
	if cfg.Listeners.MX != "" && len(cfg.Domains) > 0 {
		fmt.Fprintf(stdout, "petrel: try: swaks --server %s --tls --to postmaster@%s --from me@example.org\n", cfg.Listeners.MX, cfg.Domains[0])
		if cfg.Local.Recipients == "known" {
			fmt.Fprintf(stdout, "petrel: more mailboxes: petrel user add NAME --data %s (or [local] mailboxes/aliases in the config)\n", cfg.DataDir)
		}
	}

	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	if cfg.Delivery.Hold {
		log.Warn("delivery held: mail is queued, not delivered (delivery.hold, --hold)")
		fmt.Fprintf(stdout, "petrel: delivery held: mail is queued, not delivered; start without --hold to deliver it\n")
		close(loopDone)
	} else {
		go func() {
			defer close(loopDone)
			dl := &delivery.Loop{Queue: spool, Deliverer: deliverer, ReportingMTA: cfg.Hostname, Logger: log}
			_ = dl.Run(loopCtx)
		}()
	}
	defer func() { stopLoop(); <-loopDone }()

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			if err := store.Reload(); err != nil {
				log.Error("certificate reload failed; keeping the current certificate", "err", err)
			}
			if err := userDB.Reload(); err != nil {
				log.Error("users file reload failed; keeping the current users", "err", err)
			} else {
				log.Info("users reloaded", "file", usersFile, "users", len(userDB.List()))
			}
		case runErr = <-serveErr:
			break loop
		}
	}
	log.Info("shutting down", "grace", cfg.Timeouts.Shutdown.Duration)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Shutdown.Duration)
	defer cancel()
	var swg sync.WaitGroup
	for _, s := range servers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			_ = s.Shutdown(sctx)
		}()
	}
	swg.Wait()
	wg.Wait()
	return runErr
}

func describe(requireTLS, implicitTLS bool) string {
	switch {
	case implicitTLS:
		return "implicit TLS, RFC 8314"
	case requireTLS:
		return "STARTTLS required"
	}
	return "STARTTLS offered"
}

// deliveryOptions turns the [delivery] table into delivery.Options (Local
// and Logger are the caller's).
func deliveryOptions(cfg config.Config) (delivery.Options, error) {
	dc := cfg.Delivery
	o := delivery.Options{LocalName: cfg.Hostname, LocalDomains: cfg.Domains, Port: strconv.Itoa(dc.Port),
		RecipientDelimiter: cfg.Local.RecipientDelimiter}
	level, err := smtpclient.ParseLevel(dc.TLS)
	if err != nil {
		return o, fmt.Errorf("delivery.tls: %w", err)
	}
	o.TLS.Level = &level
	o.TLS.Domains = map[string]smtpclient.Level{}
	for d, v := range dc.TLSPolicy {
		l, err := smtpclient.ParseLevel(v)
		if err != nil {
			return o, fmt.Errorf("delivery.tls_policy: %s: %w", d, err)
		}
		o.TLS.Domains[strings.ToLower(strings.TrimSuffix(d, "."))] = l
	}
	if dc.CAFile != "" {
		pem, err := os.ReadFile(dc.CAFile)
		if err != nil {
			return o, fmt.Errorf("cannot read delivery.ca_file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("delivery.ca_file %s: no PEM certificate in it", dc.CAFile)
		}
		o.TLS.TLSConfig = &tls.Config{RootCAs: roots}
	}
	if dc.Resolver != "" {
		r, err := dnsx.New(dc.Resolver)
		if err != nil {
			return o, fmt.Errorf("delivery.resolver: %w", err)
		}
		o.Resolver = r
	}
	if dc.Smarthost != "" {
		l, err := smtpclient.ParseLevel(dc.SmarthostTLS)
		if err != nil {
			return o, fmt.Errorf("delivery.smarthost_tls: %w", err)
		}
		sh := &delivery.Smarthost{Addr: dc.Smarthost, Level: &l, User: dc.SmarthostUser}
		if dc.SmarthostPasswordFile != "" {
			b, err := os.ReadFile(dc.SmarthostPasswordFile)
			if err != nil {
				return o, fmt.Errorf("cannot read delivery.smarthost_password_file: %w", err)
			}
			sh.Password, _, _ = strings.Cut(strings.TrimRight(string(b), "\r\n"), "\n")
		}
		o.Smarthost = sh
	}
	return o, nil
}

// servePprof serves net/http/pprof's handlers on addr until stop is called.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Warn("serving Go profiles (net/http/pprof)", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
