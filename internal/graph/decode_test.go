package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jsonserialization "github.com/microsoft/kiota-serialization-json-go"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/graphsim"
	"github.com/profilesync/profilesync/internal/testenv"
)

// decodePageReference is decodePage written the obvious way, with
// encoding/json into map[string]any and the same rules; the fuzz target
// holds decodePage to it.
func decodePageReference(body []byte, p *page) error {
	p.users = p.users[:0]
	p.nextLink, p.deltaLink = "", ""
	var top any
	if err := json.Unmarshal(body, &top); err != nil {
		return err
	}
	if d := jsonDepth(body); d > maxDecodeDepth {
		return fmt.Errorf("nesting %d deeper than %d", d, maxDecodeDepth)
	}
	doc, ok := top.(map[string]any)
	if !ok {
		return errors.New("the page is not an object")
	}
	for name, dst := range map[string]*string{"@odata.nextLink": &p.nextLink, "@odata.deltaLink": &p.deltaLink} {
		if v := doc[name]; v != nil {
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("%s is not a string", name)
			}
			*dst = s
		}
	}
	if doc["value"] == nil {
		return nil
	}
	items, ok := doc["value"].([]any)
	if !ok {
		return errors.New("value is not an array")
	}
	for i, it := range items {
		obj, ok := it.(map[string]any)
		if !ok {
			return fmt.Errorf("value[%d] is not an object", i)
		}
		var s sighting
		s.user.Props = map[string]any{}
		for k, v := range obj {
			switch {
			case k == "manager@delta":
				s.managerKnown = true
				if v == nil {
					break
				}
				list, ok := v.([]any)
				if !ok {
					return fmt.Errorf("value[%d].manager@delta is not an array", i)
				}
				for _, e := range list {
					m, ok := e.(map[string]any)
					if !ok {
						return fmt.Errorf("value[%d].manager@delta has a non-object", i)
					}
					if _, removed := m["@removed"]; removed {
						continue
					}
					if id, ok := m["id"].(string); ok {
						s.managerID = id
					}
				}
			case strings.HasPrefix(k, "@"):
				if k == "@removed" {
					s.user.Removed = true
				}
			default:
				s.user.Props[k] = dropAnnotations(v)
			}
		}
		if v, ok := obj["id"]; ok {
			id, ok := v.(string)
			if !ok {
				return fmt.Errorf("value[%d].id is not a string", i)
			}
			s.user.ID = id
		}
		p.users = append(p.users, s)
	}
	return nil
}

func dropAnnotations(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if strings.HasPrefix(k, "@") {
				delete(x, k)
			} else {
				x[k] = dropAnnotations(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = dropAnnotations(e)
		}
	}
	return v
}

// jsonDepth is the deepest nesting of arrays and objects in valid JSON.
func jsonDepth(b []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// samePage reports how two decoded pages differ ("" if they don't).
func samePage(got, want *page) string {
	if got.nextLink != want.nextLink || got.deltaLink != want.deltaLink {
		return fmt.Sprintf("links (%q, %q), want (%q, %q)", got.nextLink, got.deltaLink, want.nextLink, want.deltaLink)
	}
	if len(got.users) != len(want.users) {
		return fmt.Sprintf("%d users, want %d", len(got.users), len(want.users))
	}
	for i := range got.users {
		g, w := got.users[i], want.users[i]
		if g.user.ID != w.user.ID || g.user.Removed != w.user.Removed || g.user.Seq != w.user.Seq ||
			g.managerID != w.managerID || g.managerKnown != w.managerKnown {
			return fmt.Sprintf("user %d: %+v / %q %v, want %+v / %q %v", i, g.user, g.managerID, g.managerKnown, w.user, w.managerID, w.managerKnown)
		}
		if !reflect.DeepEqual(g.user.Props, w.user.Props) {
			return fmt.Sprintf("user %d: Props\n %#v\nwant\n %#v", i, g.user.Props, w.user.Props)
		}
	}
	return ""
}

// corpus reads the seed corpus of FuzzDecodePage (realistic pages).
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/fuzz/FuzzDecodePage/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		head, lit, ok := strings.Cut(string(b), "\n")
		lit = strings.TrimSpace(lit)
		if !ok || head != "go test fuzz v1" || !strings.HasPrefix(lit, "[]byte(") || !strings.HasSuffix(lit, ")") {
			t.Fatalf("%s: not a corpus file", f)
		}
		s, err := strconv.Unquote(lit[len("[]byte(") : len(lit)-1])
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = []byte(s)
	}
	return out
}

