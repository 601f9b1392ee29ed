//go:build !race

package importfile

// raceEnabled is true under the race detector, which slows the
// randomized comparisons with the oracle down tenfold: they run fewer rounds.
const raceEnabled = false
