package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/crashpoint"
)

// graphCalls counts the simulator's Graph requests whose path (under
// /v1.0, without the SDK's "()" after delta) is path.
func (s *stack) graphCalls(path string) (n int, queries []url.Values) {
	for _, r := range s.sim.Requests.All() {
		p, raw, _ := strings.Cut(r.Path, "?")
		if r.Origin == "graph" && strings.TrimSuffix(p, "()") == "/v1.0"+path {
			q, _ := url.ParseQuery(raw)
			queries = append(queries, q)
		}
	}
	return len(queries), queries
}

// TestCrashBetweenRangesSavesNoBaseline: a first full sync killed after
// some ranges are read leaves no delta link (the baseline is saved only at
// the commit point), so the next run is a full sync again, and the stack
// converges.
func TestCrashBetweenRangesSavesNoBaseline(t *testing.T) {
	s := startStack(t, stackOptions{users: 3000, noHandler: true, extra: []string{"GRAPH_PARALLELISM=2", "STATUS_POLL_BACKOFF=1s,2s"}})
	bin := crashHandlerBinary(t)
	tmp := s.getenv("TMPDIR")
	s.putMapping(e2eMapping)
	p := s.launch(t, bin, crashpoint.Setting+"="+crashpoint.GraphPage+"#3")
	if _, err := s.tryInvoke("SyncTimer", timerFirst); err == nil {
		t.Fatal("the first run did not die at the third page")
	}
	if !p.killed(10 * time.Second) {
		t.Fatal("the handler is still alive")
	}
	if n, qs := s.graphCalls("/users"); n < 3 {
		t.Fatalf("%d /users requests before the crash (%v): the full sync did not read in ranges", n, qs)
	}
	if n, qs := s.graphCalls("/users/delta"); n != 1 || qs[0].Get("$deltatoken") != "latest" {
		t.Fatalf("users/delta before the crash: %v, want the baseline alone", qs)
	}
	if st := s.state(); st.DeltaLink != "" {
		t.Fatalf("a run that died between ranges saved the delta link %q", st.DeltaLink)
	}

	s.launch(t, bin)
	s.breakLock(t)
	s.sim.Requests.Reset()
	if status, err := s.tryInvoke("SyncTimer", timerNormal); err != nil || status != 200 {
		t.Fatalf("the run after the crash: %d %v", status, err)
	}
	run := s.lastRun()
	if run.Mode != "full" || !run.DeltaSaved {
		t.Errorf("the run after the crash: mode %q (reason %q), link saved %v; want a full sync that saves it", run.Mode, run.Reason, run.DeltaSaved)
	}
	if n, _ := s.graphCalls("/users/$count"); n == 0 {
		t.Error("the full sync after the crash did not balance its ranges")
	}
	s.runUntilQuiet(t, nil)
	assertConverged(t, s, tmp)
}

// TestThreeChangesAmongManyAfterARangedFullSync: after a full sync read in
// ranges, three changed users give one users/delta request and one file
// of three users.
func TestThreeChangesAmongManyAfterARangedFullSync(t *testing.T) {
	users := 100000
	if testing.Short() {
		users = 20000
	}
	s := startStack(t, stackOptions{users: users, extra: []string{"GRAPH_PARALLELISM=8"}})
	s.putMapping(e2eMapping)
	start := time.Now()
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("full sync: %d %s", inv.Status, inv.Raw)
	}
	full := s.lastRun()
	t.Logf("full sync of %d users: %s, %d sent, %d files", users, time.Since(start).Round(time.Millisecond), full.Sent, len(full.Files))
	if full.Mode != "full" || !full.DeltaSaved || full.Sent == 0 {
		t.Fatalf("full sync: %+v", full)
	}
	ranges := map[string]bool{}
	_, qs := s.graphCalls("/users")
	for _, q := range qs {
		if strings.Contains(q.Get("$filter"), "userPrincipalName") && q.Get("$expand") != "" {
			ranges[q.Get("$filter")] = true
		}
	}
	if len(ranges) < 8 {
		t.Errorf("the full sync read %d ranges, want at least one per reader (8)", len(ranges))
	}
	// Every enabled member exactly once (CloudId: IdName is the object id).
	rows := checkOneRowPerUser(t, s, full)
	members := 0
	for _, u := range s.sim.Directory.Users() {
		if u.Deleted || isGuest(u) || isDisabled(u) {
			if _, sent := rows[u.ID]; sent {
				t.Errorf("user %s (deleted, guest or disabled) was sent", u.ID)
			}
			continue
		}
		members++
		if _, sent := rows[u.ID]; !sent {
			t.Errorf("enabled member %s was not sent", u.ID)
		}
	}
	if members != len(rows) {
		t.Errorf("%d rows for %d enabled members", len(rows), members)
	}

	changeUsers(t, s, 3, "three among many")
	s.sim.Requests.Reset()
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("delta run: %d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if run.Mode != "delta" || run.Sent != 3 || len(run.Files) != 1 || run.Files[0].Records != 3 {
		t.Errorf("delta run: mode %q, sent %d, files %+v; want one file of 3 users", run.Mode, run.Sent, run.Files)
	}
	if n, _ := s.graphCalls("/users/delta"); n != 1 {
		t.Errorf("the delta run sent %d users/delta requests, want one", n)
	}
	if n, _ := s.graphCalls("/users"); n != 0 {
		t.Errorf("the delta run read /users %d times", n)
	}
}