func mustDecode(t *testing.T, body []byte) *page {
	t.Helper()
	var p page
	if err := decodePage(body, &p); err != nil {
		t.Fatalf("decodePage: %v", err)
	}
	return &p
}

func TestDecodePageCorpusMatchesReference(t *testing.T) {
	for name, body := range corpus(t) {
		var got, want page
		errGot, errWant := decodePage(body, &got), decodePageReference(body, &want)
		if (errGot == nil) != (errWant == nil) {
			t.Errorf("%s: decodePage: %v, reference: %v", name, errGot, errWant)
			continue
		}
		if errGot == nil {
			if diff := samePage(&got, &want); diff != "" {
				t.Errorf("%s: %s", name, diff)
			}
		}
	}
}

func TestDecodePageRealPages(t *testing.T) {
	c := corpus(t)

	// An incremental delta page: a removed user, a changed manager, a
	// removed manager, unicode.
	p := mustDecode(t, c["delta-incr-0"])
	if p.nextLink != "" || !strings.Contains(p.deltaLink, "$deltatoken=") || len(p.users) != 3 {
		t.Fatalf("links %q %q, %d users", p.nextLink, p.deltaLink, len(p.users))
	}
	u0, u1, u2 := p.users[0], p.users[1], p.users[2]
	if !u0.user.Removed || u0.user.ID != "0e05d922-a6de-411a-9c3e-7d03652c2f4f" || u0.managerKnown ||
		!reflect.DeepEqual(u0.user.Props, map[string]any{"id": u0.user.ID}) {
		t.Errorf("removed user: %+v", u0)
	}
	if u1.user.Removed || !u1.managerKnown || u1.managerID != "97f46590-386e-4da7-942c-3741be6d5d4e" {
		t.Errorf("changed manager: %+v", u1)
	}
	if u1.user.Props["jobTitle"] != "Ingénieure — “Lead” 🚀" || u1.user.Props["displayName"] != "Jöhanna Wilber" {
		t.Errorf("unicode: %q %q", u1.user.Props["jobTitle"], u1.user.Props["displayName"])
	}
	if _, ok := u1.user.Props["manager@delta"]; ok {
		t.Error("manager@delta kept in Props")
	}
	if !u2.managerKnown || u2.managerID != "" {
		t.Errorf("removed manager: known %v id %q", u2.managerKnown, u2.managerID)
	}
	attrs, _ := u2.user.Props["onPremisesExtensionAttributes"].(map[string]any)
	if len(attrs) != 15 || attrs["extensionAttribute7"] != "Operations" || attrs["extensionAttribute1"] != "EA1-32" {
		t.Errorf("onPremisesExtensionAttributes = %#v", attrs)
	}
	if v, ok := attrs["extensionAttribute2"]; !ok || v != nil {
		t.Errorf("extensionAttribute2 = %v, %v; want a nil value", v, ok)
	}
	if got := u2.user.Props["businessPhones"]; !reflect.DeepEqual(got, []any{"+1 425 555 0163", "+1 425 555 4838"}) {
		t.Errorf("businessPhones = %#v", got)
	}
	if got := u2.user.Props["extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter"]; got != "CC-1037" {
		t.Errorf("extension = %#v", got)
	}

	// $expand=manager: the manager's properties without @odata.type.
	p = mustDecode(t, c["users-guest"])
	g := p.users[0].user
	if g.Props["userPrincipalName"] != "nestor.wilke2_fabrikam.com#EXT#@contoso.onmicrosoft.com" || g.Props["city"] != "Zürich" {
		t.Errorf("guest: %#v", g.Props)
	}
	m, _ := g.Props["manager"].(map[string]any)
	if m["id"] != "5273c6e2-6f13-4790-bf7e-1b593574b487" || m["mail"] != "diego.fernandez0@contoso.com" || len(m) != 11 {
		t.Errorf("manager = %#v", m)
	}
	if _, ok := m["@odata.type"]; ok {
		t.Error("@odata.type kept in the expanded manager")
	}
	if p.users[0].managerKnown {
		t.Error("managerKnown without manager@delta")
	}

	// Hand-written delta page: manager@delta variants.
	p = mustDecode(t, c["delta-hand-removed"])
	want := []struct {
		id      string
		removed bool
		mgr     string
		known   bool
	}{
		{"a1", true, "", false}, {"a2", true, "", false}, {"a3", false, "m-new", true},
		{"a4", false, "", true}, {"a5", false, "", true}, {"a6", false, "m1", true}, {"a7", false, "", true},
	}
	if len(p.users) != len(want) {
		t.Fatalf("%d users", len(p.users))
	}
	for i, w := range want {
		s := p.users[i]
		if s.user.ID != w.id || s.user.Removed != w.removed || s.managerID != w.mgr || s.managerKnown != w.known {
			t.Errorf("user %d: %q removed %v manager %q known %v, want %+v", i, s.user.ID, s.user.Removed, s.managerID, s.managerKnown, w)
		}
	}
	if p.users[1].user.Props["displayName"] != "Moved Out" {
		t.Errorf("props of a removed user: %#v", p.users[1].user.Props)
	}

	// Numbers, duplicate keys, nested complex values, null link.
	p = mustDecode(t, c["users-extensions-count"])
	x := p.users[0].user.Props
	if x["extension_b7d8e648520f41d3b9c0fdeb91768a0a_employeeNumber"] != 123456.0 ||
		x["extension_b7d8e648520f41d3b9c0fdeb91768a0a_isContractor"] != false ||
		x["extension_b7d8e648520f41d3b9c0fdeb91768a0a_rating"] != -125.0 {
		t.Errorf("extensions: %#v", x)
	}
	if got := x["employeeOrgData"]; !reflect.DeepEqual(got, map[string]any{"costCenter": "CC-1001", "division": nil}) {
		t.Errorf("employeeOrgData = %#v", got)
	}
	if v, ok := x["manager"]; !ok || v != nil {
		t.Errorf("manager = %v, %v; want nil", v, ok)
	}
	y := p.users[1]
	if y.user.ID != "dup-id-wins" || y.user.Props["id"] != "dup-id-wins" || y.user.Props["accountEnabled"] != false {
		t.Errorf("duplicate keys: %#v", y.user)
	}
	if f := y.user.Props["negZero"].(float64); f != 0 || !math.Signbit(f) {
		t.Errorf("-0 = %v", f)
	}
	if y.user.Props["big"] != 1.2345678901234567e19 || y.user.Props["small"] != 1e-7 || y.user.Props["exp"] != 6.02e23 {
		t.Errorf("numbers: %#v", y.user.Props)
	}
}

