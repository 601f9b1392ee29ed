package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// Fault storms: Graph, SharePoint and the host misbehave in bursts while
// the sync runs; each storm ends with the same convergence assertion as the
// kill matrix (assertConverged).

// storm is one fault storm: rules for the simulator, and optional steps.
type storm struct {
	name  string
	rules []faults.Rule
	extra []string // more settings
	// during runs after the first timer run (which met the rules), before
	// the stack is driven to quiet; between runs between timer rounds.
	during  func(t *testing.T, s *stack)
	between func(t *testing.T, s *stack, round int)
	jobStep time.Duration
}

func TestFaultStorms(t *testing.T) {
	delta := `/users/(microsoft\.graph\.)?delta`
	storms := []storm{
		{name: "graph 429 storm with Retry-After", rules: []faults.Rule{
			{Origin: faults.Graph, Path: delta, Status: 429, RetryAfter: 1, Count: 5},
		}},
		{name: "graph 503 and 504", rules: []faults.Rule{
			{Origin: faults.Graph, Path: delta, Status: 503, RetryAfter: 1, Count: 2},
			{Origin: faults.Graph, Path: delta, Status: 504, Count: 1},
		}},
		{name: "graph pages cut mid-way", rules: []faults.Rule{
			{Origin: faults.Graph, Path: delta, Truncate: true, Count: 3},
		}},
		{name: "graph connections dropped", rules: []faults.Rule{
			{Origin: faults.Graph, Path: delta, Drop: true, Count: 3},
		}},
		{name: "sharepoint 503 at upload", extra: []string{"SPO_CHUNK_SIZE=8192"}, rules: []faults.Rule{
			{Origin: faults.SPO, Path: `AddUsingPath|StartUpload|ContinueUpload|FinishUpload`, Status: 503, RetryAfter: 1, Count: 6},
		}},
		{name: "sharepoint 503 at queue and status", rules: []faults.Rule{
			{Origin: faults.SPO, Path: `ProcessQuery`, Status: 503, RetryAfter: 1, Count: 8},
		}},
		{name: "job stuck in Processing past STATUS_POLL_MAX_AGE", jobStep: time.Hour,
			extra: []string{"STATUS_POLL_MAX_AGE=4s"},
			during: func(t *testing.T, s *stack) {
				// The poller gives up, records TimedOut and queues the
				// file again; then SharePoint catches up.
				deadline := time.Now().Add(30 * time.Second)
				for !hasTimedOut(t, s) {
					if time.Now().After(deadline) {
						t.Fatal("no job recorded TimedOut within 30 s")
					}
					s.deliver(t)
					time.Sleep(500 * time.Millisecond)
				}
				s.sim.SPO.SetJobStep(0) // SharePoint catches up
				finishJobs(t, s)
			},
			between: func(t *testing.T, s *stack, _ int) { finishJobs(t, s) },
		},
		{name: "one status message delivered five times at once",
			during: func(t *testing.T, s *stack) {
				m := s.receive(t)
				var wg sync.WaitGroup
				statuses := make([]int, 5)
				for i := range statuses {
					wg.Add(1)
					go func() {
						defer wg.Done()
						statuses[i], _ = s.tryInvoke("ImportStatus", queuePayload(m))
					}()
				}
				wg.Wait()
				run := s.lastRun()
				if len(run.JobResults) != 1 {
					t.Errorf("the run links %d job results after five deliveries, want 1: %+v (statuses %v)", len(run.JobResults), run.JobResults, statuses)
				}
				if n := len(s.blobNames(t, syncer.JobsPrefix)); n != 1 {
					t.Errorf("%d job records after five deliveries of one message, want 1", n)
				}
				s.queue.Delete(t.Context(), m)
			},
		},
		{name: "timer fires while a manual run holds the lock",
			during: func(t *testing.T, s *stack) {
				l, err := s.blobs.Lock(t.Context(), lockBlob)
				if err != nil {
					t.Fatal(err)
				}
				runsBefore := len(s.blobNames(t, syncer.RunsPrefix))
				changeUsers(t, s, 2, "while locked")
				inv := s.invoke("SyncTimer", timerNormal)
				if inv.Status != 200 || !strings.Contains(strings.Join(inv.Body.Logs, "\n"), "another sync is running") {
					t.Errorf("timer under a held lock: %d %v", inv.Status, inv.Body.Logs)
				}
				if n := len(s.blobNames(t, syncer.RunsPrefix)); n != runsBefore {
					t.Errorf("a run started although the lock was held (%d -> %d records)", runsBefore, n)
				}
				if err := l.Release(t.Context()); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, st := range storms {
		t.Run(st.name, func(t *testing.T) {
			s := startStack(t, stackOptions{users: 60, jobStep: st.jobStep,
				extra: append([]string{"STATUS_POLL_BACKOFF=1s,2s"}, st.extra...)})
			tmp := s.getenv("TMPDIR")
			s.putMapping(e2eMapping)
			for _, r := range st.rules {
				if err := s.sim.Faults.Add(r); err != nil {
					t.Fatal(err)
				}
			}
			if status, err := s.tryInvoke("SyncTimer", timerFirst); err != nil {
				t.Fatalf("first run: %v", err)
			} else if status != 200 {
				t.Logf("first run answered %d (the storm may fail it; the next runs recover)", status)
			}
			if st.during != nil {
				st.during(t, s)
			}
			changeUsers(t, s, 3, "after the storm")
			var between func(int)
			if st.between != nil {
				between = func(round int) { st.between(t, s, round) }
			}
			rounds := s.runUntilQuiet(t, between)
			jobs := assertConverged(t, s, tmp)
			hits := 0
			for _, r := range s.sim.Faults.Rules() {
				hits += r.Hits
			}
			if len(st.rules) > 0 && hits == 0 {
				t.Errorf("no fault was injected: the storm proves nothing")
			}
			t.Logf("%s: %d faults injected, %d jobs, quiet after %d timer rounds", st.name, hits, jobs, rounds)
		})
	}
}

func hasTimedOut(t *testing.T, s *stack) bool {
	for _, n := range s.blobNames(t, syncer.JobsPrefix) {
		id := strings.TrimSuffix(strings.TrimPrefix(n, syncer.JobsPrefix), ".json")
		if rec, ok := s.jobRecord(t, id); ok && rec.State == "TimedOut" {
			if !strings.Contains(rec.Resent, "requeued") {
				t.Errorf("timed-out job %s was not queued again: %q", id, rec.Resent)
			}
			return true
		}
	}
	return false
}

// finishJobs lets SharePoint process every job still waiting.
func finishJobs(t *testing.T, s *stack) {
	for _, j := range s.sim.SPO.Jobs() {
		for range 5 {
			if cur, _ := s.sim.SPO.Job(j.JobID); cur.State == 4 || cur.State == 5 {
				break
			}
			if err := s.sim.SPO.AdvanceJob(j.JobID); err != nil {
				t.Fatal(fmt.Errorf("advancing job %s: %w", j.JobID, err))
			}
		}
	}
}

// TestAzuriteStoppedMidRun: storage goes away while a run reads Graph (the
// host's storage account having a bad minute) and comes back; the run in
// flight fails or finishes, and the sync converges.
func TestAzuriteStoppedMidRun(t *testing.T) {
	s := startStack(t, stackOptions{users: 60, ownAzurite: true, extra: []string{"STATUS_POLL_BACKOFF=1s,2s"}})
	tmp := s.getenv("TMPDIR")
	s.putMapping(e2eMapping)
	// Slow Graph pages keep the run busy while storage is away.
	s.sim.Faults.SetPageLatency(400 * time.Millisecond)
	done := make(chan int, 1)
	go func() {
		status, _ := s.tryInvoke("SyncTimer", timerFirst)
		done <- status
	}()
	time.Sleep(300 * time.Millisecond)
	if err := s.az.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := s.az.Resume(); err != nil {
		t.Fatal(err)
	}
	status := <-done
	t.Logf("the run during the outage answered %d", status)
	s.sim.Faults.SetPageLatency(0)
	s.breakLock(t) // a lease the failed run could not release
	changeUsers(t, s, 3, "after the outage")
	rounds := s.runUntilQuiet(t, nil)
	jobs := assertConverged(t, s, tmp)
	t.Logf("storage outage: %d jobs, quiet after %d timer rounds", jobs, rounds)
}
