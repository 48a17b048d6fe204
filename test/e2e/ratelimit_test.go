//go:build linux

package e2e

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestRateLimit drives one caller at ten times its per-caller limit, concurrently, against
// one node while another caller works at half its limit on the same node: the noisy one
// gets 429 rate.limited with Retry-After and is held to about its rate, the quiet one
// keeps at least 99 % of its requests.
func TestRateLimit(t *testing.T) {
	const (
		rps      = 20
		burst    = 20
		duration = 4 * time.Second
		workers  = 24
	)
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": map[string]any{"per_caller_rps": rps, "burst": burst}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	noisy := c.newUser(ctx, "noisy")
	quiet := c.newUser(ctx, "quiet")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * workers}}
	noisyCl, err := client.New(c.API(0), noisy.Token, noisy.Key, client.WithHTTPClient(hc))
	wantOK(t, "client", err)
	quietCl := quiet.Clients[0]

	var ok, limited, other, skipped atomic.Int64
	var badRetry atomic.Int64
	var firstOther atomic.Value
	tickets := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tickets {
				_, err := noisyCl.ListKeys(ctx)
				var ae *client.APIError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
					limited.Add(1)
					if ae.Code != "rate.limited" || ae.RetryAfter < time.Second {
						badRetry.Add(1)
					}
				default:
					other.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	// The quiet caller: one request every 100 ms (half its limit), sequential.
	var quietOK, quietFail atomic.Int64
	quietDone := make(chan struct{})
	go func() {
		defer close(quietDone)
		tk := time.NewTicker(time.Second / (rps / 2))
		defer tk.Stop()
		end := time.Now().Add(duration)
		for time.Now().Before(end) {
			<-tk.C
			if _, err := quietCl.ListKeys(ctx); err != nil {
				quietFail.Add(1)
				t.Logf("quiet caller refused: %v", err)
			} else {
				quietOK.Add(1)
			}
		}
	}()
	start := time.Now()
	tk := time.NewTicker(time.Second / (10 * rps))
	for time.Since(start) < duration {
		<-tk.C
		select {
		case tickets <- struct{}{}:
		default:
			skipped.Add(1) // every worker busy: the machine cannot keep up
		}
	}
	tk.Stop()
	close(tickets)
	wg.Wait()
	elapsed := time.Since(start)
	<-quietDone

	sent := ok.Load() + limited.Load() + other.Load()
	t.Logf("noisy: %d requests in %v (%.0f/s, limit %d/s): %d ok, %d limited, %d other, %d ticks skipped; quiet: %d ok, %d refused",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), rps, ok.Load(), limited.Load(), other.Load(), skipped.Load(), quietOK.Load(), quietFail.Load())
	if rate := float64(sent) / elapsed.Seconds(); rate < 5*rps {
		t.Fatalf("the noisy caller reached only %.0f requests/s; the test needs at least 5× the limit", rate)
	}
	if other.Load() != 0 {
		t.Fatalf("noisy caller got %d answers that were neither 200 nor 429, first: %v", other.Load(), firstOther.Load())
	}
	if limited.Load() == 0 {
		t.Fatal("no 429 for a caller at ten times its limit")
	}
	if badRetry.Load() != 0 {
		t.Fatalf("%d of %d 429 answers lacked code rate.limited or a Retry-After of at least 1 s", badRetry.Load(), limited.Load())
	}
	maxOK := float64(rps)*elapsed.Seconds() + burst
	if float64(ok.Load()) > 1.15*maxOK+2 {
		t.Fatalf("noisy caller served %d times in %v; the limit allows about %.0f", ok.Load(), elapsed, maxOK)
	}
	if float64(ok.Load()) < 0.5*float64(rps)*elapsed.Seconds() {
		t.Fatalf("noisy caller served only %d times in %v: limited far below its rate", ok.Load(), elapsed)
	}
	total := quietOK.Load() + quietFail.Load()
	if total < int64(duration.Seconds()*rps/2*0.8) || float64(quietOK.Load()) < 0.99*float64(total) {
		t.Fatalf("quiet caller: %d of %d requests succeeded (want ≥ 99 %%)", quietOK.Load(), total)
	}
	// Limits are per node: the noisy caller is served at once by another node.
	_, err = noisy.Clients[1].ListKeys(ctx)
	wantOK(t, "noisy caller on node 2", err)
}
