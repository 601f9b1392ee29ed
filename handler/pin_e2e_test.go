package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/syncer"
	"github.com/profilesync/profilesync/internal/testenv"
)

// TestTamperedDeltaLinkSendsNothingElsewhere: a state.json whose delta link
// was edited to point at another origin fails the run with an error naming
// both origins; the other origin receives nothing, the stored link stays
// as it was, and nothing is imported.
func TestTamperedDeltaLinkSendsNothingElsewhere(t *testing.T) {
	s := startStack(t, stackOptions{users: 30, extra: []string{"STATUS_POLL_BACKOFF=1s"}})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("first run: %d %s", inv.Status, inv.Raw)
	}
	first := s.lastRun()
	if _, inv := s.pollOnce(t); inv.Status != 200 {
		t.Fatalf("poll: %d %s", inv.Status, inv.Raw)
	}
	if _, ok := s.jobRecord(t, first.JobIDs[0]); !ok {
		t.Fatalf("job %s not recorded: the next run would wait for it", first.JobIDs[0])
	}
	// A change the next delta round would send.
	u := s.sim.Directory.Users()[0]
	if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": "Tampered state test"}}); err != nil {
		t.Fatal(err)
	}

	other, hits := testenv.Elsewhere(t)
	st := s.state()
	if !strings.HasPrefix(st.DeltaLink, s.sim.GraphURL+"/") {
		t.Fatalf("stored delta link %q is not on the simulator's Graph origin", st.DeltaLink)
	}
	st.DeltaLink = other + strings.TrimPrefix(st.DeltaLink, s.sim.GraphURL)
	data, _ := json.Marshal(st)
	if _, err := s.blobs.Put(context.Background(), syncer.StateBlob, data, ""); err != nil {
		t.Fatal(err)
	}
	jobs, files := len(s.sim.SPO.Jobs()), len(s.sim.SPO.FilesIn("/sites/profilesync/Shared Documents/Profile Imports"))

	if inv := s.invoke("SyncTimer", timerNormal); inv.Status == 200 {
		t.Errorf("the run with a tampered delta link succeeded: %s", inv.Raw)
	}
	run := s.lastRun()
	if run.ID == first.ID || run.Status != syncer.StatusFailed {
		t.Fatalf("second run %s: status %q, want failed", run.ID, run.Status)
	}
	for _, want := range []string{"refusing to follow", other, s.sim.GraphURL} {
		if !strings.Contains(run.Error, want) {
			t.Errorf("the run's error does not say %q: %s", want, run.Error)
		}
	}
	if strings.Contains(run.Error, "deltatoken=") {
		t.Errorf("the run's error shows the delta token: %s", run.Error)
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the other origin", hits.Load())
	}
	if got := s.state().DeltaLink; got != st.DeltaLink {
		t.Errorf("the stored delta link moved: %q, was %q", got, st.DeltaLink)
	}
	if n, f := len(s.sim.SPO.Jobs()), len(s.sim.SPO.FilesIn("/sites/profilesync/Shared Documents/Profile Imports")); n != jobs || f != files || run.Sent != 0 {
		t.Errorf("something was imported: jobs %d -> %d, files %d -> %d, sent %d", jobs, n, files, f, run.Sent)
	}
}

