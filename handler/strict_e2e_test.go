package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/syncer"
)

// checkOneRowPerUser reads a run's import files back from the simulator
// and fails on a user present twice; it returns the rows by IdName.
func checkOneRowPerUser(t *testing.T, s *stack, run syncer.Run) map[string]map[string]string {
	t.Helper()
	rows := map[string]map[string]string{}
	for _, f := range run.Files {
		for _, r := range fileRecords(t, s, f.URL) {
			if _, dup := rows[r["IdName"]]; dup {
				t.Errorf("user %s has two rows in the import files of run %s", r["IdName"], run.ID)
			}
			rows[r["IdName"]] = r
		}
	}
	if len(rows) != run.Sent {
		t.Errorf("%d users in the files, the run says it sent %d", len(rows), run.Sent)
	}
	return rows
}

// checkJobsSucceeded checks every job of a run ended Succeeded in the
// simulator, and that each was queued with its file's URL as SharePoint
// names it (spaces, not %20).
func checkJobsSucceeded(t *testing.T, s *stack, run syncer.Run) {
	t.Helper()
	if len(run.Files) == 0 {
		t.Fatalf("run %s wrote no file", run.ID)
	}
	for _, f := range run.Files {
		job, ok := s.sim.SPO.Job(f.JobID)
		if !ok {
			t.Fatalf("job %s of file %s unknown to the simulator", f.JobID, f.Name)
		}
		if job.State != 4 || job.Error != 0 {
			t.Errorf("job %s ended state %d error %d (%s), want Succeeded", f.JobID, job.State, job.Error, job.ErrorMessage)
		}
		if job.SourceURI != f.URL || !strings.Contains(job.SourceURI, "/Shared Documents/Profile Imports/") || strings.Contains(job.SourceURI, "%") {
			t.Errorf("queued sourceUri %q, uploaded file %q: want the file's URL with its spaces", job.SourceURI, f.URL)
		}
		if want := s.sim.SPOURL + "/sites/"; !strings.HasPrefix(job.SourceURI, want) {
			t.Errorf("sourceUri %q is not on the site origin %s", job.SourceURI, want)
		}
	}
}

// TestRepeatedUsersEndToEnd: Graph repeats users in full and delta rounds
// (as its documentation warns); SharePoint refuses a file holding a user
// twice. Each user is sent once, with its newest values, and every job
// succeeds.
//
// The full sync reads one users/delta round (GRAPH_PARALLELISM=1), where
// the simulator repeats users; ranged full syncs see users twice when they
// are renamed during the read (internal/graph TestChangesDuringAFullRead).
func TestRepeatedUsersEndToEnd(t *testing.T) {
	s := startStack(t, stackOptions{users: 160, extra: []string{"GRAPH_PARALLELISM=1"}})
	s.putMapping(e2eMapping)
	s.sim.Graph.SetDeltaRepeatEvery(4)

	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("first run: %d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if run.Mode != syncer.ModeFull || run.Status != syncer.StatusSucceeded {
		t.Fatalf("first run %+v", run)
	}
	if run.Repeated == 0 {
		t.Errorf("the simulator repeated nobody (usersRepeated 0); the test proves nothing")
	}
	checkOneRowPerUser(t, s, run)
	checkJobsSucceeded(t, s, run)
	if n := checkProfiles(t, s); n != run.Sent {
		t.Errorf("%d profiles checked, run sent %d", n, run.Sent)
	}

	// Change users, some twice, some of them managers of others, and move
	// some to a new manager; the delta round repeats them too.
	var changed []directory.User
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) && len(changed) < 8 {
			changed = append(changed, u)
		}
	}
	for round := range 2 {
		for i, u := range changed {
			p := directory.Patch{Props: map[string]any{"jobTitle": fmt.Sprintf("title %d.%d", i, round)}}
			if i%3 == 0 {
				p.ManagerID = &changed[(i+round+1)%len(changed)].ID
			}
			if _, err := s.sim.Directory.Update(u.ID, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("delta run: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if run.Mode != syncer.ModeDelta || run.Status != syncer.StatusSucceeded {
		t.Fatalf("delta run %+v", run)
	}
	rows := checkOneRowPerUser(t, s, run)
	for i, u := range changed {
		if got := rows[u.ID]["Building"]; got != fmt.Sprintf("title %d.1", i) {
			t.Errorf("%s sent with Building %q, want its newest title", u.ID, got)
		}
	}
	if run.Repeated == 0 {
		t.Errorf("the delta round repeated nobody")
	}
	checkJobsSucceeded(t, s, run)
	checkProfiles(t, s)
}
