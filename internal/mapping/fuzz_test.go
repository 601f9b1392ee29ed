package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/testenv"
)

// FuzzParse holds Parse to its contract on any input. The seed corpus
// (testdata/fuzz/FuzzParse) holds the documents of testdata/good and
// testdata/bad, examples/mapping.json, the README's example, and documents
// with escaped keys, duplicate names in other cases, invalid UTF-8,
// separators on single values and sources that nest too deeply.
//
//   - An accepted document is valid JSON; its canonical form (MarshalJSON)
//     parses back to an equal Mapping with the same Hash, and is its own
//     canonical form; properties are sorted, their targets unique without
//     regard to case, their sources in Graph's spelling.
//   - A rejected document gives no Mapping, and an error made of at most
//     MaxProblems+1 problems that spell it, each with a message, each with
//     a path that starts at a member the document has (or at "properties",
//     which it lacks), or no path for a problem with the whole document.
//   - Parse is deterministic and leaves its input alone.
//   - members splits any object as encoding/json's Decoder does.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"properties":{"Title":"jobTitle"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		m, err := Parse(data)
		if !bytes.Equal(data, orig) {
			t.Fatal("Parse changed its input")
		}
		if _, err2 := Parse(data); fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("Parse is not deterministic: %v, then %v", err, err2)
		}
		doc := bytes.TrimPrefix(data, utf8BOM)
		if json.Valid(doc) {
			checkMembers(t, doc)
		}
		if err != nil {
			checkProblems(t, doc, m, err)
			return
		}
		if !json.Valid(doc) {
			t.Fatal("Parse accepted a document that is not JSON")
		}
		checkMapping(t, m)
	})
}

// checkMapping holds an accepted mapping to its invariants and round trip.
func checkMapping(t *testing.T, m *Mapping) {
	t.Helper()
	if m == nil || len(m.Properties) == 0 {
		t.Fatalf("Parse accepted a document without properties: %+v", m)
	}
	if !slices.IsSortedFunc(m.Properties, func(a, b Property) int { return strings.Compare(a.Target, b.Target) }) {
		t.Fatalf("properties not sorted by target: %+v", m.Properties)
	}
	seen := map[string]bool{}
	for _, p := range m.Properties {
		if seen[strings.ToLower(p.Target)] {
			t.Fatalf("target %q twice", p.Target)
		}
		seen[strings.ToLower(p.Target)] = true
		if norm, _, msg := checkSource(p.Source); msg != "" || norm != p.Source {
			t.Fatalf("source %q of %q: normalised %q, problem %q", p.Source, p.Target, norm, msg)
		}
		if p.Separator == "" {
			t.Fatalf("property %q has no separator", p.Target)
		}
	}
	canon, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(canon)
	if err != nil {
		t.Fatalf("the canonical form is rejected: %v\n%s", err, canon)
	}
	if !reflect.DeepEqual(again, m) {
		t.Fatalf("the canonical form parses to another mapping:\n got %+v\nwant %+v\n%s", again, m, canon)
	}
	if again.Hash() != m.Hash() {
		t.Fatal("the canonical form has another hash")
	}
	if canon2, _ := again.MarshalJSON(); !bytes.Equal(canon2, canon) {
		t.Fatalf("the canonical form is not its own canonical form:\n%s\n%s", canon, canon2)
	}
}

// checkProblems holds a rejection to its contract: problems that spell the
// error and name their culprit.
func checkProblems(t *testing.T, doc []byte, m *Mapping, err error) {
	t.Helper()
	if m != nil {
		t.Fatalf("Parse returned a mapping with its error %v", err)
	}
	problems := Problems(err)
	if len(problems) == 0 || len(problems) > MaxProblems+1 {
		t.Fatalf("%d problems in %v", len(problems), err)
	}
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = p.Error()
	}
	if joined := strings.Join(lines, "\n"); joined != err.Error() {
		t.Fatalf("problems %q do not spell the error %q", joined, err.Error())
	}
	// The members a path may start at.
	var starts []string
	if json.Valid(doc) {
		top, _ := members(doc)
		for _, mb := range top {
			starts = append(starts, strings.TrimPrefix(keyPath(mb.name), "."))
		}
	}
	starts = append(starts, "properties")
	for _, p := range problems {
		if p.Message == "" {
			t.Fatalf("a problem without a message at %q", p.Path)
		}
		if p.Path == "" {
			continue
		}
		if !slices.ContainsFunc(starts, func(s string) bool {
			return p.Path == s || strings.HasPrefix(p.Path, s+".") || strings.HasPrefix(p.Path, s+"[")
		}) {
			t.Fatalf("problem %q: its path names no member of the document (members: %q)", p.Error(), starts)
		}
	}
}

// checkMembers compares members with encoding/json's Decoder on a valid
// document and, one level down, on every value that is an object.
func checkMembers(t *testing.T, doc []byte) {
	t.Helper()
	got, ok := members(doc)
	want, wantOK := membersReference(doc)
	if ok != wantOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("members(%q) = %q, %v; encoding/json: %q, %v", doc, got, ok, want, wantOK)
	}
	for _, mb := range got {
		inner, ok := members(mb.value)
		want, wantOK := membersReference(mb.value)
		if ok != wantOK || !reflect.DeepEqual(inner, want) {
			t.Fatalf("members(%q) = %q, %v; encoding/json: %q, %v", mb.value, inner, ok, want, wantOK)
		}
	}
}

