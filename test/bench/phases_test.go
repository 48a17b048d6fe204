//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

func TestScanPhases(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	win := []window{{from: at, to: at.Add(time.Second)}}
	line := func(ts time.Time, body string) string {
		return `{"time":"` + ts.Format(time.RFC3339Nano) + `","level":"DEBUG",` + body + "}\n"
	}
	tests := []struct {
		name string
		log  string
		want map[[3]string][]float64
	}{
		{
			name: "entry node timing, microseconds become milliseconds",
			log:  line(at.Add(time.Millisecond), `"msg":"sign timing","leader":true,"auth_us":150,"commit_us":2500,"request":"req_1"`),
			want: map[[3]string][]float64{
				{msgSignTiming, "leader", "auth_us"}:   {0.15},
				{msgSignTiming, "leader", "commit_us"}: {2.5},
			},
		},
		{
			name: "proposal role carries its type; milliseconds stay",
			log: line(at, `"msg":"proposal applied","type":"call","leader":false,"commit_us":1000,"apply_wait_us":500,"index":7`) +
				line(at, `"msg":"ceremony timing","leader":false,"sched_lag_ms":3`),
			want: map[[3]string][]float64{
				{msgProposal, "call on follower", "commit_us"}:     {1},
				{msgProposal, "call on follower", "apply_wait_us"}: {0.5},
				{msgCeremonyTiming, "follower", "sched_lag_ms"}:    {3},
			},
		},
		{
			name: "outside the window, other messages and garbage are skipped",
			log: line(at.Add(-time.Millisecond), `"msg":"sign timing","leader":true,"auth_us":1`) +
				line(at.Add(2*time.Second), `"msg":"sign timing","leader":true,"auth_us":1`) +
				line(at, `"msg":"request","ms":12,"note":"timing"`) +
				"{not json timing\n",
			want: map[[3]string][]float64{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[[3]string][]float64{}
			if err := scanPhases(strings.NewReader(tc.log), win, got); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, w := range tc.want {
				g := got[k]
				if len(g) != len(w) {
					t.Fatalf("%v: got %v, want %v", k, g, w)
				}
				for i := range w {
					if g[i] != w[i] {
						t.Fatalf("%v: got %v, want %v", k, g, w)
					}
				}
			}
		})
	}
}

func TestSummarisePhases(t *testing.T) {
	vals := map[[3]string][]float64{
		{msgProposal, "call on leader", "commit_us"}: {5, 1, 4, 2, 3, 10, 6, 7, 8, 9},
		{msgSignTiming, "follower", "wait_us"}:       {2},
	}
	got := summarisePhases(vals)
	if len(got) != 2 || got[0].Event != msgSignTiming {
		t.Fatalf("order: %+v", got)
	}
	p := got[1]
	if p.N != 10 || p.P50ms != 5 || p.P90ms != 9 {
		t.Fatalf("stats: %+v", p)
	}
}
