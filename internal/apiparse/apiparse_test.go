package apiparse

import (
	"bytes"
	"errors"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/testenv"
)

const readmeMapping = `{
  "idType": "CloudId",
  "properties": {
    "CostCenter": "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter",
    "HomePhone": "mobilePhone",
    "Division": "employeeOrgData.division",
    "ManagerEmail": "manager.mail",
    "Phones": { "source": "businessPhones", "separator": ";" }
  },
  "users": { "includeGuests": false, "includeDisabled": false }
}`

func TestParseSyncAccepts(t *testing.T) {
	tests := []struct {
		body string
		want Sync
	}{
		{``, Sync{}},
		{"  \n", Sync{}},
		{`null`, Sync{}},
		{`{}`, Sync{}},
		// README, "HTTP API".
		{`{"dryRun":true,"limit":10}`, Sync{DryRun: true, Limit: 10}},
		{`{"users":["adele@contoso.com","alex@contoso.com"]}`, Sync{Users: []string{"adele@contoso.com", "alex@contoso.com"}}},
		{`{"filter":"jobTitle eq 'IT Administrator'","whatIf":true}`, Sync{Filter: "jobTitle eq 'IT Administrator'", WhatIf: true}},
		{`{"mode":"full","force":true}`, Sync{Mode: ModeFull, Force: true}},
		{`{"mode":"delta","allowOverlap":true}`, Sync{Mode: ModeDelta, AllowOverlap: true}},
		// Normalised: mode in any case, users and filter trimmed, an empty list dropped.
		{`{"MODE":" Full "}`, Sync{Mode: ModeFull}},
		{`{"users":[" 4562bcc8-c436-4f95-b7c0-4f8ce89dca5e\t"]}`, Sync{Users: []string{"4562bcc8-c436-4f95-b7c0-4f8ce89dca5e"}}},
		{`{"users":[],"filter":"  "}`, Sync{}},
		{`{"mapping":null}`, Sync{}},
	}
	for _, tc := range tests {
		got, err := ParseSync([]byte(tc.body))
		if err != nil {
			t.Errorf("ParseSync(%q): %v", tc.body, err)
			continue
		}
		if !sameSync(got, tc.want) {
			t.Errorf("ParseSync(%q) = %+v, want %+v", tc.body, got, tc.want)
		}
	}
}

func TestParseSyncMapping(t *testing.T) {
	s, err := ParseSync([]byte(`{"dryRun":true,"mapping":` + readmeMapping + `}`))
	if err != nil {
		t.Fatal(err)
	}
	m := s.ParsedMapping()
	if m == nil || len(m.Properties) != 5 {
		t.Fatalf("mapping %+v", m)
	}
	if bytes.ContainsAny(s.Mapping, "\n ") {
		t.Errorf("the mapping is not compacted: %s", s.Mapping)
	}
	// The command line reads a mapping file, which may start with a BOM.
	c, err := Check(Sync{Mapping: append([]byte("\xef\xbb\xbf"), readmeMapping...)})
	if err != nil || c.ParsedMapping() == nil || c.ParsedMapping().Hash() != m.Hash() {
		t.Errorf("Check with a BOM: %v", err)
	}
}

