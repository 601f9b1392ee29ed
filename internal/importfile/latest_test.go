package importfile

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// rowsOf reads every record of files into id -> values (failing on a user
// present twice) and checks each file (BOM, JSON, counts, size).
func rowsOf(t *testing.T, files []File) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, f := range files {
		for _, r := range readFile(t, f).Value {
			id := r[idName]
			if _, dup := out[id]; dup {
				t.Errorf("user %s has more than one row across the files", id)
			}
			out[id] = r
		}
	}
	return out
}

func TestPutKeepsTheNewestSighting(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(dir, Limits{MaxProperties: 6}) // 3 records of 2 properties per file
	put := func(key string, seq uint64, v string) {
		t.Helper()
		if err := w.Put(Appearance{Key: key, Seq: seq, ID: key, Values: []KV{{"Title", v}}}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", 1, "a-old")
	put("b", 2, "b-only")
	put("c", 3, "c-old")
	put("a", 4, "a-new")  // replaces a row in the first file
	put("d", 5, "d-old")  // second file
	put("c", 9, "c-new")  // replaces
	put("d", 7, "d-mid")  // replaces d-old (7 > 5) but...
	put("d", 6, "d-late") // ...an older sighting than 7 arriving late: ignored
	put("e", 8, "e")
	w.Drop("e", 10, 3) // newer drop removes e's row
	w.Drop("b", 1, 3)  // older drop than b's row: ignored
	put("f", 11, "f")  // f: dropped then sent again
	w.Drop("f", 12, 4) //
	put("f", 13, "f-back")
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	got := rowsOf(t, files)
	want := map[string]string{"a": "a-new", "b": "b-only", "c": "c-new", "d": "d-mid", "f": "f-back"}
	if len(got) != len(want) {
		t.Errorf("got %d users %v, want %d", len(got), got, len(want))
	}
	for id, v := range want {
		if got[id]["Title"] != v {
			t.Errorf("user %s: Title = %q, want %q", id, got[id]["Title"], v)
		}
	}
	st := w.Stats()
	if st.Rows != 5 || st.Dropped[3] != 1 || st.Dropped[4] != 0 || st.Repeats != 8 {
		t.Errorf("stats = %+v, want 5 rows, 1 dropped with tag 3, 8 repeats", st)
	}
	// Only the returned files remain: superseded copies are gone.
	if n := len(dirEntries(t, dir)); n != len(files) {
		t.Errorf("%d files in the folder, %d returned", n, len(files))
	}
}

func TestFileLeftWithoutRowsIsRemoved(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(dir, Limits{MaxProperties: 4})
	for i, k := range []string{"a", "b", "c", "d", "a", "b"} {
		if err := w.Put(Appearance{Key: k, Seq: uint64(i + 1), ID: k, Values: []KV{{"P", fmt.Sprint(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	got := rowsOf(t, files)
	if len(got) != 4 || got["a"]["P"] != "4" || got["b"]["P"] != "5" {
		t.Errorf("rows = %v", got)
	}
	if len(files) != 2 { // [a b] emptied, [c d], [a b]
		t.Errorf("%d files, want 2 (the first one lost both rows)", len(files))
	}
	if n := len(dirEntries(t, dir)); n != 2 {
		t.Errorf("%d files on disk, want 2", n)
	}
}

func TestKeyIsTheUserNotTheIdName(t *testing.T) {
	// PrincipalName rows: a user renamed within the round has two IdName
	// values but one key; it must be sent once, under its newest UPN.
	w := NewWriter(t.TempDir(), Limits{})
	w.Put(Appearance{Key: "oid-1", Seq: 1, ID: "old@contoso.com", Values: []KV{{"P", "1"}}})
	w.Put(Appearance{Key: "oid-1", Seq: 2, ID: "new@contoso.com", Values: []KV{{"P", "2"}}})
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	got := rowsOf(t, files)
	if len(got) != 1 || got["new@contoso.com"]["P"] != "2" {
		t.Errorf("rows = %v, want only new@contoso.com", got)
	}
}

// TestPutMatchesModel compares random sequences of sightings (repeats,
// drops, late arrivals, nasty values, small files) with a plain map.
func TestPutMatchesModel(t *testing.T) {
	for round := range 200 {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		dir := t.TempDir()
		w := NewWriter(dir, Limits{MaxProperties: 2 + rng.IntN(20), MaxBytes: int64(300 + rng.IntN(2000))})
		type sight struct {
			seq  uint64
			drop bool
			val  string
		}
		model := map[string]sight{}
		users := 1 + rng.IntN(40)
		for i := range 1 + rng.IntN(150) {
			key := fmt.Sprintf("user-%d", rng.IntN(users))
			seq := uint64(i + 1)
			if rng.IntN(5) == 0 && seq > 10 {
				seq -= uint64(rng.IntN(10)) // a late arrival
			}
			s := sight{seq: seq, drop: rng.IntN(6) == 0, val: nasty[rng.IntN(len(nasty))] + fmt.Sprint(i)}
			if old, ok := model[key]; !ok || seq >= old.seq {
				model[key] = s
			}
			if s.drop {
				w.Drop(key, seq, 1)
			} else if err := w.Put(Appearance{Key: key, Seq: seq, ID: key, Values: []KV{{"V", s.val}}}); err != nil {
				t.Fatal(err)
			}
		}
		files, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := rowsOf(t, files)
		sent, dropped := 0, 0
		for key, s := range model {
			if s.drop {
				dropped++
				if _, ok := got[key]; ok {
					t.Fatalf("round %d: %s was dropped last but has a row", round, key)
				}
				continue
			}
			sent++
			// appendString turns invalid UTF-8 into U+FFFD: compare encoded.
			if r, ok := got[key]; !ok || string(appendString(nil, r["V"])) != string(appendString(nil, string([]rune(s.val)))) {
				t.Fatalf("round %d: %s = %q, want %q", round, r["V"], r["V"], s.val)
			}
		}
		if len(got) != sent {
			t.Fatalf("round %d: %d rows, model %d", round, len(got), sent)
		}
		if st := w.Stats(); st.Rows != sent || st.Dropped[1] != dropped {
			t.Fatalf("round %d: stats %+v, model sent %d dropped %d", round, st, sent, dropped)
		}
		if n := len(dirEntries(t, dir)); n != len(files) {
			t.Fatalf("round %d: %d files on disk, %d returned", round, n, len(files))
		}
		w.Abort()
		if n := len(dirEntries(t, dir)); n != 0 {
			t.Fatalf("round %d: Abort left %d files", round, n)
		}
	}
}

func TestRecordProperties(t *testing.T) {
	for _, vals := range [][]KV{nil, {{"a", "b"}}, {{`k"e:y`, `v:"\,}`}, {"x", `\`}}} {
		rec := encodeRecord(nil, `i"d:`, vals)
		if got := recordProperties(rec); got != 1+len(vals) {
			t.Errorf("recordProperties(%s) = %d, want %d", rec, got, 1+len(vals))
		}
	}
}

// BenchmarkPut writes 100,000 users per operation through Put (one row per
// user), none, 1% or 10% of them seen twice, and reports the cost of
// keeping one row per user; BenchmarkWrite, which keeps every row, is the
// baseline of the same run.
func BenchmarkPut(b *testing.B) {
	for _, every := range []int{0, 100, 10} {
		name := "repeats=0%"
		if every > 0 {
			name = fmt.Sprintf("repeats=%d%%", 100/every)
		}
		b.Run(name, func(b *testing.B) { benchPut(b, every) })
	}
}

func benchPut(b *testing.B, every int) {
	const records = 100_000
	dir := b.TempDir()
	keys := make([]string, records)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		w := NewWriter(dir, Limits{})
		seq := uint64(0)
		for i, k := range keys {
			seq++
			if err := w.Put(Appearance{Key: k, Seq: seq, ID: k, Values: benchValues}); err != nil {
				b.Fatal(err)
			}
			if every > 0 && i%every == 0 && i > 0 { // a replay of an earlier user
				seq++
				if err := w.Put(Appearance{Key: keys[i/2], Seq: seq, ID: keys[i/2], Values: benchValues}); err != nil {
					b.Fatal(err)
				}
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
		w.Abort()
	}
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "users/s")
}

func TestCompactKeepsRecordsLongerThanItsBuffer(t *testing.T) {
	w := NewWriter(t.TempDir(), Limits{})
	long := strings.Repeat("é\"\\x", bufferSize/2) // about 3 buffers once encoded
	w.Put(Appearance{Key: "a", ID: "a", Values: []KV{{"V", long}}})
	w.Put(Appearance{Key: "b", ID: "b", Values: []KV{{"V", "old"}}})
	w.Put(Appearance{Key: "c", ID: "c", Values: []KV{{"V", long + "c"}}})
	w.Put(Appearance{Key: "b", ID: "b", Values: []KV{{"V", "new"}}})
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	got := rowsOf(t, files)
	if len(got) != 3 || got["a"]["V"] != long || got["c"]["V"] != long+"c" || got["b"]["V"] != "new" {
		t.Errorf("rows after compaction: %d users, b = %q", len(got), got["b"]["V"])
	}
}

// TestDenseMatchesTheMap: sightings kept in the dense array (users
// numbered by the caller) give the same answers, row by row, as the hash
// table, whatever the mix of numbered and unnumbered users, sequence
// numbers and drops.
func TestDenseMatchesTheMap(t *testing.T) {
	for seed := range 300 {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		users := 1 + rng.IntN(40)
		numbered := rng.IntN(users + 1) // users 0..numbered-1 have numbers
		at := make([]int, users)
		for i, p := range rng.Perm(max(numbered, 1))[:numbered] {
			at[i] = p + 1
		}
		plain, dense := NewLatest(), NewLatest()
		dense.Dense(numbered)
		unnumbered := map[int]bool{}
		for n := range 1 + rng.IntN(120) {
			u := rng.IntN(users)
			if at[u] == 0 {
				unnumbered[u] = true
			}
			key := "user-" + strconv.Itoa(u)
			seq := uint64(0)
			if rng.IntN(3) > 0 {
				seq = uint64(1 + rng.IntN(60))
			}
			var a, b [3]any
			if rng.IntN(4) == 0 {
				tag := uint8(rng.IntN(3))
				a[0], a[1], a[2] = plain.Drop(key, seq, tag)
				b[0], b[1], b[2] = dense.DropAt(key, at[u], seq, tag)
			} else {
				row := uint32(n)
				a[0], a[1], a[2] = plain.Row(key, seq, row)
				b[0], b[1], b[2] = dense.RowAt(key, at[u], seq, row)
			}
			if a != b {
				t.Fatalf("seed %d sighting %d (%s, number %d, seq %d): map %v, dense %v", seed, n, key, at[u], seq, a, b)
			}
		}
		if a, b := plain.Stats(), dense.Stats(); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("seed %d: stats map %+v, dense %+v", seed, a, b)
		}
		if len(dense.seen) != len(unnumbered) {
			t.Fatalf("seed %d: %d users in the map, want the %d unnumbered ones seen", seed, len(dense.seen), len(unnumbered))
		}
	}
}
