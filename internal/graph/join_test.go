package graph

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

// randomValue is a JSON-shaped value: strings (unicode, invalid UTF-8 is
// not JSON-shaped and not generated), bools, float64 (integral or not,
// -0, huge, tiny), nil, and nested []any and map[string]any.
func randomValue(r *rand.Rand, depth int) any {
	n := 7
	if depth > 3 {
		n = 5 // no more containers
	}
	switch r.IntN(n) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return randomString(r)
	case 3:
		switch r.IntN(6) {
		case 0:
			return float64(r.Int64N(1<<60) - 1<<59)
		case 1:
			return math.Copysign(0, -1)
		case 2:
			return r.NormFloat64() * math.Pow(10, float64(r.IntN(600)-300))
		case 3:
			return float64(1<<53 + r.IntN(4))
		}
		return float64(r.IntN(2000) - 1000)
	case 4:
		return randomString(r)
	case 5:
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = randomValue(r, depth+1)
		}
		return a
	}
	m := make(map[string]any, 4)
	for range r.IntN(5) {
		m[randomString(r)] = randomValue(r, depth+1)
	}
	return m
}

func randomString(r *rand.Rand) string {
	alphabet := []string{"a", "Z", "0", " ", "\"", "\\", "\n", "\x00", "é", "東京", "🚀", "#EXT#", "\u2028", "\ufffd"}
	var b strings.Builder
	for range r.IntN(12) {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func randomUser(r *rand.Rand, i int) profile.User {
	u := profile.User{ID: fmt.Sprintf("user-%d-%s", i, randomString(r)), Removed: r.IntN(10) == 0, Seq: r.Uint64() >> r.IntN(64)}
	switch r.IntN(20) {
	case 0: // nil Props
	case 1:
		u.Props = map[string]any{}
	default:
		u.Props = map[string]any{"id": u.ID}
		for range r.IntN(12) {
			u.Props[randomString(r)] = randomValue(r, 0)
		}
	}
	return u
}

// TestJoinSpillRoundTrip: users (ID, Removed, Seq, Props) and manager
// candidates come back from the spill files exactly as they went in,
// across many buckets.
func TestJoinSpillRoundTrip(t *testing.T) {
	defer func(n int) { joinBucket = n }(joinBucket)
	joinBucket = 7

	r := rand.New(rand.NewPCG(1, 2))
	sel := []string{"displayName", "mail", "nested", "missing"}
	const n = 2000
	in := make([]profile.User, n)
	managerOf := make([]string, n)
	dir := t.TempDir()
	j, err := newJoiner(dir, sel)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	want := map[string]map[string]any{} // manager id → its selected values
	for i := range in {
		u := randomUser(r, i)
		if u.Props != nil && i%3 == 0 {
			u.Props["displayName"] = randomString(r)
			u.Props["nested"] = randomValue(r, 0)
		}
		in[i] = u
		// The spill must not keep references to what it was given.
		if err := j.candidate(cloneUser(u)); err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for _, k := range sel {
			if v, ok := u.Props[k]; ok {
				m[k] = v
			}
		}
		want[u.ID] = m
	}
	for i := range in {
		managerOf[i] = in[r.IntN(n)].ID
		if err := j.wait(cloneUser(in[i]), managerOf[i]); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]profile.User{}
	err = j.finish(context.Background(), &managerResolver{sel: sel, cache: newLRU(10)}, func(u profile.User) error {
		if _, dup := got[u.ID]; dup {
			t.Fatalf("user %q handed over twice", u.ID)
		}
		got[u.ID] = u
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d users back, want %d", len(got), n)
	}
	for i, w := range in {
		g := got[w.ID]
		if !reflect.DeepEqual(g.Props["manager"], want[managerOf[i]]) {
			t.Fatalf("user %d: manager %#v, want %#v", i, g.Props["manager"], want[managerOf[i]])
		}
		delete(g.Props, "manager")
		if w.Props == nil && len(g.Props) == 0 {
			g.Props = nil // finish gives a user without Props a map for its manager
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("user %d:\n%#v\nwant\n%#v", i, g, w)
		}
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 2 {
		t.Errorf("files left in the spill directory: %v", left)
	}
}

func cloneUser(u profile.User) profile.User {
	if u.Props != nil {
		u.Props = cloneValue(u.Props).(map[string]any)
	}
	return u
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		if x == nil {
			return x
		}
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = cloneValue(e)
		}
		return a
	}
	return v
}

// TestJoinSpillMissingManager: a manager not among the candidates is
// looked up with the resolver (here from its cache).
func TestJoinSpillMissingManager(t *testing.T) {
	sel := []string{"mail"}
	j, err := newJoiner(t.TempDir(), sel)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	u := profile.User{ID: "u1", Props: map[string]any{"id": "u1"}, Seq: 42}
	if err := j.candidate(u); err != nil {
		t.Fatal(err)
	}
	if err := j.wait(u, "outsider"); err != nil {
		t.Fatal(err)
	}
	r := &managerResolver{sel: sel, cache: newLRU(10)}
	r.cache.put("outsider", []any{"boss@contoso.com"})
	var got []profile.User
	if err := j.finish(context.Background(), r, func(u profile.User) error { got = append(got, u); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Seq != 42 || !reflect.DeepEqual(got[0].Props["manager"], map[string]any{"mail": "boss@contoso.com"}) {
		t.Errorf("got %#v", got)
	}
}

// TestJoinSpillValues: the value encoding on its own, including what
// Props never hold from a page but might from elsewhere.
func TestJoinSpillValues(t *testing.T) {
	vals := []any{
		nil, true, false, "", "x", "東京 🚀", 0.0, math.Copysign(0, -1), 1.5, -7.0, 1e300, 5e-324,
		float64(1 << 53), float64(1<<53 + 2), math.Inf(1), math.Inf(-1),
		[]any{}, []any(nil), map[string]any{}, map[string]any(nil),
		[]any{nil, "a", []any{1.0}, map[string]any{"k": map[string]any{"": nil}}},
	}
	var rd spillReader
	for _, v := range vals {
		b, err := appendValue(nil, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		rd.reset(b)
		got, err := rd.value(0)
		if err != nil || !reflect.DeepEqual(got, v) || rd.off != len(b) {
			t.Errorf("%#v: got %#v, %v (read %d of %d bytes)", v, got, err, rd.off, len(b))
		}
		if f, ok := v.(float64); ok && math.Signbit(f) != math.Signbit(got.(float64)) {
			t.Errorf("%v: sign lost", f)
		}
	}
	nan, err := appendValue(nil, math.NaN(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rd.reset(nan)
	if got, err := rd.value(0); err != nil || !math.IsNaN(got.(float64)) {
		t.Errorf("NaN: %v, %v", got, err)
	}
	// Other types go through JSON, as the old JSON lines did.
	b, err := appendValue(nil, []string{"a", "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rd.reset(b)
	if got, err := rd.value(0); err != nil || !reflect.DeepEqual(got, []any{"a", "b"}) {
		t.Errorf("[]string: %#v, %v", got, err)
	}
	// Truncated or corrupt input is an error, never a panic.
	full, _ := appendValue(nil, vals[len(vals)-1], 0)
	for i := range full {
		rd.reset(full[:i])
		if _, err := rd.value(0); err == nil {
			t.Errorf("%d of %d bytes: no error", i, len(full))
		}
	}
	for _, bad := range [][]byte{{0xff}, {vArray, 0xff, 0xff, 0xff, 0xff, 0x0f}, {vString, 0x80}} {
		rd.reset(bad)
		if _, err := rd.value(0); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}

// BenchmarkJoinSpill spills 100,000 users (ten properties each, three of
// them selected from the manager) as users waiting for a manager and as
// candidates, then joins them: writing, splitting into buckets, reading
// back.
func BenchmarkJoinSpill(b *testing.B) {
	const n = 100_000
	var p page
	if err := decodePage(syntheticPage(n, ""), &p); err != nil {
		b.Fatal(err)
	}
	us := make([]profile.User, n)
	for i := range us {
		us[i] = p.users[i].user
		us[i].Seq = uint64(i + 1)
	}
	sel := []string{"displayName", "mail", "jobTitle"}
	r := &managerResolver{sel: sel, cache: newLRU(10)}
	b.ReportAllocs()
	start := startCounting()
	for b.Loop() {
		j, err := newJoiner(b.TempDir(), sel)
		if err != nil {
			b.Fatal(err)
		}
		for i, u := range us {
			if err := j.candidate(u); err != nil {
				b.Fatal(err)
			}
			if err := j.wait(u, us[i/10].ID); err != nil {
				b.Fatal(err)
			}
		}
		seen := 0
		err = j.finish(context.Background(), r, func(u profile.User) error {
			seen++
			if _, ok := u.Props["manager"].(map[string]any); !ok || u.Seq == 0 {
				b.Fatalf("user %q: manager %#v, seq %d", u.ID, u.Props["manager"], u.Seq)
			}
			return nil
		})
		j.close()
		if err != nil || seen != n {
			b.Fatalf("%d users, %v", seen, err)
		}
	}
	reportPerUser(b, n, start)
}
