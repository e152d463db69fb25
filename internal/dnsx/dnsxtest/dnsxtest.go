// Package dnsxtest runs a tiny authoritative DNS server on 127.0.0.1 for
// hermetic tests of MX resolution: give it records in zone-file syntax and
// point a resolver at Server.Addr (dnsx.New(srv.Addr)).
package dnsxtest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers queries over UDP from a fixed set of records. A name it
// holds records for but not of the type asked gets an empty NOERROR answer
// (NODATA); any other name NXDOMAIN; a name marked with ServFail, SERVFAIL.
type Server struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	mu       sync.Mutex
	rrs      []dns.RR
	servfail map[string]bool
	queries  []string
}

// NewServer starts a server holding records, each one line of zone-file
// syntax with an absolute owner name, e.g.
//
//	"example.test. 300 IN MX 10 mx1.example.test."
//	"mx1.example.test. 300 IN A 127.0.0.1"
//
// It stops when the test ends.
func NewServer(t testing.TB, records ...string) *Server {
	t.Helper()
	s := &Server{servfail: map[string]bool{}}
	for _, r := range records {
		s.Add(t, r)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dnsxtest: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return s
}

// Add adds a record (zone-file syntax).
func (s *Server) Add(t testing.TB, record string) {
	t.Helper()
	rr, err := dns.NewRR(record)
	if err != nil || rr == nil {
		t.Fatalf("dnsxtest: bad record %q: %v", record, err)
	}
	s.mu.Lock()
	s.rrs = append(s.rrs, rr)
	s.mu.Unlock()
}

// ServFail makes queries for name (absolute, with the trailing dot) fail
// with SERVFAIL: a temporary DNS failure.
func (s *Server) ServFail(name string) {
	s.mu.Lock()
	s.servfail[strings.ToLower(name)] = true
	s.mu.Unlock()
}

// Queries returns the questions asked so far, as "name TYPE".
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		s.queries = append(s.queries, name+" "+dns.TypeToString[q.Qtype])
		if s.servfail[name] {
			m.Rcode = dns.RcodeServerFailure
			continue
		}
		exists := false
		for _, rr := range s.rrs {
			h := rr.Header()
			if strings.ToLower(h.Name) != name {
				continue
			}
			exists = true
			if h.Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(m)
}
