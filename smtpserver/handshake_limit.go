package smtpserver

import (
	"context"
	"net/netip"
	"sync"
)

// handshakeLimiter keeps peers that start TLS handshakes and stall from
// starving everyone else, which would push opportunistic senders back to
// plaintext. Two bounds, both waited for (a handshake is delayed, never
// refused with 454, which would be a downgrade):
//   - per peer (an IPv4 address, an IPv6 /64): handshakes in progress,
//     from STARTTLS (or connect, for implicit TLS) to the end of the
//     handshake, so idle peers only hold their own slots;
//   - in total: handshakes doing cryptographic work, from the ClientHello
//     to the end, so the CPU cost is bounded.
type handshakeLimiter struct {
	crypto  chan struct{}
	perPeer int

	mu    sync.Mutex
	peers map[netip.Prefix]*peerSlots
}

type peerSlots struct {
	ch   chan struct{}
	refs int
}

// DefaultMaxHandshakesPerIP bounds the handshakes in progress from one peer.
const DefaultMaxHandshakesPerIP = 8

func newHandshakeLimiter(total, perPeer int) *handshakeLimiter {
	return &handshakeLimiter{crypto: make(chan struct{}, total), perPeer: perPeer, peers: make(map[netip.Prefix]*peerSlots)}
}

func peerPrefix(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// acquirePeer waits for a slot of ip's peer; the release function must be
// called once. An invalid ip (not TCP) is not limited.
func (l *handshakeLimiter) acquirePeer(ctx context.Context, ip netip.Addr) (release func(), ok bool) {
	if !ip.IsValid() {
		return func() {}, true
	}
	key := peerPrefix(ip)
	l.mu.Lock()
	ps := l.peers[key]
	if ps == nil {
		ps = &peerSlots{ch: make(chan struct{}, l.perPeer)}
		l.peers[key] = ps
	}
	ps.refs++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if ps.refs--; ps.refs == 0 {
			delete(l.peers, key)
		}
		l.mu.Unlock()
	}
	select {
	case ps.ch <- struct{}{}:
		return func() { <-ps.ch; done() }, true
	case <-ctx.Done():
		done()
		return nil, false
	}
}

// acquireCrypto waits for a global slot.
func (l *handshakeLimiter) acquireCrypto(ctx context.Context) bool {
	select {
	case l.crypto <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l *handshakeLimiter) releaseCrypto() { <-l.crypto }
