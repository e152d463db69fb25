package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// original is what is returned of the original message.
type original struct {
	// header is the header section with CRLF line ends, each line complete;
	// empty for a message that starts with its body.
	header []byte
	// whole is the whole message with CRLF line ends when it was asked for
	// (RET=FULL in a report of failure) and can be returned: no larger than
	// the limit, no NUL, no line longer than 998 octets. Nil otherwise.
	whole []byte
	// tooBig tells that the whole message was asked for but is larger than
	// the limit.
	tooBig bool
	// unfit tells that the whole message was asked for but cannot be a
	// message/rfc822 part: it has a NUL or a line over 998 octets.
	unfit bool
}

// readOriginal reads what is returned of the message from r: the header
// section, and when full the whole message, reading at most limit+1 octets.
func readOriginal(r io.Reader, full bool, limit int64) (*original, error) {
	if !full {
		h, err := readHeader(r, limit)
		if err != nil {
			return nil, err
		}
		return &original{header: h}, nil
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	o := &original{}
	if int64(len(data)) > limit {
		o.tooBig = true
		data = data[:limit]
		o.header = headerSection(crlf(data), true)
		return o, nil
	}
	data = crlf(data)
	o.header = headerSection(data, false)
	if embeddable(data) {
		o.whole = data
	} else {
		o.unfit = true
	}
	return o, nil
}

// readHeader reads the header section of a message, up to its empty line
// (RFC 5322 §2.1), at most limit octets of it; a longer one is cut after its
// last complete line.
func readHeader(r io.Reader, limit int64) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, limit+1))
	var data []byte
	midLine := false // the last read ended inside a line longer than the buffer
	for {
		line, err := br.ReadSlice('\n')
		data = append(data, line...)
		if errors.Is(err, bufio.ErrBufferFull) {
			midLine = true
			continue
		}
		if err == nil && !midLine && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			break // the empty line that ends the header section
		}
		midLine = false
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	cut := int64(len(data)) > limit
	if cut {
		data = data[:limit]
	}
	return headerSection(crlf(data), cut), nil
}

// crlf makes every line end in CRLF: a bare LF or a bare CR becomes CRLF.
func crlf(b []byte) []byte {
	if !bytes.ContainsAny(b, "\r\n") {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}

// headerSection returns the header section of a message with CRLF line
// ends, without the empty line that ends it. A message without an empty line
// is all header; when cut (the message was read only in part) its last,
// incomplete line is dropped, else a missing final CRLF is added.
func headerSection(msg []byte, cut bool) []byte {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return nil
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2]
	}
	if bytes.HasSuffix(msg, []byte("\r\n")) {
		return msg
	}
	if cut {
		i := bytes.LastIndex(msg, []byte("\r\n"))
		if i < 0 {
			return nil
		}
		return msg[:i+2]
	}
	return append(msg[:len(msg):len(msg)], '\r', '\n')
}

// embeddable reports whether data (with CRLF line ends) can be a body part
// with the identity encodings 7bit or 8bit (RFC 2045 §2.7, §2.8), as
// message/rfc822 and message/global must be sent here: no NUL, and no line
// longer than 998 octets.
func embeddable(data []byte) bool {
	if bytes.IndexByte(data, 0) >= 0 {
		return false
	}
	for len(data) > 0 {
		i := bytes.Index(data, []byte("\r\n"))
		if i < 0 {
			i = len(data)
		}
		if i > hardLine {
			return false
		}
		data = data[min(i+2, len(data)):]
	}
	return true
}

func has8Bit(data []byte) bool {
	for _, c := range data {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
