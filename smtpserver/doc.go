// Package smtpserver is an SMTP server engine (RFC 5321) with STARTTLS done
// to the letter of RFC 3207, and implicit TLS (RFC 8314).
//
// A Server serves each connection in its own goroutine and hands the mail
// transaction to a Backend's Session through ctx-first methods; Shutdown(ctx)
// drains connections gracefully, ServeConn serves one connection (tests,
// fuzzing). Extensions: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
// (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034, codes of RFC 3463), SMTPUTF8
// (RFC 6531), CHUNKING (RFC 3030), STARTTLS (RFC 3207) and AUTH (RFC 4954:
// PLAIN and LOGIN, only under TLS, for a backend whose Session implements
// AuthSession; failed attempts limited per client address). The Received
// header it builds (Conn.Received) follows RFC 5321 §4.4 with the protocol
// types of RFC 3848 and the tls clause of RFC 8314 §4.3.
//
// The threats it answers, each tested by performing the attack:
//
//   - STARTTLS command injection (CVE-2011-0411): plaintext pipelined after
//     STARTTLS is never executed; the connection is closed.
//   - State carried across TLS (RFC 3207 §4.2): after the handshake the
//     backend Session is closed and a new one made; the EHLO argument, the
//     transaction and any authentication are forgotten.
//   - Downgrade: TLS 1.2 at least (RFC 8996), the hybrid post-quantum group
//     X25519MLKEM768 offered first; a failed handshake closes the connection
//     without a plaintext reply.
//   - SMTP smuggling: only <CRLF>.<CRLF> ends DATA; a bare CR or LF refuses
//     the whole message (RFC 5321 §2.3.8), which is read to its real end.
//   - Cross-protocol requests (ALPACA): an HTTP verb closes the connection.
//   - Resource exhaustion: bounded lines (512-octet commands, 1000-octet
//     text lines, RFC 5321 §4.5.3.1), size and recipient limits, per-state
//     timeouts (§4.5.3.2), connection limits in total and per client
//     address, a bound on concurrent TLS handshakes, and an error limit.
//   - Information leaks: a backend error that is not an *smtp.Error is
//     logged and answered with a generic "451 4.3.0".
//
// Every reply but the greeting and the EHLO/HELO replies carries an enhanced
// status code.
package smtpserver
