// Package quickack re-arms TCP_QUICKACK on a client connection while it
// waits for a TLS handshake, so that a server which writes its handshake
// messages in separate small segments with Nagle's algorithm on is not
// held up by the client's delayed ACK.
//
// The stall it prevents: an OpenSSL-based MTA such as Postfix sends its
// TLS 1.3 session tickets in writes of their own after the handshake. With
// Nagle on, the second small write waits for the ACK of the first, and a
// Linux client that has left quick-ACK mode delays that ACK by up to
// 40 ms. Every new STARTTLS session then costs about 40 ms more than the
// server needs. Linux leaves quick-ACK mode on its own, so the option must
// be set again before every read (tcp(7)); Conn does that while armed.
//
// Both Petrel's SMTP client (smtpclient) and its load generator
// (internal/bench) use it: a load generator without it would measure the
// stall, not the server.
package quickack
