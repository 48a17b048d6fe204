//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos/custos/test/cluster"
)

// With -cpuprofile DIR the bench, after the measured repetitions (so that profiling
// does not perturb them), profiles each sign cell separately: for -cpuprofile-seconds it
// runs the cell's cluster operation one at a time while it takes every node's CPU
// profile from /debug/pprof/profile (api.debug, on in dev clusters), then runs the
// baseline operation as long under runtime/pprof in this process. Profiles are saved as
// DIR/<cell>-<node>.pprof and DIR/<cell>-baseline.pprof, and the top entries of each
// (go tool pprof -top) are printed and kept in the JSON report.
const (
	// profileTopLines is how many entries of each profile's top are reported.
	profileTopLines = 15
	// maxProfileBytes bounds one downloaded profile.
	maxProfileBytes = 64 << 20
	maxProfileSecs  = 300
)

// profileReport is one saved profile and its top entries.
type profileReport struct {
	Cell    string   `json:"cell"`
	Process string   `json:"process"` // a node id, or "baseline"
	Path    string   `json:"path"`
	Ops     int      `json:"ops"` // operations run while it was taken
	Top     []string `json:"top,omitempty"`
}

// profileCells profiles each of the given cells (name → operations) in turn.
func profileCells(ctx context.Context, o *options, c *cluster.Cluster, cells []cellDef, log *slog.Logger) ([]profileReport, error) {
	if err := os.MkdirAll(o.cpuProfile, 0o755); err != nil {
		return nil, fmt.Errorf("profile directory: %w", err)
	}
	d := o.cpuProfileSecs
	var out []profileReport
	var errs []error
	for _, cell := range cells {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		log.Info("profiling", "cell", cell.name, "seconds", d.Seconds())
		reps, err := profileCluster(ctx, o.cpuProfile, c, cell, d, log)
		out = append(out, reps...)
		if err != nil {
			errs = append(errs, err)
		}
		rep, err := profileBaseline(ctx, o.cpuProfile, cell, d)
		if err != nil {
			errs = append(errs, err)
		} else {
			out = append(out, rep)
		}
	}
	for i := range out {
		out[i].Top = pprofTop(ctx, out[i].Path)
	}
	return out, errors.Join(errs...)
}

// profileCluster takes every node's CPU profile for d while running cell's cluster
// operation back to back.
func profileCluster(ctx context.Context, dir string, c *cluster.Cluster, cell cellDef, d time.Duration, log *slog.Logger) ([]profileReport, error) {
	secs := int(d.Seconds())
	var wg sync.WaitGroup
	reps := make([]profileReport, c.N())
	errs := make([]error, c.N())
	for i := range c.N() {
		reps[i] = profileReport{Cell: cell.name, Process: c.NodeID(i), Path: filepath.Join(dir, cell.name+"-"+c.NodeID(i)+".pprof")}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetchProfile(ctx, c.HTTPClient(), c.API(i), secs, reps[i].Path)
		}()
	}
	// Let the profiles start, then keep the cluster busy until they end.
	time.Sleep(200 * time.Millisecond)
	ops := runFor(ctx, cell.clu, d-400*time.Millisecond, log)
	wg.Wait()
	var kept []profileReport
	for i := range reps {
		if errs[i] != nil {
			continue
		}
		reps[i].Ops = ops
		kept = append(kept, reps[i])
	}
	return kept, errors.Join(errs...)
}

// profileBaseline profiles this process while it runs cell's baseline operation for d.
func profileBaseline(ctx context.Context, dir string, cell cellDef, d time.Duration) (profileReport, error) {
	rep := profileReport{Cell: cell.name, Process: "baseline", Path: filepath.Join(dir, cell.name+"-baseline.pprof")}
	f, err := os.Create(rep.Path)
	if err != nil {
		return rep, fmt.Errorf("baseline profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return rep, fmt.Errorf("baseline profile: %w", err)
	}
	rep.Ops = runFor(ctx, cell.base, d, nil)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return rep, fmt.Errorf("baseline profile: %w", err)
	}
	return rep, nil
}

// runFor runs f one at a time until d has passed and returns how many succeeded.
func runFor(ctx context.Context, f op, d time.Duration, log *slog.Logger) int {
	end := time.Now().Add(d)
	n, failed := 0, 0
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, err := f(ctx); err != nil {
			failed++
			if log != nil && failed <= maxLoggedErrors {
				log.Warn("operation failed while profiling", "err", err)
			}
			continue
		}
		n++
	}
	return n
}

// fetchProfile saves node api's CPU profile over secs seconds to path.
func fetchProfile(ctx context.Context, hc *http.Client, api string, secs int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	url := strings.TrimRight(api, "/") + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// The cluster's client may carry a short timeout; a profile takes secs seconds.
	client := &http.Client{Transport: hc.Transport}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("profile of %s: %w", api, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProfileBytes+1))
	if err != nil {
		return fmt.Errorf("profile of %s: %w", api, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile of %s: %s (is api.debug on?): %s", api, resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	if len(body) > maxProfileBytes {
		return fmt.Errorf("profile of %s: larger than %d bytes", api, maxProfileBytes)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return fmt.Errorf("profile of %s: %w", api, err)
	}
	return nil
}

// pprofTop is the first entries of `go tool pprof -top` of a profile (nil if the tool
// cannot be run: the profiles are still saved).
func pprofTop(ctx context.Context, path string) []string {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount="+strconv.Itoa(profileTopLines), path)
	out, err := cmd.Output()
	if err != nil {
		return []string{"go tool pprof failed: " + err.Error()}
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// Keep the summary lines and the table; drop the file/build header.
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// printProfiles writes the top entries of every profile.
func printProfiles(w io.Writer, ps []profileReport) {
	for _, p := range ps {
		fmt.Fprintf(w, "\nCPU profile %s (%s, %d ops): %s\n", p.Cell, p.Process, p.Ops, p.Path)
		for _, l := range p.Top {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}