// membersReference is members written with encoding/json's Decoder.
func membersReference(raw []byte) (ms []member, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		ms = append(ms, member{name: name, value: v})
	}
	return ms, true
}

// TestParseMemoryBounded feeds Parse 10 MB documents of the shapes that cost
// it most, and documents of the same shapes just under MaxSize: the large
// ones are refused unread, the others cost a bounded multiple of their size
// (measured: at most 49 times, for 60,000 valid properties).
func TestParseMemoryBounded(t *testing.T) {
	shapes := []struct {
		name string
		gen  func(size int) []byte
	}{
		{"one huge source", func(n int) []byte {
			return []byte(`{"properties":{"Title":"` + strings.Repeat("a", n) + `"}}`)
		}},
		{"one huge target", func(n int) []byte {
			return []byte(`{"properties":{"` + strings.Repeat("a", n) + `":"mail"}}`)
		}},
		{"huge unknown member", func(n int) []byte {
			return []byte(`{"x":"` + strings.Repeat("\\u00e9", n/6) + `","properties":{"Title":"mail"}}`)
		}},
		{"deep nesting", func(n int) []byte {
			return []byte(`{"properties":{"Title":"mail"},"x":` + strings.Repeat("[", n/2) + strings.Repeat("]", n/2) + `}`)
		}},
		{"many valid properties", func(n int) []byte { return repeatMembers(`{"properties":{`, `"P%d":"mail"`, `}}`, n) }},
		{"many bad properties", func(n int) []byte { return repeatMembers(`{"properties":{`, `"P%d":"jobTitel%d"`, `}}`, n) }},
		{"many unknown members", func(n int) []byte {
			return repeatMembers(`{"properties":{"Title":"mail"},"users":{`, `"includeGuest%d":true`, `}}`, n)
		}},
	}
	for _, sh := range shapes {
		for _, size := range []int{10 << 20, MaxSize - 100} {
			data := sh.gen(size)
			if size < MaxSize && len(data) > MaxSize {
				t.Fatalf("%s: generated %d bytes, want at most %d", sh.name, len(data), MaxSize)
			}
			alloc := testenv.Allocated(func() {
				if _, err := Parse(data); err == nil && size > MaxSize {
					t.Errorf("%s: a %d-byte document was accepted", sh.name, len(data))
				}
			})
			limit := uint64(64 * len(data))
			if size > MaxSize {
				limit = 64 << 10 // refused unread
			}
			t.Logf("%s, %d bytes: %d bytes allocated (%.1f per input byte)", sh.name, len(data), alloc, float64(alloc)/float64(len(data)))
			if alloc > limit {
				t.Errorf("%s, %d bytes: Parse allocated %d bytes, want at most %d", sh.name, len(data), alloc, limit)
			}
		}
	}
}

// repeatMembers builds head, then member formatted with its index (once or
// twice) as often as fits in about size bytes, comma-separated, then tail.
func repeatMembers(head, member, tail string, size int) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	for i := 0; b.Len() < size-len(tail)-len(member)-20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.Count(member, "%d") == 2 {
			fmt.Fprintf(&b, member, i, i)
		} else {
			fmt.Fprintf(&b, member, i)
		}
	}
	b.WriteString(tail)
	return b.Bytes()
}

func TestParseCutsTheProblemList(t *testing.T) {
	data := repeatMembers(`{"properties":{`, `"P%d":"jobTitel%d"`, `}}`, 20000)
	_, err := Parse(data)
	problems := Problems(err)
	if len(problems) != MaxProblems+1 {
		t.Fatalf("%d problems, want %d", len(problems), MaxProblems+1)
	}
	if p := problems[MaxProblems-1]; p.Path != fmt.Sprintf("properties.P%d", MaxProblems-1) {
		t.Errorf("problem %d is %q, want one about properties.P%d", MaxProblems, p.Error(), MaxProblems-1)
	}
	if last := problems[MaxProblems]; last.Path != "" || !strings.Contains(last.Message, "only the first 100 problems") {
		t.Errorf("last problem %q, want the notice that the list is cut", last.Error())
	}
}

func TestParseRefusesLargeDocuments(t *testing.T) {
	data := append([]byte(`{"properties":{"Title":"jobTitle"}}`), bytes.Repeat([]byte(" "), MaxSize)...)
	_, err := Parse(data)
	problems := Problems(err)
	if len(problems) != 1 || problems[0].Path != "" || !strings.Contains(problems[0].Message, "at most 1048576 bytes") {
		t.Fatalf("Parse of %d bytes: %v, want one problem naming the limit", len(data), err)
	}
	if _, err := Parse(data[:MaxSize]); err != nil {
		t.Errorf("Parse of exactly MaxSize bytes: %v", err)
	}
}
