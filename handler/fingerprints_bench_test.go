package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/syncer"
)

// BenchmarkSendOnlyChanged measures the fingerprint store (issue 13) on a
// tenant of 100,000 users, through the real adapters against the simulator
// in its own process (no page latency): a first full sync sends everyone
// and its job's success is merged into the store; then each iteration
// changes 1% of the members (their jobTitle, a mapped property) and runs a
// full sync, which must send those 1,000 users only, and has its job
// merged. Reported per iteration: users sent and unchanged, the full sync's
// wall time, the store's load time (the run's own read of it, timed again
// outside the run), the merge time of the 1,000-user job, the store's size,
// the import file bytes uploaded, and the peak heap while syncing and
// merging. "force" runs the same full sync with
// --force (everyone sent), for comparison.
func BenchmarkSendOnlyChanged(b *testing.B) {
	b.Run("users=100000/changed=1%", func(b *testing.B) { benchChanged(b, 100000, 1000, false) })
	b.Run("users=100000/force", func(b *testing.B) { benchChanged(b, 100000, 0, true) })
	b.Run("users=500000/changed=1%", func(b *testing.B) { benchChanged(b, 500000, 5000, false) })
}

func benchChanged(b *testing.B, users, changes int, force bool) {
	a, cfg, _ := benchApp(b, users, "benchfp")
	ctx := context.Background()
	graphOrigin := cfg.GraphEndpoint
	u, _ := url.Parse(cfg.SiteURL)
	spoOrigin := u.Scheme + "://" + u.Host

	// endJobs processes a run's jobs in the simulator and records them
	// with the poller (which merges their fingerprints); it returns the
	// time the poller took.
	endJobs := func(run *syncer.Run) time.Duration {
		var took time.Duration
		for _, id := range run.JobIDs {
			for range 6 {
				resp, err := http.Post(spoOrigin+"/_sim/jobs/"+id+"/advance", "application/json", nil)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					break // finished
				}
			}
			start := time.Now()
			out, err := a.poller.Poll(ctx, syncer.PollMessage{JobID: id, RunID: run.ID, Attempt: 1})
			took += time.Since(start)
			if err != nil || out.Recorded == nil || out.Recorded.State != "Succeeded" {
				b.Fatalf("job %s: %v %+v", id, err, out.Recorded)
			}
		}
		return took
	}
	sync := func(force bool) *syncer.Run {
		run, err := a.engine.Sync(ctx, syncer.Options{Mode: syncer.ModeFull, Force: force, Trigger: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		return run
	}

	// Members (not guests, not disabled), to change: every stride-th one,
	// enough for 20 rounds of changes (holding all 500,000 ids would add
	// 25 MB to the heap this benchmark measures).
	var members []string
	stride, seen := max(1, users/(20*max(changes, 1))), 0
	for after := ""; ; {
		var page struct {
			Users []directory.User `json:"users"`
			Next  string           `json:"next"`
		}
		resp, err := http.Get(graphOrigin + "/_sim/users?limit=1000&after=" + url.QueryEscape(after))
		if err != nil {
			b.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range page.Users {
			if !u.Deleted && !isGuest(u) && !isDisabled(u) {
				if seen%stride == 0 {
					members = append(members, u.ID)
				}
				seen++
			}
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}

	first := sync(false)
	firstMerge := endJobs(first)
	round := 0
	change := func() {
		for i := range changes {
			id := members[(round*changes+i)%len(members)]
			body := fmt.Sprintf(`{"props":{"jobTitle":"title %d.%d"}}`, round, i)
			req, _ := http.NewRequest(http.MethodPatch, graphOrigin+"/_sim/users/"+id, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("PATCH user %s: %s", id, resp.Status)
			}
		}
		round++
	}

	// Peak RSS from here on: the full syncs with the store loaded.
	runtime.GC()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := readHeap(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	runtime.GC()
	baseline := readHeap()
	var sent, unchanged int
	var bytes int64
	var syncTime, mergeTime time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		change()
		b.StartTimer()
		start := time.Now()
		run := sync(force)
		syncTime += time.Since(start)
		b.StopTimer()
		sent += run.Sent
		unchanged += run.Unchanged
		for _, f := range run.Files {
			bytes += f.Bytes
		}
		if !force && run.Sent != changes {
			b.Errorf("sent %d, want the %d users changed", run.Sent, changes)
		}
		mergeTime += endJobs(run)
		b.StartTimer()
	}
	b.StopTimer()
	close(stop)
	<-done
	rss, rssErr := peakRSS()
	// The store's load time, timed again outside the runs (and outside the
	// peak: it is this benchmark's read, not the product's).
	start := time.Now()
	stored, err := syncer.LoadFingerprints(ctx, a.engine.Blobs)
	loadTime := time.Since(start)
	if err != nil || stored < seen*9/10 {
		b.Fatalf("store: %d users, %v", stored, err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(sent)/n, "sent/sync")
	b.ReportMetric(float64(unchanged)/n, "unchanged/sync")
	b.ReportMetric(syncTime.Seconds()/n, "s/sync")
	b.ReportMetric(float64(bytes)/n/(1<<20), "file-MB/sync")
	b.ReportMetric(float64(loadTime.Milliseconds()), "store-load-ms")
	b.ReportMetric(float64(mergeTime.Milliseconds())/n, "merge-ms")
	b.ReportMetric(float64(firstMerge.Milliseconds()), "first-merge-ms")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(baseline)/(1<<20), "idle-heap-MB") // before the runs: the app, its clients and the ids to change
	if rssErr == nil {
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
	}
	if data, _, err := a.blobs.Get(ctx, syncer.FingerprintsManifest); err == nil {
		var man struct{ Store string }
		if json.Unmarshal(data, &man) == nil {
			if blob, _, err := a.blobs.Get(ctx, man.Store); err == nil {
				b.ReportMetric(float64(len(blob))/(1<<20), "store-MB")
			}
		}
	}
}

// readHeap reads the bytes of heap objects (live and not yet collected).
func readHeap() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}
