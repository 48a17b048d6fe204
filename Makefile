# custos — the two commands a new user needs are `make run` and `make test`.
GO        ?= go
BIN       := bin
FUZZTIME  ?= 30s

.PHONY: all build run test test-unit test-e2e test-race test-large vet fmt-check fuzz bench bench-state soak chaos clean btcd

all: build

# Pure Go (CGO_ENABLED=0): Pebble then allocates its block caches and memtables on the Go
# heap, which the runtime returns to the system, instead of with C malloc, whose arenas
# kept what Pebble freed and grew a signing node's resident memory without bound in sight
# (make soak; docs/architecture.md "Storage").
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/custosd ./cmd/custos

# Builds everything and starts the local 3-node dev cluster (API.md's dev cluster contract)
# in the foreground; Ctrl-C stops every node. A second `make run` reuses .devcluster/.
run: build
	./$(BIN)/custos dev up

# The whole suite: the multi-process end-to-end tests (they build and run real custosd
# binaries), every in-process (unit) test under the race detector (test-race: the same
# tests, with data races detected; running them a second time without it would find
# nothing more), the short chaos scenario on its own (it needs the machine's cores for its
# own cluster, and a loaded machine would only measure the other tests), then brief fuzzing
# of every parser of outside bytes.
test: vet fmt-check
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory test-race
	$(MAKE) --no-print-directory test-large
	$(GO) test -count=1 -timeout 12m -v -run TestChaosShort ./test/chaos
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# The multi-process suites (test/e2e, test/hostile, test/cluster, test/bench's unit tests;
# the chaos scenario runs on its own).
test-e2e: btcd
	$(GO) test -count=1 -timeout 12m $$($(GO) list ./test/... | grep -v /test/chaos)

# A real btcd (simnet) for the end-to-end tests (test/btcnode), installed into .tools/bin
# once; CUSTOS_BTCD=path overrides it.
btcd:
	@test -x $(CURDIR)/.tools/bin/btcd || GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/btcsuite/btcd@v0.24.2

# Unit tests too large for the race detector (built with !race): a snapshot round trip of
# a 100 000-entry state, about 15 s plain and minutes under -race.
test-large:
	$(GO) test -count=1 -timeout 5m -run 'TestSnapshotRoundTrip100k' ./internal/state

# The unit tests without the race detector (quicker while editing).
test-unit:
	$(GO) test -count=1 -timeout 12m $(RACE_PKGS)

# The in-process (unit) test packages: every package outside test/ (the multi-process
# suites live there and run only in the plain pass). New packages are included as added.
RACE_PKGS ?= $$($(GO) list ./... | grep -v /test/)

