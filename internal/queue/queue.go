// Package queue is Petrel's durable mail queue: messages accepted by the
// server wait here, with per-recipient delivery state, until every recipient
// is delivered or has failed and been reported.
//
// [Queue] is the contract between the server and delivery sides and any
// backend. The embedded default is [Spool], a directory on local disk; a NATS
// JetStream backend (design.md, Scale-out) is meant to implement the same
// interface later, so the contract below is written for both.
//
// # Contract
//
// Durability. Put returns nil only when the message body and its envelope
// are durable: on the Spool, appended to its write-ahead journal and
// fdatasynced (concurrent Puts share one fdatasync: group commit), or, for
// a body over 1 MiB, written, fsynced and linked into place with the
// directory fsynced; on JetStream, acknowledged by the stream once stored on
// a quorum of replicas. Only then may the server answer 250. When Put
// returns an error the message may or may not have been stored (the Spool
// removes what it wrote, as far as it can); the client, told 4xx, sends it
// again. Every state change made by Update, Complete, Bounce and Delete is
// equally durable before it returns nil. A message may be visible to Get
// and List a moment before its Put returns, never before it is durable.
//
// At-least-once delivery. Every recipient is attempted until it is Delivered
// or Failed; a crash, or a lease that is lost, between a delivery and the
// Update that records it makes the recipient be attempted again. A recipient
// may so be delivered twice, never zero times. Failure reports (DSNs) are
// at-least-once too, see Bounces below.
//
// Leases. Lease hands out messages that have work due, each to one caller
// at a time: a leased message is not leased again until its lease is
// completed, released or expires (Options.LeaseTime after Lease or after the
// last Update, which renews it). A node that dies loses its leases: the
// Spool keeps leases in memory only, so they are void when the spool is
// opened again (a spool is owned by one process, see [Open]); on JetStream a
// lease is an unacknowledged delivery, redelivered to another node after its
// ack wait. Update on a lost lease fails with [ErrLeaseLost] (it may still
// succeed if nobody else has leased the message since).
//
// Ordering: none. Lease returns the earliest due messages first as a matter
// of efficiency, but nothing is promised about the order in which messages
// or recipients are delivered, not even for one sender.
//
// Idempotency. Complete and Release may be called more than once, and after
// the message is gone; later calls return nil and do nothing. Update is not
// idempotent (each call counts one attempt for the recipients it names);
// Delete of a message that is gone returns [ErrNotFound].
//
// Time. Every time the queue records or compares (Message.Received,
// Recipient.NextAttempt and LastAttempt, lease expiry, message lifetime)
// comes from Options.Now, so that tests inject a clock; nothing reads the
// wall clock directly. (On JetStream the ack wait is measured by the
// server's clock.)
//
// Bounces. When Update makes a recipient Failed (a permanent reply, or
// Deferred past the message lifetime of the [Schedule]), it returns that
// recipient among the failed ones not yet reported. The caller then builds
// and Puts a delivery status notification (internal/dsn) for them, and calls
// Complete, which marks them Reported. Until Complete is called a failure
// stays unreported and makes its message due immediately, so a crash between
// Update and Complete makes the next lease return the same failures again: a
// DSN is sent at least once and at most once more per crash. The rules about
// whom to notify are the caller's: never a DSN for a message with the null
// reverse-path (From == "", RFC 5321 §4.5.5 and §6.1), and none for a
// recipient whose NOTIFY excludes FAILURE (RFC 3461 §4.1); such failures are
// still passed to Complete, which records that they were dealt with.
//
// # Delivery loop
//
// A delivery loop uses the queue like this (errors elided):
//
//	leases, _ := q.Lease(ctx, 16)
//	for _, l := range leases {
//		body, _ := q.Body(ctx, l.Message.ID)
//		results := deliver(ctx, l.Message, l.Due, body) // one Result per attempted recipient
//		body.Close()
//		failed, err := q.Update(ctx, l, results) // durable; also with no results
//		if err != nil {
//			q.Release(ctx, l) // the attempts will be made again
//			continue
//		}
//		if len(failed) > 0 && l.Message.From != "" {
//			queueDSN(ctx, q, l.Message, failed) // a Put of a new message
//		}
//		q.Complete(ctx, l)
//	}
//
// Lease does not block. The loop calls it at least every few seconds, and
// at once when the channel of [Notifier] (which the Spool implements) says
// that work may have become due; changes made by other processes (`petrel
// queue` on a running daemon) are noticed at the next Lease.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"io"
	"strconv"
	"time"
)

