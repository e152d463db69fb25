package smtp

import (
	"crypto/tls"
	"strings"
)

// TLSVersionName names a TLS version as Postfix and OpenSSL write it in
// logs and Received headers: "TLSv1.2", "TLSv1.3".
func TLSVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return strings.Replace(tls.VersionName(v), "TLS ", "TLSv", 1)
}

// GroupName names a key-exchange group as the IANA TLS registry does
// ("P-256", "X25519", "X25519MLKEM768"), where crypto/tls says "CurveP256".
// The zero group (none negotiated) is "".
func GroupName(g tls.CurveID) string {
	switch g {
	case 0:
		return ""
	case tls.CurveP256:
		return "P-256"
	case tls.CurveP384:
		return "P-384"
	case tls.CurveP521:
		return "P-521"
	}
	return g.String()
}
