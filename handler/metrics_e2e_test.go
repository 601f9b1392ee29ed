package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// events returns the metric events with msg name the handler process has
// written so far (its stdout: JSON lines, as the Functions host reads them).
func (s *stack) events(t *testing.T, name string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(s.out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			continue // a line cut by the race detector's report, say
		}
		if m["msg"] == name {
			out = append(out, m)
		}
	}
	return out
}

// newestEvent checks that there are want events named name and returns the
// last, after checking that it has exactly the fields the README documents.
func (s *stack) newestEvent(t *testing.T, name string, want int) map[string]any {
	t.Helper()
	evs := s.events(t, name)
	if len(evs) != want {
		t.Fatalf("%d %s events, want %d:\n%v", len(evs), name, want, evs)
	}
	ev := evs[len(evs)-1]
	var got []string
	for k := range ev {
		got = append(got, k)
	}
	doc := readmeEventFields(t, name)
	slices.Sort(got)
	slices.Sort(doc)
	if !slices.Equal(got, doc) {
		t.Errorf("%s carries %v\nREADME documents %v", name, got, doc)
	}
	return ev
}

// checkFields compares an event's fields with the values wanted (numbers as
// int, the others as they decode from JSON).
func checkFields(t *testing.T, ev map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		got := ev[k]
		if n, ok := w.(int); ok {
			f, isNum := got.(float64)
			if !isNum || int(f) != n {
				t.Errorf("%s %s = %#v, want %d", ev["msg"], k, got, n)
			}
			continue
		}
		if got != w {
			t.Errorf("%s %s = %#v, want %#v", ev["msg"], k, got, w)
		}
	}
}

// checkRunEvent compares a run event with the run record.
func checkRunEvent(t *testing.T, ev map[string]any, run syncer.Run) {
	t.Helper()
	skipped, bytes := 0, 0
	for _, n := range run.Skipped {
		skipped += n
	}
	for _, f := range run.Files {
		bytes += int(f.Bytes)
	}
	checkFields(t, ev, map[string]any{
		"level": "INFO", "schemaVersion": syncer.MetricsSchema, "runId": run.ID, "trigger": run.Trigger, "mode": string(run.Mode),
		"reason": run.Reason, "whatIf": run.WhatIf, "status": run.Status, "usersRead": run.Read, "usersSent": run.Sent,
		"usersUnchanged": run.Unchanged, "usersSkipped": skipped, "skippedDeleted": run.Skipped["deleted"],
		"skippedGuest": run.Skipped["guest"], "skippedDisabled": run.Skipped["disabled"], "skippedNoId": run.Skipped["no-id"],
		"usersRepeated": run.Repeated, "usersResent": len(run.Resent), "files": len(run.Files), "bytes": bytes,
		"jobsQueued": len(run.JobIDs), "deltaLinkSaved": run.DeltaSaved, "totalMs": int(run.DurationMS),
	})
	phases := 0.0
	for _, k := range []string{"graphReadMs", "uploadMs", "queueMs"} {
		d, ok := ev[k].(float64)
		if !ok || d < 0 {
			t.Errorf("%s = %#v", k, ev[k])
		}
		phases += d
	}
	if phases > float64(run.DurationMS) {
		t.Errorf("the phases took %v ms, more than the run's %d ms", phases, run.DurationMS)
	}
}

