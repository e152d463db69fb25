package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Report is the outcome of Run (Mode "load") or Hold (Mode "idle"). It is
// JSON-tagged for scripts (petrel bench --json); durations are in seconds,
// latencies in milliseconds.
type Report struct {
	Mode     string `json:"mode"`
	Server   string `json:"server"`
	Security string `json:"security"` // plaintext, starttls, implicit-tls
	// QuickAck: TCP_QUICKACK was re-armed around each TLS handshake
	// (internal/quickack); false in plaintext and with --no-quickack.
	QuickAck bool `json:"quickack"`
	// QuickAcked counts the sessions set up (as Sessions) whose first
	// reads inside TLS, where the server's session tickets come, re-armed
	// quick ACKs: with QuickAck, every TLS session.
	QuickAcked uint64 `json:"quickack_sessions"`

	// Load (Run) only.
	Conns          int     `json:"conns,omitempty"`
	MsgsPerConn    int     `json:"msgs_per_conn,omitempty"`
	Size           int     `json:"size,omitempty"`  // octets per message
	Rcpts          int     `json:"rcpts,omitempty"` // recipients per message
	Pipelining     bool    `json:"pipelining"`      // used (asked for and offered)
	BDAT           bool    `json:"bdat"`            // used (asked for and CHUNKING offered)
	Messages       uint64  `json:"messages"`        // accepted: final 250
	Failed         uint64  `json:"messages_failed"` // transactions without the final 250
	Bytes          uint64  `json:"bytes"`           // message octets accepted
	MessagesPerSec float64 `json:"messages_per_s"`

	Duration       float64  `json:"duration_s"`
	Sessions       uint64   `json:"sessions"` // set up: connect, TLS, EHLO
	SessionsPerSec float64  `json:"sessions_per_s"`
	Resumed        uint64   `json:"sessions_resumed"` // TLS sessions resumed (--resume)
	Latency        *Latency `json:"latency,omitempty"`

	Idle *IdleStats `json:"idle,omitempty"` // Hold only

	Errors       map[string]uint64 `json:"errors"` // by Kind name; empty when none
	ErrorsTotal  uint64            `json:"errors_total"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"` // the first error of each kind
	TLS          []TLSSeen         `json:"tls"`                     // most frequent first; empty in plaintext
	Certificate  string            `json:"certificate,omitempty"`   // what the certificate check said
	Aborted      string            `json:"aborted,omitempty"`       // why the run was given up
	Interrupted  bool              `json:"interrupted"`             // ended by a signal (ctx)
}

// Latency digests the latencies of a run.
type Latency struct {
	// Final: from the last octet of the message written to its final
	// reply (the server's commit time, as a sender sees it).
	Final Summary `json:"final_reply"`
	// Message: from MAIL written to the final reply.
	Message Summary `json:"message"`
	// Setup: from connect to the reply to the last EHLO (TLS included).
	Setup Summary `json:"session_setup"`
}

// TLSParams are what a TLS session negotiated.
type TLSParams struct {
	Version string `json:"version"` // TLSv1.3
	Cipher  string `json:"cipher"`  // TLS_AES_128_GCM_SHA256
	Group   string `json:"group"`   // X25519MLKEM768
}

func (p TLSParams) String() string { return p.Version + " " + p.Cipher + " " + p.Group }

// TLSSeen counts the sessions that negotiated some TLSParams.
type TLSSeen struct {
	TLSParams
	Sessions uint64 `json:"sessions"`
}

// IdleStats are Hold's counts.
type IdleStats struct {
	Target  int     `json:"target"`  // sessions asked for (--idle)
	Open    int     `json:"open"`    // open when the hold ended
	Peak    int     `json:"peak"`    // most open at once
	Dropped uint64  `json:"dropped"` // sessions lost while held (and replaced)
	NoopSec float64 `json:"noop_interval_s"`
	RampSec float64 `json:"ramp_s"` // until all were open at once; 0 if never
}

