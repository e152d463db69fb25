package interop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSwaksSTARTTLS sends a message with swaks over STARTTLS (RFC 3207) to
// the MX listener. --tls makes swaks give up if STARTTLS is not offered or
// fails; --tls-verify with the daemon's certificate as CA makes it verify
// the chain. --data @file sends the file as the DATA content: swaks
// dot-stuffs it and ends it with CRLF "." CRLF, so the file holds the
// message without its final CRLF, and the delivered message must be the
// file plus that CRLF, byte for byte.
func TestSwaksSTARTTLS(t *testing.T) {
	t.Parallel()
	swaks := requireTool(t, "swaks")
	d := startDaemon(t)
	msg := testMessage(t, "u1@localhost")
	file := writeFile(t, "message.eml", swaksData(msg))
	out, err := runClient(t, nil, swaks,
		"--server", "127.0.0.1", "--port", Port(t, d.MX),
		"--ehlo", "client.localhost",
		"--tls", "--tls-verify", "--tls-ca-path", d.CertFile(),
		"--from", "a@example.org", "--to", "u1@localhost",
		"--data", "@"+file,
		"--timeout", "30s",
	)
	if err != nil {
		t.Fatalf("swaks failed: %v\n%s", err, out)
	}
	checkDelivered(t, d.waitMessage(t, "u1", deliveryTimeout), msg)
}

// swaksData is the --data file content that makes swaks send msg, which
// ends in CRLF: swaks appends CRLF "." itself (and removes a trailing "."
// line, which msg does not have), so the file has msg without its last
// CRLF.
func swaksData(msg []byte) []byte {
	return bytes.TrimSuffix(msg, []byte("\r\n"))
}

// pySend is a Python script that sends the bytes of a file with smtplib:
// over STARTTLS (RFC 3207) with "starttls", or with implicit TLS (RFC 8314)
// with "ssl". sendmail with a bytes message sends it unchanged but for
// dot-stuffing (RFC 5321 §4.5.2). It verifies the certificate against the
// given CA file and the host name (an IP address SAN here). With a user and
// password after the file, it authenticates (SMTP.login, inside TLS).
const pySend = `
import smtplib, ssl, sys
mode, host, port, cafile, sender, rcpt, path = sys.argv[1:8]
auth = sys.argv[8:10]
ctx = ssl.create_default_context(cafile=cafile)
data = open(path, 'rb').read()
if mode == 'ssl':
    s = smtplib.SMTP_SSL(host, int(port), local_hostname='client.localhost', context=ctx, timeout=30)
else:
    s = smtplib.SMTP(host, int(port), local_hostname='client.localhost', timeout=30)
s.set_debuglevel(1)
if mode == 'starttls':
    s.ehlo()
    if not s.has_extn('starttls'):
        sys.exit('server does not offer STARTTLS')
    code, resp = s.starttls(context=ctx)
    if code != 220:
        sys.exit('STARTTLS refused: %d %r' % (code, resp))
    s.ehlo()
if not isinstance(s.sock, ssl.SSLSocket):
    sys.exit('not a TLS connection')
print('TLS', s.sock.version(), s.sock.cipher())
if auth:
    s.login(auth[0], auth[1])
refused = s.sendmail(sender, [rcpt], data, mail_options=['BODY=8BITMIME'])
if refused:
    sys.exit('refused: %r' % (refused,))
s.quit()
print('sent')
`

// TestPythonSmtplibSTARTTLS sends a message with Python's smtplib over
// STARTTLS (RFC 3207): SMTP.starttls with a context that verifies the
// daemon's certificate, then sendmail with the message as bytes.
func TestPythonSmtplibSTARTTLS(t *testing.T) {
	t.Parallel()
	python := requireTool(t, "python3")
	d := startDaemon(t)
	msg := testMessage(t, "u2@localhost")
	file := writeFile(t, "message.eml", msg)
	out, err := runClient(t, nil, python, "-c", pySend,
		"starttls", "127.0.0.1", Port(t, d.MX), d.CertFile(), "a@example.org", "u2@localhost", file)
	if err != nil {
		t.Fatalf("python3 smtplib failed: %v\n%s", err, out)
	}
	checkDelivered(t, d.waitMessage(t, "u2", deliveryTimeout), msg)
}

