package queue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Schedule is the retry policy: when a Deferred recipient is tried again,
// and when its message has been queued too long and it fails. Postfix is the
// reference (postconf(5): minimal_backoff_time, maximal_backoff_time,
// maximal_queue_lifetime, bounce_queue_lifetime), and so are the defaults.
type Schedule struct {
	// MinBackoff is the delay after the first failed attempt. Default
	// 300s (Postfix minimal_backoff_time).
	MinBackoff time.Duration
	// MaxBackoff caps the delay, which doubles with each attempt. Default
	// 4000s (Postfix maximal_backoff_time).
	MaxBackoff time.Duration
	// Jitter is the fraction of the delay, in [0, 1], added at random so
	// that recipients deferred together are not retried together. Default
	// 0.1: the delay after attempt n lies in [b, b*1.1), b = Backoff(n).
	Jitter float64
	// MaxLifetime is how long a message may stay in the queue: a recipient
	// deferred after that fails as expired. Default 5 days (Postfix
	// maximal_queue_lifetime).
	MaxLifetime time.Duration
	// BounceLifetime replaces MaxLifetime for messages with the null
	// reverse-path (bounces themselves). Default 5 days (Postfix
	// bounce_queue_lifetime).
	BounceLifetime time.Duration
}

// DefaultSchedule returns Postfix's retry defaults and a jitter of 10%.
func DefaultSchedule() Schedule {
	return Schedule{
		MinBackoff:     300 * time.Second,
		MaxBackoff:     4000 * time.Second,
		Jitter:         0.1,
		MaxLifetime:    5 * 24 * time.Hour,
		BounceLifetime: 5 * 24 * time.Hour,
	}
}

// Validate reports every problem with s, joined.
func (s Schedule) Validate() error {
	var errs []error
	if s.MinBackoff <= 0 {
		errs = append(errs, errors.New("queue: schedule: minimum backoff must be positive"))
	}
	if s.MaxBackoff < s.MinBackoff {
		errs = append(errs, fmt.Errorf("queue: schedule: maximum backoff %v is below the minimum %v", s.MaxBackoff, s.MinBackoff))
	}
	if !(s.Jitter >= 0 && s.Jitter <= 1) {
		errs = append(errs, fmt.Errorf("queue: schedule: jitter %v is not in [0, 1]", s.Jitter))
	}
	if s.MaxLifetime <= 0 {
		errs = append(errs, errors.New("queue: schedule: queue lifetime must be positive"))
	}
	if s.BounceLifetime <= 0 {
		errs = append(errs, errors.New("queue: schedule: bounce lifetime must be positive"))
	}
	return errors.Join(errs...)
}

// Backoff returns the delay, without jitter, after the n-th failed attempt
// (n >= 1): MinBackoff doubled n-1 times, at most MaxBackoff.
func (s Schedule) Backoff(n int) time.Duration {
	d := s.MinBackoff
	for i := 1; i < n && d < s.MaxBackoff; i++ {
		if d > s.MaxBackoff/2 {
			return s.MaxBackoff
		}
		d *= 2
	}
	return min(d, s.MaxBackoff)
}

// Lifetime returns how long a message from the reverse-path from may stay
// queued.
func (s Schedule) Lifetime(from string) time.Duration {
	if from == "" {
		return s.BounceLifetime
	}
	return s.MaxLifetime
}

// Next decides the fate of a recipient of a message received at received
// and sent by from, deferred at now after its n-th attempt. If the message
// has outlived its lifetime, expired is true and the recipient fails.
// Otherwise next is now plus Backoff(n) plus jitter, but never later than
// the end of the lifetime, so that a last attempt is made when it ends.
func (s Schedule) Next(from string, received, now time.Time, n int) (next time.Time, expired bool) {
	return s.next(from, received, now, n, rand.Float64())
}

// next is Next with the random number u in [0, 1) given.
func (s Schedule) next(from string, received, now time.Time, n int, u float64) (time.Time, bool) {
	end := received.Add(s.Lifetime(from))
	if !now.Before(end) {
		return time.Time{}, true
	}
	d := s.Backoff(n)
	d += time.Duration(float64(d) * s.Jitter * u)
	next := now.Add(d)
	if next.After(end) {
		next = end
	}
	return next, false
}