// Queue is a durable mail queue. See the package documentation for the
// contract every implementation keeps. Implementations are safe for
// concurrent use.
type Queue interface {
	// Put stores a new message with envelope env and the bytes of body
	// (read to EOF) and returns its ID. The message is durable when Put
	// returns nil. All recipients start Pending, due at once.
	Put(ctx context.Context, env Envelope, body io.Reader) (id string, err error)

	// Lease returns up to max messages with work due now: recipients
	// whose next attempt is due, or failures not yet reported. Each is
	// leased to the caller until Complete, Release or expiry. It returns
	// no leases, and no error, when nothing is due.
	Lease(ctx context.Context, max int) ([]*Lease, error)

	// Update records the outcome of delivery attempts for recipients of
	// a leased message: Delivered, Deferred (retried as the Schedule
	// says, or Failed once the message has outlived its lifetime) or
	// Failed. It renews the lease, and returns every Failed recipient of
	// the message not yet reported, those of this call and earlier ones.
	// A message whose recipients are all done is removed. It fails with
	// ErrLeaseLost if another caller holds the message now, ErrNotFound if
	// the message was deleted meanwhile; then the outcomes are not
	// recorded and the caller drops the lease.
	Update(ctx context.Context, l *Lease, results []Result) (failed []Recipient, err error)

	// Complete ends a lease: the failures that Update returned on it are
	// marked Reported, and a message with nothing left to do is removed.
	Complete(ctx context.Context, l *Lease) error

	// Release ends a lease without recording anything; the message's due
	// work is leased again (soon, if it is due now).
	Release(ctx context.Context, l *Lease) error

	// Body opens the body of message id. A body held in memory may come
	// as a reader with a method Bytes() []byte that returns it whole,
	// without a copy; its bytes must not be changed.
	Body(ctx context.Context, id string) (io.ReadCloser, error)

	// Get returns message id with the state of its recipients.
	Get(ctx context.Context, id string) (Message, error)

	// List returns every message in the queue, oldest first.
	List(ctx context.Context) ([]Message, error)

	// Flush makes the Pending and Deferred recipients of message id due
	// now, or those of every message if id is "". A flush is a hint: it
	// is not durable, and a message being delivered is not interrupted.
	Flush(ctx context.Context, id string) error

	// Bounce makes the Pending and Deferred recipients of message id
	// Failed (not Expired), to be reported by the delivery loop.
	Bounce(ctx context.Context, id string) error

	// Delete removes message id without any report to its sender.
	Delete(ctx context.Context, id string) error

	// Close releases the queue. Leases it handed out are void.
	Close() error
}

// Notifier is implemented by queues that can wake the delivery loop.
type Notifier interface {
	// Notify returns a channel that receives a value when work may have
	// become due earlier than the loop expects: after Put, Flush, Bounce
	// or Release. Values are not queued: one value may stand for several
	// events.
	Notify() <-chan struct{}
}

// Errors returned by queues; test with errors.Is.
var (
	// ErrNotFound: no message with that ID (never was, or removed).
	ErrNotFound = errors.New("queue: no such message")
	// ErrLeaseLost: the lease expired and the message was leased again,
	// or the lease was already completed or released.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrExists: Put was given the ID of a message already queued.
	ErrExists = errors.New("queue: message ID already in use")
	// ErrBusy: another process owns the spool (see Open and Attach).
	ErrBusy = errors.New("queue: spool is owned by another process")
	// ErrNotOwner: the operation needs the owner of the spool (Put and
	// the lease methods), and this handle was made by Attach.
	ErrNotOwner = errors.New("queue: operation needs the spool's owner")
	// ErrClosed: the queue was closed.
	ErrClosed = errors.New("queue: closed")
)

// State is the delivery state of one recipient.
type State uint8

const (
	// Pending: not attempted yet.
	Pending State = iota
	// Deferred: attempted, failed temporarily; tried again at
	// NextAttempt.
	Deferred
	// Delivered: accepted by the next hop or the mailbox. Final.
	Delivered
	// Failed: failed permanently, expired, or bounced by the postmaster.
	// Final once Reported.
	Failed
)

var stateNames = [...]string{Pending: "pending", Deferred: "deferred", Delivered: "delivered", Failed: "failed"}

// String returns "pending", "deferred", "delivered" or "failed".
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText encodes s as its name.
func (s State) MarshalText() ([]byte, error) {
	if int(s) >= len(stateNames) {
		return nil, errors.New("queue: invalid recipient state")
	}
	return []byte(stateNames[s]), nil
}

// UnmarshalText decodes a state name.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if string(b) == n {
			*s = State(i)
			return nil
		}
	}
	return errors.New("queue: invalid recipient state")
}