// WriteText writes the report for people, a few aligned lines.
func (rep *Report) WriteText(w io.Writer) {
	sec := rep.Security
	if rep.Mode == "idle" {
		fmt.Fprintf(w, "idle:       %d of %d sessions open at the end (peak %d), %d dropped, held %.1fs (%s to %s)\n",
			rep.Idle.Open, rep.Idle.Target, rep.Idle.Peak, rep.Idle.Dropped, rep.Duration, sec, rep.Server)
		ramp := "not all open at once"
		if rep.Idle.RampSec > 0 {
			ramp = fmt.Sprintf("all open after %.1fs: %.1f sessions/s", rep.Idle.RampSec, float64(rep.Idle.Target)/rep.Idle.RampSec)
		}
		fmt.Fprintf(w, "sessions:   %d set up, %s%s\n", rep.Sessions, ramp, resumed(rep))
	} else {
		fmt.Fprintf(w, "messages:   %d accepted, %d failed in %.3fs: %.1f msg/s (%d octets, %d rcpt each; %d conns × %d msgs; %s to %s%s)\n",
			rep.Messages, rep.Failed, rep.Duration, rep.MessagesPerSec, rep.Size, rep.Rcpts, rep.Conns, rep.MsgsPerConn,
			sec, rep.Server, features(rep))
		fmt.Fprintf(w, "sessions:   %d set up: %.1f sessions/s%s%s\n", rep.Sessions, rep.SessionsPerSec, resumed(rep), quickAck(rep))
	}
	for i, t := range rep.TLS {
		label := "tls:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-11s %s (%d sessions)\n", label, t.TLSParams, t.Sessions)
	}
	if rep.Certificate != "" {
		fmt.Fprintf(w, "cert:       %s\n", rep.Certificate)
	}
	if l := rep.Latency; l != nil {
		if rep.Mode != "idle" {
			fmt.Fprintf(w, "latency:    final reply   %s\n", l.Final)
			fmt.Fprintf(w, "            whole message %s\n", l.Message)
			fmt.Fprintf(w, "            session setup %s\n", l.Setup)
		} else {
			fmt.Fprintf(w, "latency:    session setup %s\n", l.Setup)
		}
	}
	if rep.ErrorsTotal == 0 {
		fmt.Fprintln(w, "errors:     none")
	} else {
		kinds := make([]string, 0, len(rep.Errors))
		for k := range rep.Errors {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		fmt.Fprintf(w, "errors:     %d\n", rep.ErrorsTotal)
		for _, k := range kinds {
			fmt.Fprintf(w, "  %-9s %d  e.g. %s\n", k, rep.Errors[k], oneLine(rep.ErrorSamples[k]))
		}
	}
	if rep.Aborted != "" {
		fmt.Fprintf(w, "aborted:    %s\n", rep.Aborted)
	}
	if rep.Interrupted && rep.Mode != "idle" {
		fmt.Fprintln(w, "interrupted: the run was stopped before its end")
	}
}

func (s Summary) String() string {
	if s.Count == 0 {
		return "(no samples)"
	}
	return fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f ms", s.P50Ms, s.P90Ms, s.P99Ms, s.MaxMs, s.MeanMs)
}

// quickAck says when a TLS run did not re-arm quick ACKs: its session
// set-up times may hold a delayed-ACK stall of the server's.
func quickAck(rep *Report) string {
	if rep.Security == Plaintext.String() || rep.QuickAck {
		return ""
	}
	return " (quick ACKs not re-armed: OpenSSL servers may stall ≈40 ms per handshake)"
}

func resumed(rep *Report) string {
	if rep.Resumed == 0 {
		return ""
	}
	return fmt.Sprintf(", %d resumed", rep.Resumed)
}

func features(rep *Report) string {
	var f []string
	if rep.Pipelining {
		f = append(f, "PIPELINING")
	}
	if rep.BDAT {
		f = append(f, "BDAT")
	}
	if len(f) == 0 {
		return ""
	}
	return ", " + strings.Join(f, "+")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
