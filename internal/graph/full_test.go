package graph

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/profilesync/profilesync/internal/m365sim"
	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/profile"
)

// graphRequests returns the recorded Graph requests whose path starts with
// prefix (under /v1.0), with their queries decoded.
func graphRequests(sim *m365sim.Sim, prefix string) []url.Values {
	var out []url.Values
	for _, r := range sim.Requests.All() {
		if r.Origin != "graph" {
			continue
		}
		path, raw, _ := strings.Cut(r.Path, "?")
		if strings.TrimSuffix(path, "()") != "/v1.0"+prefix { // the SDK asks for users/delta()
			continue
		}
		q, _ := url.ParseQuery(raw)
		out = append(out, q)
	}
	return out
}

// checkAgainstDirectory compares the newest sighting of every user with
// the simulator's directory: every active user present, nobody else, each
// with its current name, job title and manager.
func checkAgainstDirectory(t *testing.T, sim *m365sim.Sim, got map[string]profile.User) {
	t.Helper()
	users := sim.Directory.Users()
	byID := map[string]directory.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	active := 0
	for _, du := range users {
		if du.Deleted {
			if _, ok := got[du.ID]; ok {
				t.Errorf("deleted user %s was read", du.ID)
			}
			continue
		}
		active++
		u, ok := got[du.ID]
		if !ok {
			t.Errorf("user %s (%v) was not read", du.ID, du.Props["userPrincipalName"])
			continue
		}
		if u.Props["userPrincipalName"] != du.Props["userPrincipalName"] {
			t.Errorf("user %s: upn %v, want %v", du.ID, u.Props["userPrincipalName"], du.Props["userPrincipalName"])
		}
		if v, set := du.Props["jobTitle"]; set && u.Props["jobTitle"] != v {
			t.Errorf("user %s: jobTitle %v, want %v", du.ID, u.Props["jobTitle"], v)
		}
		m, hasKey := u.Props["manager"]
		switch {
		case !hasKey:
			t.Errorf("user %s: manager unknown after a full read", du.ID)
		case du.ManagerID == "" || byID[du.ManagerID].Deleted:
			if m != nil {
				t.Errorf("user %s has no manager, got %v", du.ID, m)
			}
		default:
			if mm, _ := m.(map[string]any); mm == nil || mm["mail"] != byID[du.ManagerID].Props["mail"] {
				t.Errorf("user %s: manager %v, want mail %v", du.ID, m, byID[du.ManagerID].Props["mail"])
			}
		}
	}
	if len(got) != active {
		t.Errorf("%d users read, %d active", len(got), active)
	}
}

// TestFullReadInParallelRanges: a full sync takes a baseline delta link,
// then reads every user once through several UPN ranges at a time; the
// baseline link then yields only what changed since, in one request chain.
func TestFullReadInParallelRanges(t *testing.T) {
	sim, c := newSimClient(t, 3000, 0)
	c.parallelism = 4
	all, link := sightings(t, c, "")
	got := newestByID(t, all)
	if len(all) != len(got) {
		t.Errorf("%d sightings of %d users: someone was read twice", len(all), len(got))
	}
	checkAgainstDirectory(t, sim, got)

	// The baseline, then the catch-up round from it (nobody changed).
	deltas := graphRequests(sim, "/users/delta")
	if len(deltas) != 2 || deltas[0].Get("$deltatoken") != "latest" || !strings.Contains(deltas[0].Get("$select"), "manager") ||
		deltas[1].Get("$deltatoken") == "" || deltas[1].Get("$deltatoken") == "latest" {
		t.Errorf("users/delta requests %v, want a baseline ($deltatoken=latest, $select with manager), then one round from it", deltas)
	}
	filters := map[string]bool{}
	for _, q := range graphRequests(sim, "/users") {
		if f := q.Get("$filter"); strings.Contains(f, "userPrincipalName") && q.Get("$expand") != "" {
			filters[f] = true
			if q.Get("$top") != "999" || !strings.HasPrefix(q.Get("$expand"), "manager($select=") {
				t.Errorf("range read %v: want $top=999 and $expand=manager($select=…)", q)
			}
		}
	}
	if len(filters) < 4 {
		t.Errorf("%d distinct ranges read, want at least one per reader (4)", len(filters))
	}
	if n := len(graphRequests(sim, "/users/$count")); n < len(filters) {
		t.Errorf("%d counts for %d ranges: ranges were not balanced by $count", n, len(filters))
	}

	// Three users change; the baseline link gives exactly them, in one chain.
	users := sim.Directory.Users()
	changed := map[string]bool{}
	for i, du := range users[10:13] {
		if _, err := sim.Directory.Update(du.ID, directory.Patch{Props: map[string]any{"jobTitle": fmt.Sprintf("Changed %d", i)}}); err != nil {
			t.Fatal(err)
		}
		changed[du.ID] = true
	}
	sim.Requests.Reset()
	round, link2 := sightings(t, c, link)
	if len(round) != 3 || link2 == "" {
		t.Fatalf("delta round after the full read: %d users, link %q", len(round), link2)
	}
	for _, u := range round {
		if !changed[u.ID] {
			t.Errorf("unchanged user %s in the delta round", u.ID)
		}
	}
	if n := len(graphRequests(sim, "/users/delta")); n != 1 {
		t.Errorf("the delta round took %d requests, want 1", n)
	}
}

