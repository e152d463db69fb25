package bench

import (
	"context"
	"testing"
)

// BenchmarkBenchLoopback sends b.N messages of 1 KB over STARTTLS to a Sink
// in the same process, 4 sessions at once and 100 messages per session:
// the cost of the load generator and of the server engine together, per
// message (ns/op), with the TLS handshakes that the sessions need.
func BenchmarkBenchLoopback(b *testing.B) {
	for _, bc := range []struct {
		name       string
		pipe, bdat bool
	}{
		{"sequential", false, false},
		{"pipelining", true, false},
		{"pipelining+bdat", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			_, addr := startSink(b, SinkOptions{})
			b.ReportAllocs()
			b.ResetTimer()
			rep, err := Run(context.Background(), Options{Server: addr, Security: StartTLS, Conns: 4, MsgsPerConn: 100,
				Total: b.N, Pipelining: bc.pipe, BDAT: bc.bdat})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if rep.Messages != uint64(b.N) || rep.ErrorsTotal != 0 {
				b.Fatalf("%d messages, errors %v", rep.Messages, rep.ErrorSamples)
			}
			b.ReportMetric(rep.MessagesPerSec, "msg/s")
		})
	}
}
