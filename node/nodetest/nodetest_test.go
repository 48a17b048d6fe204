package nodetest

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"

	"github.com/custos/custos/internal/api"
)

func TestStartServesEveryNode(t *testing.T) {
	var s Shared
	s.Options = Options{Nodes: 2, Name: "smoke", Config: map[string]any{"rate": map[string]any{"per_caller_rps": 0}}}
	c := s.Cluster(t)
	if again := s.Cluster(t); again != c {
		t.Fatal("Shared started a second cluster")
	}
	if c.N() != 2 || c.Name() != "smoke" || c.Threshold() != DefaultThreshold || len(c.AdminKey()) != 32 || c.AdminPrivateKey() != nil {
		t.Fatalf("cluster %d %q k=%d key %d bytes", c.N(), c.Name(), c.Threshold(), len(c.AdminKey()))
	}
	if !slices.Equal(c.URLs(), []string{c.URL(0), c.URL(1)}) || c.URL(0) == c.URL(1) || c.NodeID(1) != "node2" || c.Node(0) == nil {
		t.Fatalf("urls %v", c.URLs())
	}
	for _, u := range c.URLs() {
		resp, err := http.Get(u + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var r api.Readiness
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || r.Status != api.ReadyStatusReady {
			t.Fatalf("%s/readyz: %d %+v %v", u, resp.StatusCode, r, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if _, err := http.Get(c.URL(0) + "/readyz"); err == nil {
		t.Fatal("the API still answers after Close")
	}
}

func TestMerge(t *testing.T) {
	base := map[string]any{"api": map[string]any{"listen": "x", "debug": false}, "log": map[string]any{"level": "error"}, "mode": "dev"}
	merge(base, map[string]any{"api": map[string]any{"debug": true}, "log": "replaced", "extra": 1})
	want := map[string]any{"api": map[string]any{"listen": "x", "debug": true}, "log": "replaced", "mode": "dev", "extra": 1}
	if !reflect.DeepEqual(base, want) {
		t.Fatalf("merged %v", base)
	}
}

func TestFixturesDir(t *testing.T) {
	if dir, err := fixturesDir(""); err != nil || dir == "" {
		t.Fatalf("fixtures: %q %v", dir, err)
	}
	if _, err := fixturesDir(t.TempDir()); err == nil {
		t.Fatal("an empty fixtures directory was accepted")
	}
}
