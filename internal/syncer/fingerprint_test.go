package syncer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

const fpMapping = `{"idType":"CloudId","properties":{"Building":"jobTitle"}}`

// fpFixture is an engine and a poller sharing storage, with a directory
// the tests change between runs and SharePoint jobs whose ends they choose.
type fpFixture struct {
	t      *testing.T
	users  []profile.User // what Graph hands over, in order, every round
	eng    *Engine
	poller *Poller
	blobs  *memBlobs
	tgt    *fakeTarget
	jobs   *fakeJobs
	logs   fakeLogs
}

func newFPFixture(t *testing.T, n int) *fpFixture {
	t.Helper()
	f := &fpFixture{t: t, blobs: newMemBlobs(), tgt: &fakeTarget{}, logs: fakeLogs{},
		jobs: &fakeJobs{states: map[string][]profile.Job{}, calls: map[string]int{}}}
	for i := range n {
		f.users = append(f.users, user(fmt.Sprintf("u%d", i+1), map[string]any{"jobTitle": "title"}))
	}
	f.blobs.put(MappingBlob, []byte(fpMapping))
	clock := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(time.Second); return clock }
	src := sourceFunc(func(_ context.Context, _ profile.Selection, _ string, fn func(profile.User) error) (string, error) {
		for _, u := range f.users {
			if err := fn(u); err != nil {
				return "", err
			}
		}
		return "link", nil
	})
	locked := false
	f.eng = &Engine{Source: src, Target: f.tgt, Blobs: f.blobs, Scheduler: &sched{},
		Lock: func(context.Context) (Lease, error) {
			if locked {
				return nil, profile.ErrBusy
			}
			locked = true
			return &fakeLease{lost: make(chan struct{}), release: func() { locked = false }}, nil
		},
		Now: now, TempDir: t.TempDir(), FirstPoll: time.Minute, Jobs: f.jobs, Pending: f.blobs.lister()}
	f.poller = &Poller{Jobs: f.jobs, Logs: f.logs, Blobs: f.blobs, Scheduler: &sched{},
		Backoff: []time.Duration{time.Minute}, MaxAge: 48 * time.Hour, Now: now}
	return f
}

func (f *fpFixture) set(id, title string) {
	for i := range f.users {
		if f.users[i].ID == id {
			f.users[i] = user(id, map[string]any{"jobTitle": title})
			return
		}
	}
	f.t.Fatalf("no user %s", id)
}

// sync runs a sync and returns its record.
func (f *fpFixture) sync(opts Options) *Run {
	f.t.Helper()
	opts.AllowOverlap = true
	run, err := f.eng.Sync(context.Background(), opts)
	if err != nil {
		f.t.Fatalf("sync: %v", err)
	}
	return run
}

