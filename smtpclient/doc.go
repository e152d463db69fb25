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
//     unless the caller allows it explicitly for a loopback peer;
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
package smtpclient
