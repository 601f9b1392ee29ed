//go:build race

package testenv

// Race is true under the race detector. Its instrumentation allocates, and
// sync.Pool drops items at random under it, so tests that bound
// allocations check their bounds only without it.
const Race = true
