package smtpserver_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-mta/petrel/smtpserver"
	"github.com/petrel-mta/petrel/smtptest"
)

// transcriptCases configures the golden transcripts in
// testdata/transcripts (format: smtptest.RunTranscript; each file names the
// requirement and RFC section it checks in its header). Files not listed
// run against the default test server (startEngine: STARTTLS offered, SIZE
// 10485760, hostname mx.example.test). Every file must be run: see
// TestTranscriptsAllListed.
var transcriptCases = map[string]struct {
	opts func(*smtpserver.Options)
	skip string // "BUG: ..." for a known engine bug, see the report
}{
	"submission_require_tls.txt": {opts: func(o *smtpserver.Options) { o.RequireTLS = true }},
	"three_bad_commands.txt":     {opts: func(o *smtpserver.Options) { o.MaxErrors = 3 }},
	// AUTH (RFC 4954): the backend knows alice, password "correct horse".
	"auth_plain.txt":           {opts: transcriptAuth},
	"auth_plain_challenge.txt": {opts: transcriptAuth},
	"auth_login.txt":           {opts: transcriptAuth},
	"auth_errors.txt":          {opts: transcriptAuth},
	"auth_injection.txt":       {opts: transcriptAuth},
	"auth_require_tls.txt": {opts: func(o *smtpserver.Options) {
		transcriptAuth(o)
		o.RequireTLS = true
	}},
	"auth_implicit_tls.txt": {opts: func(o *smtpserver.Options) {
		transcriptAuth(o)
		o.ImplicitTLS = true
	}},
}

// transcriptAuth makes the test backend authenticate alice (AUTH is then
// offered under TLS), without the delay after a failure.
func transcriptAuth(o *smtpserver.Options) {
	o.Backend.(*smtptest.Backend).Users = map[string]string{"alice": "correct horse"}
	o.AuthFailureDelay = -1
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "transcripts", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/transcripts")
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".txt"), func(t *testing.T) {
			t.Parallel()
			tc := transcriptCases[name]
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			script, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			srv, _, clientTLS := startEngine(t, tc.opts)
			smtptest.RunTranscript(t, srv.Addr, clientTLS, string(script))
		})
	}
}

// TestTranscriptsAllListed keeps transcriptCases and the files in step, so
// that a renamed file does not lose its options or its BUG note.
func TestTranscriptsAllListed(t *testing.T) {
	for name := range transcriptCases {
		if _, err := os.Stat(filepath.Join("testdata", "transcripts", name)); err != nil {
			t.Errorf("transcriptCases lists %s: %v", name, err)
		}
	}
}