# The unit tests under the race detector: about 100 s on 2 cores with a warm build cache,
# 70 s of it the protocol package's tss-lib ceremonies; a cold cache adds about 4 minutes
# for the race-instrumented build of every dependency. One package:
# make test-race RACE_PKGS=./protocol
test-race:
	$(GO) test -race -count=1 -timeout 12m $(RACE_PKGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Runs each fuzz target for FUZZTIME (make fuzz FUZZTIME=5m for a long run). Each package
# with targets is built once, fuzz-instrumented (go test -c -fuzz), and its binary runs
# each target in the package's directory with go test's corpus cache, as go test -fuzz
# would (building and linking per target cost more than the fuzzing at 3 s each). A
# target that finds a failing input fails at once (the input is written under
# testdata/fuzz); one that stops without one (the engine's own trouble on a loaded
# machine) runs once more, and fails if that fails too.
fuzz:
	@set -e; passed=0; bin=$$(mktemp -d); trap 'rm -rf "$$bin"' EXIT; \
	cache=$$($(GO) env GOCACHE)/fuzz; \
	$(GO) list -f '{{.ImportPath}} {{.Dir}}' ./... > "$$bin/pkgs"; \
	while read -r pkg dir; do \
	  grep -qs '^func Fuzz' $$dir/*_test.go || continue; \
	  $(GO) test -c -fuzz=. -o "$$bin/fuzz.test" $$pkg < /dev/null; \
	  for t in $$(cd $$dir && "$$bin/fuzz.test" -test.list '^Fuzz'); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    run() { (cd $$dir && "$$bin/fuzz.test" -test.run '^$$' -test.fuzz "^$$t$$" -test.fuzztime $(FUZZTIME) -test.fuzzcachedir "$$cache/$$pkg" 2>&1); }; \
	    out=$$(run) || \
	    case "$$out" in *"Failing input written to"*) echo "$$out"; echo "fuzz: $$passed passed, 1 failed"; exit 1;; \
	    *) echo "$$out"; echo "fuzz: $$t stopped without a failing input (the fuzzing engine's own trouble, e.g. a worker starved on a loaded machine): once more"; \
	       run || { echo "fuzz: $$passed passed, 1 failed"; exit 1; };; esac; \
	    passed=$$((passed+1)); \
	  done; \
	done < "$$bin/pkgs"; echo "fuzz: $$passed passed, 0 failed"

# Benchmarks custos against its engine (test/bench): the same ceremonies in-process
# (tss-lib parties in one process) and through a real 3-node custosd cluster on loopback
# via the Go SDK with full authentication, alternated, 3 repetitions; prints a table and
# writes bench-results/bench.json (about 9 min on 2 cores plus about 1.5 for the PSBT cell,
# 2 for the reshare cell and 2.5 for the member cell, 2 more with -wan). Flags: BENCHFLAGS=
#   -nodes 5 -k 3        the 3-of-5 variant (about 25 min: 5-party keygens, 1 s signs)
#   -wan 50ms            add a simulated wide-area run (TCP latency proxies on every link)
#   -wan-only            only the wide-area run (with -wan)
#   -samples N           samples per latency cell and side per repetition (default 30)
#   -keygen-samples N    ECDSA keygen samples per side per repetition (default 5)
#   -reps N              repetitions, median reported (default 3)
#   -conc 1,4,16         concurrencies of the sign throughput cells
#   -ed25519-msg BYTES   Ed25519 message size (default 32; ECDSA signs a 32-byte digest)
#   -psbt-samples N      PSBT cell samples per side per repetition (default 5): a 10-input
#                        PSBT signed by the cluster vs 10 concurrent in-process ECDSA signs
#   -psbt=false          skip the PSBT cell
#   -events-clients N    event streams (GET /v1/events, half admin, half the signing user)
#                        open during the event-stream cell's Ed25519 signs (default 50)
#   -events-duration D   each run of that cell, with and without streams (default 20s)
#   -events=false        skip the event-stream cell (events_50_streams)
#   -reshare-samples N   reshare cell samples per side per repetition (default 3): admin
#                        RefreshKey of an ECDSA key k-of-n → k-of-n vs tss-lib's in-process
#                        resharing (protocol/baseline ReshareECDSA), target ratio <= 1.2
#   -reshare=false       skip the reshare cell (reshare)
#   -member-keys N       keys the member cell reshares to a new member (default 100); it
#                        runs once, no baseline, on a cluster of its own, progress on stderr
#   -member-curve C      their curve: ed25519 (default) or secp256k1
#   -member=false        skip the member cell (reshare_100_to_new_member)
#   -only PREFIXES       only the cells whose names start with these (e.g. -only psbt,events);
#                        -only reshare runs the reshare cell alone, -only reshare_ the member cell
#   -keep, -custosd PATH, -node-log-level LEVEL, -v, -out FILE
# e.g. make bench BENCHFLAGS="-reps 1 -samples 10" for a quick look.
BENCHFLAGS ?=
bench:
	$(GO) run ./test/bench -out bench-results/bench.json $(BENCHFLAGS)

# The state benchmark of issue 11 (test/benchstate): realistic signed sign lifecycles
# (a submit entry + a signed ceremony.result each) applied through the raft FSM's Apply;
# every -step lifecycles it reports Go heap in use, RSS, apply entries/s (and the CPU
# per entry and cores busy over the applies), snapshot size
# and time, the longest Apply stall while a snapshot is taken and persisted, and restore
# time, next to the issue's targets; writes bench-results/bench-state.json. Built pure Go
# as custosd is (Pebble's memory on the Go heap: RSS then stays flat). The FSM is
# the on-disk one (its database in a temporary directory, 3 GB at 1 M lifecycles and
# 1 GB more for the stream), fed
# in raft-sized batches made before each is timed (never alongside: on a node entries
# arrive made); the full 1 M run takes about 12 min on 2 cores, mostly the
# restores of each step's snapshot. Flags: BENCHSTATEFLAGS=
#   -n N            total sign lifecycles (default 1000000)
#   -step N         lifecycles between measurements (default 100000)
#   -batch N        entries per ApplyBatch (default 64, raft's MaxAppendEntries)
#   -max-heap SIZE  stop early past this Go heap in use (default 3GiB)
#   -cpuprofile F   write a CPU profile of the run
# e.g. make bench-state BENCHSTATEFLAGS="-n 100000 -step 25000" for a quick look.
BENCHSTATEFLAGS ?=
bench-state:
	CGO_ENABLED=0 $(GO) run ./test/benchstate -out bench-results/bench-state.json $(BENCHSTATEFLAGS)

# The cluster soak of issue 11 (test/soak): a real 3-node custosd cluster signs Ed25519
# as fast as 16 callers can make it for 10 minutes (after a 10-minute warm-up in which the
# nodes' bounded memory holders — Pebble memtables and block caches — fill); at half-way a
# follower is killed, the other two keep signing, and it is restarted 20 s later. Prints
# each 10 s window's signatures/s and each node's RSS, each node's memory by holder at the
# start and the end, then judges issue 11's targets: each node's RSS flat within 10 % (the
# restarted follower's end at most 10 % above its RSS before the kill), the last full
# window's rate at least 80 % of the first's (downtime windows reported apart), the
# follower caught up within 60 s of its restart, and equal applied index and state hash on
# every node at the end. A target not met is reported, not an
# error. About 16 min; not part of `make test`. Writes bench-results/soak.json. Flags:
# SOAKFLAGS=
#   -duration D     how long to sign (default 10m)
#   -conc N         concurrent signers spread over the nodes (default 16)
#   -kill-at F      fraction of the run at which a follower is killed (default 0.5; 0: none)
#   -down D         how long it stays down (default 20s)
#   -warmup D, -custosd PATH, -node-log-level LEVEL, -keep, -v, -out FILE
# e.g. make soak SOAKFLAGS="-duration 90s -kill-at 0.4 -down 10s" for a quick look.
SOAKFLAGS ?=
soak:
	$(GO) run ./test/soak -out bench-results/soak.json $(SOAKFLAGS)

# The long fault-injection scenario: every fault kind, twice, under load (see test/chaos).
chaos:
	$(GO) run ./test/chaos/cmd/chaos -rounds 2 -out bench-results/chaos.json $(CHAOSFLAGS)

clean:
	rm -rf $(BIN)