func TestParseSyncRefuses(t *testing.T) {
	tests := []struct {
		body   string
		syntax bool
		want   []string // each a problem, in order
	}{
		{`{"mode":"sideways","whatIf":true,"dryRun":true}`, false, []string{`mode: "sideways" is not delta or full`, "whatIf and dryRun: choose one"}},
		{`{"users":["a"],"filter":"x eq 'y'"}`, false, []string{"users and filter: choose one"}},
		{`{"users":["a",""," "]}`, false, []string{"users[1]: empty", "users[2]: empty"}},
		{`{"users":["` + strings.Repeat("u", MaxUserLen+1) + `"]}`, false, []string{"users[0]: 321 bytes"}},
		{`{"users":[` + strings.Repeat(`"u",`, MaxUsers) + `"u"]}`, false, []string{"users: at most 1000 per run, got 1001"}},
		{`{"filter":"` + strings.Repeat("f", MaxFilterLen+1) + `"}`, false, []string{"filter: 4097 bytes"}},
		{`{"limit":-1}`, false, []string{"limit: must be from 0"}},
		{`{"limit":100001}`, false, []string{"limit: must be from 0"}},
		{`{"mapping":{"idType":"Nope","properties":{}}}`, false, []string{"mapping: idType:", "mapping: properties:"}},
		{`{"mapping":1}`, false, []string{"mapping: "}},
		{`{"colour":"blue"}`, true, []string{"colour: unknown field"}},
		{`{"mode":`, true, []string{"body: not valid JSON"}},
		{`{"mode":"full"} {}`, true, []string{"body: unexpected data after the JSON object"}},
		{`{"mode":"full"}x`, true, []string{"body: unexpected data after the JSON object"}},
		{`[]`, true, []string{"body: a JSON object is expected, got array"}},
		{`"full"`, true, []string{"body: a JSON object is expected, got string"}},
		{`{"users":"a"}`, true, []string{"users: string is not an array of strings"}},
		{`{"users":[1]}`, true, []string{"users: number is not a string"}},
		{`{"whatIf":"yes"}`, true, []string{"whatIf: string is not true or false"}},
		{`{"limit":1e400}`, true, []string{"limit: number 1e400 is not a whole number"}},
		{`{"limit":2.5}`, true, []string{"limit: number 2.5 is not a whole number"}},
		{`{"mode":"full",}`, true, []string{"body: not valid JSON at byte"}},
	}
	for _, tc := range tests {
		_, err := ParseSync([]byte(tc.body))
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("ParseSync(%.60q) = %v, want an *Error", tc.body, err)
			continue
		}
		if pe.Syntax != tc.syntax || len(pe.Problems) != len(tc.want) {
			t.Errorf("ParseSync(%.60q): syntax %v, problems %q; want syntax %v and %d problems", tc.body, pe.Syntax, pe.Problems, tc.syntax, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(pe.Problems[i], w) {
				t.Errorf("ParseSync(%.60q) problem %d = %q, want it to start with %q", tc.body, i, pe.Problems[i], w)
			}
		}
	}
}

// TestParseSyncBoundedMemory: a body above MaxBody is refused without
// being read, and the largest acceptable body costs a small multiple of
// its size.
func TestParseSyncBoundedMemory(t *testing.T) {
	huge := bytes.Repeat([]byte(`{"users":["a"]}`), 10<<20/15)
	alloc := testenv.Allocated(func() {
		if _, err := ParseSync(huge); err == nil || !strings.Contains(err.Error(), "body: ") {
			t.Errorf("a 10 MB body: %v", err)
		}
	})
	if alloc > 64<<10 {
		t.Errorf("refusing a 10 MB body allocated %d bytes", alloc)
	}

	var b strings.Builder
	b.WriteString(`{"dryRun":true,"users":[`)
	for i := range MaxUsers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + strings.Repeat("x", MaxUserLen-1) + `y"`)
	}
	b.WriteString(`]}`)
	big := []byte(b.String())
	if len(big) > MaxBody {
		t.Fatalf("test body %d bytes", len(big))
	}
	alloc = testenv.Allocated(func() {
		if _, err := ParseSync(big); err != nil {
			t.Errorf("the largest users list: %v", err)
		}
	})
	if alloc > 8*uint64(len(big)) {
		t.Errorf("parsing a %d-byte body allocated %d bytes", len(big), alloc)
	}
}

