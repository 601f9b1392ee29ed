package graphsim

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

// round follows nextLinks from start and returns every item and the deltaLink.
func (f *fixture) round(t *testing.T, start string, hdr ...string) (items []map[string]any, deltaLink string, pages int) {
	t.Helper()
	next := start
	for pages = 0; pages < 1000; pages++ {
		w, m := f.get(t, next, hdr...)
		if w.Code != 200 {
			t.Fatalf("GET %s: %d %s", next, w.Code, w.Body)
		}
		items = append(items, values(m)...)
		if dl, ok := m["@odata.deltaLink"].(string); ok {
			if _, both := m["@odata.nextLink"]; both {
				t.Fatal("page has both nextLink and deltaLink")
			}
			return items, dl, pages + 1
		}
		next, _ = m["@odata.nextLink"].(string)
		if !strings.HasPrefix(next, base+"/v1.0/users/delta?$skiptoken=") {
			t.Fatalf("nextLink = %q", next)
		}
	}
	t.Fatal("round did not end")
	return nil, "", 0
}

func byID(items []map[string]any) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, it := range items {
		m[it["id"].(string)] = it
	}
	return m
}

func TestDeltaInitialRoundPathsAndFilter(t *testing.T) {
	f := newFixture(t, 30, 7)
	for _, p := range []string{"/v1.0/users/delta", "/v1.0/users/delta()", "/v1.0/users/microsoft.graph.delta()", "/v1.0/Users/Delta"} {
		items, dl, pages := f.round(t, p+"?$select=id,displayName,manager")
		if len(items) != 30 || pages != 5 {
			t.Errorf("%s: %d items in %d pages", p, len(items), pages)
		}
		if !strings.HasPrefix(dl, base+"/v1.0/users/delta?$deltatoken=") || !tokenSafe.MatchString(strings.SplitN(dl, "=", 2)[1]) {
			t.Errorf("%s: deltaLink = %s", p, dl)
		}
		got := byID(items)
		if md, ok := got[f.users[9].ID]["manager@delta"].([]any); !ok || md[0].(map[string]any)["id"] != f.users[1].ID {
			t.Errorf("%s: manager@delta = %v", p, got[f.users[9].ID]["manager@delta"])
		}
		if _, ok := got[f.users[0].ID]["manager@delta"]; ok {
			t.Errorf("%s: root has manager@delta", p)
		}
	}
	_, m := f.get(t, "/v1.0/users/delta?$select=id,displayName")
	if m["@odata.context"] != base+"/v1.0/$metadata#users(id,displayName)" {
		t.Errorf("first page context = %v", m["@odata.context"])
	}
	items, _, _ := f.round(t, "/v1.0/users/delta?$select=id&$filter="+fmt.Sprintf("id eq '%s' or id eq '%s'", f.users[3].ID, f.users[4].ID))
	if len(items) != 2 {
		t.Errorf("filtered round: %d items", len(items))
	}
	items, _, pages := f.round(t, "/v1.0/users/delta?$select=id&$top=3")
	if len(items) != 30 || pages != 10 {
		t.Errorf("$top=3 caps pages: %d items, %d pages", len(items), pages)
	}
	w, m := f.get(t, "/v1.0/users/delta?$deltatoken=latest")
	if w.Code != 200 || len(values(m)) != 0 || m["@odata.deltaLink"] == nil || m["@odata.nextLink"] != nil {
		t.Errorf("latest: %d %v", w.Code, m)
	}
}

