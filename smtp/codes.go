package smtp

import (
	"fmt"
	"strconv"
)

// Basic reply codes (RFC 5321 §4.2.2 and the extensions that add codes), named
// by number and meaning.
const (
	C211SystemStatus       = 211
	C214Help               = 214
	C220ServiceReady       = 220
	C221Closing            = 221
	C235AuthOK             = 235
	C250OK                 = 250
	C251UserNotLocal       = 251
	C252CannotVerify       = 252
	C334AuthChallenge      = 334
	C354StartData          = 354
	C421ServiceUnavailable = 421
	C450MailboxUnavail     = 450
	C451LocalError         = 451
	C452InsufficientStore  = 452
	C454TLSUnavailable     = 454
	C455ParamsUnaccepted   = 455
	C500SyntaxError        = 500
	C501ArgSyntaxError     = 501
	C502NotImplemented     = 502
	C503BadSequence        = 503
	C504ParamNotImpl       = 504
	C530AuthRequired       = 530
	C534MechTooWeak        = 534
	C535AuthInvalid        = 535
	C538EncryptionRequired = 538
	C550MailboxUnavail     = 550
	C551UserNotLocal       = 551
	C552StorageExceeded    = 552
	C553MailboxNameInvalid = 553
	C554TransactionFailed  = 554
	C555ParamsUnknown      = 555
)

// EnhancedCode is an RFC 3463 enhanced status code: class.subject.detail.
type EnhancedCode struct {
	Class, Subject, Detail int
}

// Enhanced status codes used by Petrel (RFC 3463, RFC 5248 registry).
var (
	E200Undefined        = EnhancedCode{2, 0, 0}
	E210OtherAddress     = EnhancedCode{2, 1, 0}
	E215DestValid        = EnhancedCode{2, 1, 5}
	E260Other            = EnhancedCode{2, 6, 0}
	E270Security         = EnhancedCode{2, 7, 0}
	E300Other            = EnhancedCode{4, 0, 0}
	E430SystemOther      = EnhancedCode{4, 3, 0}
	E431SystemFull       = EnhancedCode{4, 3, 1}
	E432NotAccepting     = EnhancedCode{4, 3, 2}
	E453TooManyRcpts     = EnhancedCode{4, 5, 3}
	E470Security         = EnhancedCode{4, 7, 0}
	E510OtherAddress     = EnhancedCode{5, 1, 0}
	E511BadMailbox       = EnhancedCode{5, 1, 1}
	E513BadDestSyntax    = EnhancedCode{5, 1, 3}
	E517BadSenderSyntax  = EnhancedCode{5, 1, 7}
	E534MsgTooBig        = EnhancedCode{5, 3, 4}
	E550Protocol         = EnhancedCode{5, 5, 0}
	E551InvalidCommand   = EnhancedCode{5, 5, 1}
	E552SyntaxError      = EnhancedCode{5, 5, 2}
	E554InvalidArgs      = EnhancedCode{5, 5, 4}
	E560Media            = EnhancedCode{5, 6, 0}
	E567NonASCIIAddr     = EnhancedCode{5, 6, 7}
	E570Security         = EnhancedCode{5, 7, 0}
	E571DeliveryNotAuth  = EnhancedCode{5, 7, 1}
	E5711EncryptRequired = EnhancedCode{5, 7, 11}
)

// NoEnhancedCode marks a reply that carries no enhanced status code (the
// greeting and the EHLO/HELO replies, RFC 2034 §4).
var NoEnhancedCode = EnhancedCode{}

// IsZero reports whether e is NoEnhancedCode.
func (e EnhancedCode) IsZero() bool { return e == EnhancedCode{} }

// String formats e as "class.subject.detail".
func (e EnhancedCode) String() string {
	if e.IsZero() {
		return ""
	}
	return string(e.Append(make([]byte, 0, 12)))
}

// Append appends "class.subject.detail" to dst (nothing for the zero
// code), without allocating.
func (e EnhancedCode) Append(dst []byte) []byte {
	if e.IsZero() {
		return dst
	}
	dst = strconv.AppendInt(dst, int64(e.Class), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(e.Subject), 10)
	dst = append(dst, '.')
	return strconv.AppendInt(dst, int64(e.Detail), 10)
}

// ParseEnhancedCode parses "class.subject.detail" (RFC 3463 §2: class is 2, 4
// or 5; subject and detail are 1*3digit).
func ParseEnhancedCode(s string) (EnhancedCode, error) {
	var e EnhancedCode
	parts := [3]*int{&e.Class, &e.Subject, &e.Detail}
	rest := s
	for i := range parts {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 || j > 3 || (i == 0 && j != 1) {
			return EnhancedCode{}, fmt.Errorf("smtp: malformed enhanced status code %q", s)
		}
		*parts[i], _ = strconv.Atoi(rest[:j])
		rest = rest[j:]
		if i < 2 {
			if rest == "" || rest[0] != '.' {
				return EnhancedCode{}, fmt.Errorf("smtp: malformed enhanced status code %q", s)
			}
			rest = rest[1:]
		}
	}
	if rest != "" || (e.Class != 2 && e.Class != 4 && e.Class != 5) {
		return EnhancedCode{}, fmt.Errorf("smtp: malformed enhanced status code %q", s)
	}
	return e, nil
}
