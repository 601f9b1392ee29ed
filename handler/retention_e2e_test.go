package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/syncer"
)

// retentionRecords is how many records TestRetentionAndListingsAtScale
// generates straight into Azurite: 150,000 in `make reliability`
// (PROFILESYNC_RETENTION_RECORDS, with PROFILESYNC_RETENTION_SQL=1), 12,000
// in `make test`. Azurite's default blob metadata store (LokiJS) looks
// blobs up through its accountName index, which every blob shares, so each
// write or delete scans every blob present (azurite 3.35.0
// dist/src/blob/persistence/LokiBlobMetadataStore.js, deleteBlob and the
// indices of its blobs collection): 2 ms per delete at 1,500 blobs, 17 ms
// at 15,000, and N records cost N². With AZURITE_DB (MariaDB, started by
// scripts/mariadb.sh) its lookups are indexed: 150,000 records in about
// 7 minutes here. The records due for deletion are kept few (oldRuns).
func retentionRecords() int {
	if n, err := strconv.Atoi(os.Getenv("PROFILESYNC_RETENTION_RECORDS")); err == nil && n > 0 {
		return n
	}
	return 12_000
}

// oldRuns is how many of the generated run records are older than the
// 90-day retention.
const oldRuns = 600

// TestRetentionAndListingsAtScale fills the state container with run and job
// records (two thirds runs spread over 400 days, one third jobs), checks
// that the listings stay correct beyond Blob storage's 100,000-blob listing
// limit of the old code, and that retention deletes exactly the records of
// finished work older than RECORDS_RETENTION_DAYS, never those a job still
// followed needs.
func TestRetentionAndListingsAtScale(t *testing.T) {
	total := retentionRecords()
	// PROFILESYNC_RETENTION_SQL=1 (make reliability) keeps Azurite's blob
	// metadata in MariaDB, where its lookups are indexed.
	s := startStack(t, stackOptions{users: 5, noHandler: true, sqlAzurite: os.Getenv("PROFILESYNC_RETENTION_SQL") == "1"})
	a := s.inProcessApp(t)
	ctx := context.Background()
	now := time.Now().UTC()

	nRuns := total * 2 / 3
	nJobs := total - nRuns
	runIDs := make([]string, nRuns)
	for i := range runIDs {
		// Oldest first, distinct names: oldRuns spread over days 91 to
		// 400 ago, the others over the last 89 days.
		var at time.Time
		if i < oldRuns {
			at = now.Add(-time.Duration(float64(400*24*time.Hour) - float64(309*24*time.Hour)*float64(i)/oldRuns))
		} else {
			at = now.Add(-time.Duration(float64(89*24*time.Hour) * float64(nRuns-i) / float64(nRuns-oldRuns)))
		}
		runIDs[i] = syncer.NewRunID(at)
	}
	put := func(name string, v any) {
		data, _ := json.Marshal(v)
		if _, err := s.blobs.Put(ctx, name, data, ""); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if i < nRuns {
					put(syncer.RunsPrefix+runIDs[i]+".json", syncer.Run{ID: runIDs[i], Status: syncer.StatusSucceeded, Started: now})
				} else {
					id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i-nRuns)
					put(syncer.JobsPrefix+id+".json", syncer.JobRecord{JobID: id, State: "Succeeded"})
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("generated %d records (%d runs, %d jobs) in %s", total, nRuns, nJobs, time.Since(start).Round(time.Millisecond))

	// A job still followed, queued by a run 300 days ago; and 10 job
	// records written last, which the job listing must show first.
	followedRun := runIDs[oldRuns/2]
	put(syncer.PollsPrefix+"11111111-1111-4111-8111-111111111111.json", syncer.PollState{JobID: "11111111-1111-4111-8111-111111111111", RunID: followedRun, QueuedAt: now})
	time.Sleep(1100 * time.Millisecond) // Blob write times have whole seconds
	var newest []string
	for i := range 10 {
		id := fmt.Sprintf("99999999-0000-4000-8000-%012d", i)
		put(syncer.JobsPrefix+id+".json", syncer.JobRecord{JobID: id, State: "Error"})
		newest = append(newest, id)
	}

	// Listings with every record present.
	t0 := time.Now()
	runs, err := a.listRuns(ctx, 25)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(runIDs[nRuns-25:])
	slices.Reverse(want)
	var got []string
	for _, r := range runs {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("newest runs\n got %v\nwant %v", got, want)
	}
	runsTook := time.Since(t0)
	t0 = time.Now()
	views, err := a.allJobs(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	jobsTook := time.Since(t0)
	var gotJobs []string
	for _, v := range views {
		if !v.Live {
			gotJobs = append(gotJobs, v.JobID)
		}
	}
	slices.Sort(gotJobs)
	if !slices.Equal(gotJobs, newest) {
		t.Errorf("newest job records %v, want the 10 written last %v", gotJobs, newest)
	}
	t.Logf("listing with %d records: newest 25 runs in %s, newest 10 jobs in %s", total+11, runsTook.Round(time.Millisecond), jobsTook.Round(time.Millisecond))

	// Retention, today: runs older than 90 days go (but the one whose job
	// is still followed); job records were all written today and stay.
	cut := now.Add(-90 * 24 * time.Hour)
	wantRunsGone := 0
	for _, id := range runIDs {
		at, _ := time.Parse("20060102T150405.000Z", id[:20])
		if at.Before(cut) && id != followedRun {
			wantRunsGone++
		}
	}
	a.house.Retain, a.house.MaxPrune = 90*24*time.Hour, 1_000_000
	t0 = time.Now()
	p, err := a.house.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pruned %+v in %s", p, time.Since(t0).Round(time.Millisecond))
	if p.Runs != wantRunsGone || p.Jobs != 0 || p.More {
		t.Errorf("pruned %+v, want %d runs and no job", p, wantRunsGone)
	}
	if _, _, err := s.blobs.Get(ctx, syncer.RunsPrefix+followedRun+".json"); err != nil {
		t.Errorf("the run of a job still followed was deleted: %v", err)
	}
	if left := len(s.blobNames(t, syncer.RunsPrefix)); left != nRuns-wantRunsGone {
		t.Errorf("%d run records left, want %d", left, nRuns-wantRunsGone)
	}

	// A hundred days later every record written today is old too: a
	// bounded sweep deletes its share and says more is due.
	a.house.Now = func() time.Time { return now.Add(100 * 24 * time.Hour) }
	a.house.MaxPrune = 300
	p1, err := a.house.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !p1.More || p1.Runs+p1.Jobs+p1.Polls != 300 {
		t.Errorf("bounded sweep %+v, want 300 deleted and more due", p1)
	}
	if _, _, err := s.blobs.Get(ctx, syncer.PollsPrefix+"11111111-1111-4111-8111-111111111111.json"); err != nil {
		t.Errorf("the poll document of a job still followed was deleted: %v", err)
	}
	if _, _, err := s.blobs.Get(ctx, syncer.RunsPrefix+followedRun+".json"); err != nil {
		t.Errorf("the run of a job still followed was deleted after 100 days: %v", err)
	}
}