func TestDeltaErrors(t *testing.T) {
	f := newFixture(t, 5, 0)
	_, dl, _ := f.round(t, "/v1.0/users/delta?$select=id")
	tests := []struct {
		name   string
		target string
		status int
		code   string
		msg    string
	}{
		{"filter not id", "/v1.0/users/delta?$filter=displayName eq 'x'", 400, "Request_UnsupportedQuery", ""},
		{"unknown select", "/v1.0/users/delta?$select=nope", 400, "Request_BadRequest", "Could not find a property named 'nope' on type 'microsoft.graph.user'."},
		{"skills", "/v1.0/users/delta?$select=skills", 501, "NotImplemented", ""},
		{"garbage delta token", "/v1.0/users/delta?$deltatoken=!!!", 400, "Request_BadRequest", ""},
		{"garbage skip token", "/v1.0/users/delta?$skiptoken=e30", 400, "Directory_ExpiredPageToken", ""},
		{"bad top", "/v1.0/users/delta?$top=x", 400, "BadRequest", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, m := f.get(t, tc.target)
			code, msg := errCode(m)
			if w.Code != tc.status || code != tc.code || (tc.msg != "" && msg != tc.msg) {
				t.Errorf("got %d %s %q, want %d %s %q", w.Code, code, msg, tc.status, tc.code, tc.msg)
			}
		})
	}
	// Expiry by age, by admin, and a forced reset.
	f.clk.t = f.clk.t.Add(7*24*time.Hour + time.Second)
	w, m := f.get(t, dl)
	if code, msg := errCode(m); w.Code != 400 || code != "syncStateNotFound" || msg != syncStateMsg {
		t.Errorf("old token: %d %s %q", w.Code, code, msg)
	}
	_, dl, _ = f.round(t, "/v1.0/users/delta?$select=id")
	if w, _ := f.get(t, dl); w.Code != 200 {
		t.Fatalf("fresh token: %d", w.Code)
	}
	f.srv.ExpireDeltaTokens()
	if w, m := f.get(t, dl); w.Code != 400 || func() string { c, _ := errCode(m); return c }() != "syncStateNotFound" {
		t.Errorf("expired token: %d %v", w.Code, m)
	}
	_, dl, _ = f.round(t, "/v1.0/users/delta?$select=id")
	f.srv.ResetDelta()
	w, _ = f.get(t, dl)
	if w.Code != http.StatusGone || w.Header().Get("Location") != base+"/v1.0/users/delta?$deltatoken=" {
		t.Errorf("reset: %d Location %q", w.Code, w.Header().Get("Location"))
	}
	if w, _ := f.get(t, dl); w.Code != 200 {
		t.Errorf("after reset the token works again: %d", w.Code)
	}
	items, _, _ := f.round(t, base+"/v1.0/users/delta?$deltatoken=")
	if len(items) != 5 {
		t.Errorf("empty deltatoken restarts a full round: %d items", len(items))
	}
}

