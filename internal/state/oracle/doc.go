// Package oracle is the in-memory FSM that internal/state replaced when the replicated
// state moved to disk (issue 11): a frozen copy of internal/state as of commit 5cfe981,
// kept only as the test oracle of that migration (internal/state's TestApplyEquivalence
// and TestLegacyLogEquivalence apply the same log to both and compare every result and
// record). Nothing outside tests may import it, and it is never changed: a fix to the FSM
// goes into internal/state; delete this package once the migration's equivalence no
// longer needs showing.
package oracle
