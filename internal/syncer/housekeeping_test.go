package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"
)

type fakeFiles struct {
	exist   map[string]bool
	deleted []string
}

func (f *fakeFiles) Delete(_ context.Context, u string) error {
	if !f.exist[u] {
		return fmt.Errorf("%s: %w", u, fs.ErrNotExist)
	}
	delete(f.exist, u)
	f.deleted = append(f.deleted, u)
	return nil
}

func TestHousekeepingDeletesOnlyWhatIsDue(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	blobs := newMemBlobs()
	files := &fakeFiles{exist: map[string]bool{}}
	add := func(id, state string, age time.Duration, logFolder bool) {
		rec := JobRecord{JobID: id, State: state, QueuedAt: now.Add(-age), SourceURI: "https://t/f-" + id + ".json"}
		files.exist[rec.SourceURI] = true
		if logFolder {
			rec.LogFolderURI = "https://t/" + id
			files.exist[rec.LogFolderURI] = true
		}
		data, _ := json.Marshal(rec)
		blobs.put(JobsPrefix+id+".json", data)
	}
	add("old-ok", "Succeeded", 40*24*time.Hour, false)
	add("old-err", "Error", 31*24*time.Hour, true)
	add("young", "Succeeded", 29*24*time.Hour, false)
	add("timedout", "TimedOut", 90*24*time.Hour, false)
	// A pending job's file is not even known to housekeeping: it has no record.
	files.exist["https://t/pending.json"] = true

	h := &Housekeeper{Blobs: blobs, List: blobs.lister(), Files: files, After: 30 * 24 * time.Hour, Now: func() time.Time { return now }}

	n, err := h.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files.deleted)
	want := []string{"https://t/f-old-err.json", "https://t/f-old-ok.json", "https://t/old-err"}
	if n != 2 || !slices.Equal(files.deleted, want) {
		t.Fatalf("cleaned %d, deleted %v, want 2 and %v", n, files.deleted, want)
	}
	for _, id := range []string{"young", "timedout"} {
		var rec JobRecord
		json.Unmarshal(blobs.data[JobsPrefix+id+".json"], &rec)
		if !rec.Cleaned.IsZero() {
			t.Errorf("%s marked cleaned", id)
		}
	}
	// A second sweep has nothing left to do.
	files.deleted = nil
	if n, err := h.Sweep(context.Background()); err != nil || n != 0 || len(files.deleted) != 0 {
		t.Errorf("second sweep: %d %v %v", n, err, files.deleted)
	}
	// Off by default.
	if n, _ := (&Housekeeper{}).Sweep(context.Background()); n != 0 {
		t.Error("housekeeping ran without After")
	}
}

// walker walks memBlobs in name order, with write times from written
// (zero when unset).
type walker struct {
	b       *memBlobs
	written map[string]time.Time
}

func (w walker) Walk(_ context.Context, prefix string, fn func(string, time.Time) error) error {
	w.b.mu.Lock()
	var names []string
	for n := range w.b.data {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	w.b.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		if err := fn(n, w.written[n]); errors.Is(err, ErrStopWalk) {
			return nil
		} else if err != nil {
			return err
		}
	}
	return nil
}

func TestPruneKeepsWhatIsFollowed(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b := newMemBlobs()
	w := walker{b: b, written: map[string]time.Time{}}
	put := func(name string, v any, written time.Time) {
		data, _ := json.Marshal(v)
		b.put(name, data)
		w.written[name] = written
	}
	runAt := func(d time.Duration) string { return NewRunID(now.Add(-d)) }
	old1, old2, young, current := runAt(100*24*time.Hour), runAt(95*24*time.Hour), runAt(10*24*time.Hour), runAt(120*24*time.Hour)
	for _, id := range []string{old1, old2, young, current} {
		put(RunsPrefix+id+".json", Run{ID: id}, now)
	}
	b.put(CurrentBlob, []byte(`{"runId":"`+current+`"}`))
	// old2 has a job still followed (requeued long ago, still Processing).
	put(PollsPrefix+"followed.json", PollState{JobID: "followed", RunID: old2}, now)
	// A poll document left behind by a job already recorded.
	put(PollsPrefix+"done.json", PollState{JobID: "done", RunID: old1}, now)
	put(JobsPrefix+"done.json", JobRecord{JobID: "done", State: "Succeeded"}, now.Add(-200*24*time.Hour))
	put(JobsPrefix+"old.json", JobRecord{JobID: "old", State: "Error"}, now.Add(-91*24*time.Hour))
	put(JobsPrefix+"new.json", JobRecord{JobID: "new", State: "Succeeded"}, now.Add(-89*24*time.Hour))
	put(JobsPrefix+"uncleaned.json", JobRecord{JobID: "uncleaned", State: "Succeeded"}, now.Add(-150*24*time.Hour))

	put("requests/old.json", map[string]string{}, now.Add(-91*24*time.Hour))
	put("requests/new.json", map[string]string{}, now.Add(-1*24*time.Hour))
	h := &Housekeeper{Blobs: b, Walk: w, Retain: 90 * 24 * time.Hour, After: 120 * 24 * time.Hour, Now: func() time.Time { return now },
		AlsoPrune: []string{"requests/"}}
	// With file housekeeping after 120 days, "uncleaned" keeps its record
	// until its files are gone; the others have no files left to clean
	// only if marked: mark them.
	for _, id := range []string{"done", "old"} {
		var rec JobRecord
		json.Unmarshal(b.data[JobsPrefix+id+".json"], &rec)
		rec.Cleaned = now
		put(JobsPrefix+id+".json", rec, w.written[JobsPrefix+id+".json"])
	}
	got, err := h.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	have := func(name string) bool { _, ok := b.data[name]; return ok }
	for name, want := range map[string]bool{
		RunsPrefix + old1 + ".json":    false, // old, nothing followed
		RunsPrefix + old2 + ".json":    true,  // old, but its job is followed
		RunsPrefix + young + ".json":   true,
		RunsPrefix + current + ".json": true, // the run under way
		PollsPrefix + "followed.json":  true,
		PollsPrefix + "done.json":      false,
		JobsPrefix + "done.json":       false,
		JobsPrefix + "old.json":        false,
		JobsPrefix + "new.json":        true,
		JobsPrefix + "uncleaned.json":  true, // files not cleaned yet
		"requests/old.json":            false,
		"requests/new.json":            true,
	} {
		if have(name) != want {
			t.Errorf("%s present = %v, want %v", name, have(name), want)
		}
	}
	if got.Runs != 1 || got.Jobs != 2 || got.Polls != 1 || got.Other != 1 || got.More {
		t.Errorf("pruned %+v", got)
	}
	// A bound: one record per prune.
	for i := range 3 {
		put(RunsPrefix+runAt(time.Duration(200+i)*24*time.Hour)+".json", Run{}, now)
	}
	h.MaxPrune = 1
	if got, _ := h.Prune(context.Background()); got.Runs != 1 || !got.More {
		t.Errorf("bounded prune %+v, want 1 run and more to do", got)
	}
	// Retention off keeps everything.
	n := len(b.data)
	h.Retain = 0
	if got, _ := h.Prune(context.Background()); got != (Pruned{}) || len(b.data) != n {
		t.Errorf("retention 0 pruned %+v", got)
	}
}
