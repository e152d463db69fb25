// Package smtp holds the types shared by Petrel's SMTP server and client: reply
// codes and enhanced status codes, replies as errors, mailbox paths and
// MAIL/RCPT parameters, with strict parsers for each. It does no I/O.
//
// The parsers follow the ABNF of RFC 5321 §4.1.2 (paths, mailboxes, domains,
// address literals, ESMTP parameters) as extended by RFC 6531 (SMTPUTF8:
// UTF-8 in local parts and domains when the SMTPUTF8 parameter was given).
// Enhanced status codes are those of RFC 3463 and the RFC 5248 registry; the
// reply format with enhanced codes is RFC 2034's.
//
// Source routes (RFC 5321 §4.1.1.3, Appendix C) are parsed and discarded:
// they are never used for routing.
package smtp
