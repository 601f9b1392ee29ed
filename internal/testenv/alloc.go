package testenv

import "runtime"

// Allocated returns the bytes fn allocates on the heap (after a collection,
// so that what came before is not counted): the measure of the tests that
// bound what decoding a large input costs.
func Allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
