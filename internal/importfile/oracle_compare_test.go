package importfile

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// randText returns a string for a key or value: often plain, sometimes
// nasty (quotes, backslashes, control characters, U+2028, invalid UTF-8,
// non-ASCII), of any length up to a few hundred bytes, rarely longer than
// the rewrite's read buffer.
func randText(rng *rand.Rand) string {
	switch rng.IntN(12) {
	case 0:
		return ""
	case 1, 2:
		return nasty[rng.IntN(len(nasty))]
	case 3: // random bytes, any value
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	case 4: // random runes, some of them the ones that need escaping
		var sb strings.Builder
		for range rng.IntN(30) {
			switch rng.IntN(6) {
			case 0:
				sb.WriteRune(rune(rng.IntN(0x20)))
			case 1:
				sb.WriteRune([]rune{'"', '\\', '\u2028', '\u2029', utf8.RuneError, 0x7f}[rng.IntN(6)])
			case 2:
				sb.WriteRune(rune(0x80 + rng.IntN(0x10000-0x80)))
			case 3:
				sb.WriteRune(rune(0x10000 + rng.IntN(0x100000)))
			default:
				sb.WriteByte(byte(' ' + rng.IntN(95)))
			}
		}
		return sb.String()
	case 5: // long plain text with a rare special character at any offset
		b := []byte(strings.Repeat("abcdefgh", 1+rng.IntN(40)))
		if rng.IntN(2) == 0 {
			b[rng.IntN(len(b))] = []byte{'"', '\\', '\n', 0, 0xC3, 0xE2, 0xFF}[rng.IntN(7)]
		}
		return string(b)
	case 6:
		if rng.IntN(40) == 0 {
			return strings.Repeat("é\"\\x", bufferSize/4+rng.IntN(1000))
		}
	}
	// plain: letters, digits, punctuation, some non-ASCII
	words := []string{"Sales", "R&D", "+1 425 555 0100", "boss@contoso.com", "Müller", "José", "中文", "4711", "x", "<b>", "a,b"}
	var sb strings.Builder
	for i := range 1 + rng.IntN(4) {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(words[rng.IntN(len(words))])
	}
	return sb.String()
}

// randName returns a property name, now and then one Write refuses.
func randName(rng *rand.Rand) string {
	if rng.IntN(400) == 0 {
		return []string{"IdName", "idname", "IDNAME", "IdNamE"}[rng.IntN(4)]
	}
	names := []string{"CostCenter", "HomePhone", "Division", "Ext1", "ManagerEmail", "Phones", "Building", "SPS-Dotted", "A"}
	if rng.IntN(20) == 0 {
		return randText(rng)
	}
	return names[rng.IntN(len(names))]
}