// TestOpenSSLSClientSTARTTLS drives `openssl s_client -starttls smtp` (RFC
// 3207) by hand: s_client does the first EHLO and STARTTLS and verifies the
// certificate (chain and host name, -verify_return_error), then the test
// writes each command on stdin, reads each reply on stdout, and does the
// dot-stuffing itself (RFC 5321 §4.5.2). -quiet and -nocommands keep
// s_client from acting on lines such as "RCPT" (renegotiate) or "Q".
func TestOpenSSLSClientSTARTTLS(t *testing.T) {
	t.Parallel()
	openssl := requireTool(t, "openssl")
	d := startDaemon(t)
	msg := testMessage(t, "u3@localhost")

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	args := []string{"s_client",
		"-starttls", "smtp", "-name", "client.localhost",
		"-connect", d.MX, "-servername", "localhost",
		"-CAfile", d.CertFile(), "-verify_return_error", "-verify_hostname", "localhost",
		"-quiet", "-nocommands",
	}
	cmd := exec.CommandContext(ctx, openssl, args...)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	var transcript syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("openssl %s\ntranscript (C: client, S: server):\n%s\nstderr:\n%s",
				strings.Join(args, " "), transcript.String(), stderr.String())
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cancel()
		_ = cmd.Wait()
	}()

	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		r := bufio.NewReader(stdout)
		for {
			l, err := r.ReadString('\n')
			if l != "" {
				transcript.Write([]byte("S: " + l))
				lines <- l
			}
			if err != nil {
				if err != io.EOF {
					fmt.Fprintf(&transcript, "read error: %v\n", err)
				}
				return
			}
		}
	}()
	// reply reads one (possibly multiline) reply and checks its code.
	reply := func(want string) {
		t.Helper()
		timer := time.NewTimer(30 * time.Second)
		defer timer.Stop()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("s_client closed its output while waiting for %s", want)
				}
				if len(l) < 4 || l[:3] != want {
					t.Fatalf("want reply %s, got %q", want, l)
				}
				if l[3] == ' ' || l[3] == '\r' || l[3] == '\n' {
					return
				}
			case <-timer.C:
				t.Fatalf("no reply %s within 30s", want)
			}
		}
	}
	send := func(s string) {
		t.Helper()
		transcript.Write([]byte("C: " + s))
		if _, err := io.WriteString(stdin, s); err != nil {
			t.Fatalf("writing to s_client: %v", err)
		}
	}

	// s_client has consumed the greeting, its EHLO and STARTTLS reply;
	// the server now waits for the client's first command over TLS.
	send("EHLO client.localhost\r\n")
	reply("250")
	send("MAIL FROM:<a@example.org> BODY=8BITMIME\r\n")
	reply("250")
	send("RCPT TO:<u3@localhost>\r\n")
	reply("250")
	send("DATA\r\n")
	reply("354")
	var data bytes.Buffer
	for _, l := range bytes.SplitAfter(msg, []byte("\r\n")) {
		if len(l) > 0 && l[0] == '.' {
			data.WriteByte('.')
		}
		data.Write(l)
	}
	data.WriteString(".\r\n")
	send(data.String())
	reply("250")
	send("QUIT\r\n")
	reply("221")

	checkDelivered(t, d.waitMessage(t, "u3", deliveryTimeout), msg)
}

// TestCurlSTARTTLS uploads a message with curl's SMTP support over STARTTLS
// (RFC 3207): --ssl-reqd fails unless STARTTLS succeeds, and the URL names
// localhost (resolved to 127.0.0.1 with --resolve) so that curl verifies
// the certificate's name against the daemon's CA file.
func TestCurlSTARTTLS(t *testing.T) {
	t.Parallel()
	curl := requireTool(t, "curl")
	d := startDaemon(t)
	msg := testMessage(t, "u4@localhost")
	file := writeFile(t, "message.eml", msg)
	port := Port(t, d.MX)
	out, err := runClient(t, nil, curl,
		"--silent", "--show-error", "--verbose",
		"--max-time", "30",
		"--ssl-reqd", "--cacert", d.CertFile(),
		"--resolve", "localhost:"+port+":127.0.0.1",
		"--mail-from", "a@example.org", "--mail-rcpt", "u4@localhost",
		"--upload-file", file,
		"smtp://localhost:"+port+"/client.localhost",
	)
	if err != nil {
		t.Fatalf("curl failed: %v\n%s", err, out)
	}
	checkDelivered(t, d.waitMessage(t, "u4", deliveryTimeout), msg)
}

// TestMsmtpSTARTTLS sends a message with msmtp over STARTTLS (RFC 3207),
// configured on the command line only (--host makes msmtp read no
// configuration file) and verifying the certificate with the daemon's cert
// as trust file. The message already has From, Date and Message-ID, so
// msmtp adds no header.
func TestMsmtpSTARTTLS(t *testing.T) {
	t.Parallel()
	msmtp := requireTool(t, "msmtp")
	d := startDaemon(t)
	msg := testMessage(t, "u5@localhost")
	out, err := runClient(t, msg, msmtp,
		"--host=127.0.0.1", "--port="+Port(t, d.MX),
		"--domain=client.localhost",
		"--tls=on", "--tls-starttls=on", "--tls-trust-file="+d.CertFile(),
		"--auth=off", "--from=a@example.org",
		"--timeout=30",
		"--debug",
		"--", "u5@localhost",
	)
	if err != nil {
		t.Fatalf("msmtp failed: %v\n%s", err, out)
	}
	checkDelivered(t, d.waitMessage(t, "u5", deliveryTimeout), msg)
}
