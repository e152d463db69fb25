package interop

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSubmissionRequiresSTARTTLS checks the submission listener (RFC 6409)
// with swaks: it offers STARTTLS and answers MAIL before it with 530 5.7.0
// (RFC 3207 §4: "Must issue a STARTTLS command first"), storing nothing;
// after STARTTLS, MAIL without AUTH gets 530 5.7.0 "Authentication
// required" (RFC 6409 §4.3, RFC 4954 §6; S-SUB-11); with AUTH PLAIN the
// same message goes through.
func TestSubmissionRequiresSTARTTLS(t *testing.T) {
	t.Parallel()
	swaks := requireTool(t, "swaks")
	d := startDaemon(t)
	msg := testMessage(t, "u7@localhost")
	file := writeFile(t, "message.eml", swaksData(msg))
	common := []string{
		"--server", "127.0.0.1", "--port", Port(t, d.Submission),
		"--ehlo", "client.localhost",
		"--from", "a@example.org", "--to", "u7@localhost",
		"--data", "@" + file,
		"--timeout", "30s",
	}

	// Plaintext: swaks must fail at MAIL with 530 5.7.0.
	out, err := runClient(t, nil, swaks, common...)
	if err == nil {
		t.Fatalf("swaks without TLS succeeded on the submission port; want 530 5.7.0 to MAIL\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^<- +250[- ]STARTTLS\r?$`).MatchString(out) {
		t.Errorf("EHLO on the submission port before TLS does not offer STARTTLS\n%s", out)
	}
	if !regexp.MustCompile(`(?s)-> MAIL FROM:<a@example\.org>[^\n]*\n<\*\* +530 5\.7\.0 `).MatchString(out) {
		t.Errorf("want MAIL FROM answered with 530 5.7.0 before STARTTLS\n%s", out)
	}
	if strings.Contains(out, "-> DATA") || strings.Contains(out, "~> DATA") {
		t.Errorf("swaks got as far as DATA without TLS\n%s", out)
	}
	time.Sleep(200 * time.Millisecond)
	if names := listFiles(d.Mailbox("u7")); len(names) != 0 {
		t.Fatalf("a message was stored from the refused plaintext session: %v", names)
	}

	// STARTTLS without AUTH: refused at MAIL.
	tlsArgs := append(common, "--tls", "--tls-verify", "--tls-ca-path", d.CertFile())
	out, err = runClient(t, nil, swaks, tlsArgs...)
	if err == nil || !regexp.MustCompile(`(?s)~> MAIL FROM:<a@example\.org>[^\n]*\n<~\* +530 5\.7\.0 Authentication required`).MatchString(out) {
		t.Fatalf("want MAIL FROM inside TLS without AUTH answered with 530 5.7.0 Authentication required (err %v)\n%s", err, out)
	}

	// With STARTTLS and AUTH the same message goes through.
	out, err = runClient(t, nil, swaks, append(tlsArgs,
		"--auth", "PLAIN", "--auth-user", SubmitUser, "--auth-password", SubmitPassword)...)
	if err != nil {
		t.Fatalf("swaks with STARTTLS failed on the submission port: %v\n%s", err, out)
	}
	checkDelivered(t, d.waitMessage(t, "u7", deliveryTimeout), msg)
}

// TestSubmissionsImplicitTLS sends a message to the submissions listener,
// which speaks TLS from the first byte (RFC 8314 §3.3), with swaks
// --tls-on-connect and with Python's smtplib.SMTP_SSL, each verifying the
// daemon's certificate.
func TestSubmissionsImplicitTLS(t *testing.T) {
	t.Parallel()
	t.Run("swaks", func(t *testing.T) {
		t.Parallel()
		swaks := requireTool(t, "swaks")
		d := startDaemon(t)
		msg := testMessage(t, "u8@localhost")
		file := writeFile(t, "message.eml", swaksData(msg))
		out, err := runClient(t, nil, swaks,
			"--server", "127.0.0.1", "--port", Port(t, d.Submits),
			"--ehlo", "client.localhost",
			"--tls-on-connect", "--tls-verify", "--tls-ca-path", d.CertFile(),
			"--auth", "LOGIN", "--auth-user", SubmitUser, "--auth-password", SubmitPassword,
			"--from", "a@example.org", "--to", "u8@localhost",
			"--data", "@"+file,
			"--timeout", "30s",
		)
		if err != nil {
			t.Fatalf("swaks --tls-on-connect failed: %v\n%s", err, out)
		}
		if !strings.Contains(out, "=== TLS started with cipher TLSv1.") {
			t.Errorf("swaks does not report a TLS session\n%s", out)
		}
		checkDelivered(t, d.waitMessage(t, "u8", deliveryTimeout), msg)
	})
	t.Run("python", func(t *testing.T) {
		t.Parallel()
		python := requireTool(t, "python3")
		d := startDaemon(t)
		msg := testMessage(t, "u9@localhost")
		file := writeFile(t, "message.eml", msg)
		out, err := runClient(t, nil, python, "-c", pySend,
			"ssl", "127.0.0.1", Port(t, d.Submits), d.CertFile(), "a@example.org", "u9@localhost", file,
			SubmitUser, SubmitPassword)
		if err != nil {
			t.Fatalf("python3 smtplib.SMTP_SSL failed: %v\n%s", err, out)
		}
		checkDelivered(t, d.waitMessage(t, "u9", deliveryTimeout), msg)
	})
}