// TestDecodePageStrings: escapes, surrogates and invalid UTF-8 come out as
// encoding/json has them.
func TestDecodePageStrings(t *testing.T) {
	cases := []struct{ lit, want string }{
		{`"plain"`, "plain"},
		{`""`, ""},
		{`"a\"b\\c\/d\be\ff\ng\rh\ti"`, "a\"b\\c/d\be\ff\ng\rh\ti"},
		{`"\u00e9\u00C9\u0000"`, "éÉ\x00"},
		{`"\ud83d\ude80"`, "🚀"},
		{`"\ud83d"`, "\ufffd"},
		{`"\ude80x"`, "\ufffdx"},
		{`"\ud83dx"`, "\ufffdx"},
		{`"\ud83d\u0041"`, "\ufffdA"},
		{`"\ud83d\ud83d\ude80"`, "\ufffd🚀"},
		{"\"raw \xff\xfe\"", "raw \ufffd\ufffd"},
		{"\"cut \xe6\x97\"", "cut \ufffd\ufffd"},
		{"\"\xed\xa0\x80\"", "\ufffd\ufffd\ufffd"},
		{"\"ok 日本 \xc3\"", "ok 日本 \ufffd"},
		{`"#EXT#@contoso.onmicrosoft.com"`, "#EXT#@contoso.onmicrosoft.com"},
	}
	for _, c := range cases {
		var ref string
		if err := json.Unmarshal([]byte(c.lit), &ref); err != nil || ref != c.want {
			t.Fatalf("test case %s: encoding/json gives %q, %v; want %q", c.lit, ref, err, c.want)
		}
		body := []byte(`{"value":[{"id":` + c.lit + `,"k":[` + c.lit + `],` + c.lit + `:1}]}`)
		p := mustDecode(t, body)
		u := p.users[0].user
		if u.ID != c.want || u.Props["k"].([]any)[0] != c.want || u.Props[c.want] != 1.0 {
			t.Errorf("%s: id %q, props %#v; want %q", c.lit, u.ID, u.Props, c.want)
		}
	}
}

