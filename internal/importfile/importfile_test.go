package importfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// nasty holds values a hand-built file gets wrong.
var nasty = []string{
	"",
	"plain",
	`say "hi"`,
	`C:\Users\x\`,
	`\\server\share`,
	"line1\nline2\r\n",
	"tab\there",
	"nul\x00byte",
	"\x01\x07\x08\x0b\x0c\x1b\x1f\x7f",
	"line\u2028separator\u2029paragraph",
	"emoji 😀👍🏽 and 🇫🇮",
	"中文 汉字",
	"Ελληνικά",
	"<script>&amp;</script>",
	"bad utf-8: \xff\xfe and a cut rune \xe2\x82",
	"surrogate half \xed\xa0\x80",
	"\uFEFF leading BOM",
}

// encodingJSON is what encoding/json writes for s, without HTML escaping.
func encodingJSON(t testing.TB, s string) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range nasty {
		if got, want := string(appendString(nil, s)), encodingJSON(t, s); got != want {
			t.Errorf("appendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range nasty {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(appendString(nil, s)), encodingJSON(t, s); got != want {
			t.Errorf("appendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	})
}

// importDoc is the shape of an import file.
type importDoc struct {
	Value []map[string]string `json:"value"`
}

// readFile checks the BOM and JSON validity of one file and decodes it.
func readFile(t *testing.T, f File) importDoc {
	t.Helper()
	data, err := os.ReadFile(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != f.Bytes {
		t.Errorf("%s: File.Bytes = %d, file has %d", f.Path, f.Bytes, len(data))
	}
	body, ok := bytes.CutPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	if !ok {
		t.Fatalf("%s: no UTF-8 byte order mark", f.Path)
	}
	if !json.Valid(body) {
		t.Fatalf("%s: not valid JSON:\n%s", f.Path, body)
	}
	var doc importDoc
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", f.Path, err)
	}
	props := 0
	for _, r := range doc.Value {
		props += len(r)
	}
	if len(doc.Value) != f.Records || props != f.Properties {
		t.Errorf("%s: File says %d records, %d properties; file has %d, %d",
			f.Path, f.Records, f.Properties, len(doc.Value), props)
	}
	return doc
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestRoundTripNastyValues(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(dir, Limits{})
	var want []map[string]string
	for i, s := range nasty {
		id := fmt.Sprintf("user-%d-%s", i, s)
		values := []KV{{Name: "Value", Value: s}, {Name: "Key " + s, Value: "k"}}
		if err := w.Write(id, values); err != nil {
			t.Fatalf("Write(%q): %v", id, err)
		}
		// encoding/json turns every invalid byte into U+FFFD, as a
		// string-to-rune conversion does.
		valid := func(s string) string { return string([]rune(s)) }
		want = append(want, map[string]string{"IdName": valid(id), "Value": valid(s), valid("Key " + s): "k"})
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("got %d files, want 1", len(files))
	}
	if got := readFile(t, files[0]).Value; !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %q\nwant %q", got, want)
	}
	data, _ := os.ReadFile(files[0].Path)
	if !bytes.Contains(data, []byte("<script>&amp;</script>")) {
		t.Errorf("<, > or & were escaped; the file should stay readable")
	}
	if !strings.HasPrefix(filepath.Base(files[0].Path), "profilesync-") || filepath.Dir(files[0].Path) != dir {
		t.Errorf("file %s not named profilesync-*.json in %s", files[0].Path, dir)
	}
}

func TestFileLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records [][]KV
		want    string
	}{
		{"one record, no values", [][]KV{nil}, "\uFEFF{\"value\":[\n{\"IdName\":\"u0\"}\n]}\n"},
		{"one record", [][]KV{{{"A", "1"}, {"B", "x\"y"}}},
			"\uFEFF{\"value\":[\n{\"IdName\":\"u0\",\"A\":\"1\",\"B\":\"x\\\"y\"}\n]}\n"},
		{"three records keep key order", [][]KV{{{"Z", "z"}, {"A", "a"}}, {{"M", ""}}, nil},
			"\uFEFF{\"value\":[\n{\"IdName\":\"u0\",\"Z\":\"z\",\"A\":\"a\"},\n{\"IdName\":\"u1\",\"M\":\"\"},\n{\"IdName\":\"u2\"}\n]}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWriter(t.TempDir(), Limits{})
			for i, r := range tc.records {
				if err := w.Write(fmt.Sprintf("u%d", i), r); err != nil {
					t.Fatal(err)
				}
			}
			files, err := w.Close()
			if err != nil || len(files) != 1 {
				t.Fatalf("Close = %v, %v; want one file", files, err)
			}
			readFile(t, files[0])
			if data, _ := os.ReadFile(files[0].Path); string(data) != tc.want {
				t.Errorf("file is\n%q\nwant\n%q", data, tc.want)
			}
		})
	}
}

func TestEmptyWriterWritesNoFile(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(dir, Limits{})
	files, err := w.Close()
	if err != nil || len(files) != 0 {
		t.Errorf("Close = %v, %v; want no files", files, err)
	}
	if names := dirEntries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v", names)
	}
}

// writeN writes n records of three properties each (IdName, A, B) whose
// encoded sizes are equal, and returns the files.
func writeN(t *testing.T, lim Limits, n int) []File {
	t.Helper()
	w := NewWriter(t.TempDir(), lim)
	for i := range n {
		if err := w.Write(fmt.Sprintf("user%03d", i), []KV{{"A", "aaaa"}, {"B", "bbbb"}}); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestSplitting(t *testing.T) {
	// The size of a file holding exactly two of writeN's records.
	two := writeN(t, Limits{}, 2)[0].Bytes
	for _, tc := range []struct {
		name    string
		lim     Limits
		n       int
		records []int // per file
	}{
		{"under both limits", Limits{}, 5, []int{5}},
		{"properties exactly two records", Limits{MaxProperties: 6}, 5, []int{2, 2, 1}},
		{"properties one short of two records", Limits{MaxProperties: 5}, 3, []int{1, 1, 1}},
		{"properties exactly one record", Limits{MaxProperties: 3}, 2, []int{1, 1}},
		{"properties exactly filled", Limits{MaxProperties: 9}, 6, []int{3, 3}},
		{"bytes exactly two records", Limits{MaxBytes: two}, 5, []int{2, 2, 1}},
		{"bytes one short of two records", Limits{MaxBytes: two - 1}, 3, []int{1, 1, 1}},
		{"bytes one over two records", Limits{MaxBytes: two + 1}, 4, []int{2, 2}},
		{"both limits, properties tighter", Limits{MaxProperties: 3, MaxBytes: two}, 2, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := writeN(t, tc.lim, tc.n)
			var got []int
			seen := 0
			for _, f := range files {
				got = append(got, f.Records)
				doc := readFile(t, f)
				for _, r := range doc.Value {
					if want := fmt.Sprintf("user%03d", seen); r["IdName"] != want {
						t.Errorf("record %d is %q, want %q (order lost)", seen, r["IdName"], want)
					}
					seen++
				}
				if tc.lim.MaxProperties > 0 && f.Properties > tc.lim.MaxProperties {
					t.Errorf("%d properties over the limit %d", f.Properties, tc.lim.MaxProperties)
				}
				if tc.lim.MaxBytes > 0 && f.Bytes > tc.lim.MaxBytes {
					t.Errorf("%d bytes over the limit %d", f.Bytes, tc.lim.MaxBytes)
				}
			}
			if !reflect.DeepEqual(got, tc.records) {
				t.Errorf("records per file = %v, want %v", got, tc.records)
			}
		})
	}
}

func TestRejectedRecords(t *testing.T) {
	one := writeN(t, Limits{}, 1)[0].Bytes
	for _, tc := range []struct {
		name   string
		lim    Limits
		id     string
		values []KV
		want   string
	}{
		{"too many properties", Limits{MaxProperties: 2}, "u", []KV{{"A", "1"}, {"B", "2"}},
			`writing import record "u": 3 properties and`},
		{"too many bytes", Limits{MaxBytes: one - 1}, "user000", []KV{{"A", "aaaa"}, {"B", "bbbb"}},
			`writing import record "user000": 3 properties and`},
		{"empty id", Limits{}, "", nil, "writing import record: empty id"},
		{"IdName as a value", Limits{}, "u", []KV{{"idname", "x"}}, `property name "idname" is reserved`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := NewWriter(dir, tc.lim)
			err := w.Write(tc.id, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write error = %v, want one containing %q", err, tc.want)
			}
			// The Writer stays usable and the rejected record is not in the file.
			if err := w.Write("ok", nil); err != nil {
				t.Fatalf("Write after a rejected record: %v", err)
			}
			files, err := w.Close()
			if err != nil || len(files) != 1 {
				t.Fatalf("Close = %v, %v", files, err)
			}
			if doc := readFile(t, files[0]); len(doc.Value) != 1 || doc.Value[0]["IdName"] != "ok" {
				t.Errorf("file holds %v", doc.Value)
			}
		})
	}
	// Exactly at the byte limit a single record fits.
	if files := writeN(t, Limits{MaxBytes: one}, 2); len(files) != 2 {
		t.Errorf("got %d files at an exact one-record limit, want 2", len(files))
	}
}

func TestAbortRemovesFiles(t *testing.T) {
	for _, tc := range []struct {
		name       string
		closeFirst bool
	}{
		{"while writing", false},
		{"after Close", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := NewWriter(dir, Limits{MaxProperties: 4}) // two records per file
			for i := range 3 {
				if err := w.Write(fmt.Sprint(i), []KV{{"A", "1"}}); err != nil {
					t.Fatal(err)
				}
			}
			if names := dirEntries(t, dir); len(names) != 2 {
				t.Fatalf("before Abort the directory holds %v, want 2 files", names)
			}
			if tc.closeFirst {
				if files, err := w.Close(); err != nil || len(files) != 2 {
					t.Fatalf("Close = %v, %v", files, err)
				}
			}
			w.Abort()
			w.Abort() // a second Abort is harmless
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Errorf("after Abort the directory holds %v", names)
			}
			if err := w.Write("x", nil); err == nil {
				t.Errorf("Write after Abort succeeded")
			}
		})
	}
}

func TestWriteAfterClose(t *testing.T) {
	w := NewWriter(t.TempDir(), Limits{})
	if err := w.Write("a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("b", nil); err == nil {
		t.Errorf("Write after Close succeeded")
	}
	if _, err := w.Close(); err == nil {
		t.Errorf("second Close succeeded")
	}
}

func TestCreateFailureIsSticky(t *testing.T) {
	w := NewWriter(filepath.Join(t.TempDir(), "missing"), Limits{})
	err := w.Write("a", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "creating import file: ") {
		t.Fatalf("Write error = %v, want a creating import file error", err)
	}
	if err2 := w.Write("b", nil); err2 != err {
		t.Errorf("second Write error = %v, want the first one", err2)
	}
	if files, err3 := w.Close(); err3 != err || files != nil {
		t.Errorf("Close = %v, %v; want nil, the first error", files, err3)
	}
	w.Abort()
}

func TestDefaultLimits(t *testing.T) {
	w := NewWriter("", Limits{})
	if w.lim != (Limits{MaxProperties: 499_000, MaxBytes: 2_000_000_000}) {
		t.Errorf("default limits = %+v", w.lim)
	}
	w = NewWriter("", Limits{MaxProperties: 10})
	if w.lim != (Limits{MaxProperties: 10, MaxBytes: DefaultMaxBytes}) {
		t.Errorf("partial limits = %+v", w.lim)
	}
}

func TestWriteAllocatesNothingPerRecord(t *testing.T) {
	w := NewWriter(t.TempDir(), Limits{})
	defer w.Abort()
	values := []KV{{"Department", "Research & Development"}, {"Phones", "+1 555 0100,+1 555 0101"}, {"Note", "quote \" and \\ and 😀"}}
	if err := w.Write("warm-up", values); err != nil { // opens the file, grows the buffer
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := w.Write("4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", values); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Write allocates %v times per record, want 0", allocs)
	}
}

// benchValues is a typical record: a handful of short properties.
var benchValues = []KV{
	{"CostCenter", "4711"}, {"HomePhone", "+1 555 0100"}, {"Division", "Sales"},
	{"Ext1", "x"}, {"ManagerEmail", "boss@contoso.com"}, {"Phones", "425-555-0100,425-555-0101"},
}

// BenchmarkWrite writes 100,000 records per operation and reports records/s;
// bytes/s comes from SetBytes and allocs/op covers all 100,000 records.
func BenchmarkWrite(b *testing.B) {
	const records = 100_000
	dir := b.TempDir()
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		w := NewWriter(dir, Limits{})
		for i := range records {
			if err := w.Write(benchIDs[i%len(benchIDs)], benchValues); err != nil {
				b.Fatal(err)
			}
		}
		files, err := w.Close()
		if err != nil {
			b.Fatal(err)
		}
		size = files[0].Bytes
		w.Abort()
	}
	b.SetBytes(size)
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

var benchIDs = func() []string {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i)
	}
	return ids
}()