// TestHousekeepingDeletesNothingOutsideItsFolder: job records edited to
// name the upload folder itself, its library, another site's folder, a path
// climbing out with "..", or another origin make housekeeping delete
// nothing at all (no request reaches SharePoint), each with a warning.
func TestHousekeepingDeletesNothingOutsideItsFolder(t *testing.T) {
	s := startStack(t, stackOptions{users: 20, extra: []string{"CLEANUP_AFTER_DAYS=30"}})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	const folder = "/sites/profilesync/Shared Documents/Profile Imports"
	before := s.sim.SPO.FilesIn(folder)
	if len(before) == 0 {
		t.Fatal("the run uploaded nothing: the test proves nothing")
	}
	other, hits := testenv.Elsewhere(t)
	site := s.sim.SiteURL
	edited := []syncer.JobRecord{
		{SourceURI: site + "/Shared Documents/Profile Imports", LogFolderURI: site + "/Shared Documents"},
		{SourceURI: s.sim.SPOURL + "/sites/other/Shared Documents/Profile Imports/x.json",
			LogFolderURI: site + "/Shared Documents/Profile Imports/../../Shared Documents"},
		{SourceURI: other + "/sites/profilesync/Shared Documents/Profile Imports/x.json", LogFolderURI: site},
	}
	ids := map[string]bool{}
	for _, rec := range edited {
		rec.JobID, rec.State, rec.QueuedAt = uuid.NewString(), "Succeeded", time.Now().Add(-time.Hour)
		ids[rec.JobID] = true
		data, _ := json.Marshal(rec)
		if _, err := s.blobs.Put(context.Background(), syncer.JobsPrefix+rec.JobID+".json", data, ""); err != nil {
			t.Fatal(err)
		}
	}

	// Thirty-five days later (records are listed by write time).
	a := s.inProcessApp(t)
	later := time.Now().Add(35 * 24 * time.Hour)
	a.house.Now = func() time.Time { return later }
	var logs bytes.Buffer
	a.house.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	start := time.Now()
	n, err := a.house.Sweep(context.Background())
	if err != nil || n != len(edited) {
		t.Fatalf("sweep cleaned %d (%v), want %d", n, err, len(edited))
	}
	for _, r := range s.sim.Requests.All() {
		if r.Origin == "spo" && !r.Time.Before(start) {
			t.Errorf("housekeeping sent SharePoint %s %s", r.Method, r.Path)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the other origin", hits.Load())
	}
	if after := s.sim.SPO.FilesIn(folder); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("files of the upload folder went: %v, were %v", after, before)
	}
	if w := strings.Count(logs.String(), `"msg":"housekeeping: not deleting what a job record names outside the upload folder"`); w != 2*len(edited) {
		t.Errorf("%d warnings, want %d:\n%s", w, 2*len(edited), logs.String())
	}
	for id := range ids {
		if rec, _ := s.jobRecord(t, id); rec.Cleaned.IsZero() {
			t.Errorf("job %s is not marked cleaned: every sweep would try again", id)
		}
	}
}

// TestMappingOverOneMiBOnEveryPath: a mapping document over 1 MiB (valid
// JSON, padded with spaces) is refused by `mapping put` before anything is
// stored; one put straight into the container is refused by `mapping get`
// and by a sync, each naming the blob and the limit.
func TestMappingOverOneMiBOnEveryPath(t *testing.T) {
	s := startStack(t, stackOptions{users: 5, noHandler: true})
	doc := `{"idType":"CloudId","properties":{"Building":"jobTitle"}}`
	big := doc + strings.Repeat(" ", mapping.MaxSize+1-len(doc))
	file := filepath.Join(t.TempDir(), "mapping.json")
	if err := os.WriteFile(file, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.Parse([]byte(big[:mapping.MaxSize])); err != nil {
		t.Fatalf("the document cut to 1 MiB is not a valid mapping (the test would prove nothing): %v", err)
	}
	if out, err := s.cli(t, "mapping", "put", file); err == nil || !strings.Contains(err.Error(), "1048576") {
		t.Errorf("mapping put of %d bytes: %v %s", len(big), err, out)
	}
	if _, _, err := s.blobs.Get(t.Context(), syncer.MappingBlob); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused mapping reached storage: %v", err)
	}

	if _, err := s.blobs.Put(t.Context(), syncer.MappingBlob, []byte(big), ""); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"mapping", "get"}, {"sync", "--dry-run"}} {
		out, err := s.cli(t, args...)
		if err == nil || !strings.Contains(err.Error(), `"mapping.json"`) || !strings.Contains(err.Error(), "at most 1048576 bytes") {
			t.Errorf("%v with a %d-byte mapping stored: %v %.200s", args, len(big), err, out)
		}
	}
}
