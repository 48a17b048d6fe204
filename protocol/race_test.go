//go:build race

package protocol

// raceEnabled reports whether this test binary was built with -race, under which
// tss-lib's big-number arithmetic runs several times slower (an EdDSA 2-of-3 keygen
// takes about 6 times as long as without it on a 2-core machine).
const raceEnabled = true
