// Package interop holds interoperability tests of the petrel daemon against
// real third-party SMTP clients: swaks, Python's smtplib, openssl s_client,
// curl, msmtp, and Postfix as a sending MTA.
//
// Each test builds nothing itself: TestMain builds cmd/petrel once, and each
// test starts a fresh daemon on free loopback ports with its own data
// directory, sends one message over TLS (STARTTLS, RFC 3207, or implicit TLS,
// RFC 8314) and checks the delivered Maildir file byte for byte.
//
// A test whose client is not installed is skipped, unless the environment
// sets PETREL_INTEROP_REQUIRED=1, in which case it fails: run
// test/interop/install-deps.sh (as root, Debian) to install the clients.
package interop
