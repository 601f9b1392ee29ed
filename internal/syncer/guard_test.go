package syncer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
)

func TestPollMessageJobIDIsAGUID(t *testing.T) {
	const id = "4dc4c043-25ee-40f2-81d3-b3bf63da7538"
	for body, want := range map[string]string{
		`{"jobId":"` + id + `","attempt":2}`:                  id,
		`{"jobId":"` + strings.ToUpper(id) + `","attempt":2}`: id, // the canonical form names the blobs
		`{"jobId":"../state"}`:                                "",
		`{"jobId":"` + id + `/../../mapping"}`:                "",
		`{"jobId":"` + id + `.json"}`:                         "",
		`{"jobId":"{` + id + `}"}`:                            "",
		`{"jobId":"urn:uuid:` + id + `"}`:                     "",
		`{"jobId":"` + strings.ReplaceAll(id, "-", "") + `"}`: "",
		`{"jobId":"job-1"}`:                                   "",
		`{"jobId":"` + strings.Repeat("a", 10_000) + `"}`:     "",
	} {
		m, err := ParsePollMessage([]byte(body))
		if want == "" {
			if !errors.Is(err, ErrDrop) || !strings.Contains(fmt.Sprint(err), "not a GUID") {
				t.Errorf("ParsePollMessage(%.60s) = %+v, %v; want ErrDrop naming the GUID", body, m, err)
			}
			if len(fmt.Sprint(err)) > 300 {
				t.Errorf("the error quotes the whole id: %d bytes", len(fmt.Sprint(err)))
			}
			continue
		}
		if err != nil || m.JobID != want {
			t.Errorf("ParsePollMessage(%s) = %q, %v; want %q", body, m.JobID, err, want)
		}
	}
}

// refusingFiles is a Remover that, like spo.Client, refuses anything not
// below its folder (or on another origin) without deleting it.
type refusingFiles struct {
	fakeFiles
	folder string
}

func (f *refusingFiles) Delete(ctx context.Context, u string) error {
	if strings.HasPrefix(u, "https://elsewhere/") {
		return fmt.Errorf("refusing %s: %w", u, profile.ErrForeignOrigin)
	}
	if !strings.HasPrefix(u, f.folder+"/") {
		return fmt.Errorf("refusing %s: %w", u, profile.ErrOutsideFolder)
	}
	return f.fakeFiles.Delete(ctx, u)
}

// tooLarge makes Get refuse some blobs as the store does past their limit.
type tooLarge struct {
	*memBlobs
	names map[string]bool
}

func (b tooLarge) Get(ctx context.Context, name string) ([]byte, string, error) {
	if b.names[name] {
		return nil, "", fmt.Errorf("blob %q: %w", name, profile.ErrTooLarge)
	}
	return b.memBlobs.Get(ctx, name)
}

// TestHousekeepingSkipsWhatItMayNotDelete: a record naming what the
// Remover refuses (the library, another site, another origin) deletes
// nothing, warns, and does not stop the sweep; a record too large to read
// is passed over.
func TestHousekeepingSkipsWhatItMayNotDelete(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const folder = "https://t/sites/hr/Docs/Imports"
	mem := newMemBlobs()
	files := &refusingFiles{fakeFiles: fakeFiles{exist: map[string]bool{}}, folder: folder}
	add := func(id, source, logFolder string) {
		rec := JobRecord{JobID: id, State: "Error", QueuedAt: now.Add(-40 * 24 * time.Hour), SourceURI: source, LogFolderURI: logFolder}
		data, _ := json.Marshal(rec)
		mem.put(JobsPrefix+id+".json", data)
	}
	add("a-library", "https://t/sites/hr/Docs", folder)                                // the library and the folder itself
	add("b-other", "https://t/sites/other/Docs/Imports/x.json", "https://elsewhere/x") // another site, another origin
	add("c-fine", folder+"/c.json", folder+"/c-log")
	add("d-huge", folder+"/d.json", "")
	for _, u := range []string{folder + "/c.json", folder + "/c-log", folder + "/d.json"} {
		files.exist[u] = true
	}
	var logs bytes.Buffer
	blobs := tooLarge{mem, map[string]bool{JobsPrefix + "d-huge.json": true}}
	h := &Housekeeper{Blobs: blobs, List: mem.lister(), Files: files, After: 30 * 24 * time.Hour,
		Now: func() time.Time { return now }, Log: slog.New(slog.NewJSONHandler(&logs, nil))}
	n, err := h.Sweep(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("sweep cleaned %d (%v), want 3", n, err)
	}
	if want := []string{folder + "/c.json", folder + "/c-log"}; strings.Join(files.deleted, " ") != strings.Join(want, " ") {
		t.Errorf("deleted %v, want %v", files.deleted, want)
	}
	if !files.exist[folder+"/d.json"] {
		t.Error("the file of an unreadable record was deleted")
	}
	out := logs.String()
	if w := strings.Count(out, "names outside the upload folder"); w != 4 {
		t.Errorf("%d warnings about refused deletes, want 4:\n%s", w, out)
	}
	if !strings.Contains(out, "job record too large to read") {
		t.Errorf("no warning about the record too large to read:\n%s", out)
	}
	for _, id := range []string{"a-library", "b-other"} {
		var rec JobRecord
		json.Unmarshal(mem.data[JobsPrefix+id+".json"], &rec)
		if rec.Cleaned.IsZero() {
			t.Errorf("%s not marked cleaned: every sweep would try again", id)
		}
	}
	// Any other failure still stops the sweep.
	add("e-broken", folder+"/e.json", "")
	files.exist[folder+"/e.json"] = true
	h.Files = failingFiles{}
	if _, err := h.Sweep(context.Background()); err == nil {
		t.Error("a failing delete did not fail the sweep")
	}
}

