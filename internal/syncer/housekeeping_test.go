package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
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