// TestMetricEventsEndToEnd: the real handler process writes one
// profilesync.run line per run and one profilesync.job line per finished
// job, with the README's fields and the numbers of the run and job
// records, even at LOG_LEVEL=warn.
func TestMetricEventsEndToEnd(t *testing.T) {
	s := startStack(t, stackOptions{users: 40, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s", "LOG_LEVEL=warn"}})
	s.putMapping(e2eMapping)

	// 1. A full sync: one run event with the run record's numbers.
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if run.Status != syncer.StatusSucceeded || len(run.JobIDs) != 1 || len(run.Files) != 1 {
		t.Fatalf("first run %+v", run)
	}
	ev := s.newestEvent(t, syncer.RunEvent, 1)
	checkRunEvent(t, ev, run)
	checkFields(t, ev, map[string]any{"trigger": "timer", "mode": "full", "status": "succeeded", "errorClass": "", "error": "",
		"files": 1, "jobsQueued": 1, "deltaLinkSaved": true})
	if run.Sent < 20 || run.Skipped["guest"] == 0 || run.Skipped["disabled"] == 0 {
		t.Errorf("the first run sent %d users and skipped %v: too few to tell the fields apart", run.Sent, run.Skipped)
	}

	// 2. Its job succeeds: one job event, also when the message comes again.
	id := run.JobIDs[0]
	for range 3 {
		if err := s.sim.SPO.AdvanceJob(id); err != nil {
			t.Fatal(err)
		}
	}
	msg, inv := s.pollOnce(t)
	if inv.Status != 200 {
		t.Fatalf("ImportStatus: %d %s", inv.Status, inv.Raw)
	}
	if rec, ok := s.jobRecord(t, id); !ok || rec.State != "Succeeded" {
		t.Fatalf("job record %+v", rec)
	}
	if again := s.invoke("ImportStatus", queuePayload(msg)); again.Status != 200 {
		t.Fatalf("redelivery: %d %s", again.Status, again.Raw)
	}
	ev = s.newestEvent(t, syncer.JobEvent, 1)
	checkFields(t, ev, map[string]any{"level": "INFO", "schemaVersion": syncer.MetricsSchema, "jobId": id, "runId": run.ID,
		"state": "Succeeded", "errorCode": 0, "error": "NoError", "polls": 1, "usersInFile": run.Files[0].Records,
		"usersImported": run.Sent, "usersWithErrors": 0, "errorLines": 0, "resent": false, "resentAs": "", "requeues": 0})
	if d, ok := ev["durationMs"].(float64); !ok || d < 0 {
		t.Errorf("durationMs = %#v", ev["durationMs"])
	}

	// 3. Three users change; two of them are gone before SharePoint imports
	// the file: the job ends in Error with two users' lines.
	var changed []directory.User
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) && len(changed) < 3 {
			if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": "Metrics " + u.ID}}); err != nil {
				t.Fatal(err)
			}
			changed = append(changed, u)
		}
	}
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("delta run: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if run.Mode != syncer.ModeDelta || run.Sent != 3 || len(run.JobIDs) != 1 {
		t.Fatalf("delta run %+v", run)
	}
	ev = s.newestEvent(t, syncer.RunEvent, 2)
	checkRunEvent(t, ev, run)
	checkFields(t, ev, map[string]any{"mode": "delta", "usersSent": 3})
	for _, u := range changed[:2] {
		if err := s.sim.Directory.Delete(u.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	id = run.JobIDs[0]
	for range 3 {
		s.sim.SPO.AdvanceJob(id)
	}
	if _, inv := s.pollOnce(t); inv.Status != 200 {
		t.Fatalf("ImportStatus: %d %s", inv.Status, inv.Raw)
	}
	ev = s.newestEvent(t, syncer.JobEvent, 2)
	checkFields(t, ev, map[string]any{"jobId": id, "runId": run.ID, "state": "Error", "errorCode": 30, "error": "ImportCompleteWithError",
		"usersInFile": 3, "usersWithErrors": 2, "errorLines": 2, "usersImported": 1, "resent": true, "resentAs": "next-run"})

	// 4. The next job fails as a whole (InternalError): nobody imported,
	// its file queued again.
	if _, err := s.sim.Directory.Update(changed[2].ID, directory.Patch{Props: map[string]any{"jobTitle": "Metrics again"}}); err != nil {
		t.Fatal(err)
	}
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("delta run: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if len(run.JobIDs) != 1 {
		t.Fatalf("run %+v", run)
	}
	checkRunEvent(t, s.newestEvent(t, syncer.RunEvent, 3), run)
	id = run.JobIDs[0]
	if err := s.sim.SPO.FailJob(id); err != nil {
		t.Fatal(err)
	}
	if _, inv := s.pollOnce(t); inv.Status != 200 {
		t.Fatalf("ImportStatus: %d %s", inv.Status, inv.Raw)
	}
	ev = s.newestEvent(t, syncer.JobEvent, 3)
	checkFields(t, ev, map[string]any{"jobId": id, "state": "Error", "errorCode": 1, "error": "InternalError",
		"usersInFile": run.Files[0].Records, "usersImported": 0, "usersWithErrors": 0, "resent": true, "resentAs": "requeued", "requeues": 0})

	// 5. A run whose queue call fails: one run event that says so.
	s.clearPolls(t) // the queued-again job would keep the run from queueing
	if _, err := s.sim.Directory.Update(changed[2].ID, directory.Patch{Props: map[string]any{"jobTitle": "Metrics, third time"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.Faults.Add(faults.Rule{Origin: faults.SPO, Method: "POST", Path: "ProcessQuery", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status < 300 {
		t.Fatalf("a failed queue call answered %d", inv.Status)
	}
	run = s.lastRun()
	if run.Status != syncer.StatusFailed {
		t.Fatalf("run %+v", run)
	}
	ev = s.newestEvent(t, syncer.RunEvent, 4)
	checkRunEvent(t, ev, run)
	checkFields(t, ev, map[string]any{"status": "failed", "errorClass": "queue", "files": 1, "jobsQueued": 0, "deltaLinkSaved": false})
	if e, _ := ev["error"].(string); e == "" || !strings.HasPrefix(run.Error, strings.TrimSuffix(e, "…")) {
		t.Errorf("error %q, run record says %q", e, run.Error)
	}
	// Every job event so far is one of a recorded job.
	for _, ev := range s.events(t, syncer.JobEvent) {
		if _, ok := s.jobRecord(t, ev["jobId"].(string)); !ok {
			t.Errorf("job event for %v, which has no record", ev["jobId"])
		}
	}
}