type failingFiles struct{}

func (failingFiles) Delete(context.Context, string) error { return errors.New("sharepoint: 500") }

// TestPruneSkipsFilesItMayNotDelete: an edited run record naming a file
// outside the upload folder is pruned without deleting that file.
func TestPruneSkipsFilesItMayNotDelete(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b := newMemBlobs()
	w := walker{b: b, written: map[string]time.Time{}}
	id := NewRunID(now.Add(-100 * 24 * time.Hour))
	run := Run{ID: id, Files: []FileRecord{{Name: "x", URL: "https://t/sites/hr/Docs"}, {Name: "y", URL: "https://t/sites/hr/Docs/Imports/y.json"}}}
	data, _ := json.Marshal(run)
	b.put(RunsPrefix+id+".json", data)
	files := &refusingFiles{fakeFiles: fakeFiles{exist: map[string]bool{"https://t/sites/hr/Docs/Imports/y.json": true}}, folder: "https://t/sites/hr/Docs/Imports"}
	var logs bytes.Buffer
	h := &Housekeeper{Blobs: b, Walk: w, Files: files, Retain: 90 * 24 * time.Hour, Now: func() time.Time { return now },
		Log: slog.New(slog.NewJSONHandler(&logs, nil))}
	got, err := h.Prune(context.Background())
	if err != nil || got.Runs != 1 || got.Files != 1 {
		t.Fatalf("pruned %+v, %v; want the run and its one file below the folder", got, err)
	}
	if len(files.deleted) != 1 || !strings.Contains(logs.String(), "names outside the upload folder") {
		t.Errorf("deleted %v; logs:\n%s", files.deleted, logs.String())
	}
}

func TestBlobLimit(t *testing.T) {
	for name, want := range map[string]int64{
		MappingBlob:                       mapping.MaxSize,
		StateBlob:                         MaxStateBytes,
		RunsPrefix + "x.json":             MaxRunBytes,
		JobsPrefix + "x.json":             MaxJobBytes,
		PollsPrefix + "x.json":            MaxRecordBytes,
		CurrentBlob:                       MaxRecordBytes,
		FingerprintsManifest:              MaxRecordBytes,
		FingerprintsPendingPrefix + "x":   MaxFingerprintBlobBytes,
		FingerprintsStorePrefix + "x.bin": MaxFingerprintBlobBytes,
		"anything/else.json":              MaxRecordBytes,
	} {
		if got := BlobLimit(name); got != want {
			t.Errorf("BlobLimit(%q) = %d, want %d", name, got, want)
		}
	}
	if mapping.MaxSize != 1<<20 {
		t.Errorf("the mapping may be %d bytes, want 1 MiB", mapping.MaxSize)
	}
}

// refusingLogs refuses every log folder as spo.Client refuses one on
// another origin.
type refusingLogs struct{ asked *int }

func (l refusingLogs) LogLines(_ context.Context, folder string, _ func(string) error) error {
	*l.asked++
	return fmt.Errorf("spo: refusing to follow SharePoint URL %q: %w", folder, profile.ErrForeignOrigin)
}

// TestPollRecordsAJobWhoseLogFolderIsElsewhere: SharePoint naming a log
// folder on another origin ends the job as one whose log could not be read
// (its users are sent again), instead of failing every delivery of the
// status message.
func TestPollRecordsAJobWhoseLogFolderIsElsewhere(t *testing.T) {
	const id = "4dc4c043-25ee-40f2-81d3-b3bf63da7538"
	f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError,
		LogFolderURI: "https://elsewhere.example/sites/s/Shared Documents/" + id})
	asked := 0
	f.p.Logs = refusingLogs{&asked}
	out := f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
	if out.Recorded == nil || asked != 1 {
		t.Fatalf("outcome %+v, log folder asked %d times; want the job recorded", out, asked)
	}
	var rec JobRecord
	if err := json.Unmarshal(f.blobs.data[JobsPrefix+id+".json"], &rec); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.LogError, "not on the site's origin") || !strings.Contains(rec.LogError, "elsewhere.example") {
		t.Errorf("LogError = %q", rec.LogError)
	}
	if len(rec.Results) != 0 {
		t.Errorf("results from a log never read: %v", rec.Results)
	}
}