// sent lists the IdName values of the rows of a run's files.
func (f *fpFixture) sent(run *Run) []string {
	f.t.Helper()
	var ids []string
	for _, fr := range run.Files {
		for _, up := range f.tgt.uploads {
			if up.name == fr.Name {
				for _, r := range records(f.t, up.data) {
					ids = append(ids, r["IdName"])
				}
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// finish ends every job of run as job says (its ID and source filled in)
// and has the poller record it.
func (f *fpFixture) finish(run *Run, job profile.Job) []JobRecord {
	f.t.Helper()
	var recs []JobRecord
	for i, id := range run.JobIDs {
		j := job
		j.ID, j.SourceURI = id, run.Files[i].URL
		f.jobs.states[id] = []profile.Job{j}
		out, err := f.poller.Poll(context.Background(), PollMessage{JobID: id, RunID: run.ID, Attempt: 1})
		if err != nil {
			f.t.Fatalf("poll %s: %v", id, err)
		}
		if out.Recorded == nil {
			f.t.Fatalf("job %s not recorded: %+v", id, out)
		}
		recs = append(recs, *out.Recorded)
	}
	return recs
}

var succeeded = profile.Job{State: profile.Succeeded}

func ids(s ...string) []string { slices.Sort(s); return s }

func TestUnchangedUsersAreNotSentAgain(t *testing.T) {
	f := newFPFixture(t, 5)
	run := f.sync(Options{})
	if run.Sent != 5 || run.Unchanged != 0 || len(run.JobIDs) != 1 {
		t.Fatalf("first run: sent %d unchanged %d jobs %v", run.Sent, run.Unchanged, run.JobIDs)
	}
	if recs := f.finish(run, succeeded); recs[0].Fingerprints != "5 user(s) remembered, 0 forgotten" {
		t.Errorf("job record says %q", recs[0].Fingerprints)
	}
	if _, ok := f.blobs.data[sidecarName(run.Files[0].URL)]; ok {
		t.Error("the file's fingerprints were kept after its job ended")
	}

	// Nothing changed: a full run sends nobody and queues nothing.
	run = f.sync(Options{Mode: ModeFull})
	if run.Sent != 0 || run.Unchanged != 5 || len(run.Files) != 0 || len(run.JobIDs) != 0 || !run.DeltaSaved {
		t.Fatalf("unchanged full run: sent %d unchanged %d files %d jobs %v saved %v", run.Sent, run.Unchanged, len(run.Files), run.JobIDs, run.DeltaSaved)
	}
	// A delta round handing over everyone (unmapped properties changed) too.
	if run = f.sync(Options{}); run.Mode != ModeDelta || run.Sent != 0 || run.Unchanged != 5 {
		t.Fatalf("delta run: mode %s sent %d unchanged %d", run.Mode, run.Sent, run.Unchanged)
	}

	// One user changed: only it is sent.
	f.set("u2", "new title")
	run3 := f.sync(Options{Mode: ModeFull})
	if got := f.sent(run3); !slices.Equal(got, ids("u2")) || run3.Unchanged != 4 {
		t.Fatalf("one change: sent %v unchanged %d", got, run3.Unchanged)
	}
	// While that job is unfinished, u2 goes back to the values the store
	// has for it: it is sent all the same, since SharePoint may apply the
	// job in flight after this run.
	f.set("u2", "title")
	run4 := f.sync(Options{Mode: ModeFull})
	if got := f.sent(run4); !slices.Equal(got, ids("u2")) {
		t.Fatalf("with u2's job unfinished: sent %v, want u2", got)
	}
	f.finish(run3, succeeded)
	f.finish(run4, succeeded)
	if run = f.sync(Options{Mode: ModeFull}); run.Sent != 0 {
		t.Fatalf("after the jobs ended: sent %d", run.Sent)
	}

	// Force sends everyone, and the store is still updated.
	run = f.sync(Options{Mode: ModeFull, Force: true})
	if run.Sent != 5 || run.Unchanged != 0 || !strings.Contains(run.Fingerprints, "forced") {
		t.Fatalf("forced: sent %d unchanged %d (%q)", run.Sent, run.Unchanged, run.Fingerprints)
	}
	f.finish(run, succeeded)

	// A mapping that only adds a property sends everyone.
	f.blobs.put(MappingBlob, []byte(`{"idType":"CloudId","properties":{"Building":"jobTitle","HomePhone":"mobilePhone"}}`))
	if run = f.sync(Options{}); run.Mode != ModeFull || run.Sent != 5 {
		t.Fatalf("after a mapping change: mode %s sent %d", run.Mode, run.Sent)
	}
	f.finish(run, succeeded)
	if run = f.sync(Options{Mode: ModeFull}); run.Sent != 0 || run.Unchanged != 5 {
		t.Fatalf("after the new mapping's import: sent %d unchanged %d", run.Sent, run.Unchanged)
	}

	// Any change of the mapping sends everyone, even one that leaves every
	// record as it was: the mapping's hash is part of the fingerprint.
	f.blobs.put(MappingBlob, []byte(`{"idType":"CloudId","properties":{"Building":"jobTitle","HomePhone":"mobilePhone"},"users":{"includeGuests":true}}`))
	if run = f.sync(Options{}); run.Mode != ModeFull || run.Sent != 5 {
		t.Fatalf("after a mapping change that changes no record: mode %s sent %d", run.Mode, run.Sent)
	}
	f.finish(run, succeeded)

	// A dry run says so too.
	f.set("u5", "other")
	plan, err := f.eng.Plan(context.Background(), Options{Mode: ModeFull}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Sent != 1 || plan.Unchanged != 4 || len(plan.Users) != 1 || plan.Users[0].ID != "u5" || len(plan.SkippedUsers) != 0 {
		t.Errorf("plan: toSend %d unchanged %d users %+v skipped %+v", plan.Sent, plan.Unchanged, plan.Users, plan.SkippedUsers)
	}
	// A what-if run counts them and writes no fingerprints.
	before := len(f.blobs.data)
	if run = f.sync(Options{Mode: ModeFull, WhatIf: true}); run.Sent != 1 || run.Unchanged != 4 || len(f.blobs.data) != before+1 { // + its run record
		t.Errorf("what-if: sent %d unchanged %d, %d blobs written", run.Sent, run.Unchanged, len(f.blobs.data)-before)
	}
}

func TestFailedImportsAreNotRemembered(t *testing.T) {
	f := newFPFixture(t, 5)
	run := f.sync(Options{})
	rec := f.finish(run, profile.Job{State: profile.Error, Error: profile.InvalidDataFile})
	if rec[0].Fingerprints != "0 user(s) remembered, 5 forgotten" {
		t.Errorf("failed job: %q", rec[0].Fingerprints)
	}
	run = f.sync(Options{Mode: ModeFull})
	if run.Sent != 5 {
		t.Fatalf("after a failed job: sent %d, want everyone", run.Sent)
	}
	// Some users refused (log lines): those are sent again, the others not.
	f.logs["log2"] = "IdentityNotResolvable\tu2\tUser identity cannot be resolved\nGenericError\tU4\tsomething"
	rec = f.finish(run, profile.Job{State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "log2"})
	if rec[0].Fingerprints != "3 user(s) remembered, 2 forgotten" {
		t.Errorf("partly failed job: %q", rec[0].Fingerprints)
	}
	run = f.sync(Options{Mode: ModeFull})
	if got := f.sent(run); !slices.Equal(got, ids("u2", "u4")) || run.Unchanged != 3 {
		t.Fatalf("after user errors: sent %v unchanged %d", got, run.Unchanged)
	}
	// A user remembered before and failing now is forgotten: u2 and u4 go
	// through, then u1 changes and its import fails.
	f.finish(run, succeeded)
	f.set("u1", "changed")
	run = f.sync(Options{Mode: ModeFull})
	f.finish(run, profile.Job{State: profile.TimedOut})
	f.set("u1", "title") // back to the values SharePoint had before: still sent
	if got := f.sent(f.sync(Options{Mode: ModeFull})); !slices.Equal(got, ids("u1")) {
		t.Fatalf("after a timed-out job: sent %v, want u1", got)
	}
	// A log that could not be read whole remembers nobody.
	f.set("u3", "x")
	run = f.sync(Options{Mode: ModeFull})
	rec = f.finish(run, profile.Job{State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "missing-log"})
	if !strings.HasPrefix(rec[0].Fingerprints, "0 user(s) remembered") {
		t.Errorf("unreadable log: %q", rec[0].Fingerprints)
	}
}

func TestTheNewestSightingDecides(t *testing.T) {
	f := newFPFixture(t, 4)
	f.finish(f.sync(Options{}), succeeded)
	seen := func(id string, seq uint64, title string) profile.User {
		u := user(id, map[string]any{"jobTitle": title})
		u.Seq = seq
		return u
	}
	f.users = []profile.User{
		seen("u1", 1, "changed"), seen("u1", 2, "title"), // changed, then back: unchanged
		seen("u2", 3, "title"), seen("u2", 4, "changed"), // unchanged, then changed: sent
		seen("u3", 6, "changed"), seen("u3", 5, "title"), // the newer sighting (6) came first: sent
		seen("u4", 7, "changed"), {ID: "u4", Seq: 8, Removed: true, Props: map[string]any{"id": "u4"}}, // then deleted
	}
	run := f.sync(Options{Mode: ModeFull})
	rows := map[string]string{}
	for _, fr := range run.Files {
		for _, up := range f.tgt.uploads {
			if up.name == fr.Name {
				for _, r := range records(t, up.data) {
					rows[r["IdName"]] = r["Building"]
				}
			}
		}
	}
	if len(rows) != 2 || rows["u2"] != "changed" || rows["u3"] != "changed" {
		t.Errorf("rows %v, want u2 and u3 with their newest values", rows)
	}
	if run.Sent != 2 || run.Unchanged != 1 || run.Skipped["deleted"] != 1 || run.Repeated != 4 {
		t.Errorf("sent %d unchanged %d skipped %v repeated %d", run.Sent, run.Unchanged, run.Skipped, run.Repeated)
	}
}

// TestRecordsWithoutTheManager: a delta round says who a user's manager is
// only when it changed, so its records leave the manager's properties out
// (SharePoint keeps theirs). Such a record is compared, and remembered, by
// its own properties; the manager's part stays what was imported before,
// so the next full sync does not send the user again for nothing, and does
// send it when the manager's values changed.
func TestRecordsWithoutTheManager(t *testing.T) {
	f := newFPFixture(t, 3)
	f.blobs.put(MappingBlob, []byte(`{"idType":"CloudId","properties":{"Building":"jobTitle","ManagerEmail":"manager.mail"}}`))
	withBoss := func(title, boss string) []profile.User {
		var out []profile.User
		for i := range 3 {
			out = append(out, user(fmt.Sprintf("u%d", i+1), map[string]any{"jobTitle": title, "manager": map[string]any{"id": "m", "mail": boss}}))
		}
		return out
	}
	noBoss := func(title string) []profile.User {
		var out []profile.User
		for i := range 3 {
			out = append(out, user(fmt.Sprintf("u%d", i+1), map[string]any{"jobTitle": title})) // no "manager": unknown
		}
		return out
	}
	f.users = withBoss("t", "boss@contoso.com")
	f.finish(f.sync(Options{}), succeeded)

	// A delta round, manager unknown, u1 changed: u1 is sent without its
	// manager's properties; the others are unchanged.
	f.users = noBoss("t")
	f.users[0] = user("u1", map[string]any{"jobTitle": "new"})
	run := f.sync(Options{})
	if got := f.sent(run); run.Mode != ModeDelta || !slices.Equal(got, ids("u1")) || run.Unchanged != 2 {
		t.Fatalf("delta round: mode %s sent %v unchanged %d", run.Mode, got, run.Unchanged)
	}
	if rows := records(t, f.tgt.uploads[len(f.tgt.uploads)-1].data); len(rows) != 1 || len(rows[0]) != 2 {
		t.Fatalf("the delta row holds %v, want IdName and Building only", rows)
	}
	f.finish(run, succeeded)

	// A full sync, manager known and unchanged: nobody is sent.
	f.users = withBoss("t", "boss@contoso.com")
	f.users[0] = user("u1", map[string]any{"jobTitle": "new", "manager": map[string]any{"id": "m", "mail": "boss@contoso.com"}})
	if run := f.sync(Options{Mode: ModeFull}); run.Sent != 0 || run.Unchanged != 3 {
		t.Fatalf("full sync after the delta round: sent %d unchanged %d", run.Sent, run.Unchanged)
	}
	// The manager's mail changed: a full sync sends everyone it manages.
	f.users = withBoss("t", "new.boss@contoso.com")
	f.users[0] = user("u1", map[string]any{"jobTitle": "new", "manager": map[string]any{"id": "m", "mail": "new.boss@contoso.com"}})
	run = f.sync(Options{Mode: ModeFull})
	if run.Sent != 3 {
		t.Fatalf("after the manager's mail changed: sent %d", run.Sent)
	}
	f.finish(run, succeeded)
	// A user never imported with its manager's values is sent by a full
	// sync even when its own values are unchanged: u4 arrives in a delta
	// round, manager unknown.
	f.users = append(noBoss("t")[:0], user("u4", map[string]any{"jobTitle": "t"}))
	f.finish(f.sync(Options{}), succeeded)
	f.users = append(withBoss("t", "new.boss@contoso.com"), user("u4", map[string]any{"jobTitle": "t", "manager": map[string]any{"id": "m", "mail": "new.boss@contoso.com"}}))
	f.users[0] = user("u1", map[string]any{"jobTitle": "new", "manager": map[string]any{"id": "m", "mail": "new.boss@contoso.com"}})
	if got := f.sent(f.sync(Options{Mode: ModeFull})); !slices.Equal(got, ids("u4")) {
		t.Fatalf("full sync: sent %v, want u4 (its manager's values never imported)", got)
	}
}

func TestUsersGoneAreForgotten(t *testing.T) {
	f := newFPFixture(t, 5)
	f.finish(f.sync(Options{}), succeeded)
	all := slices.Clone(f.users)

	// A delta round reports u1 deleted: it is forgotten, so when it comes
	// back (restored, same values) it is sent.
	f.users = []profile.User{{ID: "u1", Removed: true, Props: map[string]any{"id": "u1"}}}
	if run := f.sync(Options{}); run.Skipped["deleted"] != 1 {
		t.Fatalf("skipped %v", run.Skipped)
	}
	f.users = all
	run := f.sync(Options{})
	if got := f.sent(run); !slices.Equal(got, ids("u1")) {
		t.Fatalf("after u1 came back: sent %v", got)
	}
	f.finish(run, succeeded)

	// A delta round that does not see u3 forgets nobody.
	f.users = slices.Concat(all[:2], all[3:])
	f.sync(Options{})
	f.users = all
	if run := f.sync(Options{}); run.Sent != 0 {
		t.Fatalf("a user a delta round did not see was forgotten: sent %d", run.Sent)
	}
	// A full run that does not see u3 forgets it (deleted for good, or
	// deleted while no run saw it): back, it is sent.
	f.users = slices.Concat(all[:2], all[3:])
	if run := f.sync(Options{Mode: ModeFull}); run.Sent != 0 || run.Unchanged != 4 {
		t.Fatalf("full run without u3: sent %d unchanged %d", run.Sent, run.Unchanged)
	}
	f.users = all
	if got := f.sent(f.sync(Options{Mode: ModeFull})); !slices.Equal(got, ids("u3")) {
		t.Fatalf("after u3 came back: sent %v", got)
	}
	// Disabled users are forgotten too.
	f.users = slices.Clone(all)
	f.users[4] = user("u5", map[string]any{"jobTitle": "title", "accountEnabled": false})
	f.sync(Options{})
	f.users = all
	if got := f.sent(f.sync(Options{})); !slices.Contains(got, "u5") {
		t.Fatalf("u5 enabled again: sent %v", got)
	}
}

func TestUnreadableStoreSendsEveryoneAndIsRepaired(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spoil  func(b *memBlobs)
		naming string
	}{
		{"store blob", func(b *memBlobs) {
			man := manifestOf(t, b)
			d := b.data[man.Store]
			d[len(d)-1] ^= 1
		}, FingerprintsStorePrefix},
		{"truncated store blob", func(b *memBlobs) {
			man := manifestOf(t, b)
			b.data[man.Store] = b.data[man.Store][:40]
		}, FingerprintsStorePrefix},
		{"manifest", func(b *memBlobs) { b.data[FingerprintsManifest] = []byte("{not json") }, FingerprintsManifest},
		{"missing store blob", func(b *memBlobs) { delete(b.data, manifestOf(t, b).Store) }, FingerprintsManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFPFixture(t, 5)
			f.finish(f.sync(Options{}), succeeded)
			tc.spoil(f.blobs)
			_, err := loadFingerprints(context.Background(), f.blobs)
			if !errors.Is(err, ErrFingerprintsCorrupt) || !strings.Contains(err.Error(), tc.naming) {
				t.Fatalf("load: %v, want an ErrFingerprintsCorrupt naming %s", err, tc.naming)
			}
			run := f.sync(Options{Mode: ModeFull})
			if run.Status != StatusSucceeded || run.Sent != 5 || !strings.Contains(run.Fingerprints, tc.naming) {
				t.Fatalf("run: status %s sent %d fingerprints %q", run.Status, run.Sent, run.Fingerprints)
			}
			f.finish(run, succeeded) // the merge starts the store afresh
			if n, err := LoadFingerprints(context.Background(), f.blobs); err != nil || n != 5 {
				t.Fatalf("after the merge: %d users, %v", n, err)
			}
			if run := f.sync(Options{Mode: ModeFull}); run.Sent != 0 {
				t.Errorf("after the repair: sent %d", run.Sent)
			}
		})
	}
	t.Run("sidecar", func(t *testing.T) {
		f := newFPFixture(t, 3)
		run := f.sync(Options{})
		name := sidecarName(run.Files[0].URL)
		f.blobs.data[name][40] ^= 1
		rec := f.finish(run, succeeded)
		if !strings.Contains(rec[0].Fingerprints, name) || !strings.Contains(rec[0].Fingerprints, "not remembered") {
			t.Errorf("job record: %q", rec[0].Fingerprints)
		}
		if run := f.sync(Options{Mode: ModeFull}); run.Sent != 3 {
			t.Errorf("sent %d", run.Sent)
		}
	})
	t.Run("unfinished job without fingerprints", func(t *testing.T) {
		f := newFPFixture(t, 3)
		f.finish(f.sync(Options{}), succeeded)
		run := f.sync(Options{Mode: ModeFull, Force: true})
		delete(f.blobs.data, sidecarName(run.Files[0].URL)) // say, written by an older version
		run = f.sync(Options{Mode: ModeFull})
		if run.Sent != 3 || !strings.Contains(run.Fingerprints, "unfinished") {
			t.Errorf("sent %d, fingerprints %q", run.Sent, run.Fingerprints)
		}
	})
}

func manifestOf(t *testing.T, b *memBlobs) fpManifest {
	t.Helper()
	var m fpManifest
	if err := json.Unmarshal(b.data[FingerprintsManifest], &m); err != nil || m.Store == "" {
		t.Fatalf("manifest %s: %v", b.data[FingerprintsManifest], err)
	}
	return m
}

// storeOf reads the store into key -> values.
func storeOf(t *testing.T, b Blobs) map[uint64]uint64 {
	t.Helper()
	s, err := loadFingerprints(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]uint64{}
	for i := range s.n {
		out[s.key(i)] = s.val(i)
	}
	return out
}

// racingBlobs runs race once, just before the first write of the manifest.
type racingBlobs struct {
	*memBlobs
	race func()
}

func (r *racingBlobs) Put(ctx context.Context, name string, data []byte, ifMatch string) (string, error) {
	if name == FingerprintsManifest && r.race != nil {
		race := r.race
		r.race = nil
		race()
	}
	return r.memBlobs.Put(ctx, name, data, ifMatch)
}

func TestMergeIsIdempotentAndSafeUnderRaces(t *testing.T) {
	ctx := context.Background()
	b := newMemBlobs()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	log := (&Engine{}).log()
	dir := t.TempDir()
	e := func(k, v uint64) fpEntry { return fpEntry{key: k, val: v, idn: k} }
	if err := mergeSlices(ctx, b, log, now, dir, "job1", []fpEntry{e(3, 30), e(1, 10), e(2, 20)}, nil); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]uint64{1: 10, 2: 20, 3: 30}
	if got := storeOf(t, b); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("store %v, want %v", got, want)
	}
	etag := b.etags[FingerprintsManifest]
	// The same job merged again (a redelivered status message) changes
	// nothing, even if the store changed meanwhile.
	if err := mergeSlices(ctx, b, log, now, dir, "job2", []fpEntry{e(1, 11)}, []uint64{3}); err != nil {
		t.Fatal(err)
	}
	etag = b.etags[FingerprintsManifest]
	if err := mergeSlices(ctx, b, log, now, dir, "job1", []fpEntry{e(1, 10), e(2, 20), e(3, 30)}, nil); err != nil {
		t.Fatal(err)
	}
	want = map[uint64]uint64{1: 11, 2: 20}
	if got := storeOf(t, b); fmt.Sprint(got) != fmt.Sprint(want) || b.etags[FingerprintsManifest] != etag {
		t.Fatalf("after job1 again: store %v (manifest rewritten: %v), want %v", got, b.etags[FingerprintsManifest] != etag, want)
	}
	// Removals alone are idempotent; one that changes nothing writes nothing.
	for range 2 {
		if err := mergeSlices(ctx, b, log, now, dir, "", nil, []uint64{2, 9}); err != nil {
			t.Fatal(err)
		}
	}
	if got := storeOf(t, b); fmt.Sprint(got) != fmt.Sprint(map[uint64]uint64{1: 11}) {
		t.Fatalf("after removals: %v", got)
	}
	// A merge racing another: both land, and one store blob is left.
	r := &racingBlobs{memBlobs: b}
	r.race = func() {
		if err := mergeSlices(ctx, b, log, now, dir, "job4", []fpEntry{e(5, 50)}, nil); err != nil {
			t.Error(err)
		}
	}
	if err := mergeSlices(ctx, r, log, now, dir, "job3", []fpEntry{e(4, 40), e(1, 12)}, nil); err != nil {
		t.Fatal(err)
	}
	if got := storeOf(t, b); fmt.Sprint(got) != fmt.Sprint(map[uint64]uint64{1: 12, 4: 40, 5: 50}) {
		t.Fatalf("after racing merges: %v", got)
	}
	var stores []string
	for name := range b.data {
		if strings.HasPrefix(name, FingerprintsStorePrefix) {
			stores = append(stores, name)
		}
	}
	if len(stores) != 1 || stores[0] != manifestOf(t, b).Store {
		t.Errorf("store blobs left: %v", stores)
	}
	if m := manifestOf(t, b); m.Users != 3 || !slices.Equal(m.Merged, []string{"job1", "job2", "job4", "job3"}) {
		t.Errorf("manifest %+v", m)
	}
}

func TestMergeBodyMatchesAModel(t *testing.T) {
	for seed := range 200 {
		rng := newRand(uint64(seed))
		model := map[uint64]uint64{}
		old := &fpStore{}
		for range rng.IntN(30) {
			model[uint64(rng.IntN(40))] = uint64(rng.IntN(5))
		}
		keys := make([]uint64, 0, len(model))
		for k := range model {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		mgrs := map[uint64]uint64{}
		for _, k := range keys {
			mgrs[k] = uint64(rng.IntN(3)) // 0: unknown
			old.body = appendEntry(old.body, k, model[k], mgrs[k])
			old.n++
		}
		var sets []fpEntry
		for range rng.IntN(20) {
			k, v := uint64(rng.IntN(40)), uint64(rng.IntN(5)+10)
			sets = append(sets, fpEntry{key: k, val: v, mgr: uint64(rng.IntN(3)) * 7})
		}
		slices.SortStableFunc(sets, func(a, b fpEntry) int { return cmpU64(a.key, b.key) })
		var removes []uint64
		for range rng.IntN(10) {
			removes = append(removes, uint64(rng.IntN(40)))
		}
		slices.Sort(removes)
		for _, s := range sets {
			model[s.key] = s.val
			if _, had := mgrs[s.key]; !had || s.mgr != mgrUnknown {
				mgrs[s.key] = s.mgr
			}
		}
		for _, r := range removes {
			delete(model, r)
		}
		got := mergeInMemory(t, old, sets, removes)
		if got.n != len(model) {
			t.Fatalf("seed %d: %d entries, want %d", seed, got.n, len(model))
		}
		for i := range got.n {
			if model[got.key(i)] != got.val(i) || mgrs[got.key(i)] != got.mgr(i) {
				t.Fatalf("seed %d: key %d = %d/%d, want %d/%d", seed, got.key(i), got.val(i), got.mgr(i), model[got.key(i)], mgrs[got.key(i)])
			}
		}
	}
}

// mergeInMemory runs mergeStream over old and the changes, through a
// temporary file, and reads the result back.
func mergeInMemory(t *testing.T, old *fpStore, sets []fpEntry, removes []uint64) *fpStore {
	t.Helper()
	er, err := newEntryReader("old", storeMagic, storeEntry, bytes.NewReader(encodeBlob(storeMagic, old.n, old.body)))
	if err != nil {
		t.Fatal(err)
	}
	w, err := newStoreWriter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.discard()
	if _, err := mergeStream(er, mergeOps(sets, removes), w); err != nil {
		t.Fatal(err)
	}
	size, err := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	got, err := readStore("new", io.NewSectionReader(w.f, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 5)) }

func appendEntry(b []byte, k, v, mgr uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, k), v), mgr)
}

