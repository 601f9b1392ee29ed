package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

type apiResponse struct {
	Status  int
	Header  http.Header
	Body    []byte
	Problem Problem
}

// api sends a request to the running handler exactly as the Functions host
// forwards it (enableForwardingHttpRequest): the original path under /api/,
// the caller's headers and the function key in the query, plus the host's
// own X-Azure-Functions-* headers.
func (s *stack) api(method, path, body string, header ...string) apiResponse {
	s.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	key := cmp.Or(s.functionKey, "functionkey123")
	req, err := http.NewRequest(method, s.url+path+sep+"code="+key, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("x-functions-key", key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1037.0")
	req.Header.Set("X-Azure-Functions-InvocationId", "0f8fad5b-d9cb-469f-a165-70867728950e")
	req.Header.Set("User-Agent", "curl/8.5.0 Azure-Functions-Host/4.1037.0")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := apiResponse{Status: resp.StatusCode, Header: resp.Header}
	out.Body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 && !strings.HasPrefix(path, "/api/health") { // health answers its own document
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			s.t.Errorf("%s %s: error answered with Content-Type %q, want application/problem+json", method, path, ct)
		}
		if err := json.Unmarshal(out.Body, &out.Problem); err != nil || out.Problem.Type == "" || out.Problem.Status != resp.StatusCode {
			s.t.Errorf("%s %s: not a problem document: %s", method, path, out.Body)
		}
	}
	for _, secret := range []string{"AccountKey", "Bearer ", "goroutine ", ".go:"} {
		if strings.Contains(string(out.Body), secret) {
			s.t.Errorf("%s %s: the answer leaks %q: %s", method, path, secret, out.Body)
		}
	}
	return out
}

func (r apiResponse) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

func TestAPIMapping(t *testing.T) {
	s := startStack(t, stackOptions{users: 10})
	s.serveRunQueue(t, s.url)
	if r := s.api("GET", "/api/mapping", ""); r.Status != 404 || r.Problem.Type != problemType("no-mapping") {
		t.Errorf("GET before any mapping: %d %s", r.Status, r.Body)
	}
	if r := s.api("POST", "/api/sync", ""); r.Status != 409 || r.Problem.Type != problemType("invalid-stored-mapping") {
		t.Errorf("sync before any mapping: %d %s", r.Status, r.Body)
	}
	r := s.api("PUT", "/api/mapping", e2eMapping)
	if r.Status != 200 || r.Header.Get("ETag") == "" {
		t.Fatalf("first PUT: %d %s", r.Status, r.Body)
	}
	get := s.api("GET", "/api/mapping", "")
	if get.Status != 200 || get.Header.Get("ETag") != r.Header.Get("ETag") || string(get.Body) != e2eMapping {
		t.Fatalf("GET: %d etag %q body %s", get.Status, get.Header.Get("ETag"), get.Body)
	}
	etag := get.Header.Get("ETag")
	changed := strings.Replace(e2eMapping, `"HomePhone": "mobilePhone",`, ``, 1)

	// Two administrators: the first wins, the second gets 412.
	if r := s.api("PUT", "/api/mapping", changed, "If-Match", etag); r.Status != 200 {
		t.Fatalf("PUT with the right ETag: %d %s", r.Status, r.Body)
	}
	if r := s.api("PUT", "/api/mapping", e2eMapping, "If-Match", etag); r.Status != 412 || r.Problem.Type != problemType("mapping-changed") {
		t.Errorf("PUT with a stale ETag: %d %s", r.Status, r.Body)
	}
	if r := s.api("PUT", "/api/mapping", e2eMapping); r.Status != 428 {
		t.Errorf("PUT over an existing mapping without If-Match: %d %s", r.Status, r.Body)
	}
	if r := s.api("PUT", "/api/mapping", e2eMapping, "If-None-Match", "*"); r.Status != 412 {
		t.Errorf("create-only PUT over an existing mapping: %d %s", r.Status, r.Body)
	}

	// A rejected document changes nothing and lists every problem.
	before := s.api("GET", "/api/mapping", "")
	bad := s.api("PUT", "/api/mapping", `{"idType":"Upn","properties":{"HomePhone":"mobilPhone","Nick":"aboutMe"},"extra":true}`, "If-Match", before.Header.Get("ETag"))
	if bad.Status != 400 || bad.Problem.Type != problemType("invalid-mapping") || len(bad.Problem.Errors) < 4 {
		t.Errorf("invalid mapping: %d %+v", bad.Status, bad.Problem)
	}
	for _, culprit := range []string{"idType", "mobilPhone", "aboutMe", "extra"} {
		if !strings.Contains(strings.Join(bad.Problem.Errors, "\n"), culprit) {
			t.Errorf("the problems do not name %q: %v", culprit, bad.Problem.Errors)
		}
	}
	if r := s.api("PUT", "/api/mapping", "not json", "If-Match", before.Header.Get("ETag")); r.Status != 400 {
		t.Errorf("not JSON: %d", r.Status)
	}
	if after := s.api("GET", "/api/mapping", ""); string(after.Body) != string(before.Body) || after.Header.Get("ETag") != before.Header.Get("ETag") {
		t.Error("a rejected mapping changed the stored one")
	}
	huge := `{"idType":"CloudId","properties":{"A":"mail"},"users":{"includeGuests":false},"x":"` + strings.Repeat("a", maxBody) + `"}`
	if r := s.api("PUT", "/api/mapping", huge, "If-Match", before.Header.Get("ETag")); r.Status != 413 {
		t.Errorf("oversized body: %d", r.Status)
	}
	if r := s.api("GET", "/api/nothing-here", ""); r.Status != 404 {
		t.Errorf("unknown route: %d", r.Status)
	}
}

// snapshot is everything a dry run must leave alone.
type snapshot struct {
	blobs    []string // name@etag
	jobs     int
	files    string
	profiles int
	requests int
}

func (s *stack) snapshot(t *testing.T) snapshot {
	t.Helper()
	var sn snapshot
	list, err := s.blobs.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range list {
		sn.blobs = append(sn.blobs, b.Name+"@"+b.ETag)
	}
	sort.Strings(sn.blobs)
	sn.jobs = len(s.sim.SPO.Jobs())
	sn.files = string(s.simGetSPO(t, "/_sim/files?folder="+"/sites/profilesync/Shared%20Documents/Profile%20Imports"))
	for _, u := range s.sim.Directory.Users() {
		if p, ok := s.sim.SPO.Profile(u.ID); ok && len(p) > 0 {
			sn.profiles++
		}
	}
	return sn
}

func (s *stack) simGetSPO(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get(s.sim.SPOURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// TestAPISync drives POST /api/sync of the handler binary with the
// Functions host's part played for the SyncRun function (serveRunQueue): each
// run is handed to the queue, run by a SyncRun invocation, and answered by
// the HTTP invocation once it ended.
func TestAPISync(t *testing.T) {
	s := startStack(t, stackOptions{users: 60})
	s.serveRunQueue(t, s.url)
	s.putMapping(e2eMapping)
	if r := s.api("POST", "/api/sync", `{"mode":"full"}`); r.Status != 202 {
		t.Fatalf("full sync: %d %s", r.Status, r.Body)
	}
	base := s.state()

	// Validation: every problem of the request is listed.
	for body, want := range map[string]string{
		`{"mode":"sideways","whatIf":true,"dryRun":true}`: "mode",
		`{"users":["a"],"filter":"x eq 'y'"}`:             "choose one",
		`{"colour":"blue"}`:                               "unknown field",
		`{"mode":`:                                        "JSON",
		`{"mapping":{"idType":"Nope","properties":{}}}`:   "mapping:",
	} {
		r := s.api("POST", "/api/sync", body)
		if r.Status != 400 || !strings.Contains(string(r.Body), want) {
			t.Errorf("POST %s: %d %s (want 400 mentioning %q)", body, r.Status, r.Body, want)
		}
	}

	// A dry run changes nothing, in SharePoint or in our storage.
	users := s.sim.Directory.Users()
	var member directory.User
	for _, u := range users[directory.GenFixedCount:] {
		if !isGuest(u) && !isDisabled(u) {
			member = u
			break
		}
	}
	s.sim.Directory.Update(member.ID, directory.Patch{Props: map[string]any{"jobTitle": nil, "mobilePhone": "+1 999"}})
	before := s.snapshot(t)
	r := s.api("POST", "/api/sync", `{"dryRun":true,"limit":5}`)
	if r.Status != 200 {
		t.Fatalf("dry run: %d %s", r.Status, r.Body)
	}
	var plan syncer.Plan
	r.decode(t, &plan)
	if plan.Mode != syncer.ModeDelta || plan.Sent != 1 || len(plan.Users) != 1 || plan.Users[0].ID != member.ID ||
		plan.Users[0].Values["HomePhone"] != "+1 999" || plan.Cleared["Building"] != 1 {
		t.Errorf("plan %+v", plan)
	}
	if after := s.snapshot(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a dry run changed something:\nbefore %+v\nafter  %+v", before, after)
	}
	full := s.api("POST", "/api/sync", `{"dryRun":true,"mode":"full","limit":5}`)
	var fullPlan syncer.Plan
	full.decode(t, &fullPlan)
	if fullPlan.Mode != syncer.ModeFull || len(fullPlan.Users) != 5 || !fullPlan.Truncated || fullPlan.Skipped["guest"] == 0 || len(fullPlan.SkippedUsers) == 0 {
		t.Errorf("full plan: mode %s users %d truncated %v skipped %v", fullPlan.Mode, len(fullPlan.Users), fullPlan.Truncated, fullPlan.Skipped)
	}

	// Chosen users: unknown ones reported, the delta link untouched.
	upn := users[20].Props["userPrincipalName"].(string)
	r = s.api("POST", "/api/sync", fmt.Sprintf(`{"users":[%q,%q,"ghost@contoso.com"]}`, upn, member.ID))
	if r.Status != 202 {
		t.Fatalf("users run: %d %s", r.Status, r.Body)
	}
	var run syncer.Run
	r.decode(t, &run)
	if run.Mode != syncer.ModeUsers || run.Read != 2 || len(run.Unknown) != 1 || run.Unknown[0] != "ghost@contoso.com" || run.DeltaSaved {
		t.Errorf("users run %+v", run)
	}
	if st := s.state(); !reflect.DeepEqual(st, base) {
		t.Errorf("a users run moved the state: %+v -> %+v", base, st)
	}
	if p, _ := s.sim.SPO.Profile(member.ID); p["HomePhone"] != "+1 999" {
		t.Errorf("chosen user not synced: %v", p)
	}
	if r.Header.Get("Location") != "/api/runs/"+run.ID {
		t.Errorf("Location %q", r.Header.Get("Location"))
	}
	if got := s.api("GET", "/api/runs/"+run.ID, ""); got.Status != 200 || !strings.Contains(string(got.Body), "ghost@contoso.com") {
		t.Errorf("GET run: %d %s", got.Status, got.Body)
	}

	// A Graph filter (PnP's Example 2).
	title := fmt.Sprint(users[30].Props["jobTitle"])
	r = s.api("POST", "/api/sync", fmt.Sprintf(`{"filter":"jobTitle eq '%s'","whatIf":true}`, title))
	if r.Status != 202 {
		t.Fatalf("filter run: %d %s", r.Status, r.Body)
	}
	run = syncer.Run{}
	r.decode(t, &run)
	want := 0
	for _, u := range users {
		if fmt.Sprint(u.Props["jobTitle"]) == title && !u.Deleted {
			want++
		}
	}
	if run.Mode != syncer.ModeQuery || run.Read != want || len(run.JobIDs) != 0 || len(run.Files) != 1 || run.Files[0].URL == "" {
		t.Errorf("filter what-if run (want %d users read): %+v", want, run)
	}
	if r := s.api("POST", "/api/sync", `{"filter":"jobTitle eq 'unterminated"}`); r.Status != 400 || r.Problem.Type != problemType("graph-rejected") {
		t.Errorf("bad filter: %d %s", r.Status, r.Body)
	}

	// One sync at a time: while the lease is held, 409.
	lease, err := s.blobs.Lock(context.Background(), lockBlob)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.api("POST", "/api/sync", `{}`); r.Status != 409 || r.Problem.Type != problemType("sync-running") {
		t.Errorf("concurrent sync: %d %s", r.Status, r.Body)
	}
	lease.Release(context.Background())
	if r := s.api("POST", "/api/sync", `{}`); r.Status != 202 {
		t.Errorf("after the lease was released: %d %s", r.Status, r.Body)
	}

	// Runs and jobs.
	var runs struct{ Runs []syncer.Run }
	s.api("GET", "/api/runs?top=3", "").decode(t, &runs)
	if len(runs.Runs) != 3 || runs.Runs[0].Started.Before(runs.Runs[1].Started) {
		t.Errorf("runs not newest first: %+v", runs.Runs)
	}
	if r := s.api("GET", "/api/runs/nope", ""); r.Status != 404 {
		t.Errorf("unknown run: %d", r.Status)
	}
	if r := s.api("GET", "/api/runs?top=0", ""); r.Status != 400 {
		t.Errorf("top=0: %d", r.Status)
	}
	var jobs struct{ Jobs []jobJSON }
	s.api("GET", "/api/jobs", "").decode(t, &jobs)
	if len(jobs.Jobs) == 0 {
		t.Fatal("no jobs listed")
	}
	if r := s.api("GET", "/api/jobs/"+jobs.Jobs[0].JobID, ""); r.Status != 200 || !strings.Contains(string(r.Body), jobs.Jobs[0].JobID) {
		t.Errorf("GET job: %d %s", r.Status, r.Body)
	}
	// An escaped slash keeps "..%2Fstate" one path segment: the id reaches
	// the handler as "../state" and must be refused as an id, not used to
	// name a blob (jobs/../state.json).
	for _, trick := range []string{"..%2Fstate", "..%2F..%2Fmapping", "%2E%2E"} {
		r := s.api("GET", "/api/jobs/"+trick, "")
		if r.Status != 400 || !strings.Contains(string(r.Body), "invalid-request") {
			t.Errorf("path trick %s: %d %s, want 400 invalid-request", trick, r.Status, r.Body)
		}
	}
}

func TestAPIHealth(t *testing.T) {
	s := startStack(t, stackOptions{users: 5})
	r := s.api("GET", "/api/health", "")
	var h struct {
		Status string
		Checks map[string]struct{ Status, Detail string }
	}
	r.decode(t, &h)
	if r.Status != 200 || h.Status != "ok" || len(h.Checks) != 3 {
		t.Fatalf("health: %d %s", r.Status, r.Body)
	}
	s.sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "^/v1.0/users$", Status: 500})
	r = s.api("GET", "/api/health", "")
	h.Checks = nil
	json.Unmarshal(r.Body, &h)
	if r.Status != 503 || h.Checks["graph"].Status != "failed" || h.Checks["storage"].Status != "ok" || h.Checks["sharepoint"].Status != "ok" {
		t.Errorf("health with Graph failing: %d %s", r.Status, r.Body)
	}
}
