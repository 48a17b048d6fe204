package statedb_test

import (
	"bytes"
	"fmt"
	"log"
	"os"

	"github.com/custos/custos/internal/statedb"
)

// An FSM applies each raft entry (or each BatchingFSM group of entries) into
// one batch and commits it with the last index; API reads use a View.
func Example() {
	dir, _ := os.MkdirTemp("", "statedb-example")
	defer os.RemoveAll(dir)
	db, err := statedb.Open(dir, statedb.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	auditKey := func(seq uint64) []byte { return statedb.AppendUint64(statedb.AppendTable(nil, "audit"), seq) }

	b, _ := db.NewBatch()
	_ = b.Set(auditKey(1), []byte("entry one"))
	_ = b.Set(auditKey(2), []byte("entry two"))
	if err := b.Commit(42, 1700000000); err != nil { // raft index 42, leader's stamp
		log.Fatal(err)
	}

	v, _ := db.View()
	defer v.Close()
	recs, next, _ := v.Page(statedb.TablePrefix("audit"), nil, 1)
	fmt.Printf("%s, more: %v\n", recs[0].Value, next != nil)

	// Stream a raft snapshot and restore it elsewhere.
	s, _ := db.Snapshot()
	var buf bytes.Buffer
	_, _ = s.WriteTo(&buf)
	_ = s.Close()
	dir2, _ := os.MkdirTemp("", "statedb-example")
	defer os.RemoveAll(dir2)
	db2, _ := statedb.Open(dir2, statedb.Options{})
	defer db2.Close()
	if err := db2.Restore(&buf); err != nil {
		log.Fatal(err)
	}
	idx, stamp, _ := db2.AppliedIndex()
	fmt.Println(idx, stamp)
	// Output:
	// entry one, more: true
	// 42 1700000000
}