func TestParseList(t *testing.T) {
	tests := []struct {
		query string
		want  int
		err   string
	}{
		{"", DefaultTop, ""},
		{"top=5", 5, ""},
		{"code=functionkey123&top=1000", 1000, ""}, // the host adds the function key
		{"top=%207", 7, ""},
		{"top=0", 0, "top: must be a whole number from 1 to 1000"},
		{"top=1001", 0, "top: must be"},
		{"top=ten", 0, "top: must be"},
		{"top=", 0, "top: must be"},
		{"top=5&top=6", 0, "top: given 2 times"},
		{"top=%zz", 0, "query: "},
		{"a=1;top=5", 0, "query: "},
	}
	for _, tc := range tests {
		got, err := ParseList(tc.query)
		switch {
		case tc.err == "" && (err != nil || got.Top != tc.want):
			t.Errorf("ParseList(%q) = %+v, %v; want top %d", tc.query, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
			t.Errorf("ParseList(%q) error %v, want one starting %q", tc.query, err, tc.err)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"20260101T000000.000Z-deadbeef":          true,
		"4562bcc8-c436-4f95-b7c0-4f8ce89dca5e":   true,
		"{4562bcc8-c436-4f95-b7c0-4f8ce89dca5e}": true,
		"":                                       false,
		"../state":                               false,
		"a..b":                                   false,
		"..":                                     false,
		"a/b":                                    false,
		"a%2Fb":                                  false,
		"a b":                                    false,
		"é":                                      false,
		strings.Repeat("a", MaxIDLen):            true,
		strings.Repeat("a", MaxIDLen+1):          false,
	} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

// sameSync compares two requests, the parsed mapping by its hash.
func sameSync(a, b Sync) bool {
	ma, mb := a.parsed, b.parsed
	a.parsed, b.parsed = nil, nil
	if !reflect.DeepEqual(a, b) || (ma == nil) != (mb == nil) {
		return false
	}
	return ma == nil || ma.Hash() == mb.Hash()
}

// problemName is how every problem begins: the field it is about.
var problemName = regexp.MustCompile(`^(mode|force|whatIf|dryRun|users(\[\d+\])?|filter|mapping|allowOverlap|limit|body|whatIf and dryRun|users and filter): \S`)

// checkRefusal: a refused input gets an *Error with at least one problem,
// each naming its field.
func checkRefusal(t *testing.T, input []byte, err error) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) || len(pe.Problems) == 0 {
		t.Fatalf("%.100q: refused with %#v, want an *Error listing problems", input, err)
	}
	for _, p := range pe.Problems {
		if !problemName.MatchString(p) && !strings.Contains(p, ": unknown field (the fields are") {
			t.Fatalf("%.100q: problem %q does not begin with the field it is about", input, p)
		}
	}
}

// FuzzParseSync: every body is accepted or refused with problems naming
// their fields; an accepted one re-encodes to a body accepted with an equal
// value; a body above MaxBody is refused.
func FuzzParseSync(f *testing.F) {
	f.Add([]byte(`{"dryRun":true,"mapping":` + readmeMapping + `}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseSync(body)
		if err != nil {
			checkRefusal(t, body, err)
			return
		}
		if len(body) > MaxBody {
			t.Fatalf("a %d-byte body was accepted", len(body))
		}
		enc := s.Encode()
		again, err := ParseSync(enc)
		if err != nil {
			t.Fatalf("%.100q was accepted as %+v, but its encoding %q is refused: %v", body, s, enc, err)
		}
		if !sameSync(s, again) {
			t.Fatalf("%.100q: %+v re-encodes to %q, read back as %+v", body, s, enc, again)
		}
		if !bytes.Equal(again.Encode(), enc) {
			t.Fatalf("%.100q: encoding is not stable: %q then %q", body, enc, again.Encode())
		}
		if s.WhatIf && s.DryRun || len(s.Users) > 0 && s.Filter != "" || len(s.Users) > MaxUsers || s.Limit < 0 {
			t.Fatalf("%.100q: accepted a request the engine cannot honour: %+v", body, s)
		}
		if s.Mode != "" && s.Mode != ModeDelta && s.Mode != ModeFull {
			t.Fatalf("%.100q: accepted mode %q", body, s.Mode)
		}
		if (len(s.Mapping) > 0) != (s.ParsedMapping() != nil) {
			t.Fatalf("%.100q: mapping %q parsed as %v", body, s.Mapping, s.ParsedMapping())
		}
	})
}

// FuzzParseList: a query is accepted with 1 <= top <= MaxTop, and its
// encoding reads back equal; or it is refused naming "query" or "top".
func FuzzParseList(f *testing.F) {
	f.Fuzz(func(t *testing.T, query string) {
		l, err := ParseList(query)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Problems) != 1 ||
				!(strings.HasPrefix(pe.Problems[0], "query: ") || strings.HasPrefix(pe.Problems[0], "top: ")) {
				t.Fatalf("%q refused with %#v", query, err)
			}
			return
		}
		if l.Top < 1 || l.Top > MaxTop {
			t.Fatalf("%q accepted with top %d", query, l.Top)
		}
		if again, err := ParseList(l.Encode()); err != nil || again != l {
			t.Fatalf("%q: %+v encodes to %q, read back as %+v, %v", query, l, l.Encode(), again, err)
		}
	})
}

// FuzzValidID: an accepted id is one path segment and names one blob
// directly below its folder, whatever the folder.
func FuzzValidID(f *testing.F) {
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		if len(id) > MaxIDLen || strings.ContainsAny(id, `/\%?#`) || strings.Contains(url.PathEscape(id), "%2F") {
			t.Fatalf("ValidID accepted %q", id)
		}
		for _, folder := range []string{"runs/", "jobs/", "requests/"} {
			name := folder + id + ".json"
			if path.Clean(name) != name || path.Dir(name) != strings.TrimSuffix(folder, "/") {
				t.Fatalf("ValidID accepted %q, which makes %q leave %s", id, name, folder)
			}
		}
	})
}