func TestDeltaIncremental(t *testing.T) {
	f := newFixture(t, 40, 4)
	u := f.users
	sel := "/v1.0/users/delta?$select=id,displayName,jobTitle,mail,manager," + directory.CostCenterExt
	_, dl, _ := f.round(t, sel)

	// No changes: one empty page with a deltaLink.
	items, dl2, pages := f.round(t, dl)
	if len(items) != 0 || pages != 1 || dl2 == "" {
		t.Fatalf("no changes: %d items, %d pages", len(items), pages)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.store.Update(u[10].ID, directory.Patch{Props: map[string]any{"jobTitle": "Chief"}})
	must(err)
	_, err = f.store.Update(u[11].ID, directory.Patch{Props: map[string]any{"city": "Oslo"}}) // not selected
	must(err)
	_, err = f.store.Update(u[12].ID, directory.Patch{Props: map[string]any{"mail": nil}})
	must(err)
	newMgr := u[3].ID
	_, err = f.store.Update(u[13].ID, directory.Patch{ManagerID: &newMgr})
	must(err)
	none := ""
	_, err = f.store.Update(u[14].ID, directory.Patch{ManagerID: &none})
	must(err)
	must(f.store.Delete(u[15].ID, false))
	must(f.store.Delete(u[16].ID, true))
	must(f.store.Delete(u[17].ID, false))
	_, err = f.store.Restore(u[17].ID)
	must(err)
	added, err := f.store.Add(directory.User{ManagerID: u[0].ID, Props: map[string]any{"userPrincipalName": "new@x", "displayName": "New"}})
	must(err)

	for _, minimal := range []bool{false, true} {
		t.Run(fmt.Sprintf("minimal=%v", minimal), func(t *testing.T) {
			var hdr []string
			if minimal {
				hdr = []string{"Prefer", "return=minimal"}
			}
			items, _, _ := f.round(t, dl2, hdr...)
			got := byID(items)
			if _, ok := got[u[11].ID]; ok {
				t.Error("change of an unselected property surfaced")
			}
			// u[16]'s reports lost their manager, so they are in the round too.
			chief := got[u[10].ID]
			if chief["jobTitle"] != "Chief" {
				t.Errorf("u10 = %v", chief)
			}
			// microsoftgraph/microsoft-graph-explorer-v4#4018: a user whose
			// manager did not change comes without manager@delta.
			if u[10].ManagerID == "" {
				t.Fatal("fixture: u10 has no manager")
			}
			if md, ok := chief["manager@delta"]; ok {
				t.Errorf("u10's manager did not change, but manager@delta = %v", md)
			}
			if _, hasName := chief["displayName"]; hasName == minimal {
				t.Errorf("minimal=%v but displayName present=%v", minimal, hasName)
			}
			if v, ok := got[u[12].ID]["mail"]; !ok || v != nil {
				t.Errorf("cleared mail = %v, %v; want null", v, ok)
			}
			md := got[u[13].ID]["manager@delta"].([]any)[0].(map[string]any)
			if md["id"] != newMgr || md["@odata.type"] != "#microsoft.graph.user" {
				t.Errorf("manager@delta = %v", md)
			}
			rm := got[u[14].ID]["manager@delta"].([]any)[0].(map[string]any)
			if rm["id"] != u[GenManagerOf(14)].ID || rm["@removed"] == nil {
				t.Errorf("manager removal = %v", rm)
			}
			if r := got[u[15].ID]["@removed"]; r == nil || r.(map[string]any)["reason"] != "changed" {
				t.Errorf("soft delete = %v", got[u[15].ID])
			}
			if r := got[u[16].ID]["@removed"]; r == nil || r.(map[string]any)["reason"] != "deleted" {
				t.Errorf("hard delete = %v", got[u[16].ID])
			}
			if restored := got[u[17].ID]; restored["displayName"] == nil || restored["@removed"] != nil {
				t.Errorf("restored = %v", restored)
			}
			if n := got[added.ID]; n["displayName"] != "New" || n["manager@delta"] == nil {
				t.Errorf("added = %v", n)
			}
		})
	}
}

// GenManagerOf is directory.GenManager, named for readability in tests.
func GenManagerOf(i int) int { return directory.GenManager(i) }

// TestDeltaChangesDuringRound checks that a change made while an initial
// round is being paged is not lost: the next round reports it.
func TestDeltaChangesDuringRound(t *testing.T) {
	f := newFixture(t, 20, 5)
	_, m := f.get(t, "/v1.0/users/delta?$select=id,jobTitle")
	if _, err := f.store.Update(f.users[7].ID, directory.Patch{Props: map[string]any{"jobTitle": "Mid-round"}}); err != nil {
		t.Fatal(err)
	}
	_, dl, _ := f.round(t, m["@odata.nextLink"].(string))
	items, _, _ := f.round(t, dl)
	if got := byID(items)[f.users[7].ID]; got == nil || got["jobTitle"] != "Mid-round" {
		t.Errorf("mid-round change lost: %v", items)
	}
}

func TestBatch(t *testing.T) {
	f := newFixture(t, 20, 0)
	u := f.users
	okBody := fmt.Sprintf(`{"requests":[
		{"id":"1","method":"GET","url":"/users/%s?$select=id,displayName"},
		{"id":"2","method":"GET","url":"users/%s/manager?%%24select=id"},
		{"id":"3","method":"GET","url":"/users/00000000-0000-4000-8000-000000000000"},
		{"id":"4","method":"GET","url":"%s/v1.0/users/%s?$select=id"}]}`, u[5].ID, u[9].ID, base, u[2].ID)
	tooMany := `{"requests":[` + strings.TrimSuffix(strings.Repeat(`{"id":"x","method":"GET","url":"/users"},`, 21), ",") + `]}`
	var b strings.Builder
	for i := range 21 {
		fmt.Fprintf(&b, `{"id":"%d","method":"GET","url":"/users"},`, i)
	}
	over := `{"requests":[` + strings.TrimSuffix(b.String(), ",") + `]}`
	tests := []struct {
		name   string
		body   string
		status int
		check  func(t *testing.T, m map[string]any)
	}{
		{"items", okBody, 200, func(t *testing.T, m map[string]any) {
			rs := m["responses"].([]any)
			want := []struct {
				status float64
				id     string
			}{{200, u[5].ID}, {200, u[1].ID}, {404, ""}, {200, u[2].ID}}
			if len(rs) != len(want) {
				t.Fatalf("responses = %v", rs)
			}
			for i, w := range want {
				r := rs[i].(map[string]any)
				body, _ := r["body"].(map[string]any)
				if r["status"] != w.status || (w.id != "" && body["id"] != w.id) {
					t.Errorf("item %d = %v", i, r)
				}
			}
		}},
		{"sdk shape: body null, dependsOn empty", fmt.Sprintf(`{"requests":[{"id":"a","method":"GET","url":"/users/%s?%%24select=id,mail","headers":{"accept":"application/json"},"body":null,"dependsOn":[]}]}`, u[3].ID), 200, func(t *testing.T, m map[string]any) {
			rs := m["responses"].([]any)
			r := rs[0].(map[string]any)
			if body, _ := r["body"].(map[string]any); r["status"] != float64(200) || body["id"] != u[3].ID {
				t.Errorf("item = %v", r)
			}
		}},
		{"too many", over, 400, nil},
		{"duplicate ids", `{"requests":[{"id":"1","method":"GET","url":"/users"},{"id":"1","method":"GET","url":"/users"}]}`, 400, nil},
		{"dup and too many", tooMany, 400, nil},
		{"bad json", `{"requests":`, 400, nil},
		{"empty", `{"requests":[]}`, 400, nil},
		{"body without content type", `{"requests":[{"id":"1","method":"POST","url":"/users","body":{}}]}`, 400, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, m := f.do(t, "POST", "/v1.0/$batch", tc.body, "Content-Type", "application/json")
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 400 {
				if code, _ := errCode(m); code != "BadRequest" {
					t.Errorf("code = %s", code)
				}
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
	if w, _ := f.get(t, "/v1.0/$batch"); w.Code != 405 {
		t.Errorf("GET $batch = %d", w.Code)
	}
}

// BenchmarkDeltaInitialRound measures a full initial delta round of 100,000
// users at page size 999 (no latency) and reports users/s and the heap the
// simulator holds for the tenant.
func BenchmarkDeltaInitialRound(b *testing.B) {
	const n = 100_000
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := newFixture(b, n, 999)
	f.users = nil // measure what the simulator keeps, not the generator's output
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	sel := "/v1.0/users/delta?$select=id,userPrincipalName,mail,accountEnabled,userType,displayName,jobTitle,department," +
		"employeeId,employeeHireDate,employeeOrgData,onPremisesExtensionAttributes,businessPhones,manager," + directory.CostCenterExt
	b.ResetTimer()
	users, bytes := 0, 0
	for b.Loop() {
		next := sel
		for range 1000 {
			r := httptest.NewRequest("GET", strings.TrimPrefix(next, base), nil)
			rec := httptest.NewRecorder()
			f.srv.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			bytes += len(body)
			users += strings.Count(string(body), `{"id":`)
			i := strings.Index(string(body), `"@odata.nextLink":"`)
			if i < 0 {
				break
			}
			rest := string(body[i+len(`"@odata.nextLink":"`):])
			next = rest[:strings.IndexByte(rest, '"')]
		}
	}
	b.ReportMetric(float64(users)/b.Elapsed().Seconds(), "users/s")
	b.ReportMetric(float64(bytes)/float64(users), "B/user")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "tenant-MiB")
}

// TestDeltaExpandIgnored: $expand on delta is ignored, not refused
// (microsoftgraph/microsoft-graph-docs#6194).
func TestDeltaExpandIgnored(t *testing.T) {
	f := newFixture(t, 12, 5)
	for _, expand := range []string{"manager", "manager($select=id,displayName)", "nonsense"} {
		plain, _, _ := f.round(t, "/v1.0/users/delta?$select=id,jobTitle,manager")
		got, dl, _ := f.round(t, "/v1.0/users/delta?$select=id,jobTitle,manager&$expand="+expand)
		if fmt.Sprint(got) != fmt.Sprint(plain) {
			t.Errorf("$expand=%s changed the round:\n got %v\nwant %v", expand, got, plain)
		}
		for _, it := range got {
			if _, ok := it["manager"]; ok {
				t.Errorf("$expand=%s expanded manager: %v", expand, it)
			}
		}
		if w, _ := f.get(t, dl+"&$expand="+expand); w.Code != 200 {
			t.Errorf("deltaLink with $expand=%s: %d %s", expand, w.Code, w.Body)
		}
	}
}

// roundPages follows a round and returns the ids of each page's items.
func (f *fixture) roundPages(t *testing.T, start string, between func(page int)) (pages [][]string, items []map[string]any, deltaLink string) {
	t.Helper()
	next := start
	for p := 0; p < 1000; p++ {
		if between != nil && p > 0 {
			between(p)
		}
		w, m := f.get(t, next)
		if w.Code != 200 {
			t.Fatalf("GET %s: %d %s", next, w.Code, w.Body)
		}
		var ids []string
		for _, it := range values(m) {
			ids = append(ids, it["id"].(string))
			items = append(items, it)
		}
		pages = append(pages, ids)
		if dl, ok := m["@odata.deltaLink"].(string); ok {
			return pages, items, dl
		}
		next = m["@odata.nextLink"].(string)
	}
	t.Fatal("round did not end")
	return nil, nil, ""
}

// TestDeltaRepeats checks the DeltaRepeatEvery setting: in initial and
// incremental rounds every n-th user comes again, on the same page or the
// next, with its values as they are when the repeat is sent
// (learn.microsoft.com/graph/delta-query-overview: "A single entity can be
// contained multiple times in the response").
func TestDeltaRepeats(t *testing.T) {
	f := newFixture(t, 23, 5)
	if f.srv.DeltaRepeatEvery() != 0 {
		t.Fatal("repeating is on by default")
	}
	sel := "/v1.0/users/delta?$select=id,jobTitle,manager"
	f.srv.SetDeltaRepeatEvery(3)

	// analyse reports how often each id came, and how many repeats came on
	// the page of the first appearance and how many on a later page.
	analyse := func(pages [][]string) (seen map[string]int, samePage, laterPage int, carried map[string]int) {
		seen, carried = map[string]int{}, map[string]int{}
		first := map[string]int{}
		for p, ids := range pages {
			for _, id := range ids {
				seen[id]++
				if seen[id] == 1 {
					first[id] = p
					continue
				}
				if first[id] == p {
					samePage++
				} else {
					laterPage++
					carried[id] = p
				}
			}
		}
		return seen, samePage, laterPage, carried
	}
	pages, items, _ := f.roundPages(t, sel, nil)
	seen, same, later, carried := analyse(pages)
	if len(seen) != 23 || len(items) != 23+23/3 {
		t.Fatalf("initial round: %d users in %d items, want 23 in %d: %v", len(seen), len(items), 23+23/3, pages)
	}
	if same == 0 || later == 0 {
		t.Errorf("repeats on the same page %d, on a later page %d; want both: %v", same, later, pages)
	}
	for id, n := range seen {
		if n > 2 {
			t.Errorf("%s came %d times", id, n)
		}
	}
	again, _, _ := f.roundPages(t, sel, nil)
	if fmt.Sprint(again) != fmt.Sprint(pages) {
		t.Errorf("not deterministic:\n%v\n%v", pages, again)
	}

	// A user changed between its first appearance and its repeat on the
	// next page comes again with the new value.
	var victim string
	var victimPage int
	for id, p := range carried {
		victim, victimPage = id, p
		break
	}
	_, items, dl := f.roundPages(t, sel, func(p int) {
		if p == victimPage {
			if _, err := f.store.Update(victim, directory.Patch{Props: map[string]any{"jobTitle": "Changed mid-round"}}); err != nil {
				t.Fatal(err)
			}
		}
	})
	var titles []any
	for _, it := range items {
		if it["id"] == victim {
			titles = append(titles, it["jobTitle"])
		}
	}
	if len(titles) != 2 || titles[0] == "Changed mid-round" || titles[1] != "Changed mid-round" {
		t.Errorf("victim's appearances carry jobTitle %v, want old then new", titles)
	}

	// Incremental round: 10 changed users (one was changed mid-round above,
	// so it is in this round too), every third of them twice. Users whose
	// manager did not change come without manager@delta also when repeated.
	for i := range 10 {
		if _, err := f.store.Update(f.users[i+5].ID, directory.Patch{Props: map[string]any{"jobTitle": fmt.Sprint("T", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	pages, items, _ = f.roundPages(t, dl, nil)
	seen, same, later, _ = analyse(pages)
	want := len(seen) + len(seen)/3
	if len(seen) < 10 || len(items) != want || same+later != len(seen)/3 {
		t.Errorf("incremental round: %d users in %d items (%d+%d repeats), want %d items: %v", len(seen), len(items), same, later, want, pages)
	}
	for _, it := range items {
		if _, ok := it["manager@delta"]; ok {
			t.Errorf("manager@delta on a user whose manager did not change: %v", it)
		}
	}

	f.srv.SetDeltaRepeatEvery(0)
	if items, _, _ := f.round(t, sel); len(items) != 23 {
		t.Errorf("after turning repeats off: %d items", len(items))
	}
}
