package bench

import (
	"bytes"
	"crypto/tls"
	"math"
	"strings"
	"testing"
	"time"
)

func TestBenchHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789, 1<<62 + 12345, math.MaxInt64} {
		i := bucket(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucket(%d) = %d, out of range", v, i)
		}
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Errorf("bucket(%d) = %d covers [%d, %d]", v, i, lo, hi)
		}
		if v >= subBuckets && float64(hi-lo)/float64(lo) > 1.0/subBuckets {
			t.Errorf("bucket of %d is [%d, %d]: wider than 1/%d", v, lo, hi, subBuckets)
		}
	}
}

func TestBenchHistogramQuantiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples func(h *Histogram)
		q       float64
		want    time.Duration
	}{
		{"empty", func(*Histogram) {}, 0.5, 0},
		{"one", func(h *Histogram) { h.Record(3 * time.Millisecond) }, 0.99, 3 * time.Millisecond},
		{"uniform 1..1000 µs p50", func(h *Histogram) {
			for i := 1; i <= 1000; i++ {
				h.Record(time.Duration(i) * time.Microsecond)
			}
		}, 0.5, 500 * time.Microsecond},
		{"uniform 1..1000 µs p99", func(h *Histogram) {
			for i := 1; i <= 1000; i++ {
				h.Record(time.Duration(i) * time.Microsecond)
			}
		}, 0.99, 990 * time.Microsecond},
		{"outlier is the max", func(h *Histogram) {
			for range 99 {
				h.Record(time.Millisecond)
			}
			h.Record(time.Second)
		}, 1, time.Second},
		{"negative is zero", func(h *Histogram) { h.Record(-time.Second) }, 0.5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			tc.samples(&h)
			got := h.Quantile(tc.q)
			if d := math.Abs(float64(got - tc.want)); d > float64(tc.want)/subBuckets+1 {
				t.Errorf("Quantile(%v) = %v, want %v within 1/%d", tc.q, got, tc.want, subBuckets)
			}
		})
	}
}

func TestBenchHistogramMerge(t *testing.T) {
	var a, b Histogram
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	b.Record(2 * time.Millisecond)
	a.Merge(&b)
	if a.Count() != 3 || a.Max() != 3*time.Millisecond || a.Mean() != 2*time.Millisecond {
		t.Errorf("merged: count %d max %v mean %v", a.Count(), a.Max(), a.Mean())
	}
	if q := a.Quantile(0); q != time.Millisecond {
		t.Errorf("p0 = %v, want the minimum 1ms", q)
	}
}

func TestBenchMessage(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var sizes []int
	for s := 150; s <= 450; s++ {
		sizes = append(sizes, s)
	}
	sizes = append(sizes, 1024, 4096, 100000)
	fits := 0
	for _, size := range sizes {
		m, err := Message(size, "a@example.org", "b@example.org", now)
		if err != nil {
			if !strings.Contains(err.Error(), "smaller than the message header") || fits > 0 {
				t.Fatalf("Message(%d): %v", size, err)
			}
			continue
		}
		fits++
		if len(m) != size {
			t.Errorf("Message(%d) has %d octets", size, len(m))
		}
		if !bytes.HasSuffix(m, []byte("\r\n")) {
			t.Errorf("Message(%d) does not end in CRLF", size)
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(m), "\r\n"), "\r\n") {
			switch {
			case strings.ContainsAny(line, "\r\n"):
				t.Fatalf("Message(%d) line %d has a bare CR or LF: %q", size, i, line)
			case strings.HasPrefix(line, "."):
				t.Fatalf("Message(%d) line %d starts with a dot: %q", size, i, line)
			case len(line) > 78:
				t.Fatalf("Message(%d) line %d is %d long", size, i, len(line))
			}
			for _, c := range []byte(line) {
				if c < ' ' || c > '~' {
					t.Fatalf("Message(%d) line %d has %q", size, i, c)
				}
			}
		}
	}
	if fits < 200 {
		t.Errorf("only %d sizes fit: the header is too long", fits)
	}
}

func TestBenchVerdict(t *testing.T) {
	const n = 20000
	var temp, perm int
	for i := uint64(0); i < n; i++ {
		v := Verdict(7, i, 0.1, 0.2)
		if v != Verdict(7, i, 0.1, 0.2) {
			t.Fatal("Verdict is not deterministic")
		}
		switch v {
		case 4:
			temp++
		case 5:
			perm++
		}
	}
	if math.Abs(float64(temp)/n-0.1) > 0.01 || math.Abs(float64(perm)/n-0.2) > 0.01 {
		t.Errorf("%d temp, %d perm of %d: want about 10%% and 20%%", temp, perm, n)
	}
	if Verdict(7, 1, 0, 0) != 0 || Verdict(7, 1, 1, 0) != 4 || Verdict(7, 1, 0, 1) != 5 {
		t.Error("Verdict at rates 0 and 1")
	}
	same := 0
	for i := uint64(0); i < 100; i++ {
		if Verdict(1, i, 0.5, 0) == Verdict(2, i, 0.5, 0) {
			same++
		}
	}
	if same == 100 {
		t.Error("the seed changes nothing")
	}
}

func TestBenchOptionsCheck(t *testing.T) {
	ok := Options{Server: "127.0.0.1:25"}
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		idle bool
		want string // in the error; "" for none
	}{
		{"defaults", func(*Options) {}, false, ""},
		{"no server", func(o *Options) { o.Server = "" }, false, "--server"},
		{"server without port", func(o *Options) { o.Server = "localhost" }, false, "HOST:PORT"},
		{"negative", func(o *Options) { o.Conns = -1 }, false, "negative"},
		{"too small", func(o *Options) { o.Size = 10 }, false, "smaller than the message header"},
		{"bad from", func(o *Options) { o.From = "no at sign" }, false, "--from"},
		{"null sender", func(o *Options) { o.From = "<>" }, false, ""},
		{"template", func(o *Options) { o.To = "user%d@localhost"; o.Rcpts = 3 }, false, ""},
		{"bad template", func(o *Options) { o.To = "user%s@localhost" }, false, "%d"},
		{"bad to", func(o *Options) { o.To = "user" }, false, "--to"},
		{"bad ehlo", func(o *Options) { o.EHLO = "a b" }, false, "--ehlo"},
		{"versions", func(o *Options) { o.TLSMinVersion, o.TLSMaxVersion = tls.VersionTLS13, tls.VersionTLS12 }, false, "minimum TLS version"},
		{"too many rcpts", func(o *Options) { o.Rcpts = 1001 }, false, "at most 1000"},
		{"idle without N", func(*Options) {}, true, "--idle"},
		{"idle", func(o *Options) { o.Idle = 3 }, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			err := o.Check(tc.idle)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestBenchParseGroupAndVersion(t *testing.T) {
	for name, want := range map[string]tls.CurveID{
		"X25519": tls.X25519, "x25519mlkem768": tls.X25519MLKEM768, "P-256": tls.CurveP256, "CurveP256": tls.CurveP256,
	} {
		if g, err := ParseGroup(name); err != nil || g != want {
			t.Errorf("ParseGroup(%q) = %v, %v", name, g, err)
		}
	}
	if _, err := ParseGroup("ffdhe2048"); err == nil {
		t.Error("ParseGroup(ffdhe2048) did not fail")
	}
	if v, err := ParseTLSVersion("1.2"); err != nil || v != tls.VersionTLS12 {
		t.Errorf("ParseTLSVersion(1.2) = %v, %v", v, err)
	}
	if _, err := ParseTLSVersion("1.1"); err == nil {
		t.Error("ParseTLSVersion(1.1) did not fail")
	}
}
