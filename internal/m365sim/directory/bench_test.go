package directory

import (
	"fmt"
	"testing"
)

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

// BenchmarkRename measures a userPrincipalName change in a 100,000-user
// tenant: the UPN index moves the user (binary search and memmove).
func BenchmarkRename(b *testing.B) {
	s := NewStore()
	if err := s.Load(Generate(100_000, 1)); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, 1000)
	for _, u := range s.List("", 1000) {
		ids = append(ids, u.ID)
	}
	i := 0
	for b.Loop() {
		upn := fmt.Sprintf("renamed%d@contoso.com", i)
		if _, err := s.Update(ids[i%len(ids)], Patch{Props: map[string]any{"userPrincipalName": upn}}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
