package graph

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"
)

// contains reports whether r selects u when the server orders strings by
// less (a strict total order): ge and le as Graph evaluates them.
func (r UPNRange) contains(u string, less func(a, b string) bool) bool {
	if r.Lo != "" && less(u, r.Lo) {
		return false
	}
	if r.Hi != "" && less(r.Hi, u) {
		return false
	}
	return true
}

// adversarial name sets: skewed prefixes, numbers, one letter, guests,
// punctuation allowed in UPNs, non-ASCII, mixed case.
func nameSets(rng *rand.Rand) map[string][]string {
	sets := map[string][]string{}
	add := func(name string, n int, gen func(i int) string) {
		for i := range n {
			sets[name] = append(sets[name], gen(i))
		}
	}
	add("user0 prefix", 5000, func(i int) string { return fmt.Sprintf("user0%05d@contoso.com", i) })
	add("employee numbers", 3000, func(i int) string { return fmt.Sprintf("%06d@contoso.com", rng.IntN(1_000_000)) })
	add("one letter", 2000, func(i int) string { return fmt.Sprintf("a%d@contoso.com", i) })
	add("guests", 1500, func(i int) string {
		return fmt.Sprintf("person%d_fabrikam.com#EXT#@contoso.onmicrosoft.com", i)
	})
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.-_!#^~éüß李Ω$"
	runes := []rune(alphabet)
	add("random mix", 4000, func(int) string {
		var b strings.Builder
		for range 1 + rng.IntN(12) {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String() + "@" + []string{"contoso.com", "Contoso.onmicrosoft.com", "x.io"}[rng.IntN(3)]
	})
	return sets
}

// orders a server might compare strings in.
func orders(rng *rand.Rand) map[string]func(a, b string) bool {
	rank := map[rune]int{}
	perm := rng.Perm(1 << 16)
	rankOf := func(r rune) int {
		if v, ok := rank[r]; ok {
			return v
		}
		rank[r] = perm[int(r)%len(perm)]
		return rank[r]
	}
	byRank := func(a, b string) bool {
		ra, rb := []rune(a), []rune(b)
		for i := 0; i < len(ra) && i < len(rb); i++ {
			if ra[i] != rb[i] {
				x, y := rankOf(ra[i]), rankOf(rb[i])
				if x != y {
					return x < y
				}
				return ra[i] < rb[i]
			}
		}
		return len(ra) < len(rb)
	}
	// A "culture-like" order: letters and digits first, punctuation
	// ignored, then the whole string as a tie-break.
	culture := func(a, b string) bool {
		strip := func(s string) string {
			return strings.Map(func(r rune) rune {
				if unicode.IsLetter(r) || unicode.IsDigit(r) {
					return unicode.ToLower(r)
				}
				return -1
			}, s)
		}
		if x, y := strip(a), strip(b); x != y {
			return x < y
		}
		return strings.ToLower(a) < strings.ToLower(b)
	}
	return map[string]func(a, b string) bool{
		"case-insensitive ordinal": func(a, b string) bool { return strings.ToLower(a) < strings.ToLower(b) },
		"case-sensitive ordinal":   func(a, b string) bool { return a < b },
		"culture-like":             culture,
		"random character ranks":   byRank,
	}
}

// TestSplitUPNsCompleteWhateverTheOrder: whatever order the server
// compares in, every UPN falls in at least one range; in the order the
// ranges were cut in, in exactly one, and the ranges are balanced.
func TestSplitUPNsCompleteWhateverTheOrder(t *testing.T) {
	for seed := range uint64(3) {
		rng := rand.New(rand.NewPCG(seed, 11))
		for setName, names := range nameSets(rng) {
			for _, n := range []int{2, 8, 16} {
				ranges := SplitUPNs(names, n)
				for _, r := range ranges {
					if strings.Contains(r.Lo, "@") || strings.Contains(r.Hi, "@") {
						t.Fatalf("%s: bound with '@': %+v", setName, r)
					}
				}
				for orderName, less := range orders(rng) {
					for _, u := range names {
						hits := 0
						for _, r := range ranges {
							if r.contains(u, less) {
								hits++
							}
						}
						if hits == 0 {
							t.Fatalf("seed %d, %s, n=%d, %s order: %q is in no range %v", seed, setName, n, orderName, u, ranges)
						}
						if orderName == "case-insensitive ordinal" && hits != 1 {
							t.Fatalf("seed %d, %s, n=%d: %q is in %d ranges under the order they were cut in", seed, setName, n, u, hits)
						}
					}
				}
				// Balance: no range holds more than twice its share (+ a
				// little for names sharing a local part).
				less := orders(rng)["case-insensitive ordinal"]
				share := len(names) / len(ranges)
				for _, r := range ranges {
					c := 0
					for _, u := range names {
						if r.contains(u, less) {
							c++
						}
					}
					if c > 2*share+len(names)/50 {
						t.Errorf("seed %d, %s, n=%d: range %+v holds %d of %d (share %d)", seed, setName, n, r, c, len(names), share)
					}
				}
				if len(ranges) < n/2 {
					t.Errorf("seed %d, %s: %d ranges for n=%d", seed, setName, len(ranges), n)
				}
			}
		}
	}
}

func TestUPNRangeFilter(t *testing.T) {
	for _, tc := range []struct {
		r    UPNRange
		want string
	}{
		{UPNRange{}, ""},
		{UPNRange{Hi: "m"}, "userPrincipalName le 'm'"},
		{UPNRange{Lo: "o'neil"}, "userPrincipalName ge 'o''neil'"},
		{UPNRange{Lo: "a", Hi: "b"}, "userPrincipalName ge 'a' and userPrincipalName le 'b'"},
	} {
		if got := tc.r.Filter(); got != tc.want {
			t.Errorf("%+v.Filter() = %q, want %q", tc.r, got, tc.want)
		}
	}
	if got := SplitUPNs([]string{"a@x"}, 8); len(got) != 1 || got[0] != (UPNRange{}) {
		t.Errorf("one name: %v, want the whole space", got)
	}
}