func TestDecodePageErrors(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string // substrings of the error
	}{
		{"empty", ``, []string{"byte 0", "end of JSON input"}},
		{"top array", `[1,2]`, []string{"page is an array, want an object"}},
		{"top string", `"x"`, []string{"page is a string"}},
		{"truncated", `{"value":[{"id":"x","displayName":"Ad`, []string{"byte 37", "value[0]", "end of JSON input"}},
		{"trailing", `{"value":[]} x`, []string{"byte 13", "'x'", "after top-level value"}},
		{"two values", `{"value":[]}{}`, []string{"byte 12", "after top-level value"}},
		{"bad literal", `{"value":[{"accountEnabled":tru}]}`, []string{"byte 31", "value[0]", "literal true"}},
		{"bad escape", `{"value":[{"a":"\x"}]}`, []string{"byte 17", "'x'", "escape"}},
		{"bad hex", `{"value":[{"a":"\u12g4"}]}`, []string{"byte 20", "'g'", `\u`}},
		{"control char", "{\"value\":[{\"a\":\"a\nb\"}]}", []string{"byte 17", `'\n'`, "string literal"}},
		{"missing colon", `{"value" []}`, []string{"byte 9", "after object key"}},
		{"missing comma", `{"value":[{"a":1 "b":2}]}`, []string{"byte 17", "after object key:value pair"}},
		{"trailing comma", `{"value":[{"a":1},]}`, []string{"byte 18", "value[1]", "beginning of value"}},
		{"leading zero", `{"value":[{"a":01}]}`, []string{"byte 16", "'1'"}},
		{"bad number", `{"value":[{"a":-}]}`, []string{"byte 16", "numeric literal"}},
		{"bad fraction", `{"value":[{"a":1.}]}`, []string{"byte 17", "decimal point"}},
		{"bad exponent", `{"value":[{"a":1e+}]}`, []string{"byte 18", "exponent"}},
		{"huge number", `{"value":[{"a":1e400}]}`, []string{"byte 15", "value[0]", "1e400", "out of the range"}},
		{"single quotes", `{'value':[]}`, []string{"byte 1", "object key"}},
		{"value object", `{"value":{"id":"x"}}`, []string{"value is an object, want an array"}},
		{"value string", `{"value":"x"}`, []string{"value is a string"}},
		{"item string", `{"value":[{"id":"x"},"y"]}`, []string{"value[1] is a string, want an object"}},
		{"item null", `{"value":[null]}`, []string{"value[0] is null, want an object"}},
		{"nextLink number", `{"value":[],"@odata.nextLink":42}`, []string{"@odata.nextLink is a number, want a string"}},
		{"deltaLink object", `{"@odata.deltaLink":{},"value":[]}`, []string{"@odata.deltaLink is an object"}},
		{"id number", `{"value":[{"id":7}]}`, []string{"value[0].id is a number, want a string"}},
		{"id null", `{"value":[{"id":"a"},{"id":null}]}`, []string{"value[1].id is null"}},
		{"manager@delta object", `{"value":[{"id":"a","manager@delta":{"id":"m"}}]}`, []string{"value[0].manager@delta is an object, want an array"}},
		{"manager@delta entry", `{"value":[{"id":"a","manager@delta":[{"id":"m"},"n"]}]}`, []string{"value[0].manager@delta[1] is a string, want an object"}},
		{"bad JSON in ignored key", `{"value":[],"@odata.context":[1,]}`, []string{"byte 32", "beginning of value"}},
		{"invalid after valid items", `{"value":[{"id":"a"}],"x":nul}`, []string{"byte 29", "literal null"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := page{nextLink: "stale", users: []sighting{{managerID: "stale"}}}
			err := decodePage([]byte(c.body), &p)
			if err == nil {
				t.Fatalf("no error; page %+v", p)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if len(p.users) != 0 || p.nextLink != "" || p.deltaLink != "" {
				t.Errorf("failed decode left %+v", p)
			}
			if json.Valid([]byte(c.body)) == strings.Contains(err.Error(), "invalid JSON") {
				t.Errorf("error %q; json.Valid = %v", err, json.Valid([]byte(c.body)))
			}
		})
	}
}

