package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/syncer"
)

// endJobs moves every job of run to its end in the simulated SharePoint
// (fail, if set, ends each in that job-level error instead of processing
// its file) and posts status messages to ImportStatus until each job is
// recorded. It returns the job records.
func (s *stack) endJobs(t *testing.T, run syncer.Run, fail int) []syncer.JobRecord {
	t.Helper()
	var recs []syncer.JobRecord
	for _, id := range run.JobIDs {
		if fail != 0 {
			if err := s.sim.SPO.FailJobWith(id, fail); err != nil {
				t.Fatal(err)
			}
		}
		for range 6 {
			if s.sim.SPO.AdvanceJob(id) != nil {
				break // finished
			}
		}
		for range 5 {
			if _, ok := s.jobRecord(t, id); ok {
				break
			}
			if _, inv := s.pollOnce(t); inv.Status != 200 {
				t.Fatalf("ImportStatus: %d %s", inv.Status, inv.Raw)
			}
		}
		rec, ok := s.jobRecord(t, id)
		if !ok {
			t.Fatalf("job %s never recorded", id)
		}
		recs = append(recs, rec)
	}
	return recs
}

// sentIDs lists the IdName values of every row of a run's files.
func sentIDs(t *testing.T, s *stack, run syncer.Run) []string {
	t.Helper()
	var ids []string
	for _, f := range run.Files {
		for _, r := range fileRecords(t, s, f.URL) {
			ids = append(ids, r["IdName"])
		}
	}
	slices.Sort(ids)
	return ids
}

