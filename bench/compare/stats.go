package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// spread is the median, minimum and maximum of some samples.
type spread struct {
	Median, Min, Max float64
	N                int
}

func spreadOf(v []float64) spread {
	var ok []float64
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			ok = append(ok, x)
		}
	}
	if len(ok) == 0 {
		return spread{}
	}
	sort.Float64s(ok)
	m := ok[len(ok)/2]
	if len(ok)%2 == 0 {
		m = (ok[len(ok)/2-1] + ok[len(ok)/2]) / 2
	}
	return spread{Median: m, Min: ok[0], Max: ok[len(ok)-1], N: len(ok)}
}

// format writes a spread as "median (min–max)", or just the median for one
// sample, each number with f; "?" when there is no sample.
func (s spread) format(f func(float64) string) string {
	switch {
	case s.N == 0:
		return "?"
	case s.N == 1 || s.Min == s.Max:
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// sig3 prints about three significant digits, without an exponent.
func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// times prints a ratio: two decimals, or two significant digits under 0.1.
func times(v float64) string {
	if math.Abs(v) < 0.1 {
		return strconv.FormatFloat(v, 'g', 2, 64) + "×"
	}
	return fmt.Sprintf("%.2f×", v)
}

// kib prints a size in KiB, or in MiB from 10 MiB up.
func kib(v float64) string {
	if math.Abs(v) >= 10<<20 {
		return mib(v)
	}
	return sig3(v/1024) + " KiB"
}

func mib(v float64) string { return sig3(v/(1<<20)) + " MiB" }

// ratios divides a[i] by b[i], round by round (the runs of a round are
// next to each other in time, so their ratio cancels slow drifts of a
// shared machine); NaN where either is missing.
func ratios(a, b []float64) []float64 {
	r := make([]float64, min(len(a), len(b)))
	for i := range r {
		if a[i] > 0 && b[i] > 0 {
			r[i] = a[i] / b[i]
		} else {
			r[i] = math.NaN()
		}
	}
	return r
}