// fits reports whether Write takes a record under lim.
func fits(lim Limits, id string, values []KV) bool {
	if lim.MaxProperties <= 0 {
		lim.MaxProperties = DefaultMaxProperties
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	for _, kv := range values {
		if strings.EqualFold(kv.Name, idName) {
			return false
		}
	}
	size := len(header) + len(firstSep) + len(trailer) + len(oldEncodeRecord(nil, id, values))
	return id != "" && 1+len(values) <= lim.MaxProperties && int64(size) <= lim.MaxBytes
}

// writerLike is what the Writer and the oracle have in common.
type writerLike interface {
	Write(id string, values []KV) error
	Put(a Appearance) error
	Drop(key string, seq uint64, tag uint8)
	Close() ([]File, error)
	Stats() Stats
	Abort()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestWriterMatchesOracle feeds random runs (Put, Drop and Write; repeats,
// late arrivals, drops, refused records, nasty values, files split by
// small limits) to the Writer and to the Writer as it was before
// (oracle_test.go), and requires the same results: every call's error, the
// same files with the same bytes and counts, the same stats.
func TestWriterMatchesOracle(t *testing.T) {
	rounds := 150
	if testing.Short() || raceEnabled {
		rounds = 40
	}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 11))
		var lim Limits
		switch rng.IntN(4) {
		case 0: // defaults: one file
		case 1:
			lim = Limits{MaxProperties: 1 + rng.IntN(60), MaxBytes: int64(100 + rng.IntN(8000))}
		case 2:
			lim = Limits{MaxProperties: 2 + rng.IntN(200)}
		case 3:
			lim = Limits{MaxBytes: int64(200 + rng.IntN(20000))}
		}
		newDir, oldDir := t.TempDir(), t.TempDir()
		ws := []writerLike{NewWriter(newDir, lim), newOldWriter(oldDir, lim)}
		users := 1 + rng.IntN(150)
		ops := 1 + rng.IntN(300)
		seq := uint64(0)
		refusals := round%10 == 0 // rounds that may end with a refused Put
		var trace []string
		for i := range ops {
			key := fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", rng.IntN(users))
			if rng.IntN(50) == 0 {
				key = "" // Put falls back to the IdName value
			}
			seq++
			s := seq
			switch rng.IntN(10) {
			case 0:
				s = 0 // newer than all
			case 1:
				s = uint64(rng.IntN(int(seq) + 1)) // late arrival
			case 2:
				if rng.IntN(20) == 0 {
					s = math.MaxUint32 + uint64(rng.IntN(3)) // clamped
				}
			}
			id := key
			if rng.IntN(10) == 0 {
				id = randText(rng)
			}
			values := make([]KV, rng.IntN(12))
			for j := range values {
				values[j] = KV{randName(rng), randText(rng)}
			}
			op := rng.IntN(20)
			if op > 3 && !fits(lim, id, values) && (!refusals || rng.IntN(100) != 0) {
				// Keep most runs going: a refused Put ends the Writer.
				values = values[:0]
				id = key
				if id == "" {
					id = "anonymous"
				}
			}
			var res [2]string // the error each returned
			for k, w := range ws {
				switch {
				case op < 3:
					w.Drop(key, s, uint8(1+op))
				case op == 3:
					res[k] = errText(w.Write(id, values))
				default:
					res[k] = errText(w.Put(Appearance{Key: key, Seq: s, ID: id, Values: values}))
				}
			}
			trace = append(trace, fmt.Sprintf("op %d: kind %d key %q seq %d: %q", i, op, key, s, res[0]))
			if res[0] != res[1] {
				t.Fatalf("round %d op %d: Writer %q, oracle %q\n%s", round, i, res[0], res[1], strings.Join(trace, "\n"))
			}
		}
		if sn, so := ws[0].Stats(), ws[1].Stats(); fmt.Sprint(sn) != fmt.Sprint(so) {
			t.Fatalf("round %d: stats %+v, oracle %+v", round, sn, so)
		}
		nf, nerr := ws[0].Close()
		of, oerr := ws[1].Close()
		if errText(nerr) != errText(oerr) || len(nf) != len(of) {
			t.Fatalf("round %d: Close: %d files, %v; oracle %d files, %v", round, len(nf), nerr, len(of), oerr)
		}
		for i := range nf {
			n, o := nf[i], of[i]
			if n.Records != o.Records || n.Properties != o.Properties || n.Bytes != o.Bytes {
				t.Errorf("round %d file %d: %+v, oracle %+v", round, i, n, o)
			}
			nb, err := os.ReadFile(n.Path)
			if err != nil {
				t.Fatal(err)
			}
			ob, err := os.ReadFile(o.Path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(nb, ob) {
				t.Fatalf("round %d file %d differs from the oracle's:\n%s\noracle:\n%s", round, i, nb, ob)
			}
		}
		if sn, so := ws[0].Stats(), ws[1].Stats(); fmt.Sprint(sn) != fmt.Sprint(so) {
			t.Fatalf("round %d: stats after Close %+v, oracle %+v", round, sn, so)
		}
		if a, b := len(dirEntries(t, newDir)), len(dirEntries(t, oldDir)); a != b || nerr == nil && a != len(nf) {
			t.Fatalf("round %d: %d files on disk, oracle %d, returned %d", round, a, b, len(nf))
		}
		for _, w := range ws {
			w.Abort()
		}
		if n := len(dirEntries(t, newDir)); n != 0 {
			t.Fatalf("round %d: Abort left %d files", round, n)
		}
	}
}

func TestAppendStringMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 10_000
	}
	for range n {
		s := randText(rng)
		if got, want := appendString(nil, s), oldAppendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, oracle %s", s, got, want)
		}
	}
	// Every byte value at every position of a word, and around it.
	for n := 1; n <= 17; n++ {
		for pos := range n {
			for c := range 256 {
				b := bytes.Repeat([]byte{'a'}, n)
				b[pos] = byte(c)
				if got, want := appendString(nil, string(b)), oldAppendString(nil, string(b)); !bytes.Equal(got, want) {
					t.Fatalf("appendString(%q) = %s, oracle %s", b, got, want)
				}
			}
		}
	}
}

func FuzzAppendStringMatchesOracle(f *testing.F) {
	for _, s := range nasty {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := appendString(nil, s), oldAppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, oracle %s", s, got, want)
		}
	})
}

// TestOnlyASCIIFoldsToIdName backs Write's shortcut of comparing a name
// with "IdName" only when their lengths are equal: no rune outside ASCII
// is a case variant of one of its letters, so a match has its length.
func TestOnlyASCIIFoldsToIdName(t *testing.T) {
	for _, c := range idName {
		for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
			if f >= utf8.RuneSelf {
				t.Errorf("%q folds to %q, which is not ASCII", c, f)
			}
		}
	}
}

func TestRowSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for range 200 {
		var s rowSet
		in := map[uint32]bool{}
		for range rng.IntN(50) {
			r := uint32(rng.IntN(1000))
			s.add(r)
			in[r] = true
		}
		for r := range uint32(1100) {
			if s.has(r) != in[r] {
				t.Fatalf("has(%d) = %v", r, s.has(r))
			}
		}
		for range 200 {
			from := uint32(rng.IntN(1100))
			to := from + uint32(rng.IntN(300))
			want := false
			for r := from; r < to; r++ {
				want = want || in[r]
			}
			if got := s.anyIn(from, to); got != want {
				t.Fatalf("anyIn(%d, %d) = %v, want %v", from, to, got, want)
			}
		}
	}
}

// BenchmarkPutCloseOracle is BenchmarkPutClose with the writer as it was
// before (oracle_test.go), for comparison in one run.
func BenchmarkPutCloseOracle(b *testing.B) {
	keys := make([]string, putCloseUsers)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i*2654435761%(1<<32))
	}
	recs := benchRecords(4096)
	for _, c := range putCloseCases {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			before, cpu0 := perUserStart()
			for b.Loop() {
				w := newOldWriter(dir, Limits{})
				putCloseRun(b, c, keys, recs, w.Put, w.Drop, w.Close)
				w.Abort()
			}
			perUser(b, before, cpu0, putCloseUsers)
		})
	}
}