func TestDecodePageDepth(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	// The page is level 1, value 2, an item 3: a property may nest 61 deep.
	ok := `{"value":[{"id":"a","deep":` + nest(61) + `}],"other":` + nest(63) + `}`
	if err := decodePage([]byte(ok), &page{}); err != nil {
		t.Fatalf("64 levels: %v", err)
	}
	for _, body := range []string{
		`{"value":[{"id":"a","deep":` + nest(62) + `}]}`,
		`{"value":[{"id":"a","deep":` + strings.Repeat(`{"a":`, 62) + `1` + strings.Repeat("}", 62) + `}]}`,
		`{"other":` + nest(64) + `,"value":[]}`,
		`{"value":[{"id":"a","deep":` + strings.Repeat("[", 1_000_000) + `}]}`, // not even valid
	} {
		err := decodePage([]byte(body), &page{})
		if err == nil || !strings.Contains(err.Error(), "nesting deeper than 64") {
			t.Errorf("%.60s…: %v", body, err)
		}
	}
}

// TestDecodePageNoAliasing: nothing decoded points into the body, which
// the caller reuses for the next page.
func TestDecodePageNoAliasing(t *testing.T) {
	for name, body := range corpus(t) {
		body = bytes.Clone(body)
		var p, want page
		if err := decodePage(body, &p); err != nil {
			continue
		}
		if err := decodePageReference(body, &want); err != nil {
			t.Fatal(err)
		}
		for i := range body {
			body[i] = 'x'
		}
		if diff := samePage(&p, &want); diff != "" {
			t.Errorf("%s: after overwriting the body: %s", name, diff)
		}
	}
}

// TestDecodePageReusesUsers: the users slice is reused and reset.
func TestDecodePageReusesUsers(t *testing.T) {
	c := corpus(t)
	var p page
	if err := decodePage(c["delta-init-0"], &p); err != nil {
		t.Fatal(err)
	}
	first := &p.users[:1][0]
	if err := decodePage(c["delta-incr-0"], &p); err != nil {
		t.Fatal(err)
	}
	if &p.users[0] != first || len(p.users) != 3 {
		t.Errorf("backing array not reused (%d users)", len(p.users))
	}
	if p.users[0].managerKnown || p.users[0].managerID != "" {
		t.Errorf("stale sighting fields: %+v", p.users[0])
	}
	if err := decodePage([]byte(`{"value":[{"id":"a"}],"value":null}`), &p); err != nil || len(p.users) != 0 || p.deltaLink != "" {
		t.Errorf("repeated value key: %v, %d users, deltaLink %q", err, len(p.users), p.deltaLink)
	}
}

// TestDecodePageRepeatedKeys: as with encoding/json, a repeated key's
// last value counts, also when an earlier one was not what a page holds.
func TestDecodePageRepeatedKeys(t *testing.T) {
	for body, want := range map[string]string{
		`{"value":5,"value":[{"id":"a"}]}`:                                  "a",
		`{"value":[1],"value":[{"id":"b"}]}`:                                "b",
		`{"value":[{"id":1}],"value":[{"id":"c"}]}`:                         "c",
		`{"value":[{"id":"d","manager@delta":5,"manager@delta":null}]}`:     "d",
		`{"value":[{"id":"e"}],"@odata.nextLink":{},"@odata.nextLink":"n"}`: "e",
	} {
		var p page
		if err := decodePage([]byte(body), &p); err != nil || len(p.users) != 1 || p.users[0].user.ID != want {
			t.Errorf("%s: %v, %+v", body, err, p.users)
		}
	}
	var p page
	err := decodePage([]byte(`{"value":[{"id":"a"}],"value":[{"id":"b"},7,{"id":"c"}]}`), &p)
	if err == nil || !strings.Contains(err.Error(), "value[1] is a number") || len(p.users) != 0 {
		t.Errorf("last value bad: %v, %+v", err, p.users)
	}
}

