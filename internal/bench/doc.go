// Package bench is the library behind `petrel bench`: an SMTP load
// generator in the spirit of Postfix's smtp-source, with TLS (STARTTLS,
// RFC 3207, or implicit TLS, RFC 8314), and `petrel bench sink`, a
// receiving server that throws messages away.
//
// # Load (Run)
//
// Options.Conns sessions run at once. Each session connects, reads the
// greeting, says EHLO, does STARTTLS (or starts with TLS) and says EHLO
// again, then sends Options.MsgsPerConn messages and QUIT; a new session
// takes its place, until Options.Total transactions or Options.Duration.
// Every reply is checked (220, 250, 354, 221), strictly: CRLF line ends,
// one code per reply, nothing unsolicited. A message counts once the final
// 250 to DATA or BDAT LAST is in. Failures are counted by Kind (connect,
// tls, greeting, ehlo, mail, rcpt_4xx, rcpt_5xx, data_4xx, data_5xx,
// timeout, io, protocol), with the first error of each kind kept as a
// sample; a failed transaction is followed by RSET, a broken session by a
// new one. The Report has messages/s, sessions/s (each session is a full
// TLS handshake unless Options.Resume), the latency of the final reply
// (from the last octet of the data to the 250: the server's commit) and of
// the whole message (from MAIL), the session setup time, and the TLS
// version, cipher suite and key-exchange group negotiated (Options.Group
// offers only one group, to compare X25519, X25519MLKEM768 and P-256).
//
// The message is made once (Message): a header and printable 76-character
// lines, CRLF, no line starting with a dot, so it goes on the wire as is
// after DATA and after BDAT, and the server receives exactly Options.Size
// octets. With Options.Pipelining (when PIPELINING is offered, RFC 2920)
// MAIL, the RCPTs and DATA go in one write; with BDAT too (CHUNKING, RFC
// 3030 §4.2 allows BDAT in a pipelined group) the message goes in the same
// write, one round trip per message.
//
// Latencies go into Histograms: fixed log-linear buckets (1.6 % relative
// precision, 30 KB each, one per connection slot, merged at the end), so
// memory does not grow with the length of the run.
//
// # Idle sessions (Hold)
//
// Hold opens Options.Idle sessions, Options.Ramp at a time, and keeps them
// open with a NOOP every Options.IdleNoop (or nothing), re-opening any the
// server drops, until Options.Duration or the context ends: the way to
// measure a server's memory per idle TLS connection. 10,000 sessions need
// 10,000 file descriptors on each side; RaiseFileLimit raises the soft
// limit to the hard one.
//
// # The client, and why not smtpclient
//
// The load generator shares the machine with the server it measures, so
// its own cost matters. It has a lean client of its own: a bufio.Reader and
// bufio.Writer over the net.Conn or *tls.Conn, one deadline per step, each
// transaction's commands prepared once per run and written in one flush,
// replies parsed with smtp.ParseReplyLine. The project's smtpclient is the
// right client for delivery, not for this: before each command group inside
// TLS it peeks for unsolicited data with a 50 µs read deadline (checkIdle,
// against response injection), and Go's network poller sleeps in
// milliseconds, so on a process that is otherwise idle each peek takes
// about 1.1 ms (measured here on Go 1.26). On one connection over STARTTLS
// to the sink, 1 KB messages: smtpclient 240 msg/s without pipelining
// (three peeks a message) and 640-740 msg/s with it, against 4,200 and
// 5,400-9,300 msg/s for this client. Under load, with other goroutines
// keeping the poller busy, the peeks cost less: with 16 connections and
// 10,000 pipelined messages smtpclient used 0.71-0.85 s of CPU (6,200-9,400
// msg/s) and this client 0.55-0.65 s (8,200-10,200 msg/s); without
// pipelining 1.4 s and 0.97 s. SendMail also copies each message twice
// (normalize, then stuff) and formats every command anew; a load generator
// sends the same octets every time.
//
// # Sink
//
// A Sink is Petrel's smtpserver (its limits, STARTTLS offered, or implicit
// TLS; with enough connections for Hold and an error limit high enough for
// injected refusals) with a backend that reads every message to its end
// and discards it. It is NOT durable: its 250 means nothing. SinkOptions
// TempFail and PermFail refuse that fraction of recipients at RCPT (451
// 4.3.0, 550 5.1.1); Verdict decides from the seed and the recipient's rank
// in arrival order, so the number of refusals in a run is known in
// advance. Stats counts connections, TLS sessions, messages, octets and
// refusals.
package bench
