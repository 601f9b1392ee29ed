package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

const base = "http://127.0.0.1:8370"

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type fixture struct {
	srv   *Server
	store *directory.Store
	users []directory.User
	clk   *clock
}

func newFixture(t testing.TB, n int, deltaPage int) *fixture {
	t.Helper()
	users := directory.Generate(n, 1)
	st := directory.NewStore()
	if err := st.Load(users); err != nil {
		t.Fatal(err)
	}
	clk := &clock{time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	srv, err := New(Options{BaseURL: base, Store: st, DeltaPageSize: deltaPage, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, store: st, users: users, clk: clk}
}

// do sends a request; target may be a path or an absolute URL at base.
func (f *fixture) do(t testing.TB, method, target string, body string, hdr ...string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	target = strings.ReplaceAll(strings.TrimPrefix(target, base), " ", "%20")
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	var m map[string]any
	if strings.Contains(w.Header().Get("Content-Type"), "json") {
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v\n%s", method, target, err, w.Body)
		}
	}
	return w, m
}

func (f *fixture) get(t testing.TB, target string, hdr ...string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	return f.do(t, "GET", target, "", hdr...)
}

func errCode(m map[string]any) (code, msg string) {
	e, _ := m["error"].(map[string]any)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	return code, msg
}

func values(m map[string]any) []map[string]any {
	vs, _ := m["value"].([]any)
	out := make([]map[string]any, len(vs))
	for i, v := range vs {
		out[i], _ = v.(map[string]any)
	}
	return out
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestListUsers(t *testing.T) {
	f := newFixture(t, 30, 0)
	u := f.users
	ext := directory.CostCenterExt
	tests := []struct {
		name    string
		target  string
		hdr     []string
		status  int
		code    string
		msg     string
		count   int      // expected len(value) when >= 0
		keys    []string // expected keys of value[0]
		context string
	}{
		{name: "default select", target: "/v1.0/users", status: 200, count: 30,
			keys:    []string{"businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone", "officeLocation", "preferredLanguage", "surname", "userPrincipalName"},
			context: base + "/v1.0/$metadata#users"},
		{name: "select mixed case with extension", target: "/v1.0/users?$select=ID,UserPrincipalName," + strings.ToUpper(ext) + ",onPremisesExtensionAttributes,employeeOrgData,accountEnabled&$filter=id eq '" + u[0].ID + "'",
			status: 200, count: 1, keys: []string{"accountEnabled", "employeeOrgData", ext, "id", "onPremisesExtensionAttributes", "userPrincipalName"},
			context: base + "/v1.0/$metadata#users(id,userPrincipalName," + ext + ",onPremisesExtensionAttributes,employeeOrgData,accountEnabled)"},
		{name: "escaped dollar", target: "/v1.0/users?%24select=id&%24top=5", status: 200, count: 5, keys: []string{"id"}},
		{name: "top too big", target: "/v1.0/users?$top=1000", status: 400, code: "Request_BadRequest",
			msg: "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."},
		{name: "top zero", target: "/v1.0/users?$top=0", status: 400, code: "Request_BadRequest", count: -1},
		{name: "top not a number", target: "/v1.0/users?$top=ten", status: 400, code: "BadRequest", count: -1},
		{name: "unknown select", target: "/v1.0/users?$select=id,shoeSize", status: 400, code: "Request_BadRequest",
			msg: "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."},
		{name: "not in collections", target: "/v1.0/users?$select=id,skills", status: 501, code: "NotImplemented", count: -1},
		{name: "hireDate not in collections", target: "/v1.0/users?$select=hireDate", status: 501, code: "NotImplemented", count: -1},
		{name: "employeeHireDate fine", target: "/v1.0/users?$select=employeeHireDate&$top=1", status: 200, count: 1, keys: []string{"employeeHireDate", "id"}},
		{name: "filter eq string case-insensitive", target: "/v1.0/users?$select=id&$filter=userType eq 'GUEST'", status: 200, count: countWhere(u, "userType", "Guest")},
		{name: "filter bool and", target: "/v1.0/users?$select=id&$filter=userType eq 'Member' and accountEnabled eq false", status: 200,
			count: countFunc(u, func(x directory.User) bool {
				return x.Props["userType"] == "Member" && x.Props["accountEnabled"] == false
			})},
		{name: "filter or parens startswith", target: "/v1.0/users?$select=id&$filter=(id eq '" + u[1].ID + "' or id eq '" + u[2].ID + "') and startswith(displayName,'李')", status: 200, count: 1},
		{name: "filter in", target: "/v1.0/users?$select=id&$filter=id in ('" + u[3].ID + "','" + u[4].ID + "')", status: 200, count: 2},
		{name: "filter nested", target: "/v1.0/users?$select=id&$filter=onPremisesExtensionAttributes/extensionAttribute1 eq 'EA1-7'", status: 200, count: 1},
		{name: "filter eq null", target: "/v1.0/users?$select=id&$filter=mail eq null", status: 200, count: countFunc(u, func(x directory.User) bool { return x.Props["mail"] == nil })},
		{name: "filter quote escape", target: "/v1.0/users?$select=id&$filter=" + url.QueryEscape("displayName eq 'O''Brien'"), status: 200, count: 0},
		{name: "filter unknown property", target: "/v1.0/users?$filter=shoeSize eq '4'", status: 400, code: "Request_BadRequest",
			msg: "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."},
		{name: "filter syntax", target: "/v1.0/users?$filter=" + url.QueryEscape("displayName eq"), status: 400, code: "BadRequest", count: -1},
		{name: "filter unterminated", target: "/v1.0/users?$filter=" + url.QueryEscape("displayName eq 'x"), status: 400, code: "BadRequest", count: -1},
		{name: "filter unsupported op", target: "/v1.0/users?$filter=" + url.QueryEscape("displayName gt 'x'"), status: 400, code: "BadRequest", count: -1},
		{name: "count without eventual", target: "/v1.0/users?$count=true", status: 400, code: "Request_BadRequest", msg: "$count is not currently supported."},
		{name: "unknown option", target: "/v1.0/users?$foo=1", status: 400, code: "BadRequest", count: -1},
		{name: "orderby unsupported", target: "/v1.0/users?$orderby=displayName", status: 400, code: "Request_UnsupportedQuery", count: -1},
		{name: "expand other", target: "/v1.0/users?$expand=memberOf", status: 400, code: "Request_BadRequest", count: -1},
		{name: "bad expand", target: "/v1.0/users?$expand=manager($top=1)", status: 400, code: "BadRequest", count: -1},
		{name: "unknown segment", target: "/v1.0/groups", status: 400, code: "BadRequest", msg: "Resource not found for the segment 'groups'."},
		{name: "bad path", target: "/v1.0/users/x/y/z", status: 400, code: "BadRequest", count: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, m := f.get(t, tc.target, tc.hdr...)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" {
				code, msg := errCode(m)
				if code != tc.code || (tc.msg != "" && msg != tc.msg) {
					t.Errorf("error = %s %q, want %s %q", code, msg, tc.code, tc.msg)
				}
				inner, _ := m["error"].(map[string]any)["innerError"].(map[string]any)
				if inner["request-id"] == nil || inner["date"] == nil || inner["client-request-id"] == nil {
					t.Errorf("innerError = %v", inner)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != ContentType {
				t.Errorf("Content-Type = %q", ct)
			}
			vs := values(m)
			if tc.count >= 0 && len(vs) != tc.count {
				t.Errorf("len(value) = %d, want %d", len(vs), tc.count)
			}
			if tc.keys != nil && len(vs) > 0 && !slices.Equal(keys(vs[0]), sorted(tc.keys)) {
				t.Errorf("keys = %v, want %v", keys(vs[0]), sorted(tc.keys))
			}
			if tc.context != "" && m["@odata.context"] != tc.context {
				t.Errorf("context = %v, want %v", m["@odata.context"], tc.context)
			}
		})
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func countWhere(us []directory.User, k string, v any) int {
	return countFunc(us, func(u directory.User) bool { return u.Props[k] == v })
}

func countFunc(us []directory.User, fn func(directory.User) bool) int {
	n := 0
	for _, u := range us {
		if fn(u) {
			n++
		}
	}
	return n
}

func TestListValueTypes(t *testing.T) {
	f := newFixture(t, 10, 0)
	_, m := f.get(t, "/v1.0/users?$select=id,businessPhones,accountEnabled,employeeOrgData,onPremisesExtensionAttributes,employeeHireDate,jobTitle,"+directory.CostCenterExt+"&$top=10")
	byID := map[string]map[string]any{}
	for _, v := range values(m) {
		byID[v["id"].(string)] = v
	}
	bare := byID[f.users[directory.GenBare].ID]
	if v, ok := bare["employeeOrgData"]; !ok || v != nil {
		t.Errorf("employeeOrgData of bare user = %v, %v; want null", v, ok)
	}
	if _, ok := bare[directory.CostCenterExt]; ok {
		t.Error("unset extension is present")
	}
	if ph, ok := bare["businessPhones"].([]any); !ok || len(ph) != 0 {
		t.Errorf("businessPhones = %#v, want []", bare["businessPhones"])
	}
	root := byID[f.users[0].ID]
	attrs := root["onPremisesExtensionAttributes"].(map[string]any)
	if v, ok := attrs["extensionAttribute15"]; len(attrs) != 15 || !ok || v != nil {
		t.Errorf("onPremisesExtensionAttributes = %v", attrs)
	}
	if _, ok := root["accountEnabled"].(bool); !ok {
		t.Errorf("accountEnabled = %#v", root["accountEnabled"])
	}
	if _, err := time.Parse(time.RFC3339, root["employeeHireDate"].(string)); err != nil {
		t.Errorf("employeeHireDate: %v", err)
	}
	if got := byID[f.users[directory.GenSpecial].ID]["jobTitle"]; got != f.users[directory.GenSpecial].Props["jobTitle"] {
		t.Errorf("special jobTitle = %q", got)
	}
}

var tokenSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestListPagingCountAndExpand(t *testing.T) {
	f := newFixture(t, 250, 0)
	// $expand and advanced queries ($count, ConsistencyLevel) do not mix.
	for _, target := range []string{
		"/v1.0/users?$select=id&$count=true&$expand=manager",
	} {
		if w, _ := f.get(t, target, "ConsistencyLevel", "eventual"); w.Code != 400 || !strings.Contains(w.Body.String(), "Request_UnsupportedQuery") {
			t.Errorf("%s: %d %s, want 400 Request_UnsupportedQuery", target, w.Code, w.Body)
		}
	}
	if w, _ := f.get(t, "/v1.0/users?$select=id&$expand=manager", "ConsistencyLevel", "eventual"); w.Code != 400 {
		t.Errorf("$expand with ConsistencyLevel: %d, want 400", w.Code)
	}
	if w, m := f.get(t, "/v1.0/users?$select=id&$top=100&$count=true", "ConsistencyLevel", "eventual"); w.Code != 200 || m["@odata.count"] != float64(250) {
		t.Errorf("$count: %d, @odata.count = %v", w.Code, m["@odata.count"])
	}
	next := "/v1.0/users?$select=id,displayName&$top=100&$expand=manager($select=id,displayName)"
	var ids []string
	pages := 0
	for ; next != "" && pages < 10; pages++ {
		w, m := f.get(t, next)
		if w.Code != 200 {
			t.Fatalf("page %d: %d %s", pages, w.Code, w.Body)
		}
		for _, v := range values(m) {
			ids = append(ids, v["id"].(string))
			mgr, has := v["manager"].(map[string]any)
			if v["id"] == f.users[0].ID {
				if has {
					t.Error("root has a manager")
				}
			} else if !has || mgr["@odata.type"] != "#microsoft.graph.user" || mgr["displayName"] == nil || len(mgr) != 3 {
				t.Errorf("manager = %v", v["manager"])
			}
		}
		next, _ = m["@odata.nextLink"].(string)
		if next != "" {
			if !strings.HasPrefix(next, base+"/v1.0/users?$skiptoken=") {
				t.Fatalf("nextLink = %s", next)
			}
			if tok := strings.TrimPrefix(next, base+"/v1.0/users?$skiptoken="); !tokenSafe.MatchString(tok) {
				t.Errorf("token %q is not URL-safe", tok)
			}
		}
	}
	if pages != 3 || len(ids) != 250 || !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 250 {
		t.Errorf("pages %d, ids %d (sorted %v)", pages, len(ids), slices.IsSorted(ids))
	}
	w, _ := f.get(t, "/v1.0/users/$count", "ConsistencyLevel", "eventual")
	if w.Code != 200 || w.Body.String() != "250" {
		t.Errorf("$count = %d %q", w.Code, w.Body)
	}
	if w, _ := f.get(t, "/v1.0/users?$skiptoken=%%%"); w.Code != 400 {
		t.Errorf("garbage skiptoken status = %d", w.Code)
	}
}

func TestGetUserAndManager(t *testing.T) {
	f := newFixture(t, 20, 0)
	u := f.users
	guestUPN := u[directory.GenGuest].Props["userPrincipalName"].(string)
	if err := f.store.Delete(u[15].ID, false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		target string
		status int
		wantID string
		code   string
		keys   []string
	}{
		{"by id", "/v1.0/users/" + u[9].ID + "?$select=id,displayName", 200, u[9].ID, "", []string{"@odata.context", "displayName", "id"}},
		{"by upn encoded", "/v1.0/users/" + url.PathEscape(guestUPN) + "?$select=userType", 200, u[directory.GenGuest].ID, "", []string{"@odata.context", "id", "userType"}},
		{"aboutMe allowed on single", "/v1.0/users/" + u[9].ID + "?$select=aboutMe", 200, u[9].ID, "", []string{"@odata.context", "id"}},
		{"expand manager", "/v1.0/users/" + u[9].ID + "?$select=id&$expand=manager($select=id)", 200, u[9].ID, "", []string{"@odata.context", "id", "manager"}},
		{"unknown", "/v1.0/users/00000000-0000-4000-8000-000000000000", 404, "", "Request_ResourceNotFound", nil},
		{"soft deleted", "/v1.0/users/" + u[15].ID, 404, "", "Request_ResourceNotFound", nil},
		{"bad select", "/v1.0/users/" + u[9].ID + "?$select=nope", 400, "", "Request_BadRequest", nil},
		{"manager", "/v1.0/users/" + u[9].ID + "/manager?$select=id,userPrincipalName", 200, u[1].ID, "", []string{"@odata.context", "@odata.type", "id", "userPrincipalName"}},
		{"root manager", "/v1.0/users/" + u[0].ID + "/manager", 404, "", "Request_ResourceNotFound", nil},
		{"manager of unknown", "/v1.0/users/nobody@x/manager", 404, "", "Request_ResourceNotFound", nil},
		{"post", "/v1.0/users", 405, "", "Request_BadRequest", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			if tc.name == "post" {
				method = "POST"
			}
			w, m := f.do(t, method, tc.target, "")
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" {
				if code, _ := errCode(m); code != tc.code {
					t.Errorf("code = %s, want %s", code, tc.code)
				}
				return
			}
			if m["id"] != tc.wantID {
				t.Errorf("id = %v, want %s", m["id"], tc.wantID)
			}
			if !slices.Equal(keys(m), tc.keys) {
				t.Errorf("keys = %v, want %v", keys(m), tc.keys)
			}
			if !strings.HasSuffix(m["@odata.context"].(string), "/$entity") {
				t.Errorf("context = %v", m["@odata.context"])
			}
		})
	}
}

// TestUPNRanges: "ge"/"le" select string ranges case-insensitively; ranges
// whose bounds hold no '@' (so no UPN equals a bound) split the directory
// into disjoint parts that together hold every user.
func TestUPNRanges(t *testing.T) {
	f := newFixture(t, 300, 0)
	all := map[string]bool{}
	for _, u := range f.users {
		if upn, _ := u.Props["userPrincipalName"].(string); upn != "" && !u.Deleted {
			all[strings.ToLower(upn)] = true
		}
	}
	get := func(filter string) []string {
		t.Helper()
		var upns []string
		next := "/v1.0/users?$select=userPrincipalName&$top=999&$filter=" + url.QueryEscape(filter)
		for pages := 0; next != "" && pages < 20; pages++ {
			w, m := f.get(t, strings.TrimPrefix(next, base))
			if w.Code != 200 {
				t.Fatalf("%s: %d %s", filter, w.Code, w.Body)
			}
			for _, v := range values(m) {
				upns = append(upns, strings.ToLower(v["userPrincipalName"].(string)))
			}
			next, _ = m["@odata.nextLink"].(string)
		}
		return upns
	}
	bounds := []string{"d", "K", "m9", "s"} // mixed case: compared case-insensitively
	filters := []string{"userPrincipalName le 'd'"}
	for i := 0; i+1 < len(bounds); i++ {
		filters = append(filters, fmt.Sprintf("userPrincipalName ge '%s' and userPrincipalName le '%s'", bounds[i], bounds[i+1]))
	}
	filters = append(filters, "userPrincipalName ge 's'")
	seen := map[string]int{}
	for _, fl := range filters {
		got := get(fl)
		if len(got) == 0 {
			t.Errorf("%s selects nobody: the fixture should spread over every range", fl)
		}
		for _, upn := range got {
			seen[upn]++
		}
	}
	for upn := range all {
		if seen[upn] != 1 {
			t.Errorf("%s is in %d ranges, want exactly 1", upn, seen[upn])
		}
	}
	if len(seen) != len(all) {
		t.Errorf("ranges hold %d users, the directory %d", len(seen), len(all))
	}
	for _, op := range []string{"lt", "gt"} {
		if w, _ := f.get(t, "/v1.0/users?$filter="+url.QueryEscape("userPrincipalName "+op+" 'm'")); w.Code != 400 {
			t.Errorf("%s: %d, want 400 (not supported on userPrincipalName)", op, w.Code)
		}
	}
}
