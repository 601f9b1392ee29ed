package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/syncer"
)

// cli runs the command line in-process against the stack's settings.
func (s *stack) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	s.identityEnv(t)
	var out, logs bytes.Buffer
	err := run(t.Context(), args, s.getenv, &out, &logs)
	return out.String(), err
}

func TestCommandLine(t *testing.T) {
	s := startStack(t, stackOptions{users: 30, jobStep: 300 * time.Millisecond, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	file := filepath.Join(t.TempDir(), "mapping.json")
	os.WriteFile(file, []byte(`{"idType":"CloudId","properties":{"Building":"jobTitle","HomePhone":"mobilePhone"}}`), 0o600)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"idType":"CloudId","properties":{"Building":"jobTitel"}}`), 0o600)

	if out, err := s.cli(t, "mapping", "validate", bad); err == nil || !strings.Contains(err.Error(), "jobTitel") {
		t.Errorf("validate bad: %v %s", err, out)
	}
	if _, err := s.cli(t, "mapping", "put", bad); err == nil {
		t.Error("put stored an invalid mapping")
	}
	if _, _, err := s.blobs.Get(t.Context(), syncer.MappingBlob); err == nil {
		t.Fatal("a rejected mapping reached storage")
	}
	if out, err := s.cli(t, "mapping", "put", file); err != nil || !strings.Contains(out, "2 properties") {
		t.Fatalf("put: %v %s", err, out)
	}
	if out, err := s.cli(t, "mapping", "get"); err != nil || !strings.Contains(out, "jobTitle") {
		t.Errorf("get: %v %s", err, out)
	}

	out, err := s.cli(t, "sync", "--dry-run", "--limit", "3")
	if err != nil {
		t.Fatal(err)
	}
	var plan syncer.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil || plan.Mode != syncer.ModeFull || len(plan.Users) != 3 {
		t.Errorf("dry run printed %s (%v)", out, err)
	}
	if len(s.sim.SPO.Jobs()) != 0 {
		t.Error("a dry run queued a job")
	}

	out, err = s.cli(t, "sync")
	if err != nil || !strings.Contains(out, "full sync") {
		t.Fatalf("sync: %v %s", err, out)
	}
	run := s.lastRun()
	id := run.JobIDs[0]
	out, err = s.cli(t, "status", id, "--wait", "--timeout", "30s")
	if err != nil || !strings.Contains(out, "Succeeded") || !strings.Contains(out, "live from SharePoint") {
		t.Errorf("status --wait: %v\n%s", err, out)
	}
	out, err = s.cli(t, "runs")
	if err != nil || !strings.Contains(out, run.ID) || !strings.Contains(out, "cli") {
		t.Errorf("runs: %v\n%s", err, out)
	}
	upn := s.sim.Directory.Users()[10].Props["userPrincipalName"].(string)
	out, err = s.cli(t, "sync", "--users", upn+",nobody@contoso.com", "--allow-overlap")
	if err != nil || !strings.Contains(out, "unknown users (not in Entra ID): nobody@contoso.com") {
		t.Errorf("sync --users: %v\n%s", err, out)
	}
	if out, err := s.cli(t, "config"); err != nil || !strings.Contains(out, "settings OK") || strings.Contains(out, "e2e-identity-header") {
		t.Errorf("config (the identity header must stay hidden): %v\n%s", err, out)
	}
}

func TestHousekeepingDeletesOldImportFiles(t *testing.T) {
	s := startStack(t, stackOptions{users: 20, extra: []string{"STATUS_POLL_BACKOFF=1s", "CLEANUP_AFTER_DAYS=30"}})
	s.putMapping(e2eMapping)
	var jobs []string
	for i, payload := range []string{timerFirst, timerNormal} {
		if i == 1 {
			s.putMapping(strings.Replace(e2eMapping, `"HireDate": "employeeHireDate"`, `"HireDate": "employeeHireDate", "EmployeeId": "employeeId"`, 1))
		}
		if inv := s.invoke("SyncTimer", payload); inv.Status != 200 {
			t.Fatalf("%d %s", inv.Status, inv.Raw)
		}
		id := s.lastRun().JobIDs[0]
		jobs = append(jobs, id)
		if _, inv := s.pollOnce(t); inv.Status != 200 {
			t.Fatalf("%d %s", inv.Status, inv.Raw)
		}
		if _, ok := s.jobRecord(t, id); !ok {
			t.Fatalf("job %s not recorded", id)
		}
	}
	// Thirty-five days later (the handler's own adapters, in-process, with a
	// clock moved forward): the first job is due; the second was queued
	// twenty days after it, so it is not.
	a := s.inProcessApp(t)
	later := time.Now().Add(35 * 24 * time.Hour)
	a.house.Now = func() time.Time { return later }
	old, _ := s.jobRecord(t, jobs[0])
	young, _ := s.jobRecord(t, jobs[1])
	young.QueuedAt = time.Now().Add(20 * 24 * time.Hour)
	data, _ := json.Marshal(young)
	if _, err := s.blobs.Put(context.Background(), syncer.JobsPrefix+jobs[1]+".json", data, ""); err != nil {
		t.Fatal(err)
	}
	n, err := a.house.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("sweep cleaned %d (%v), want 1", n, err)
	}
	path := func(u string) string { p, _ := url.Parse(u); return p.Path }
	if _, ok := s.sim.SPO.File(path(old.SourceURI)); ok {
		t.Errorf("the old import file %s is still there", old.SourceURI)
	}
	if _, ok := s.sim.SPO.File(path(young.SourceURI)); !ok {
		t.Errorf("the recent import file %s was deleted", young.SourceURI)
	}
	if after, _ := s.jobRecord(t, jobs[0]); after.Cleaned.IsZero() {
		t.Error("the cleaned job is not marked")
	}
	// The timer runs housekeeping itself when CLEANUP_AFTER_DAYS is set
	// (its log line says so); today nothing is due, so nothing goes.
	before := strings.Count(s.out.String(), `"msg":"housekeeping: import files"`)
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	if after := strings.Count(s.out.String(), `"msg":"housekeeping: import files"`); after != before+1 {
		t.Errorf("the timer did not run housekeeping (%d housekeeping lines before, %d after)", before, after)
	}
	if _, ok := s.sim.SPO.File(path(young.SourceURI)); !ok {
		t.Error("the timer's housekeeping deleted a recent file")
	}
}
