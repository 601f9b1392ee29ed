package directory

import "testing"

// BenchmarkGenerateLoad measures building a 100,000-user tenant, the cost
// of starting the simulator with --users 100000.
func BenchmarkGenerateLoad(b *testing.B) {
	for b.Loop() {
		s := NewStore()
		if err := s.Load(Generate(100_000, 1)); err != nil {
			b.Fatal(err)
		}
	}
}
