// Command petrel is a mail transfer agent built around secure SMTP
// transport (RFC 3207 STARTTLS, RFC 8314 implicit TLS).
//
//	petrel serve [flags]    run the daemon (see petrel serve -h)
//	petrel send [flags]     send a message and show what happened (a swaks for Petrel)
//	petrel check TARGET     probe the STARTTLS security of a domain's MX hosts or of a host
//	petrel user CMD [NAME]  add, delete and list the users who may authenticate
//	petrel queue CMD [ID]   list, show, flush, delete and bounce queued messages
//	petrel bench [flags]    generate SMTP load with TLS (and bench sink: a non-durable receiving sink)
//	petrel version          print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const version = "0.1.0-dev"

const usage = `petrel — a mail transfer agent with secure SMTP transport

Usage:
  petrel serve [flags]   run the SMTP server (petrel serve -h for flags)
  petrel send [flags]    send a message and show what happened (petrel send -h)
  petrel check TARGET    probe the STARTTLS security of a domain or host (petrel check -h)
  petrel user add|passwd|del NAME, petrel user list
                         manage the users who may authenticate (petrel user -h)
  petrel queue list|show ID|flush [ID]|delete ID|bounce ID
                         look at and act on the mail queue, like mailq (petrel queue -h)
  petrel bench [flags]   generate SMTP load with TLS, like smtp-source (petrel bench -h)
  petrel bench sink      a non-durable receiving server to load (petrel bench sink -h)
  petrel version         print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "send":
		return send(ctx, args[1:], os.Stdin, stdout, stderr)
	case "check":
		return check(ctx, args[1:], stdout, stderr)
	case "user":
		return user(ctx, args[1:], os.Stdin, stdout, stderr)
	case "queue":
		return queueCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "petrel", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "petrel: unknown command %q; run 'petrel help' for the list\n", args[0])
	return 2
}
