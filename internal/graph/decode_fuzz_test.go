package graph

import (
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/testenv"
)

// FuzzDecodePage holds decodePage to decodePageReference (encoding/json):
// both accept the same bodies and decode them alike; what decodePage
// accepts is valid JSON; and the page written back as Graph writes pages
// (encodePage: users, removals, manager@delta, links) decodes to the same
// page. The seed corpus (testdata/fuzz/FuzzDecodePage) holds
// realistic pages: the simulator's /users with $expand=manager, users/delta
// initial and incremental pages (manager@delta, @removed, deltaLink),
// extension properties, onPremisesExtensionAttributes, businessPhones,
// unicode escapes, guest UPNs with #EXT#, invalid UTF-8.
func FuzzDecodePage(f *testing.F) {
	for _, s := range []string{
		`{"value":[{"id":"a","x":[1,-0,1.5e3,true,false,null,{"@a":1,"b":{}}],"@odata.etag":"W/1"}]}`,
		`{"value":[{"id":"a\ud800\udc00\ud800","manager@delta":[{"id":"m"}]}],"@odata.nextLink":"n"}`,
		`{"value":[{"id":"a","id":"b","b":1,"b":"2"}],"value":[]}`,
		`{"value":null,"@odata.deltaLink":null}`,
		`{"value":[{"id":1}],"@odata.nextLink":{},"value":[{"id":"c"}],"@odata.nextLink":"n"}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got, want page
		errGot := decodePage(body, &got)
		errWant := decodePageReference(body, &want)
		if errors.Is(errGot, errPageLimit) {
			// What no page of users holds: a user of 65,536 values, values
			// costing 16 times the page (TestDecodePageBudget).
			if len(body) < 8<<10 {
				t.Fatalf("a %d-byte page refused: %v", len(body), errGot)
			}
			return
		}
		if errWant == nil && errGot != nil {
			t.Fatalf("decodePage: %v; the reference decodes it", errGot)
		}
		if errGot == nil && errWant != nil {
			t.Fatalf("decodePage decodes it; the reference: %v", errWant)
		}
		if errGot != nil {
			if len(got.users) != 0 || got.nextLink != "" || got.deltaLink != "" {
				t.Fatalf("failed decode left %+v", got)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatal("decodePage accepted invalid JSON")
		}
		if diff := samePage(&got, &want); diff != "" {
			t.Fatal(diff)
		}

		// Write the page back as Graph would and decode it again.
		again := encodePage(t, &got)
		var re page
		if err := decodePage(again, &re); err != nil {
			t.Fatalf("re-encoded page: %v\n%s", err, again)
		}
		if diff := samePage(&re, &got); diff != "" {
			t.Fatalf("re-encoded page: %s\n%s", diff, again)
		}
	})
}

// encodePage writes p back as a Graph page: each user's Props, with
// "@removed" for a removed user and a manager@delta annotation when the
// page said something about the manager, then the links.
func encodePage(t *testing.T, p *page) []byte {
	t.Helper()
	users := make([]any, len(p.users))
	for i, s := range p.users {
		m := make(map[string]any, len(s.user.Props)+2)
		maps.Copy(m, s.user.Props)
		if s.user.Removed {
			m["@removed"] = map[string]any{"reason": "changed"}
		}
		if s.managerKnown {
			refs := []any{}
			if s.managerID != "" {
				refs = append(refs, map[string]any{"@odata.type": "#microsoft.graph.user", "id": s.managerID})
			}
			m["manager@delta"] = refs
		}
		users[i] = m
	}
	doc := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": users}
	if p.nextLink != "" {
		doc["@odata.nextLink"] = p.nextLink
	}
	if p.deltaLink != "" {
		doc["@odata.deltaLink"] = p.deltaLink
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("encoding the page: %v", err)
	}
	return b
}

// TestDecodePageBudget: realistic pages (the seed corpus, the simulator's
// 999-user pages) come far inside the decoding budget; 10 MB pages of
// tiny values or deep nesting in a property nobody selected are refused
// or decoded having allocated a bounded multiple of their size.
func TestDecodePageBudget(t *testing.T) {
	pages := corpus(t)
	for _, kind := range []string{"expand", "delta"} {
		pages["simulator "+kind] = benchPage(t, kind)
	}
	for name, body := range pages {
		var p page
		if err := decodePage(body, &p); err != nil {
			continue // the corpus holds broken pages too
		}
		d := decoderPool.Get().(*decoder)
		d.buf, d.pos, d.item, d.cost = body, 0, -1, 0
		_ = d.page(&p)
		ratio := float64(d.cost) / float64(len(body))
		d.buf = nil
		decoderPool.Put(d)
		t.Logf("%s: %d bytes, %d users, estimated %.1f× its size", name, len(body), len(p.users), ratio)
		if budget := decodeBudget*len(body) + decodeBudgetFloor; d.cost > budget/2 || (len(body) > 64<<10 && ratio > decodeBudget/2) {
			t.Errorf("%s: estimated %d bytes (%.1f× its size), too close to the budget of %d bytes", name, d.cost, ratio, budget)
		}
	}

	const size = 10 << 20
	d := maxDecodeDepth - 3 // a property of a user item starts at depth 4
	nested := `{"id":"a","displayName":"A","unselected":` + strings.Repeat(`[{"x":`, d/2) + `1` + strings.Repeat(`}]`, d/2) + `}`
	many := func(item string) []byte {
		return []byte(`{"value":[` + strings.TrimSuffix(strings.Repeat(item+",", size/(len(item)+1)), ",") + `]}`)
	}
	for name, tc := range map[string]struct {
		body []byte
		ok   bool
	}{
		"deep nesting within the depth limit": {many(nested), false},
		"deep nesting beyond the depth limit": {[]byte(`{"value":[{"id":"a","unselected":` + strings.Repeat("[", size) + `]}`), false},
		"empty objects":                       {[]byte(`{"value":[{"id":"a","unselected":[` + strings.TrimSuffix(strings.Repeat("{},", size/3), ",") + `]}]}`), false},
		"tiny numbers":                        {[]byte(`{"value":[{"id":"a","unselected":[` + strings.TrimSuffix(strings.Repeat("1,", size/2), ",") + `]}]}`), false},
		"tiny numbers in a skipped key":       {[]byte(`{"unselected":[` + strings.TrimSuffix(strings.Repeat("1,", size/2), ",") + `],"value":[]}`), true},
		"tiny numbers as an item":             {[]byte(`{"value":[[` + strings.TrimSuffix(strings.Repeat("1,", size/2), ",") + `]]}`), false},
		"many tiny users":                     {many(`{"id":"a","x":1}`), false},
		"tiny numbers in many users":          {many(`{"id":"a","x":[` + strings.TrimSuffix(strings.Repeat("1,", 60000), ",") + `]}`), true},
		"empty objects in many users":         {many(`{"id":"a","x":[` + strings.TrimSuffix(strings.Repeat("{},", 30000), ",") + `]}`), false},
	} {
		var p page
		var err error
		alloc := testenv.Allocated(func() { err = decodePage(tc.body, &p) })
		t.Logf("%s: %d bytes, %.2f× allocated: %v", name, len(tc.body), float64(alloc)/float64(len(tc.body)), err)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", name, err)
		}
		if limit := decodeBudget*len(tc.body) + decodeBudgetFloor; alloc > uint64(limit) && !testenv.Race {
			t.Errorf("%s: %d bytes allocated for a %d-byte page", name, alloc, len(tc.body))
		}
	}
}

// FuzzHTTPError reads Graph's error answers (httpError). Properties: the
// status is kept; there is always a message; the text is short whatever
// the body; code and message written back as Graph's error document
// ({"error":{"code","message"}}) read the same. The seed corpus
// (testdata/fuzz/FuzzHTTPError) holds the error answers the reference
// documentation and the simulator show: syncStateNotFound,
// resyncRequired, throttling, insufficient privileges, unsupported query.
func FuzzHTTPError(f *testing.F) {
	f.Fuzz(func(t *testing.T, status uint16, body []byte) {
		code := 400 + int(status)%200
		var e *Error
		if !errors.As(httpError(code, body), &e) || e.Status != code {
			t.Fatalf("httpError(%d) = %v", code, e)
		}
		if e.Message == "" || len(e.Error()) > 1<<10 || !strings.Contains(e.Error(), strconv.Itoa(code)) {
			t.Fatalf("httpError(%d, %q) = %q", code, body, e.Error())
		}
		doc, err := json.Marshal(map[string]any{"error": map[string]any{"code": e.Code, "message": e.Message}})
		if err != nil {
			t.Fatal(err)
		}
		var again *Error
		_ = errors.As(httpError(code, doc), &again)
		var want struct{ Code, Message string }
		_ = json.Unmarshal(doc, &struct {
			Error *struct{ Code, Message string } `json:"error"`
		}{&want})
		if again.Code != want.Code || again.Message != want.Message {
			t.Fatalf("re-encoded %s: %+v", doc, again)
		}
	})
}

// TestHTTPErrorHuge: a 10 MB error answer gives a short error.
func TestHTTPErrorHuge(t *testing.T) {
	huge := strings.Repeat("é", 5<<20)
	for _, body := range []string{`{"error":{"code":"` + huge + `","message":"` + huge + `"}}`, huge} {
		if err := httpError(400, []byte(body)); len(err.Error()) > 1<<10 {
			t.Errorf("error of %d bytes", len(err.Error()))
		}
	}
}
