package queue

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	s := DefaultSchedule()
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{1, 300 * time.Second},
		{2, 600 * time.Second},
		{3, 1200 * time.Second},
		{4, 2400 * time.Second},
		{5, 4000 * time.Second}, // 4800s capped
		{6, 4000 * time.Second},
		{1000, 4000 * time.Second},
	}
	for _, tt := range tests {
		if got := s.Backoff(tt.attempt); got != tt.want {
			t.Errorf("Backoff(%d) = %v, want %v", tt.attempt, got, tt.want)
		}
	}
	huge := Schedule{MinBackoff: time.Second, MaxBackoff: 1<<63 - 1}
	if got := huge.Backoff(200); got != huge.MaxBackoff {
		t.Errorf("Backoff(200) with no real cap = %v, want the maximum (no overflow)", got)
	}
}

func TestScheduleNext(t *testing.T) {
	s := DefaultSchedule()
	received := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		from        string
		age         time.Duration // now - received
		attempt     int
		u           float64
		wantDelay   time.Duration // next - now
		wantExpired bool
	}{
		{"first, no jitter", "a@x", time.Minute, 1, 0, 300 * time.Second, false},
		{"first, most jitter", "a@x", time.Minute, 1, 0.5, 315 * time.Second, false},
		{"third", "a@x", time.Hour, 3, 0, 1200 * time.Second, false},
		{"capped", "a@x", time.Hour, 9, 0.99, 4000*time.Second + 396*time.Second, false},
		{"last attempt at the end of the lifetime", "a@x", 5*24*time.Hour - time.Minute, 30, 0, time.Minute, false},
		{"expired", "a@x", 5 * 24 * time.Hour, 30, 0, 0, true},
		{"long expired", "a@x", 9 * 24 * time.Hour, 3, 0, 0, true},
		{"bounce, own lifetime", "", 5*24*time.Hour - time.Minute, 30, 0, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := received.Add(tt.age)
			next, expired := s.next(tt.from, received, now, tt.attempt, tt.u)
			if expired != tt.wantExpired {
				t.Fatalf("expired = %v, want %v", expired, tt.wantExpired)
			}
			if !expired && next.Sub(now) != tt.wantDelay {
				t.Errorf("delay = %v, want %v", next.Sub(now), tt.wantDelay)
			}
		})
	}
}

// TestScheduleJitterRange checks Next, with its real randomness, against
// [backoff, backoff+jitter) for each attempt.
func TestScheduleJitterRange(t *testing.T) {
	s := DefaultSchedule()
	received := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := received.Add(time.Hour)
	for n := 1; n <= 8; n++ {
		b := s.Backoff(n)
		hi := b + time.Duration(float64(b)*s.Jitter)
		seen := map[time.Duration]bool{}
		for range 200 {
			next, expired := s.Next("a@x", received, now, n)
			d := next.Sub(now)
			if expired || d < b || d >= hi {
				t.Fatalf("attempt %d: delay %v (expired %v), want in [%v, %v)", n, d, expired, b, hi)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: only %d distinct delays in 200 draws: no jitter?", n, len(seen))
		}
	}
}

func TestScheduleLifetimes(t *testing.T) {
	s := DefaultSchedule()
	s.BounceLifetime = 24 * time.Hour
	received := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := received.Add(25 * time.Hour)
	if _, expired := s.Next("", received, now, 5); !expired {
		t.Error("a bounce (null sender) after 25h with a 1-day bounce lifetime is not expired")
	}
	if _, expired := s.Next("a@x", received, now, 5); expired {
		t.Error("a normal message after 25h with a 5-day lifetime is expired")
	}
}

func TestScheduleValidate(t *testing.T) {
	if err := DefaultSchedule().Validate(); err != nil {
		t.Fatalf("default schedule: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Schedule)
	}{
		{"zero minimum", func(s *Schedule) { s.MinBackoff = 0 }},
		{"max below min", func(s *Schedule) { s.MaxBackoff = s.MinBackoff - 1 }},
		{"negative jitter", func(s *Schedule) { s.Jitter = -0.1 }},
		{"jitter above 1", func(s *Schedule) { s.Jitter = 1.5 }},
		{"zero lifetime", func(s *Schedule) { s.MaxLifetime = 0 }},
		{"zero bounce lifetime", func(s *Schedule) { s.BounceLifetime = 0 }},
	}
	for _, tt := range tests {
		s := DefaultSchedule()
		tt.mod(&s)
		if s.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", tt.name, s)
		}
		if _, err := Open(t.TempDir(), Options{Schedule: s}); err == nil {
			t.Errorf("%s: Open accepted the schedule", tt.name)
		}
	}
}