// TestSendOnlyWhatChangedEndToEnd: with the fingerprint store, a full sync
// sends only users whose mapped values differ from those SharePoint last
// imported; failed imports, users with error lines, users deleted and
// restored, a changed mapping, --force and "force": true send again.
func TestSendOnlyWhatChangedEndToEnd(t *testing.T) {
	s := startStack(t, stackOptions{users: 150, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	s.putMapping(e2eMapping)
	timer := func(payload string) syncer.Run {
		t.Helper()
		if inv := s.invoke("SyncTimer", payload); inv.Status != 200 {
			t.Fatalf("timer: %d %s", inv.Status, inv.Raw)
		}
		run := s.lastRun()
		if run.Status != syncer.StatusSucceeded {
			t.Fatalf("run %s: %s", run.ID, run.Error)
		}
		return run
	}
	cli := func(args ...string) (syncer.Run, string) {
		t.Helper()
		out, err := s.cli(t, args...)
		if err != nil {
			t.Fatalf("handler %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return s.lastRun(), out
	}
	var members []directory.User
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) {
			members = append(members, u)
		}
	}
	change := func(title string, users ...directory.User) []string {
		t.Helper()
		var ids []string
		for _, u := range users {
			if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": title + " " + u.ID[:4]}}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, u.ID)
		}
		slices.Sort(ids)
		return ids
	}

	// 1. The first run sends every member; once its job succeeded, the
	// poller remembers them all.
	run := timer(timerFirst)
	everyone := run.Sent
	if everyone < 100 {
		t.Fatalf("first run sent %d", everyone)
	}
	rec := s.endJobs(t, run, 0)[0]
	if rec.State != "Succeeded" || rec.Fingerprints != fmt.Sprintf("%d user(s) remembered, 0 forgotten", everyone) {
		t.Fatalf("job record: %s %q", rec.State, rec.Fingerprints)
	}
	if names := s.blobNames(t, syncer.FingerprintsPendingPrefix); len(names) != 0 {
		t.Errorf("the file's fingerprints are left after its job ended: %v", names)
	}

	// 2. A second full sync with nothing changed sends no rows and queues no job.
	jobs := len(s.sim.SPO.Jobs())
	run, out := cli("sync", "--full")
	if run.Mode != syncer.ModeFull || run.Sent != 0 || run.Unchanged != everyone || len(run.Files) != 0 || len(run.JobIDs) != 0 || !run.DeltaSaved {
		t.Fatalf("unchanged full sync: mode %s sent %d unchanged %d files %d jobs %v", run.Mode, run.Sent, run.Unchanged, len(run.Files), run.JobIDs)
	}
	if n := len(s.sim.SPO.Jobs()); n != jobs {
		t.Errorf("%d jobs queued by an unchanged full sync", n-jobs)
	}
	if !strings.Contains(out, fmt.Sprintf("%d unchanged", everyone)) {
		t.Errorf("summary does not count the unchanged users: %s", out)
	}
	// A dry run says the same.
	out, err := s.cli(t, "sync", "--full", "--dry-run")
	var plan syncer.Plan
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil || plan.Sent != 0 || plan.Unchanged != everyone {
		t.Errorf("dry run: %v toSend %d unchanged %d\n%s", err, plan.Sent, plan.Unchanged, out)
	}

	// 3. Five users changed: a full sync sends those five.
	five := change("Five", members[0:5]...)
	run, _ = cli("sync", "--full")
	if got := sentIDs(t, s, run); !slices.Equal(got, five) || run.Unchanged != everyone-5 {
		t.Fatalf("after 5 changes: sent %v unchanged %d, want %v", got, run.Unchanged, five)
	}
	s.endJobs(t, run, 0)

	// 4. A job that fails: its users are not remembered, and the next run
	// (full, as the poller decided) sends them again, and only them.
	three := change("Three", members[5:8]...)
	run = timer(timerNormal)
	if got := sentIDs(t, s, run); run.Mode != syncer.ModeDelta || !slices.Equal(got, three) {
		t.Fatalf("delta run: mode %s sent %v, want %v", run.Mode, got, three)
	}
	rec = s.endJobs(t, run, 23)[0] // InvalidDataFile: not queued again
	if rec.State != "Error" || rec.Fingerprints != "0 user(s) remembered, 3 forgotten" {
		t.Fatalf("failed job record: %s %s %q", rec.State, rec.ErrorName, rec.Fingerprints)
	}
	run = timer(timerNormal)
	if got := sentIDs(t, s, run); run.Mode != syncer.ModeFull || !slices.Equal(got, three) || run.Unchanged != everyone-3 {
		t.Fatalf("run after the failed job: mode %s (%s) sent %v unchanged %d, want %v", run.Mode, run.Reason, got, run.Unchanged, three)
	}
	s.endJobs(t, run, 0)

	// 5. Users with an error line are not remembered: two of four users
	// changed are gone from the directory when SharePoint processes the
	// file, then restored; a full sync sends those two.
	four := members[8:12]
	change("Four", four...)
	run = timer(timerNormal)
	if len(sentIDs(t, s, run)) != 4 {
		t.Fatalf("delta run sent %v", sentIDs(t, s, run))
	}
	for _, u := range four[2:] {
		if err := s.sim.Directory.Delete(u.ID, false); err != nil {
			t.Fatal(err)
		}
	}
	rec = s.endJobs(t, run, 0)[0]
	if rec.ErrorName != "ImportCompleteWithError" || rec.Fingerprints != "2 user(s) remembered, 2 forgotten" {
		t.Fatalf("job record: %s %q %+v", rec.ErrorName, rec.Fingerprints, rec.Results)
	}
	for _, u := range four[2:] {
		if _, err := s.sim.Directory.Restore(u.ID); err != nil {
			t.Fatal(err)
		}
	}
	run, _ = cli("sync", "--full")
	want := []string{four[2].ID, four[3].ID}
	slices.Sort(want)
	if got := sentIDs(t, s, run); !slices.Equal(got, want) {
		t.Fatalf("after user errors: sent %v, want %v", got, want)
	}
	s.endJobs(t, run, 0)

	// 6. A user deleted (a delta round says so) is forgotten: restored
	// with the same values, it is sent again.
	gone := members[12]
	if err := s.sim.Directory.Delete(gone.ID, false); err != nil {
		t.Fatal(err)
	}
	if run = timer(timerNormal); run.Skipped["deleted"] != 1 || len(run.JobIDs) != 0 {
		t.Fatalf("delta run with a deleted user: skipped %v jobs %v", run.Skipped, run.JobIDs)
	}
	if _, err := s.sim.Directory.Restore(gone.ID); err != nil {
		t.Fatal(err)
	}
	run = timer(timerNormal)
	if got := sentIDs(t, s, run); !slices.Equal(got, []string{gone.ID}) {
		t.Fatalf("restored user: sent %v, want %s", got, gone.ID)
	}
	s.endJobs(t, run, 0)

	// 7. --full --force sends everyone, and remembers them again.
	run, _ = cli("sync", "--full", "--force")
	if run.Sent != everyone || run.Unchanged != 0 || !strings.Contains(run.Fingerprints, "forced") {
		t.Fatalf("--force: sent %d unchanged %d (%q)", run.Sent, run.Unchanged, run.Fingerprints)
	}
	s.endJobs(t, run, 0)
	if run, _ = cli("sync", "--full"); run.Sent != 0 {
		t.Fatalf("after --force: sent %d", run.Sent)
	}

	// 8. "force": true over HTTP, taken by the SyncRun function.
	_, url := s.inProcessAPI(t, 60*time.Second)
	s.serveRunQueue(t, url)
	resp, err := http.Post(url+"/api/sync", "application/json", strings.NewReader(`{"mode":"full","force":true}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var hrun syncer.Run
	if resp.StatusCode != 202 || json.Unmarshal(raw, &hrun) != nil || hrun.Trigger != "http" || hrun.Sent != everyone || hrun.Unchanged != 0 {
		t.Fatalf("POST /api/sync force: %d %s", resp.StatusCode, raw)
	}
	s.endJobs(t, hrun, 0)

	// 9. A mapping that only adds a property sends everyone.
	s.putMapping(strings.Replace(e2eMapping, `"HireDate": "employeeHireDate"`, `"HireDate": "employeeHireDate", "EmployeeId": "employeeId"`, 1))
	run = timer(timerNormal)
	if run.Mode != syncer.ModeFull || run.Sent != everyone || run.Unchanged != 0 {
		t.Fatalf("after a mapping change: mode %s sent %d unchanged %d", run.Mode, run.Sent, run.Unchanged)
	}
	s.endJobs(t, run, 0)
	if run, _ = cli("sync", "--full"); run.Sent != 0 || run.Unchanged != everyone {
		t.Fatalf("after the new mapping's import: sent %d unchanged %d", run.Sent, run.Unchanged)
	}
	if n := checkProfiles(t, s); n != everyone {
		t.Errorf("%d profiles checked, want %d", n, everyone)
	}
}

// TestSendOnlyWhatChangedWithRepeatedUsers: Graph repeats users in a
// users/delta round (GRAPH_PARALLELISM=1 reads a full sync as one); the
// skip is decided on each user's newest sighting, so a repeated unchanged
// user is sent by no row, and a changed one by exactly one.
func TestSendOnlyWhatChangedWithRepeatedUsers(t *testing.T) {
	s := startStack(t, stackOptions{users: 120, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s", "GRAPH_PARALLELISM=1"}})
	s.putMapping(e2eMapping)
	s.sim.Graph.SetDeltaRepeatEvery(3)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("first run: %d %s", inv.Status, inv.Raw)
	}
	first := s.lastRun()
	if first.Repeated == 0 {
		t.Fatal("the simulator repeated nobody; the test proves nothing")
	}
	s.endJobs(t, first, 0)
	out, err := s.cli(t, "sync", "--full")
	run := s.lastRun()
	if err != nil || run.Sent != 0 || run.Unchanged != first.Sent || run.Repeated == 0 || len(run.JobIDs) != 0 {
		t.Fatalf("unchanged full sync with repeats: %v sent %d unchanged %d (want %d) repeated %d jobs %v\n%s",
			err, run.Sent, run.Unchanged, first.Sent, run.Repeated, run.JobIDs, out)
	}
	var two []string
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) && len(two) < 2 {
			if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": "Repeated " + u.ID[:4]}}); err != nil {
				t.Fatal(err)
			}
			two = append(two, u.ID)
		}
	}
	slices.Sort(two)
	if _, err := s.cli(t, "sync", "--full"); err != nil {
		t.Fatal(err)
	}
	run = s.lastRun()
	if got := sentIDs(t, s, run); !slices.Equal(got, two) || run.Unchanged != first.Sent-2 {
		t.Fatalf("two changes with repeats: sent %v unchanged %d, want %v", got, run.Unchanged, two)
	}
	s.endJobs(t, run, 0)
	checkProfiles(t, s)
}
