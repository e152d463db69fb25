package smtptest

import (
	"context"
	"io"

	"github.com/petrel-mta/petrel/smtp"
	"github.com/petrel-mta/petrel/smtpserver"
)

// Discard is an smtpserver.Backend that accepts everything, reads every
// message to its end and keeps nothing: for benchmarks of the protocol
// engine and of clients, where Backend's copies would grow without bound.
type Discard struct{}

// NewSession implements smtpserver.Backend.
func (Discard) NewSession(context.Context, *smtpserver.Conn) (smtpserver.Session, error) {
	return discardSession{}, nil
}

type discardSession struct{}

func (discardSession) Mail(context.Context, smtp.Path, *smtpserver.MailOptions) error { return nil }
func (discardSession) Rcpt(context.Context, smtp.Path, *smtpserver.RcptOptions) error { return nil }
func (discardSession) Data(_ context.Context, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (discardSession) Reset(context.Context) {}
func (discardSession) Close() error          { return nil }