// TestChangesDuringAFullRead: users changed, renamed across ranges, added
// and deleted while the ranges are read (in ranges read already and not
// yet) hold their newest values once the next delta round is applied.
func TestChangesDuringAFullRead(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			sim, c := newSimClient(t, 2000, 0)
			c.parallelism = 3
			c.prefetch = 1
			r := rand.New(rand.NewPCG(seed, 7))
			users := sim.Directory.Users()
			state := map[string]profile.User{}
			seen := 0
			var mu sync.Mutex
			letters := "abcdefghijklmnopqrstuvwxyz0123456789"
			change := func() {
				du := users[r.IntN(len(users))]
				var p directory.Patch
				switch r.IntN(4) {
				case 0, 1: // rename into a random part of the alphabet
					local := string(letters[r.IntN(len(letters))]) + fmt.Sprintf("renamed%d", r.IntN(1e6))
					p.Props = map[string]any{"userPrincipalName": local + "@" + directory.Domain, "jobTitle": "Renamed"}
				case 2:
					p.Props = map[string]any{"jobTitle": fmt.Sprintf("Title %d", r.IntN(1e6))}
				case 3:
					m := users[r.IntN(len(users))].ID
					if m == du.ID {
						return
					}
					p.ManagerID = &m
				}
				_, _ = sim.Directory.Update(du.ID, p) // a deleted or cyclic pick is skipped
			}
			newest := map[string]profile.User{}
			link, err := c.Delta(context.Background(), testSel, "", func(u profile.User) error {
				mu.Lock()
				defer mu.Unlock()
				if old, ok := newest[u.ID]; !ok || u.Seq > old.Seq {
					newest[u.ID] = u
				}
				seen++
				if seen%50 == 0 { // changes all along the read
					for range 3 {
						change()
					}
				}
				if seen == 700 {
					if err := sim.Directory.Delete(users[5].ID, false); err != nil {
						t.Error(err)
					}
					if _, err := sim.Directory.Add(directory.User{ID: "0badc0de-0000-4000-8000-000000000001",
						Props: map[string]any{"userPrincipalName": "zz.added@" + directory.Domain, "accountEnabled": true}}); err != nil {
						t.Error(err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for id, u := range newest { // what the import file holds
				if !u.Removed {
					state[id] = u
				}
			}
			_, err = c.Delta(context.Background(), testSel, link, func(u profile.User) error {
				if u.Removed {
					delete(state, u.ID)
					return nil
				}
				old := state[u.ID]
				if _, known := u.Props["manager"]; !known && old.Props != nil {
					u.Props["manager"] = old.Props["manager"] // unchanged manager: SharePoint keeps it
				}
				state[u.ID] = u
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			checkAgainstDirectory(t, sim, state)
		})
	}
}

// TestSkewedNamesGiveBalancedRanges: however the names look, the planned
// ranges hold about as many users each, and together every user.
func TestSkewedNamesGiveBalancedRanges(t *testing.T) {
	for name, upn := range map[string]func(i int) string{
		"user0 prefix":     func(i int) string { return fmt.Sprintf("user0%05d", i) },
		"employee numbers": func(i int) string { return fmt.Sprintf("%08d", 10000000+i*7) },
		"one letter":       func(i int) string { return fmt.Sprintf("j%d", i%9) + strings.Repeat("x", i%5) + fmt.Sprint(i) },
		"guests":           func(i int) string { return fmt.Sprintf("p%d_fabrikam.com#EXT#", i) },
		"mixed case":       func(i int) string { return []string{"Anna", "anna", "ANNA", "bob", "Bob"}[i%5] + fmt.Sprint(i) },
	} {
		// Names handed out at random (the directory's order says nothing of
		// names, so the sample is fair), and in the directory's order (the
		// sample is then the lowest names: bisection has to do the work).
		for _, order := range []string{"random", "sorted"} {
			t.Run(name+"/"+order, func(t *testing.T) {
				sim, c := newSimClient(t, 4000, 0)
				c.parallelism = 4
				users := sim.Directory.Users()
				perm := rand.New(rand.NewPCG(uint64(len(name)), 1)).Perm(len(users))
				for i, du := range users {
					n := i
					if order == "random" {
						n = perm[i]
					}
					if _, err := sim.Directory.Update(du.ID, directory.Patch{Props: map[string]any{"userPrincipalName": upn(n) + "@" + directory.Domain}}); err != nil {
						t.Fatal(err)
					}
				}
				ranges, err := c.planRanges(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				active := 0
				for _, du := range sim.Directory.Users() {
					if !du.Deleted {
						active++
					}
				}
				share := active / (c.parallelism * 4)
				total := 0
				for _, r := range ranges {
					if r.count < 0 {
						t.Fatalf("range %q was not counted", r.Filter())
					}
					total += r.count
					if r.count > 2*share+1 {
						t.Errorf("range %q holds %d users, over twice its share (%d)", r.Filter(), r.count, share)
					}
				}
				if total != active {
					t.Errorf("the ranges count %d users, the directory has %d", total, active)
				}
				if len(ranges) < c.parallelism {
					t.Errorf("%d ranges for %d readers", len(ranges), c.parallelism)
				}
				all, _ := sightings(t, c, "")
				if got := newestByID(t, all); len(got) != active || len(all) != active {
					t.Errorf("read %d sightings of %d users, want %d once each", len(all), len(got), active)
				}
			})
		}
	}
}

// TestMidBound: the bound that splits a range lies strictly inside it in
// the lower-cased byte order, holds no '@', and exists whenever lo and hi
// leave room.
func TestMidBound(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	word := func() string {
		n := r.IntN(6)
		b := make([]byte, n)
		for i := range b {
			b[i] = boundAlphabet[r.IntN(len(boundAlphabet))]
		}
		if r.IntN(4) == 0 && n > 0 { // edges of the alphabet
			b[n-1] = boundAlphabet[[]int{0, len(boundAlphabet) - 1}[r.IntN(2)]]
		}
		return string(b)
	}
	for range 100000 {
		lo, hi := word(), word()
		open := r.IntN(5) == 0
		if !open && lo >= hi {
			lo, hi = hi, lo
		}
		if !open && lo == hi {
			continue
		}
		m, ok := midBound(lo, hi, open)
		if !ok {
			// Only when nothing fits: hi is lo followed by the lowest characters.
			if open || !strings.HasPrefix(hi, lo) || strings.Trim(hi[len(lo):], boundAlphabet[:1]) != "" {
				t.Fatalf("midBound(%q, %q, %v) found nothing", lo, hi, open)
			}
			continue
		}
		if m <= lo || (!open && m >= hi) || strings.Contains(m, "@") || strings.ToLower(m) != m {
			t.Fatalf("midBound(%q, %q, %v) = %q: not strictly inside", lo, hi, open, m)
		}
	}
	if _, ok := midBound("a", "é", false); ok {
		t.Error("a bound from characters outside the alphabet")
	}
}

// TestManagerCacheSmallerThanABatch: a batch needing more managers than the
// cache holds still gets every one of them (the fetches of the batch do not
// evict what it has yet to read).
func TestManagerCacheSmallerThanABatch(t *testing.T) {
	sim, c := newSimClient(t, 200, 0)
	c.cacheMax = 3
	r := newManagerResolver(c, []string{"id", "mail"})
	users := sim.Directory.Users()
	var batch []profile.User
	want := map[int]string{}
	for i, du := range users[:45] { // 45 users, each pointing at a different "manager"
		m := users[len(users)-1-i]
		batch = append(batch, profile.User{ID: du.ID, Props: map[string]any{"manager": managerRef(m.ID)}})
		if !m.Deleted {
			want[i], _ = m.Props["mail"].(string)
		}
	}
	if err := r.resolve(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for i, u := range batch {
		m, _ := u.Props["manager"].(map[string]any)
		mail, has := want[i]
		switch {
		case !has && m != nil:
			t.Errorf("user %d: a departed manager resolved to %v", i, m)
		case has && (m == nil || (mail != "" && m["mail"] != mail)):
			t.Errorf("user %d: manager %v, want mail %q", i, u.Props["manager"], mail)
		}
	}
}
