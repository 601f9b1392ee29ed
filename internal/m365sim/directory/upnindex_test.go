package directory

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// checkIndex compares the UPN index with a rebuild from scratch: every
// active user whose UPN is a string, by (FoldUPN(upn), id), nothing else.
func checkIndex(t *testing.T, s *Store, when string) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var want []*entry
	for _, e := range s.sorted {
		if e.state != Active {
			continue
		}
		if upn, ok := s.upnOf(e); ok {
			if e.upnKey != FoldUPN(upn) || !e.ranked {
				t.Fatalf("%s: %s has key %q ranked %v, want %q", when, e.id, e.upnKey, e.ranked, FoldUPN(upn))
			}
			want = append(want, e)
		}
	}
	slices.SortFunc(want, func(a, b *entry) int { return cmpPos(a, b.upnKey, b.id) })
	if !slices.Equal(s.upnIdx, want) {
		t.Fatalf("%s: index holds %d users, want %d (or the order differs)", when, len(s.upnIdx), len(want))
	}
	in := make(map[*entry]bool, len(want))
	for _, e := range want {
		in[e] = true
	}
	for _, e := range s.sorted {
		if e.ranked != in[e] {
			t.Fatalf("%s: %s ranked %v", when, e.id, e.ranked)
		}
	}
}

// randomUPN draws local parts from the characters Entra allows plus ones it
// does not (mixed case, digits, punctuation, non-ASCII with irregular case
// mappings), some of them guests (#EXT#).
func randomUPN(r *rand.Rand) string {
	pieces := []string{"a", "B", "z", "Z", "m", "0", "9", ".", "_", "-", "'", "!", "#", "^", "~", "$",
		"é", "É", "ß", "ẞ", "İ", "ı", "K", "Σ", "ς", "σ", "ǅ", "ǆ", "Ǆ", "ﬀ", "日", "\u00a0", "@x"}
	var b strings.Builder
	for range 1 + r.IntN(6) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	local := b.String()
	switch r.IntN(5) {
	case 0:
		return local + "_fabrikam.com#EXT#@contoso.onmicrosoft.com"
	case 1:
		return strings.ToUpper(local) + "@Contoso.com"
	}
	return local + "@contoso.com"
}

// TestUPNIndexUnderWrites: after every kind of write the index equals a
// rebuild from scratch.
func TestUPNIndexUnderWrites(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	s := NewStore()
	var users []User
	for i := range 200 {
		users = append(users, User{Props: map[string]any{"userPrincipalName": fmt.Sprintf("%s%d", randomUPN(r), i)}, Deleted: i%17 == 0})
	}
	if err := s.Load(users); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s, "after Load")
	var all []string // every id ever added (hard-deleted ones stay: writes to them fail)
	for _, u := range s.Users() {
		all = append(all, u.ID)
	}
	for step := range 2000 {
		id := all[r.IntN(len(all))]
		var what string
		switch op := r.IntN(7); op {
		case 0:
			what = "add"
			if u, err := s.Add(User{Props: map[string]any{"userPrincipalName": randomUPN(r) + fmt.Sprint(step)}}); err == nil {
				all = append(all, u.ID)
			}
		case 1, 2:
			what = "rename"
			_, _ = s.Update(id, Patch{Props: map[string]any{"userPrincipalName": randomUPN(r) + fmt.Sprint(step)}})
		case 3:
			what = "rename case only"
			if u, ok := s.Get(id); ok {
				_, _ = s.Update(id, Patch{Props: map[string]any{"userPrincipalName": strings.ToUpper(u.Props["userPrincipalName"].(string))}})
			}
		case 4:
			what = "other property"
			_, _ = s.Update(id, Patch{Props: map[string]any{"jobTitle": fmt.Sprint(step)}})
		case 5:
			what = "delete"
			_ = s.Delete(id, r.IntN(4) == 0)
		case 6:
			what = "restore"
			_, _ = s.Restore(id)
		}
		checkIndex(t, s, fmt.Sprintf("step %d (%s)", step, what))
	}
	// A second spelling of userPrincipalName cannot slip past the checks
	// (between two active users: ids are random, so pick them, not the first two).
	var active []User
	for _, x := range s.Users() {
		if !x.Deleted {
			active = append(active, x)
		}
	}
	if len(active) < 2 {
		t.Fatalf("only %d active users left", len(active))
	}
	u := active[0]
	if _, err := s.Update(u.ID, Patch{Props: map[string]any{"UserPrincipalName": ""}}); err == nil {
		t.Error("an empty UserPrincipalName was accepted")
	}
	if _, err := s.Update(u.ID, Patch{Props: map[string]any{"mail": "a@x", "Mail": "b@x"}}); err == nil {
		t.Error("mail and Mail in one patch were accepted")
	}
	other := active[1].Props["userPrincipalName"].(string)
	if _, err := s.Update(u.ID, Patch{Props: map[string]any{"USERPRINCIPALNAME": strings.ToLower(other)}}); err == nil {
		t.Error("a taken UPN was accepted under another spelling of the property")
	}
	checkIndex(t, s, "end")
}

