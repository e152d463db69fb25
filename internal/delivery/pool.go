package delivery

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/petrel-mta/petrel/smtpclient"
)

// connKey names what a cached connection can be reused for: the same
// address, reached for the same host name with the same TLS requirements
// and credentials.
type connKey struct {
	addr, host, serverName, user string
	level                        smtpclient.Level
	lmtp                         bool
}

type idleConn struct {
	c     *smtpclient.Client
	msgs  int // transactions carried so far
	timer *time.Timer
}

// pool caches idle connections per connKey. A connection is in the pool
// only while idle, so one message at a time uses it.
type pool struct {
	idleTimeout time.Duration
	maxMsgs     int
	log         *slog.Logger

	mu     sync.Mutex
	idle   map[connKey][]*idleConn
	used   map[*smtpclient.Client]int // messages carried by connections in use
	closed bool
}

func newPool(idle time.Duration, maxMsgs int, log *slog.Logger) *pool {
	return &pool{idleTimeout: idle, maxMsgs: maxMsgs, log: log,
		idle: map[connKey][]*idleConn{}, used: map[*smtpclient.Client]int{}}
}

// get takes an idle connection for key out of the pool, or returns nil.
func (p *pool) get(key connKey) *smtpclient.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[key]
	if len(l) == 0 {
		return nil
	}
	ic := l[len(l)-1]
	if len(l) == 1 {
		delete(p.idle, key)
	} else {
		p.idle[key] = l[:len(l)-1]
	}
	ic.timer.Stop() // if it fired, its func finds nothing to remove
	p.used[ic.c] = ic.msgs
	return ic.c
}

// put returns c after a transaction: cached for the next message, or
// closed with QUIT when it has carried enough or caching is off.
func (p *pool) put(key connKey, c *smtpclient.Client) {
	p.mu.Lock()
	msgs := p.used[c] + 1
	delete(p.used, c)
	if p.closed || p.idleTimeout < 0 || msgs >= p.maxMsgs {
		p.mu.Unlock()
		quit(c)
		return
	}
	ic := &idleConn{c: c, msgs: msgs}
	p.idle[key] = append(p.idle[key], ic)
	ic.timer = time.AfterFunc(p.idleTimeout, func() {
		if p.remove(key, ic) {
			quit(c)
		}
	})
	p.mu.Unlock()
}

// forget drops the bookkeeping of a connection that is closed while in use.
func (p *pool) forget(c *smtpclient.Client) {
	p.mu.Lock()
	delete(p.used, c)
	p.mu.Unlock()
}

func (p *pool) remove(key connKey, ic *idleConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[key]
	for i, x := range l {
		if x == ic {
			l = append(l[:i:i], l[i+1:]...)
			if len(l) == 0 {
				delete(p.idle, key)
			} else {
				p.idle[key] = l
			}
			return true
		}
	}
	return false
}

// close quits every idle connection and stops caching.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*idleConn
	for _, l := range p.idle {
		all = append(all, l...)
	}
	p.idle = map[connKey][]*idleConn{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, ic := range all {
		ic.timer.Stop()
		wg.Go(func() { quit(ic.c) })
	}
	wg.Wait()
}

func quit(c *smtpclient.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.Quit(ctx)
}

// limiter bounds deliveries in progress in total and per domain.
type limiter struct {
	total  chan struct{}
	perDom int

	mu   sync.Mutex
	doms map[string]*domSem
}

type domSem struct {
	ch   chan struct{}
	refs int
}

func newLimiter(total, perDom int) *limiter {
	return &limiter{total: make(chan struct{}, total), perDom: perDom, doms: map[string]*domSem{}}
}

// acquire waits for a slot for dom and one in total, or for ctx to end.
func (l *limiter) acquire(ctx context.Context, dom string) (release func(), err error) {
	l.mu.Lock()
	s := l.doms[dom]
	if s == nil {
		s = &domSem{ch: make(chan struct{}, l.perDom)}
		l.doms[dom] = s
	}
	s.refs++
	l.mu.Unlock()
	unref := func() {
		l.mu.Lock()
		if s.refs--; s.refs == 0 {
			delete(l.doms, dom)
		}
		l.mu.Unlock()
	}
	select {
	case s.ch <- struct{}{}:
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
	select {
	case l.total <- struct{}{}:
	case <-ctx.Done():
		<-s.ch
		unref()
		return nil, ctx.Err()
	}
	return func() {
		<-l.total
		<-s.ch
		unref()
	}, nil
}
