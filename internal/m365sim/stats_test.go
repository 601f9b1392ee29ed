package m365sim

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/faults"
)

// TestStatsAndPageLatency: GET /_sim/stats counts Graph requests, pages and
// user items; the page latency goes before every /users and /users/delta
// page ($deltatoken=latest included) and is kept out of the busy time, and
// neither /users/$count, single users, $batch items nor managed-identity
// tokens wait it; POST /_sim/stats/reset starts again from zero.
func TestStatsAndPageLatency(t *testing.T) {
	const latency = 40 * time.Millisecond
	s, err := Start(Options{Users: 250, Seed: 1, FileDir: t.TempDir(), IdentityHeader: "hdr", PageLatency: latency})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok := s.Auth.TokenFor(s.GraphURL)
	g := func(path string, hdr ...string) (int, map[string]any) {
		t.Helper()
		c := call{method: "GET", url: path, token: tok, hdr: map[string]string{}}
		if !strings.HasPrefix(path, "http") {
			c.url = s.GraphURL + path
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			c.hdr[hdr[i]] = hdr[i+1]
		}
		st, _, m := do(t, c)
		return st, m
	}
	stats := func() Stats {
		t.Helper()
		st, _, m := do(t, call{method: "GET", url: s.GraphURL + "/_sim/stats"})
		if st != 200 {
			t.Fatalf("GET /_sim/stats: %d %v", st, m)
		}
		num := func(k string) float64 { v, _ := m[k].(float64); return v }
		return Stats{
			GraphRequests: int64(num("graphRequests")), GraphErrors: int64(num("graphErrors")), BatchItems: int64(num("batchItems")),
			Pages: int64(num("pages")), UserItems: int64(num("userItems")), BusySeconds: num("busySeconds"), ActiveSeconds: num("activeSeconds"),
			PageLatencySeconds: num("pageLatencySeconds"), CPUSeconds: num("cpuSeconds"), ElapsedSeconds: num("elapsedSeconds"),
			UsersPerBusySecond: num("usersPerBusySecond"), UsersPerCPUSecond: num("usersPerCpuSecond"),
		}
	}
	if st, _, _ := do(t, call{method: "POST", url: s.SPOURL + "/_sim/stats/reset"}); st != 204 {
		t.Fatalf("POST /_sim/stats/reset on the SharePoint origin: %d", st)
	}
	if st, _, _ := do(t, call{method: "PUT", url: s.GraphURL + "/_sim/stats"}); st != 405 {
		t.Errorf("PUT /_sim/stats: %d, want 405", st)
	}

	// Three pages of 100, 100 and 50 users ($expand caps pages at 100).
	began := time.Now()
	pages, users := 0, 0
	for next := "/v1.0/users?$select=id,mail&$expand=manager($select=id)&$top=999"; next != ""; pages++ {
		st, m := g(next)
		if st != 200 {
			t.Fatalf("%s: %d %v", next, st, m)
		}
		users += len(m["value"].([]any))
		next, _ = m["@odata.nextLink"].(string)
	}
	if pages != 3 || users != 250 {
		t.Fatalf("%d pages, %d users", pages, users)
	}
	if d := time.Since(began); d < 3*latency {
		t.Errorf("three pages took %v, want at least 3 × %v", d, latency)
	}
	before := stats()
	if before.PageLatencySeconds < 3*latency.Seconds() || before.Pages != 3 || before.UserItems != 250 || before.GraphRequests != 3 {
		t.Errorf("after three pages: %+v", before)
	}
	if before.BusySeconds <= 0 || before.BusySeconds >= before.PageLatencySeconds {
		t.Errorf("busy %.4fs with %.4fs of page latency: the latency must not count as busy", before.BusySeconds, before.PageLatencySeconds)
	}
	if before.ActiveSeconds <= 0 || before.ActiveSeconds > before.BusySeconds+1e-3 || before.ActiveSeconds > before.ElapsedSeconds {
		t.Errorf("active %.4fs, busy %.4fs, elapsed %.4fs: one request at a time is active as long as busy", before.ActiveSeconds, before.BusySeconds, before.ElapsedSeconds)
	}
	if before.CPUSeconds <= 0 || before.UsersPerBusySecond <= 0 || before.UsersPerCPUSecond <= 0 {
		t.Errorf("no CPU time or rates: %+v", before)
	}

	// No latency: $count, a single user, the managed-identity token, and
	// $batch items even when they are pages (a fault delay on the item is
	// not busy time either).
	if st, _ := g("/v1.0/users/$count?$filter="+url.QueryEscape("userPrincipalName ge 'm'"), "ConsistencyLevel", "eventual"); st != 200 {
		t.Fatalf("$count: %d", st)
	}
	id := s.Directory.List("", 1)[0].ID
	if st, _ := g("/v1.0/users/" + id + "?$select=id"); st != 200 {
		t.Fatalf("single user: %d", st)
	}
	if st, _, m := do(t, call{method: "GET", url: s.IdentityEndpoint + "?resource=https://graph.microsoft.com&api-version=2019-08-01", hdr: map[string]string{"X-IDENTITY-HEADER": "hdr"}}); st != 200 {
		t.Fatalf("managed identity token: %d %v", st, m)
	}
	if err := s.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "^/v1.0/users$", Delay: faults.Duration(300 * time.Millisecond), Count: 1}); err != nil {
		t.Fatal(err)
	}
	st, _, m := do(t, call{method: "POST", url: s.GraphURL + "/v1.0/$batch", token: tok, hdr: map[string]string{"Content-Type": "application/json"},
		body: `{"requests":[{"id":"1","method":"GET","url":"/users?$select=id&$top=5"},{"id":"2","method":"GET","url":"/users/delta?$select=id&$deltatoken=latest"}]}`})
	if st != 200 {
		t.Fatalf("$batch: %d %v", st, m)
	}
	after := stats()
	if d := after.PageLatencySeconds - before.PageLatencySeconds; d > 0 {
		t.Errorf("$count, a single user, a token or $batch items waited %.3fs of page latency", d)
	}
	if d := after.BusySeconds - before.BusySeconds; d >= 0.3 {
		t.Errorf("the fault delay on a $batch item counted as busy time: +%.3fs", d)
	}
	if d := after.ActiveSeconds - before.ActiveSeconds; d >= 0.3 {
		t.Errorf("the fault delay on a $batch item counted as active time: +%.3fs", d)
	}
	if after.GraphRequests != 6 || after.BatchItems != 2 || after.UserItems != 250+1+5 || after.Pages != 5 {
		t.Errorf("after $count, a user and a $batch of two pages: %+v", after)
	}

	// The delta baseline ($deltatoken=latest) is a page and waits.
	if st, _ := g("/v1.0/users/delta?$select=id&$deltatoken=latest"); st != 200 {
		t.Fatalf("delta latest: %d", st)
	}
	if latest := stats(); latest.PageLatencySeconds-after.PageLatencySeconds < latency.Seconds() || latest.Pages != after.Pages+1 {
		t.Errorf("$deltatoken=latest: %+v", latest)
	}
	if st, _ := g("/v1.0/users?$top=0"); st != 400 {
		t.Fatalf("$top=0: %d", st)
	}
	if e := stats(); e.GraphErrors != 1 {
		t.Errorf("errors = %d, want 1", e.GraphErrors)
	}

	if st, _, _ := do(t, call{method: "POST", url: s.GraphURL + "/_sim/stats/reset"}); st != 204 {
		t.Fatalf("reset: %d", st)
	}
	if z := stats(); z.GraphRequests != 0 || z.UserItems != 0 || z.Pages != 0 || z.BusySeconds != 0 || z.ActiveSeconds > 0.1 || z.PageLatencySeconds != 0 || z.ElapsedSeconds > 5 || z.CPUSeconds > 1 {
		t.Errorf("after reset: %+v", z)
	}
}
