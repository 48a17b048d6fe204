package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Metrics reads node i's GET /metrics and returns every sample by its series (name and
// labels as written, e.g. `custos_db_memory_bytes{db="state",kind="block_cache"}`).
func (c *Cluster) Metrics(ctx context.Context, i int) (map[string]float64, error) {
	body, err := c.Get(ctx, i, "/metrics")
	if err != nil {
		return nil, err
	}
	return ParseMetrics(body)
}

// ParseMetrics parses Prometheus text exposition: one "series value" sample a line,
// comments skipped. Label values holding spaces are not supported (custos has none).
func ParseMetrics(body []byte) (map[string]float64, error) {
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			return nil, fmt.Errorf("unexpected metric line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}