// Recipient is one recipient of a message and its delivery state.
type Recipient struct {
	// Addr is the forward-path without angle brackets.
	Addr string `json:"addr"`
	// ORCPT and Notify are the RFC 3461 parameters of RCPT as received
	// ("rfc822;bob@example.org", "SUCCESS,FAILURE", "NEVER"), "" if absent.
	ORCPT  string `json:"orcpt,omitempty"`
	Notify string `json:"notify,omitempty"`

	State State `json:"state"`
	// Attempts counts the delivery attempts recorded by Update.
	Attempts int `json:"attempts,omitempty"`
	// NextAttempt is when a Pending or Deferred recipient is due; the
	// zero time means at once.
	NextAttempt time.Time `json:"next,omitzero"`
	// LastAttempt is when the last attempt was recorded.
	LastAttempt time.Time `json:"last,omitzero"`
	// LastReply is the reply of the last attempt, as the next hop sent it
	// ("451 4.7.1 Try again later") or as the delivery side phrased it.
	LastReply string `json:"reply,omitempty"`
	// RemoteMTA names the host that gave LastReply, "" if none (for the
	// Remote-MTA field of a DSN, RFC 3464 §2.3.5).
	RemoteMTA string `json:"mta,omitempty"`
	// Expired: Failed because the message outlived its lifetime while the
	// recipient was Deferred (a DSN says 4.4.7, with LastReply).
	Expired bool `json:"expired,omitempty"`
	// Reported: the failure was dealt with by the caller (a DSN queued,
	// or none due), see Complete.
	Reported bool `json:"reported,omitempty"`
}

// done reports whether nothing is left to do for r.
func (r *Recipient) done() bool {
	return r.State == Delivered || (r.State == Failed && r.Reported)
}

// Envelope is what Put needs besides the body.
type Envelope struct {
	// ID is the message's ID, from [NewID], or "" for Put to choose one.
	// A caller that names the message before storing it (in its Received
	// header, say) sets it.
	ID string
	// From is the reverse-path without angle brackets, "" for <>.
	From string
	// Rcpts are the recipients; only Addr, ORCPT and Notify are used. A
	// repeated Addr is stored once.
	Rcpts []Recipient
	// Attrs carry what the delivery side needs to know about how the
	// message was received; see the Attr constants.
	Attrs map[string]string
}

// Keys of Message.Attrs that Petrel uses. The queue stores attributes
// without interpreting them.
const (
	AttrAuthUser   = "auth-user"  // the SASL user who submitted the message
	AttrClientIP   = "client-ip"  // the IP address of the SMTP client
	AttrRequireTLS = "requiretls" // "yes": REQUIRETLS (RFC 8689) was given
	AttrSMTPUTF8   = "smtputf8"   // "yes": SMTPUTF8 (RFC 6531) was given
	AttrBody       = "body"       // BODY= of MAIL (RFC 6152): "8BITMIME", "7BIT"
	AttrDSNRet     = "dsn-ret"    // RET= of MAIL (RFC 3461): "FULL" or "HDRS"
	AttrDSNEnvID   = "dsn-envid"  // ENVID= of MAIL (RFC 3461), as received
)

// Message is a queued message: its envelope and the state of its
// recipients. The body is read with Body.
type Message struct {
	ID string `json:"id"`
	// From is the reverse-path, "" for the null reverse-path <>.
	From     string            `json:"from"`
	Rcpts    []Recipient       `json:"rcpts"`
	Received time.Time         `json:"received"` // when Put stored it
	Size     int64             `json:"size"`     // of the body, in bytes
	Attrs    map[string]string `json:"attrs,omitempty"`
}

// Result is the outcome of one delivery attempt to one recipient.
type Result struct {
	// Addr names the recipient (Recipient.Addr).
	Addr string
	// State is Delivered, Deferred (a temporary failure) or Failed (a
	// permanent one).
	State State
	// Reply is the reply to record as LastReply.
	Reply string
	// RemoteMTA names the host that replied, if any.
	RemoteMTA string
}

// Lease is a leased message, returned by Lease. Its fields are a snapshot
// taken when it was leased; Get returns the current state.
type Lease struct {
	// Message is the leased message with all its recipients.
	Message Message
	// Due are the recipients to attempt now (Pending or Deferred, due).
	// It may be empty when only failures are left to report: the caller
	// then calls Update with no results to get them.
	Due []Recipient
	// Expires is when the lease lapses unless renewed by Update. It is
	// updated by Update; read it only between calls.
	Expires time.Time

	id     string
	bounce []string // failed recipients returned by Update, for Complete
	done   bool
}

// NewID returns a new message ID: 40 bits of time (milliseconds since the
// Unix epoch) and 40 random bits, in Crockford's base32, 16 characters that
// sort by time (to the millisecond). IDs are safe in file names and logs.
func NewID(now time.Time) string {
	var b [10]byte
	ms := uint64(now.UnixMilli())
	for i := 4; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[5:])
	return idEncoding.EncodeToString(b[:])
}

const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var idEncoding = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

// ValidID reports whether id has the form of an ID from NewID. Callers that
// take IDs from users (the queue commands) check it first.
func ValidID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return true
}
