package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// queuePayload is a queue-trigger invocation as the Functions host sends it:
// the message text and string metadata double-encoded (functions-custom-handler.md §1.3, §1.5).
func queuePayload(m azstorage.Message) string {
	enc := func(s string) string {
		once, _ := json.Marshal(s)
		twice, _ := json.Marshal(string(once))
		return string(twice)
	}
	return fmt.Sprintf(`{"Data":{"msg":%s},"Metadata":{"DequeueCount":%q,"ExpirationTime":"2026-12-05T10:00:00+00:00","Id":%s,"InsertionTime":%q,"NextVisibleTime":"2026-11-28T10:10:01+00:00","PopReceipt":%s,"sys":{"MethodName":"ImportStatus","UtcNow":"2026-11-28T10:00:01.1234567Z","RandGuid":"24ad4c06-24ad-4e5b-8294-3da9714877e9"}}}`,
		enc(string(m.Body)), strconv.FormatInt(m.DequeueCount, 10), enc(m.ID), m.InsertionTime.UTC().Format(time.RFC3339), enc(m.PopReceipt))
}

// pollOnce takes the next status message from Azurite's queue (waiting, bounded,
// for its visibility delay), posts it to /ImportStatus as the host would, and
// deletes it when the invocation succeeded.
func (s *stack) pollOnce(t *testing.T) (azstorage.Message, invocation) {
	t.Helper()
	m := s.receive(t)
	inv := s.invoke("ImportStatus", queuePayload(m))
	if inv.Status == 200 {
		if err := s.queue.Delete(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	return m, inv
}

// receive waits (bounded) for the next visible status message and takes it
// for 2 seconds, as the host's listener takes a message while it runs.
func (s *stack) receive(t *testing.T) azstorage.Message {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		msgs, err := s.queue.Receive(t.Context(), 1, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			return msgs[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no status message became visible within 15 s")
	return azstorage.Message{}
}

func (s *stack) jobRecord(t *testing.T, id string) (syncer.JobRecord, bool) {
	t.Helper()
	data, _, err := s.blobs.Get(context.Background(), syncer.JobsPrefix+id+".json")
	if err != nil {
		return syncer.JobRecord{}, false
	}
	var r syncer.JobRecord
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r, true
}

func TestImportStatusFollowsJobToTheEnd(t *testing.T) {
	s := startStack(t, stackOptions{users: 40, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	id := run.JobIDs[0]

	// A timer while the import is still running queues nothing new.
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 || !strings.Contains(strings.Join(inv.Body.Logs, " "), "not finished") {
		t.Errorf("overlapping timer: %d %v", inv.Status, inv.Body.Logs)
	}
	if n := len(s.sim.SPO.Jobs()); n != 1 {
		t.Errorf("%d jobs in SharePoint after an overlapping timer, want 1", n)
	}

	states := []string{}
	for i := 0; i < 6; i++ {
		msg, inv := s.pollOnce(t)
		if inv.Status != 200 {
			t.Fatalf("ImportStatus answered %d: %s", inv.Status, inv.Raw)
		}
		states = append(states, strings.Join(inv.Body.Logs, " "))
		if rec, ok := s.jobRecord(t, id); ok {
			if rec.State != "Succeeded" || rec.RunID != run.ID || rec.Attempts != i+1 {
				t.Errorf("record %+v", rec)
			}
			// The same message delivered again changes nothing.
			again := s.invoke("ImportStatus", queuePayload(msg))
			if again.Status != 200 || !strings.Contains(strings.Join(again.Body.Logs, " "), "duplicate") {
				t.Errorf("redelivery: %d %v", again.Status, again.Body.Logs)
			}
			if after, _ := s.jobRecord(t, id); after.Recorded != rec.Recorded {
				t.Error("redelivery rewrote the record")
			}
			linked := s.lastRunByID(t, run.ID)
			if len(linked.JobResults) != 1 || linked.JobResults[0].State != "Succeeded" {
				t.Errorf("run not linked to its job: %+v", linked.JobResults)
			}
			if !strings.Contains(strings.Join(states, "\n"), "Submitted") || !strings.Contains(strings.Join(states, "\n"), "Queued") {
				t.Errorf("polls did not see the intermediate states: %v", states)
			}
			return
		}
		if err := s.sim.SPO.AdvanceJob(id); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("job never recorded; polls said %v", states)
}

func (s *stack) lastRunByID(t *testing.T, id string) syncer.Run {
	t.Helper()
	var r syncer.Run
	data, _, err := s.blobs.Get(context.Background(), syncer.RunsPrefix+id+".json")
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(data, &r)
	return r
}

func TestImportStatusRecordsErrorsAndDropsBadMessages(t *testing.T) {
	s := startStack(t, stackOptions{users: 40, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	id := s.lastRun().JobIDs[0]
	// Two users vanish from the directory before SharePoint processes the file:
	// their lines end up in the job log as IdentityNotResolvable.
	var gone []string
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) && len(gone) < 2 {
			if err := s.sim.Directory.Delete(u.ID, true); err != nil {
				t.Fatal(err)
			}
			gone = append(gone, u.ID)
		}
	}
	for range 3 {
		s.sim.SPO.AdvanceJob(id)
	}
	if _, inv := s.pollOnce(t); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	rec, ok := s.jobRecord(t, id)
	if !ok || rec.State != "Error" || rec.ErrorName != "ImportCompleteWithError" || rec.ResultCounts["IdentityNotResolvable"] != 2 {
		t.Fatalf("record %+v", rec)
	}
	for _, g := range gone {
		found := false
		for _, r := range rec.Results {
			found = found || (r.Code == "IdentityNotResolvable" && r.Identity == g)
		}
		if !found {
			t.Errorf("no per-user result for %s in %+v", g, rec.Results)
		}
	}

	// The CLI shows the job and its per-user errors.
	s.identityEnv(t)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"status", id, "--errors"}, s.getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ImportCompleteWithError (30)", "IdentityNotResolvable", gone[0], "CODE"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status %s --errors lacks %q:\n%s", id, want, out.String())
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"status"}, s.getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "Error") || !strings.Contains(out.String(), "JOB ID") {
		t.Errorf("status lists:\n%s", out.String())
	}

	// Messages that can never succeed are answered 2xx with a log line, not retried.
	for _, body := range []string{`not json at all`, `{"attempt":2}`, `{"jobId":"00000000-1111-2222-3333-444444444444","attempt":1}`} {
		inv := s.invoke("ImportStatus", queuePayload(azstorage.Message{ID: "m", Body: []byte(body), DequeueCount: 1}))
		if inv.Status != 200 || !strings.Contains(strings.Join(inv.Body.Logs, " "), "dropped") {
			t.Errorf("message %q: %d %v", body, inv.Status, inv.Body.Logs)
		}
	}
}

func TestImportStatusJobLevelErrorAndTransientFaults(t *testing.T) {
	s := startStack(t, stackOptions{users: 20, jobStep: -1, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	id := s.lastRun().JobIDs[0]
	// SharePoint fails the status call: the invocation fails so the host retries the message.
	s.sim.Faults.Add(faults.Rule{Origin: faults.SPO, Path: "ProcessQuery", Status: 500, Count: 1})
	if _, inv := s.pollOnce(t); inv.Status < 300 {
		t.Fatalf("a SharePoint failure answered %d; the host would delete the message", inv.Status)
	}
	if _, ok := s.jobRecord(t, id); ok {
		t.Fatal("recorded a job SharePoint did not report")
	}
	if err := s.sim.SPO.FailJob(id); err != nil {
		t.Fatal(err)
	}
	// The failed message is still on the queue and comes back once its visibility ends.
	msg := s.receive(t)
	inv := s.invoke("ImportStatus", queuePayload(msg))
	if inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	rec, ok := s.jobRecord(t, id)
	if !ok || rec.State != "Error" || rec.ErrorName != "InternalError" || len(rec.Results) != 0 {
		t.Fatalf("record %+v", rec)
	}
}
