package bench

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// lineLen is the length of the body's lines, without CRLF: what MIME
// encoders write (RFC 2045 §6.8 base64 and quoted-printable lines).
const lineLen = 76

// Message returns a message of exactly size octets: an RFC 5322 header,
// then a body of printable ASCII lines of lineLen characters (the last
// ones shorter) ending in CRLF. No line starts with a dot and there is no
// bare CR or LF, so the octets go on the wire as they are after DATA (no
// dot-stuffing) and after BDAT, and the server receives exactly size
// octets. It is made once per run and sent as is in every transaction.
// It fails when size cannot hold the header.
func Message(size int, from, to string, now time.Time) ([]byte, error) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	head := func(pad string) string {
		return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: petrel bench%s\r\nDate: %s\r\n"+
			"Message-ID: <%s@petrel.bench>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
			from, to, pad, now.Format(time.RFC1123Z), hex.EncodeToString(id))
	}
	h := head("")
	if size < len(h) {
		return nil, fmt.Errorf("--size %d is smaller than the message header (%d octets)", size, len(h))
	}
	if size-len(h) == 1 {
		h = head(".") // no line fits in one octet
	}
	const text = "The quick brown fox jumps over the lazy dog; PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS! 0123456789 "
	out := make([]byte, 0, size)
	out = append(out, h...)
	rest := size - len(h)
	for n := 0; rest > 0; n++ {
		ll := min(lineLen, rest-2)
		if rest-(ll+2) == 1 {
			ll-- // never leave a single octet
		}
		for i := range ll {
			out = append(out, text[(n*7+i)%len(text)])
		}
		out = append(out, '\r', '\n')
		rest -= ll + 2
	}
	return out, nil
}
