package wire_test

import (
	"testing"

	"github.com/petrel-mta/petrel/internal/wire"
)

func TestNewlineChecker(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"empty", nil, true},
		{"empty chunks", []string{"", "", ""}, true},
		{"one line", []string{"Subject: x\r\n"}, true},
		{"no newline at all", []string{"abc"}, true},
		{"CRLF lines", []string{"a\r\nb\r\n\r\nc\r\n"}, true},
		{"CR|LF", []string{"a\r", "\nb"}, true},
		{"CR|empty|LF", []string{"a\r", "", "\nb"}, true},
		{"CR alone then LF", []string{"\r", "\n"}, true},
		{"CRLF.CRLF is data", []string{"x\r\n.\r\nMAIL FROM:<a@b>\r\n"}, true},
		{"NUL", []string{"a\x00\r\n"}, true},
		{"bare LF", []string{"a\nb"}, false},
		{"LF first", []string{"\n"}, false},
		{"LF at a chunk start", []string{"a", "\nb"}, false},
		{"CRLF|LF", []string{"a\r\n", "\n"}, false},
		{"bare CR", []string{"a\rb"}, false},
		{"CR|x", []string{"a\r", "b"}, false},
		{"CR|CR LF", []string{"a\r", "\r\n"}, false},
		{"CR CR LF", []string{"\r\r\n"}, false},
		{"CR at the end", []string{"a\r"}, false},
		{"CR at the end after empty", []string{"a\r", ""}, false},
		{"LF.LF smuggling", []string{"body\n.\nMAIL FROM:<a@b>\r\n"}, false},
		{"LF.CRLF smuggling", []string{"body\n.\r\n"}, false},
		{"CR.CR smuggling", []string{"body\r.\r"}, false},
	}
	for _, tc := range cases {
		var chunks [][]byte
		var whole []byte
		for _, c := range tc.chunks {
			chunks = append(chunks, []byte(c))
			whole = append(whole, c...)
		}
		if got := checkChunks(chunks); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if got := refNewlines(whole); got != tc.want {
			t.Errorf("%s: reference says %v", tc.name, got)
		}
		// Every way of cutting the whole into three chunks agrees.
		for i := 0; i <= len(whole); i++ {
			for j := i; j <= len(whole); j++ {
				if got := checkChunks([][]byte{whole[:i], whole[i:j], whole[j:]}); got != tc.want {
					t.Errorf("%s cut at %d,%d: %v, want %v", tc.name, i, j, got, tc.want)
				}
			}
		}
	}

	// Check reports the line ends so far; End reports a trailing CR.
	var c wire.NewlineChecker
	if !c.Check([]byte("a\r")) || c.End() {
		t.Errorf("after %q: Check true and End false expected", "a\r")
	}
	if !c.Check([]byte("\n")) || !c.End() {
		t.Errorf("after %q: Check and End true expected", "\n")
	}
}
