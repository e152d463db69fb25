// Package smtpclient is an SMTP client (RFC 5321) that gets STARTTLS right:
// RFC 3207 on the sending side, with Postfix's TLS security levels, and
// implicit TLS (RFC 8314).
//
// STARTTLS is where mail clients are most often broken: stripped by an
// attacker who deletes it from the EHLO reply, downgraded by a forged 454,
// fooled by replies injected behind the 220 (the "response injection" of
// the NO STARTTLS study), or left unauthenticated because the certificate is
// never checked. This package:
//
//   - treats any byte the server sent after its 220 to STARTTLS as an
//     attack and aborts (RFC 3207 §4.1, requirement C-TLS-10);
//   - discards every capability learnt before TLS and sends EHLO again
//     (RFC 3207 §4.2), so a pre-TLS AUTH or SIZE is never trusted;
//   - never sends anything after STARTTLS before the 220 (RFC 2920 §3.1);
//   - never sends AUTH credentials outside TLS (RFC 4954 §4, RFC 8314 §5)
//     unless the caller allows it explicitly for a loopback peer or a unix
//     socket;
//   - enforces a typed security level: None, May (opportunistic), Encrypt,
//     Verify (PKIX and the host name, RFC 6125 / RFC 7817) and Secure (as
//     Verify, with the name from configuration only), and takes a
//     VerifyConnection hook where MTA-STS (RFC 8461) and DANE (RFC 7672)
//     plug in;
//   - never falls back to plaintext except at level May, and reports that
//     it did;
//   - normalises bare CR and LF to CRLF and dot-stuffs before sending
//     (RFC 5321 §2.3.8, §4.5.2), so it can never forward an SMTP smuggling
//     sequence;
//   - re-arms TCP_QUICKACK on Linux while it waits for the TLS handshake and
//     the first replies after it, so that it does not stall ≈40 ms against
//     servers that write their TLS 1.3 session tickets in separate segments
//     with Nagle on (OpenSSL-based servers such as Postfix).
//
// Extensions used when offered: PIPELINING (RFC 2920), SIZE (RFC 1870),
// 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING (RFC 3030), DSN (RFC
// 3461), ENHANCEDSTATUSCODES (RFC 2034). Timeouts default to RFC 5321
// §4.5.3.2's.
//
// # LMTP
//
// With Options.LMTP the client speaks LMTP (RFC 2033) to deliver to a
// local mail store such as Dovecot, over TCP or, with Options.Network
// "unix", over a unix socket (Dial's address is then the socket's path).
// It says LHLO instead of EHLO, again after STARTTLS, and never falls back
// to HELO (§4.1); it refuses TCP port 25 (§5). The transaction is SMTP's,
// pipelined when offered (an LMTP server must offer PIPELINING, §5), with
// DATA or BDAT, until the end of the data: then the server answers once
// for each recipient that RCPT accepted, in RCPT order (§4.2, §4.3), and
// SendMail reads exactly that many replies, each within Timeouts.DataEnd,
// into Result.Rcpts: one recipient may be delivered while another is over
// quota (4xx) or unknown (5xx). SendMail's error is nil when at least one
// recipient was delivered, as in SMTP. A connection that breaks off in the
// middle of those replies leaves the recipients not yet answered with a
// temporary error, and is closed. Over a unix socket there is no network
// for TLS to protect: level May stays in plaintext without counting it as
// a fallback, and the mandatory levels still demand STARTTLS.
package smtpclient
