package state

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
)

// Restart without replay, and crashes (issue 11). The database holds a prefix of the log
// ending at its applied index; raft replays what follows (NoSnapshotRestoreOnStart) and
// also, after a restart, entries the database already holds, which Apply skips.

// harnessAuthn is the verifier newSignedHarness uses, rebuilt in a child process.
func harnessAuthn(t testing.TB) *authn.Verifier {
	an, err := authn.New(authn.Config{HMACKey: bytes.Repeat([]byte{9}, 32), Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return an
}

func TestRestartDoesNotReplay(t *testing.T) {
	h := equivalenceLog(t)
	want := fsmRecords(t, h.f)
	dir := t.TempDir()
	open := func() *FSM {
		f, err := Open(Config{Dir: dir, Verifier: okVerifier{}, Authn: h.f.authn, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	half := len(h.log) / 2
	f.ApplyBatch(h.log[:half])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open()
	defer f.Close()
	if got := f.AppliedIndex(); got != h.log[half-1].Index {
		t.Fatalf("reopened at index %d, applied %d", got, h.log[half-1].Index)
	}
	seq, _ := f.AuditHead()
	// raft replays from its last snapshot (here: the start): what the database holds is
	// skipped, not applied twice.
	res := f.ApplyBatch(h.log[:half])
	for i, r := range res {
		if r != nil {
			t.Fatalf("entry %d applied again after the restart: %+v", h.log[i].Index, r)
		}
	}
	if s, _ := f.AuditHead(); s != seq {
		t.Fatalf("audit moved from %d to %d on replayed entries", seq, s)
	}
	f.ApplyBatch(h.log[half:])
	compareRecords(t, "restarted", fsmRecords(t, f), want)
}

// TestCrashRecovery kills a process applying the log with SIGKILL at random points, again
// and again on the same database; after each crash the state is what the database holds
// plus the log after its applied index (what raft replays), and at the end it equals a
// clean application of the whole log, record for record.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	h := equivalenceLog(t)
	want := fsmRecords(t, h.f)
	logFile := filepath.Join(t.TempDir(), "log.json")
	raw, err := json.Marshal(h.log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// crashes counts the kills, interrupted those that came before the child had applied
	// the whole log, progressed the restarts that found the database further on (a kill
	// loses the commits not yet flushed — the database keeps no write-ahead log — so it
	// then holds a shorter prefix, which raft's replay makes good).
	crashes, interrupted, progressed := 0, 0, 0
	// persisted is the highest snapshot index a child persisted before its kill.
	var last, persisted uint64
	end := h.log[len(h.log)-1].Index
	for i := 0; i < 12 && last < end; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CUSTOS_STATE_CRASH_CHILD="+dir, "CUSTOS_STATE_CRASH_LOG="+logFile, fmt.Sprintf("CUSTOS_STATE_CRASH_SEED=%d", rng.Uint64()))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The child says where it opened, then each index it committed. It is killed a
		// random moment after its first commit past where it opened (on a slow machine, or
		// under the race detector, a fixed delay could fall before any commit).
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		var from uint64
		if _, err := fmt.Sscanf(<-lines, "opened at %d", &from); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %v", err)
		}
		if from < last {
			t.Fatalf("the database went back from index %d to %d", last, from)
		}
		if from < persisted {
			t.Fatalf("the database reopened at index %d, behind the snapshot persisted at %d before the kill", from, persisted)
		}
		if from > last {
			progressed++
		}
		last = from
		for l := range lines {
			var at uint64
			if _, err := fmt.Sscanf(l, "applied %d", &at); err == nil && at > from || l == "done" {
				break
			}
		}
		time.Sleep(time.Duration(rng.IntN(100_000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err == nil {
			crashes++
		}
		_ = cmd.Wait()
		finished := false
		for l := range lines { // until the reader ends
			finished = finished || l == "done"
			var at uint64
			if _, err := fmt.Sscanf(l, "persisted %d", &at); err == nil {
				persisted = max(persisted, at)
			}
		}
		if !finished {
			interrupted++
		}
	}
	f, err := Open(Config{Dir: dir, Verifier: okVerifier{}, Authn: harnessAuthn(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := f.AppliedIndex()
	f.ApplyBatch(h.log) // raft's replay: what is held is skipped
	if f.Halted() != "" {
		t.Fatal(f.Halted())
	}
	compareRecords(t, "after crashes", fsmRecords(t, f), want)
	t.Logf("%d crashes, %d of them mid-way, %d restarts found progress, last restart at index %d of %d", crashes, interrupted, progressed, at, h.log[len(h.log)-1].Index)
	if progressed == 0 {
		t.Fatalf("no restart found the database further on: nothing the children synced survived their kill")
	}
	if interrupted < 2 {
		t.Fatalf("%d crashes, %d of them before the child had applied the log: the crashes did not interrupt applying", crashes, interrupted)
	}
}

// TestCrashChild is the process TestCrashRecovery kills: it applies the log from the
// database's applied index on, in random batches, slowly enough to be killed mid-way.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("CUSTOS_STATE_CRASH_CHILD")
	if dir == "" {
		t.Skip("run by TestCrashRecovery")
	}
	var log []*raft.Log
	raw, err := os.ReadFile(os.Getenv("CUSTOS_STATE_CRASH_LOG"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &log); err != nil {
		t.Fatal(err)
	}
	var seed uint64
	fmt.Sscan(os.Getenv("CUSTOS_STATE_CRASH_SEED"), &seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	f, err := Open(Config{Dir: dir, Verifier: okVerifier{}, Authn: harnessAuthn(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("opened at %d\n", f.AppliedIndex())
	cps, err := os.MkdirTemp(filepath.Dir(dir), "checkpoints-")
	if err != nil {
		t.Fatal(err)
	}
	// Start from a random point at or before the first entry not held, as raft does
	// (from its last snapshot): the held entries are skipped.
	next := 0
	for next < len(log) && log[next].Index <= f.AppliedIndex() {
		next++
	}
	i := rng.IntN(next + 1)
	for i < len(log) {
		n := min(1+rng.IntN(4), len(log)-i)
		f.ApplyBatch(log[i : i+n])
		fmt.Printf("applied %d\n", f.AppliedIndex())
		if rng.IntN(6) == 0 {
			// The database keeps no write-ahead log: what reaches the disk is what a
			// snapshot's Persist synced (or a memtable flush wrote). Raft drops its log
			// behind a persisted snapshot, so the database must be durable to its index,
			// whether the snapshot is streamed or kept as a checkpoint (as a node does).
			snap, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var s raft.SnapshotSink = &sink{}
			if rng.IntN(2) == 0 {
				s = &checkpointSink{base: cps}
			}
			if err := snap.Persist(s); err != nil {
				t.Fatal(err)
			}
			snap.Release()
			fmt.Printf("persisted %d\n", snap.(*fsmSnapshot).index)
		}
		i += n
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
	}
	fmt.Println("done")
	// Finished before the kill: exit without closing (as a crash would).
	for {
		time.Sleep(time.Second)
	}
}
