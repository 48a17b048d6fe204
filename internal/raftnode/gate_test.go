package raftnode

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/custos/custos/internal/state"
)

// TestMemberMayPropose: the propose RPC's gate lets a member forward only its own client
// submits and its own member reports, in a form this binary decodes; the leader's own
// entries (first entry, upgrade, reschedule, fail) never come over the wire.
func TestMemberMayPropose(t *testing.T) {
	raw := func(v any) json.RawMessage {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	report := func(node, kind string) json.RawMessage {
		return raw(&state.Report{Node: node, Kind: kind, Body: json.RawMessage(`{}`), Sig: make([]byte, 64)})
	}
	tests := []struct {
		name string
		fw   forwarded
		want string // "" allowed, else part of the error
	}{
		{"own submit", forwarded{Type: state.TypeSubmit, Payload: raw(&state.Submit{Origin: "n2", Body: json.RawMessage(`{}`), OriginSig: make([]byte, 64)})}, ""},
		{"submit in another's name", forwarded{Type: state.TypeSubmit, Payload: raw(&state.Submit{Origin: "n3", Body: json.RawMessage(`{}`), OriginSig: make([]byte, 64)})}, "own name"},
		{"own share report", forwarded{Type: state.TypeReport, Payload: report("n2", state.TypeShareStored)}, ""},
		{"own result", forwarded{Type: state.TypeReport, Payload: report("n2", state.TypeCeremonyResult)}, ""},
		{"own checkpoint", forwarded{Type: state.TypeReport, Payload: report("n2", state.TypeCheckpoint)}, ""},
		{"report for another", forwarded{Type: state.TypeReport, Payload: report("n1", state.TypeCeremonyResult)}, "only for itself"},
		{"the leader's reschedule", forwarded{Type: state.TypeReport, Payload: report("n2", state.TypeReschedule)}, "leader's own"},
		{"the leader's fail", forwarded{Type: state.TypeReport, Payload: report("n2", state.TypeFail)}, "leader's own"},
		{"first entry", forwarded{Type: state.TypeClusterInit, Payload: raw(&state.ClusterInit{Name: "x", Threshold: 2, Strict: true})}, "cannot be forwarded"},
		{"upgrade", forwarded{Type: state.TypeUpgrade, Payload: raw(&state.Upgrade{})}, "cannot be forwarded"},
		{"unknown kind", forwarded{Type: "keys.export", Payload: json.RawMessage(`{}`)}, "cannot decode"},
		{"unknown field", forwarded{Type: state.TypeSubmit, Payload: json.RawMessage(`{"origin":"n2","body":{},"origin_sig":"","extra":1}`)}, "cannot decode"},
		{"legacy call", forwarded{Type: state.TypeCall, Payload: json.RawMessage(`{}`)}, "cannot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := memberMayPropose("n2", tt.fw)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}