// TestMergeStreamsTheStore: a merge of a few changes into a store of
// 200,000 users allocates far less than the store (4.8 MB): the store is
// streamed from its blob into a temporary file and from there to the new
// blob, never held (the fake blob store's own copy of the new blob aside).
// Merging in memory, as before, allocated the old store, the new one and
// its framed copy: three times the store.
func TestMergeStreamsTheStore(t *testing.T) {
	ctx := context.Background()
	b := newMemBlobs()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	log := (&Engine{}).log()
	dir := t.TempDir()
	const users = 200000
	sets := make([]fpEntry, users)
	for i := range sets {
		sets[i] = fpEntry{key: fpKey(fmt.Sprint(i)), val: uint64(i) + 1, mgr: 7}
	}
	if err := mergeSlices(ctx, b, log, now, dir, "job1", sets, nil); err != nil {
		t.Fatal(err)
	}
	sets = nil
	storeSize := uint64(headerSize + users*storeEntry)
	changes := []fpEntry{{key: fpKey("new"), val: 1}, {key: fpKey("5"), val: 99}}
	gone := []uint64{fpKey("6")}
	got := testenv.Allocated(func() {
		if err := mergeSlices(ctx, b, log, now, dir, "job2", changes, gone); err != nil {
			t.Fatal(err)
		}
	})
	if max := storeSize + 1<<20; got > max {
		t.Errorf("the merge allocated %d bytes; a streaming one needs at most the new blob's copy in the fake (%d) + 1 MiB", got, storeSize)
	}
	s := storeOf(t, b)
	if len(s) != users || s[fpKey("new")] != 1 || s[fpKey("5")] != 99 || s[fpKey("4")] != 5 {
		t.Errorf("store after the merge: %d users, new=%d 5=%d 4=%d", len(s), s[fpKey("new")], s[fpKey("5")], s[fpKey("4")])
	}
	if _, ok := s[fpKey("6")]; ok {
		t.Error("user 6 was not removed")
	}
}