// TestScanUPNRangeConcurrent pages through ranges while other goroutines
// rename, add and delete users (go test -race checks the locking): every
// user that stays untouched is seen exactly once, pages come in index
// order, and a user renamed across the read position is seen at most twice.
func TestScanUPNRangeConcurrent(t *testing.T) {
	s := NewStore()
	var users []User
	for i := range 3000 {
		users = append(users, User{Props: map[string]any{"userPrincipalName": fmt.Sprintf("u%04d@contoso.com", i)}})
	}
	if err := s.Load(users); err != nil {
		t.Fatal(err)
	}
	// Users u1000..u1999 are never written; the others churn.
	stable := map[string]bool{}
	for _, u := range s.Users() {
		var n int
		fmt.Sscanf(u.Props["userPrincipalName"].(string), "u%d@", &n)
		if n >= 1000 && n < 2000 {
			stable[u.ID] = true
		}
	}
	var churn []string
	for _, u := range s.Users() {
		if !stable[u.ID] {
			churn = append(churn, u.ID)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := churn[r.IntN(len(churn))]
				switch r.IntN(4) {
				case 0:
					_, _ = s.Update(id, Patch{Props: map[string]any{"userPrincipalName": fmt.Sprintf("u%04d.%d.%d@contoso.com", r.IntN(3000), w, i)}})
				case 1:
					_ = s.Delete(id, false)
				case 2:
					_, _ = s.Restore(id)
				case 3:
					_, _ = s.Add(User{Props: map[string]any{"userPrincipalName": fmt.Sprintf("u%04d+%d.%d@contoso.com", r.IntN(3000), w, i)}})
				}
			}
		})
	}
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()
	v0 := s.Version()
	for round := range 20 {
		rng := UPNRange{Lo: []string{"U05"}, Hi: []string{"u25"}}
		seen := map[string]int{}
		var pos, prev UPNPos
		for more := true; more; {
			pos, more = s.ScanUPNRange(rng, pos, 37, func(v View) bool {
				p := UPNPos{v.e.upnKey, v.ID()}
				if p.Key < "u05" || p.Key > "u25" {
					t.Errorf("%q is outside the range", p.Key)
				}
				if prev != (UPNPos{}) && cmpPos(v.e, prev.Key, prev.ID) <= 0 {
					t.Errorf("order: %v after %v", p, prev)
				}
				prev = p
				seen[v.ID()]++
				return true
			})
		}
		for id := range stable {
			if seen[id] != 1 {
				t.Fatalf("round %d: stable user %s seen %d times", round, id, seen[id])
			}
		}
		for id, n := range seen {
			if n > 2 && !stable[id] {
				t.Fatalf("round %d: %s seen %d times", round, id, n)
			}
		}
	}
	halt()
	if s.Version()-v0 < 100 {
		t.Errorf("only %d writes ran during the reads", s.Version()-v0)
	}
	checkIndex(t, s, "after churn")
}
