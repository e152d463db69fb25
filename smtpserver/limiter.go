package smtpserver

import (
	"net/netip"
	"sync"
)

// ConnLimiter bounds connections in total and per client IP address. One
// limiter may be shared by several Servers (Options.ConnLimiter) so that the
// bounds hold across listeners. It is safe for concurrent use.
type ConnLimiter struct {
	total, perIP int

	mu   sync.Mutex
	n    int
	byIP map[netip.Addr]int
}

// NewConnLimiter returns a limiter for at most total connections and at most
// perIP from one address. Zero values take DefaultMaxConns and
// DefaultMaxConnsPerIP.
func NewConnLimiter(total, perIP int) *ConnLimiter {
	setDefault(&total, DefaultMaxConns)
	setDefault(&perIP, DefaultMaxConnsPerIP)
	return &ConnLimiter{total: total, perIP: perIP, byIP: make(map[netip.Addr]int)}
}

// acquire takes a slot for ip (which may be invalid, for non-IP
// connections). It returns "" on success, or which limit was hit.
func (l *ConnLimiter) acquire(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.total {
		return "total"
	}
	if ip.IsValid() && l.byIP[ip] >= l.perIP {
		return "per-ip"
	}
	l.n++
	if ip.IsValid() {
		l.byIP[ip]++
	}
	return ""
}

func (l *ConnLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if ip.IsValid() {
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
	}
}