// syntheticPage is a page of n users with ~10 properties each, padded to
// taste.
func syntheticPage(n int, pad string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users","value":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%08x-0000-4000-8000-000000000000","userPrincipalName":"user%d@contoso.onmicrosoft.com",`+
			`"displayName":"User \u00e9 %d","mail":"user%d@contoso.com","jobTitle":"Engineer","department":"R&D %s",`+
			`"accountEnabled":true,"businessPhones":["+1 425 555 %04d"],"employeeNumber":%d,"officeLocation":null}`,
			i, i, i, i, pad, i%10000, i)
	}
	b.WriteString(`],"@odata.nextLink":"https://graph.microsoft.com/v1.0/users?$skiptoken=x"}`)
	return b.Bytes()
}

// TestDecodePageLarge: a 10 MB page costs no more allocation per user
// than a small one (nothing grows with the page but p.users, which is
// reused), and one 10 MB value costs a small multiple of itself.
func TestDecodePageLarge(t *testing.T) {
	perUser := func(body []byte) (float64, int) {
		var p page
		if err := decodePage(body, &p); err != nil { // sizes p.users, warms the pool
			t.Fatal(err)
		}
		alloc := testenv.Allocated(func() {
			if err := decodePage(body, &p); err != nil {
				t.Fatal(err)
			}
		})
		n := len(p.users)
		if p.users[n-1].user.Props["employeeNumber"] != float64(n-1) {
			t.Errorf("last user: %#v", p.users[n-1].user.Props)
		}
		return float64(alloc) / float64(n), n
	}
	small, _ := perUser(syntheticPage(100, ""))
	body := syntheticPage(34_000, "")
	if len(body) < 10<<20 {
		t.Fatalf("page of %d bytes", len(body))
	}
	large, n := perUser(body)
	t.Logf("%d users, %d bytes: %.0f B/user allocated (%.2f× the body); 100 users: %.0f B/user", n, len(body), large, large*float64(n)/float64(len(body)), small)
	if large > small*1.1+16 {
		t.Errorf("10 MB page: %.0f bytes allocated per user, 100-user page: %.0f", large, small)
	}

	big := strings.Repeat("x\\u00e9", 10<<20/7)
	body = []byte(`{"value":[{"id":"a","aboutMe":"` + big + `"}]}`)
	var p page
	alloc := testenv.Allocated(func() {
		if err := decodePage(body, &p); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("one %d-byte value: %d bytes allocated", len(big), alloc)
	if alloc > 4*uint64(len(body)) {
		t.Errorf("allocated %d bytes for a %d-byte value", alloc, len(body))
	}
	if s := p.users[0].user.Props["aboutMe"].(string); len(s) != len(big)/7*3 {
		t.Errorf("aboutMe has %d bytes", len(s))
	}
}

// TestDecodePageMatchesKiota: on realistic simulator pages the decoder
// yields what the SDK path (kiota parse node + convertUser) yields.
func TestDecodePageMatchesKiota(t *testing.T) {
	for _, name := range []string{"expand", "delta"} {
		body := benchPage(t, name)
		p := mustDecode(t, body)
		want := kiotaPage(t, body)
		if len(want) != len(p.users) || len(want) != 999 {
			t.Fatalf("%s: %d users, kiota %d", name, len(p.users), len(want))
		}
		for i, w := range want {
			if !reflect.DeepEqual(p.users[i].user, w.user) || p.users[i].managerID != w.managerID || p.users[i].managerKnown != w.managerKnown {
				t.Fatalf("%s user %d:\n%#v\nkiota:\n%#v", name, i, p.users[i], w)
			}
		}
	}
}

func kiotaPage(t testing.TB, body []byte) []sighting {
	node, err := jsonserialization.NewJsonParseNode(body)
	if err != nil {
		t.Fatal(err)
	}
	v, err := node.GetObjectValue(users.CreateDeltaGetResponseFromDiscriminatorValue)
	if err != nil {
		t.Fatal(err)
	}
	var out []sighting
	for _, u := range v.(users.DeltaGetResponseable).GetValue() {
		var s sighting
		s.user, s.managerID, s.managerKnown = convertUser(u)
		out = append(out, s)
	}
	return out
}

// benchSelect10 is ten properties a typical mapping selects.
const benchSelect10 = "id,userPrincipalName,mail,displayName,givenName,jobTitle,department,officeLocation,accountEnabled,businessPhones"

var (
	benchPagesOnce sync.Once
	benchPages     map[string][]byte
	benchPagesErr  error
)

// benchPage returns a page of 999 users as the simulator writes them:
// "expand", GET /users with $expand=manager (which Graph pages by 100, so
// ten pages' items are spliced into one), or "delta", the first page of an
// initial users/delta round with manager@delta.
func benchPage(t testing.TB, kind string) []byte {
	benchPagesOnce.Do(func() { benchPages, benchPagesErr = makeBenchPages() })
	if benchPagesErr != nil {
		t.Fatal(benchPagesErr)
	}
	return benchPages[kind]
}

func makeBenchPages() (map[string][]byte, error) {
	const base = "http://127.0.0.1:8370"
	st := directory.NewStore()
	if err := st.Load(directory.Generate(3000, 5)); err != nil {
		return nil, err
	}
	srv, err := graphsim.New(graphsim.Options{BaseURL: base, Store: st, DeltaPageSize: 999})
	if err != nil {
		return nil, err
	}
	get := func(target string) ([]byte, error) {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest("GET", strings.TrimPrefix(target, base), nil))
		if w.Code != 200 {
			return nil, fmt.Errorf("GET %s: %d %s", target, w.Code, w.Body)
		}
		return w.Body.Bytes(), nil
	}
	out := map[string][]byte{}
	delta, err := get(base + "/v1.0/users/delta?$select=" + benchSelect10 + ",manager")
	if err != nil {
		return nil, err
	}
	out["delta"] = delta

	var items []json.RawMessage
	var head []byte
	next := base + "/v1.0/users?$top=999&$select=" + benchSelect10 + "&$expand=" + url.QueryEscape("manager($select=id,mail,displayName)")
	for len(items) < 999 && next != "" {
		b, err := get(next)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Context string            `json:"@odata.context"`
			Next    string            `json:"@odata.nextLink"`
			Value   []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, err
		}
		if head == nil {
			head = []byte(`{"@odata.context":` + strconv.Quote(doc.Context) + `,"value":[`)
		}
		items = append(items, doc.Value...)
		next = doc.Next
	}
	if len(items) < 999 {
		return nil, fmt.Errorf("only %d users", len(items))
	}
	body := append(head, bytes.Join(func() [][]byte {
		out := make([][]byte, 999)
		for i := range out {
			out[i] = items[i]
		}
		return out
	}(), []byte(","))...)
	body = append(body, `],"@odata.nextLink":"`+base+`/v1.0/users?$skiptoken=eyJhIjoiMGVlYzdiZDYifQ"}`...)
	out["expand"] = body
	return out, nil
}

// BenchmarkDecodePage decodes a 999-user page ("expand": ten properties
// and the expanded manager's three; "delta": ten properties and
// manager@delta).
func BenchmarkDecodePage(b *testing.B) {
	for _, kind := range []string{"expand", "delta"} {
		b.Run(kind, func(b *testing.B) {
			body := benchPage(b, kind)
			var p page
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			start := startCounting()
			for b.Loop() {
				if err := decodePage(body, &p); err != nil {
					b.Fatal(err)
				}
			}
			reportPerUser(b, len(p.users), start)
		})
	}
}

// BenchmarkDecodePageKiota is the path decodePage replaced, on the same
// bytes: kiota's JSON parse node into the SDK's models, then convertUser.
func BenchmarkDecodePageKiota(b *testing.B) {
	for _, kind := range []string{"expand", "delta"} {
		b.Run(kind, func(b *testing.B) {
			body := benchPage(b, kind)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			n := 0
			start := startCounting()
			for b.Loop() {
				n = len(kiotaPage(b, body))
			}
			reportPerUser(b, n, start)
		})
	}
}

// benchStart is where a per-user benchmark's counts start.
type benchStart struct {
	mallocs uint64
	cpu     time.Duration
}

func startCounting() benchStart {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return benchStart{ms.Mallocs, cpuTime()}
}

// cpuTime is the CPU time the process has used (all threads, GC included):
// on a shared machine it varies less than the wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportPerUser reports wall time, CPU time and allocations per user of a
// benchmark whose operation handled users users.
func reportPerUser(b *testing.B, users int, start benchStart) {
	cpu := cpuTime() - start.cpu
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	n := float64(b.N * users)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/user")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/user")
	b.ReportMetric(float64(ms.Mallocs-start.mallocs)/n, "allocs/user")
}
