//go:build linux

package main

import (
	"math"
	"slices"
	"time"
)

// runResult is one measured run of one side of a cell: every sample's latency, and the wall
// time of the whole run (for throughput).
type runResult struct {
	lat    []time.Duration
	wall   time.Duration
	errors int
}

// summary is what a run reports.
type summary struct {
	Samples    int     `json:"samples"`
	Errors     int     `json:"errors"`
	P50ms      float64 `json:"p50_ms"`
	P95ms      float64 `json:"p95_ms"`
	MeanMs     float64 `json:"mean_ms"`
	Throughput float64 `json:"throughput_per_s"`
	WallS      float64 `json:"wall_s"`
}

func (r runResult) summary() summary {
	s := summary{Samples: len(r.lat), Errors: r.errors, WallS: r.wall.Seconds()}
	if len(r.lat) == 0 {
		return s
	}
	s.P50ms = ms(percentile(r.lat, 50))
	s.P95ms = ms(percentile(r.lat, 95))
	var sum time.Duration
	for _, d := range r.lat {
		sum += d
	}
	s.MeanMs = ms(sum / time.Duration(len(r.lat)))
	if r.wall > 0 {
		s.Throughput = float64(len(r.lat)) / r.wall.Seconds()
	}
	return s
}

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(0, min(len(s)-1, rank-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// side is one side (baseline or cluster) of a cell over all repetitions: the median of
// the repetitions' figures, and each repetition.
type side struct {
	P50ms      float64   `json:"p50_ms"`
	P95ms      float64   `json:"p95_ms"`
	Throughput float64   `json:"throughput_per_s"`
	Errors     int       `json:"errors"`
	Reps       []summary `json:"reps"`
}

func aggregate(reps []summary) side {
	var p50, p95, tp []float64
	s := side{Reps: reps}
	for _, r := range reps {
		p50 = append(p50, r.P50ms)
		p95 = append(p95, r.P95ms)
		tp = append(tp, r.Throughput)
		s.Errors += r.Errors
	}
	s.P50ms, s.P95ms = round2(median(p50)), round2(median(p95))
	s.Throughput = round2(median(tp))
	return s
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
