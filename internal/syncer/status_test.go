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

	"github.com/profilesync/profilesync/internal/profile"
)

type fakeJobs struct {
	states map[string][]profile.Job // successive answers per job; the last repeats
	calls  map[string]int
	err    error
}

func (f *fakeJobs) Job(_ context.Context, id string) (profile.Job, error) {
	if f.err != nil {
		return profile.Job{}, f.err
	}
	list, ok := f.states[id]
	if !ok {
		return profile.Job{}, fmt.Errorf("job %s: %w", id, fs.ErrNotExist)
	}
	n := f.calls[id]
	f.calls[id]++
	return list[min(n, len(list)-1)], nil
}

type fakeLogs map[string]string

func (f fakeLogs) LogLines(_ context.Context, folder string, fn func(string) error) error {
	text, ok := f[folder]
	if !ok {
		return fs.ErrNotExist
	}
	for _, l := range strings.Split(text, "\n") {
		if err := fn(l); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBlobs) Delete(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.data, name)
	delete(b.etags, name)
	return nil
}

type pollFixture struct {
	p     *Poller
	jobs  *fakeJobs
	blobs *memBlobs
	sched *sched
	clock time.Time
}

func newPollFixture(t *testing.T, job string, answers ...profile.Job) *pollFixture {
	t.Helper()
	f := &pollFixture{
		jobs:  &fakeJobs{states: map[string][]profile.Job{job: answers}, calls: map[string]int{}},
		blobs: newMemBlobs(),
		sched: &sched{},
		clock: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
	}
	f.p = &Poller{
		Jobs: f.jobs, Blobs: f.blobs, Scheduler: f.sched,
		Logs: fakeLogs{
			"https://t/sites/s/Shared Documents/" + job: "IdentityNotResolvable\tghost@contoso.com\tUser identity cannot be resolved\n" +
				"MissingIdentity\t\tThe identity is missing for the user object\r\n\n" +
				"InvalidProperty\tu2\tProperty 'X' is not mapped to any property in the user profile application.",
		},
		Backoff: []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute},
		MaxAge:  time.Hour,
		Now:     func() time.Time { return f.clock },
	}
	run, _ := json.Marshal(Run{ID: "run1", Status: StatusSucceeded, JobIDs: []string{job}})
	f.blobs.put(RunsPrefix+"run1.json", run)
	ps, _ := json.Marshal(PollState{JobID: job, RunID: "run1", QueuedAt: f.clock, Attempt: 1})
	f.blobs.put(PollsPrefix+job+".json", ps)
	return f
}

// deliver takes the newest scheduled message as the host would and polls with it.
func (f *pollFixture) deliver(t *testing.T, msg PollMessage) Outcome {
	t.Helper()
	out, err := f.p.Poll(context.Background(), msg)
	if err != nil {
		t.Fatalf("poll %+v: %v", msg, err)
	}
	return out
}

func (f *pollFixture) lastMsg(t *testing.T) PollMessage {
	t.Helper()
	var m PollMessage
	if err := json.Unmarshal(f.sched.msgs[len(f.sched.msgs)-1], &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *pollFixture) record(t *testing.T, job string) JobRecord {
	t.Helper()
	var r JobRecord
	data, ok := f.blobs.data[JobsPrefix+job+".json"]
	if !ok {
		t.Fatalf("no record for job %s", job)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPollFollowsEveryStateWithBackoff(t *testing.T) {
	const id = "11111111-2222-3333-4444-555555555555"
	f := newPollFixture(t, id,
		profile.Job{ID: id, State: profile.Submitted},
		profile.Job{ID: id, State: profile.Processing},
		profile.Job{ID: id, State: profile.Queued},
		profile.Job{ID: id, State: profile.Unknown},
		profile.Job{ID: id, State: profile.Succeeded, SourceURI: "https://t/f.json"},
	)
	msg := PollMessage{JobID: id, RunID: "run1", QueuedAt: f.clock, Attempt: 1}
	wantDelays := []time.Duration{2 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	for i, want := range wantDelays {
		out := f.deliver(t, msg)
		if out.NextPoll != want || out.Recorded != nil {
			t.Fatalf("poll %d: next %v recorded %v, want next %v", i+1, out.NextPoll, out.Recorded, want)
		}
		if f.sched.delays[len(f.sched.delays)-1] != want {
			t.Fatalf("scheduled with delay %v, want %v", f.sched.delays[len(f.sched.delays)-1], want)
		}
		msg = f.lastMsg(t)
		if msg.Attempt != i+2 || msg.RunID != "run1" {
			t.Fatalf("next message %+v", msg)
		}
		f.clock = f.clock.Add(want)
	}
	out := f.deliver(t, msg)
	if out.Recorded == nil || out.Recorded.State != "Succeeded" {
		t.Fatalf("final poll %+v", out)
	}
	rec := f.record(t, id)
	if rec.Attempts != 5 || rec.RunID != "run1" || rec.SourceURI != "https://t/f.json" || !rec.LastPoll.After(rec.FirstPoll) {
		t.Errorf("record %+v", rec)
	}
	if _, ok := f.blobs.data[PollsPrefix+id+".json"]; ok {
		t.Error("poll state kept after the job was recorded")
	}
	var run Run
	json.Unmarshal(f.blobs.data[RunsPrefix+"run1.json"], &run)
	if len(run.JobResults) != 1 || run.JobResults[0].State != "Succeeded" || run.JobResults[0].Record != JobsPrefix+id+".json" {
		t.Errorf("run not linked: %+v", run.JobResults)
	}
	// The same message again, or an older one, changes nothing.
	n := len(f.sched.msgs)
	before := string(f.blobs.data[JobsPrefix+id+".json"])
	for _, m := range []PollMessage{msg, {JobID: id, Attempt: 2}} {
		if out := f.deliver(t, m); !out.Duplicate {
			t.Errorf("redelivery %+v not treated as a duplicate: %+v", m, out)
		}
	}
	if len(f.sched.msgs) != n || string(f.blobs.data[JobsPrefix+id+".json"]) != before {
		t.Error("a duplicate message changed something")
	}
}

func TestPollDuplicateBeforeTheEndSchedulesOnce(t *testing.T) {
	const id = "j"
	f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Processing})
	msg := PollMessage{JobID: id, RunID: "run1", Attempt: 1}
	f.deliver(t, msg)
	if out := f.deliver(t, msg); !out.Duplicate {
		t.Errorf("second delivery of attempt 1: %+v", out)
	}
	if len(f.sched.msgs) != 1 {
		t.Errorf("%d polls scheduled for one message delivered twice", len(f.sched.msgs))
	}
}

func TestPollRecordsErrorsWithAndWithoutUserLines(t *testing.T) {
	t.Run("job-level error, no log folder", func(t *testing.T) {
		const id = "a"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.InvalidDataFile, ErrorMessage: "DataFileNotJson"})
		out := f.deliver(t, PollMessage{JobID: id, Attempt: 1})
		rec := f.record(t, id)
		if out.Recorded == nil || rec.State != "Error" || rec.ErrorName != "InvalidDataFile" || rec.ErrorCode != 23 || len(rec.Results) != 0 {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("ImportCompleteWithError with user lines", func(t *testing.T) {
		const id = "b"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "https://t/sites/s/Shared Documents/" + id})
		f.deliver(t, PollMessage{JobID: id, Attempt: 1})
		rec := f.record(t, id)
		want := []UserResult{
			{"IdentityNotResolvable", "ghost@contoso.com", "User identity cannot be resolved"},
			{"MissingIdentity", "", "The identity is missing for the user object"},
			{"InvalidProperty", "u2", "Property 'X' is not mapped to any property in the user profile application."},
		}
		if fmt.Sprint(rec.Results) != fmt.Sprint(want) || rec.ResultCounts["MissingIdentity"] != 1 || rec.ErrorName != "ImportCompleteWithError" {
			t.Errorf("results %+v counts %v", rec.Results, rec.ResultCounts)
		}
	})
	t.Run("log folder missing", func(t *testing.T) {
		const id = "c"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "https://t/gone"})
		f.deliver(t, PollMessage{JobID: id, Attempt: 1})
		if rec := f.record(t, id); !strings.Contains(rec.LogError, "does not exist") {
			t.Errorf("record %+v", rec)
		}
	})
}

func TestPollTimesOut(t *testing.T) {
	const id = "slow"
	f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Processing})
	msg := PollMessage{JobID: id, Attempt: 1}
	f.deliver(t, msg)
	f.clock = f.clock.Add(61 * time.Minute)
	out := f.deliver(t, f.lastMsg(t))
	if out.Recorded == nil || out.Recorded.State != "TimedOut" || !strings.Contains(out.Recorded.ErrorMessage, "Processing") {
		t.Fatalf("outcome %+v", out)
	}
	if len(f.sched.msgs) != 1 {
		t.Errorf("kept polling after the timeout: %d messages", len(f.sched.msgs))
	}
	if _, ok := f.blobs.data[PollsPrefix+id+".json"]; ok {
		t.Error("a timed-out job still counts as pending")
	}
}

func TestPollDropsWhatCanNeverSucceed(t *testing.T) {
	for _, body := range []string{`not json`, `{"attempt":3}`, `{"jobId":"  "}`} {
		if _, err := ParsePollMessage([]byte(body)); !errors.Is(err, ErrDrop) {
			t.Errorf("ParsePollMessage(%q) = %v, want ErrDrop", body, err)
		}
	}
	f := newPollFixture(t, "known", profile.Job{ID: "known", State: profile.Processing})
	if _, err := f.p.Poll(context.Background(), PollMessage{JobID: "stranger", Attempt: 1}); !errors.Is(err, ErrDrop) {
		t.Errorf("unknown job: %v, want ErrDrop", err)
	}
}

// TestJobSharePointDoesNotKnowIsNotDropped: a job of ours SharePoint does
// not know is polled again for a while (it may not be visible yet), then
// counts as lost and is re-sent.
func TestJobSharePointDoesNotKnowIsNotDropped(t *testing.T) {
	f := newPollFixture(t, "known", profile.Job{ID: "known", State: profile.Processing})
	delete(f.jobs.states, "known")
	rq := &fakeRequeue{}
	f.p.Requeue = rq
	ps, _ := json.Marshal(PollState{JobID: "known", RunID: "run1", QueuedAt: f.clock, Attempt: 1,
		SourceURI: "https://t/sites/s/Shared Documents/f.json", IDType: "CloudId", PropertyMap: map[string]string{"A": "A"}})
	f.blobs.put(PollsPrefix+"known.json", ps)
	out := f.deliver(t, PollMessage{JobID: "known", RunID: "run1", Attempt: 1})
	if out.NextPoll == 0 || out.Recorded != nil {
		t.Fatalf("a job unknown right after queueing: %+v, want another poll", out)
	}
	f.clock = f.clock.Add(2 * time.Hour)
	out = f.deliver(t, f.lastMsg(t))
	if out.Recorded == nil || out.Recorded.State != "TimedOut" || len(rq.calls) != 1 || !strings.Contains(out.Recorded.ErrorMessage, "does not know") {
		t.Fatalf("a job unknown after 2 hours: %+v, requeues %v", out.Recorded, rq.calls)
	}
}

func TestPollTransientErrorsAreReturned(t *testing.T) {
	f := newPollFixture(t, "x", profile.Job{ID: "x", State: profile.Processing})
	f.jobs.err = errors.New("503 server too busy")
	_, err := f.p.Poll(context.Background(), PollMessage{JobID: "x", Attempt: 1})
	if err == nil || errors.Is(err, ErrDrop) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
	if len(f.sched.msgs) != 0 {
		t.Error("scheduled a poll although SharePoint did not answer")
	}
}

func TestDelay(t *testing.T) {
	b := []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute}
	for attempt, want := range map[int]time.Duration{0: time.Minute, 1: 2 * time.Minute, 2: 5 * time.Minute, 9: 5 * time.Minute} {
		if got := Delay(b, attempt); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	for line, want := range map[string]UserResult{
		"IdentityNotResolvable\tx@y\tUser identity cannot be resolved": {"IdentityNotResolvable", "x@y", "User identity cannot be resolved"},
		"DataFileNotJson\t\tAfter parsing a value":                     {"DataFileNotJson", "", "After parsing a value"},
		"MissingIdentity - The identity is missing":                    {"MissingIdentity", "", "The identity is missing"},
	} {
		got, ok := ParseLogLine(line)
		if !ok || got != want {
			t.Errorf("ParseLogLine(%q) = %+v, want %+v", line, got, want)
		}
	}
	if _, ok := ParseLogLine("  \r"); ok {
		t.Error("blank line parsed")
	}
}

func TestSyncWaitsForUnfinishedImport(t *testing.T) {
	f := newFixture(t)
	jobs := &fakeJobs{states: map[string][]profile.Job{}, calls: map[string]int{}}
	f.eng.Jobs = jobs
	f.eng.Pending = f.blobs.lister()
	ctx := context.Background()
	run, err := f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := run.JobIDs[0]
	if _, ok := f.blobs.data[PollsPrefix+id+".json"]; !ok {
		t.Fatal("the sync did not record its job as pending")
	}
	jobs.states[id] = []profile.Job{{ID: id, State: profile.Processing}}
	_, err = f.eng.Sync(ctx, Options{})
	if !errors.Is(err, ErrImportPending) || !strings.Contains(err.Error(), id) {
		t.Fatalf("err = %v, want ErrImportPending naming %s", err, id)
	}
	if len(f.src.calls) != 1 {
		t.Error("read Graph while an import was pending")
	}
	if _, err := f.eng.Sync(ctx, Options{AllowOverlap: true}); err != nil {
		t.Fatalf("AllowOverlap: %v", err)
	}
	jobs.states[id] = []profile.Job{{ID: id, State: profile.Succeeded}}
	delete(f.blobs.data, PollsPrefix+run.JobIDs[0]+".json") // (the overlap run's own job)
	for k := range f.blobs.data {
		if strings.HasPrefix(k, PollsPrefix) && k != PollsPrefix+id+".json" {
			delete(f.blobs.data, k)
		}
	}
	if _, err := f.eng.Sync(ctx, Options{}); err != nil {
		t.Fatalf("after the job finished: %v", err)
	}
}

type listerFunc func(prefix string) []string

func (l listerFunc) List(_ context.Context, prefix string) ([]string, error) { return l(prefix), nil }

func TestRecoverPollsReschedulesOnlyLostFirstPolls(t *testing.T) {
	f := newFixture(t)
	f.eng.Pending = f.blobs.lister()
	ctx := context.Background()
	run, err := f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ps PollState
	json.Unmarshal(f.blobs.data[PollsPrefix+run.JobIDs[0]+".json"], &ps)
	if !ps.Scheduled {
		t.Fatalf("a scheduled first poll is not marked: %+v", ps)
	}
	// A job whose first poll never reached the queue (the process died in between), an hour ago,
	// and one queued just now.
	lost, _ := json.Marshal(PollState{JobID: "lost", RunID: "r0", QueuedAt: f.eng.Now().Add(-time.Hour), Attempt: 1})
	f.blobs.put(PollsPrefix+"lost.json", lost)
	fresh, _ := json.Marshal(PollState{JobID: "fresh", RunID: "r1", QueuedAt: f.eng.Now(), Attempt: 1})
	f.blobs.put(PollsPrefix+"fresh.json", fresh)
	polls := len(f.sched.msgs)
	n, err := f.eng.RecoverPolls(ctx)
	if err != nil || n != 1 || len(f.sched.msgs) != polls+1 {
		t.Fatalf("recovered %d (%v), messages %d -> %d", n, err, polls, len(f.sched.msgs))
	}
	var m PollMessage
	json.Unmarshal(f.sched.msgs[len(f.sched.msgs)-1], &m)
	if m.JobID != "lost" || m.Attempt != 1 || f.sched.delays[len(f.sched.delays)-1] != 0 {
		t.Errorf("recovered poll %+v", m)
	}
	if n, _ := f.eng.RecoverPolls(ctx); n != 0 {
		t.Errorf("recovered again: %d", n)
	}
}

// lister lists the names in b under a prefix, sorted.
func (b *memBlobs) lister() Lister {
	return listerFunc(func(prefix string) []string {
		b.mu.Lock()
		defer b.mu.Unlock()
		var out []string
		for k := range b.data {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	})
}

type fakeRequeue struct {
	calls []string // source URIs
	maps  []map[string]string
	err   error
}

func (f *fakeRequeue) QueueImport(_ context.Context, idType profile.IDType, idProp string, pm map[string]string, src string) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	f.calls = append(f.calls, src)
	f.maps = append(f.maps, pm)
	return fmt.Sprintf("requeued-%d", len(f.calls)), nil
}

func (f *pollFixture) stateDoc(t *testing.T) State {
	t.Helper()
	var st State
	if data, ok := f.blobs.data[StateBlob]; ok {
		if err := json.Unmarshal(data, &st); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestFailedJobsAreResent: no failure of an import loses a change.
func TestFailedJobsAreResent(t *testing.T) {
	withSource := func(f *pollFixture, job string, requeues int) {
		ps, _ := json.Marshal(PollState{JobID: job, RunID: "run1", QueuedAt: f.clock, Attempt: 1, Requeues: requeues,
			SourceURI: "https://t/sites/s/Shared Documents/f.json", IDType: "CloudId", PropertyMap: map[string]string{"A": "A"}})
		f.blobs.put(PollsPrefix+job+".json", ps)
	}
	t.Run("InternalError: the same file is queued again and followed", func(t *testing.T) {
		const id = "ie"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.InternalError})
		rq := &fakeRequeue{}
		f.p.Requeue = rq
		withSource(f, id, 0)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		rec := f.record(t, id)
		if len(rq.calls) != 1 || rq.calls[0] != "https://t/sites/s/Shared Documents/f.json" || rq.maps[0]["A"] != "A" {
			t.Fatalf("requeue calls %v %v", rq.calls, rq.maps)
		}
		if rec.RequeuedAs != "requeued-1" || !strings.Contains(rec.Resent, "requeued as job requeued-1") {
			t.Errorf("record says %q / %q", rec.RequeuedAs, rec.Resent)
		}
		var nps PollState
		if err := json.Unmarshal(f.blobs.data[PollsPrefix+"requeued-1.json"], &nps); err != nil || nps.Requeues != 1 || !nps.Scheduled || nps.SourceURI == "" {
			t.Errorf("new job's poll state %+v (%v)", nps, err)
		}
		if m := f.lastMsg(t); m.JobID != "requeued-1" || m.RunID != "run1" {
			t.Errorf("first poll of the new job: %+v", m)
		}
		var run Run
		json.Unmarshal(f.blobs.data[RunsPrefix+"run1.json"], &run)
		if len(run.JobResults) != 1 || !strings.Contains(run.JobResults[0].Resent, "requeued-1") {
			t.Errorf("run record does not say what was re-sent: %+v", run.JobResults)
		}
		if st := f.stateDoc(t); st.FullSync != "" {
			t.Errorf("a requeue also made the next run full: %+v", st)
		}
	})
	t.Run("requeues exhausted: next run is full", func(t *testing.T) {
		const id = "ie3"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.DataFileNotExist})
		f.p.Requeue = &fakeRequeue{}
		withSource(f, id, 3)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		if st := f.stateDoc(t); !strings.Contains(st.FullSync, "DataFileNotExist") {
			t.Errorf("state %+v, want the next run full", st)
		}
		if rec := f.record(t, id); !strings.HasPrefix(rec.Resent, "next run is full") {
			t.Errorf("record says %q", rec.Resent)
		}
	})
	t.Run("a refused file: next run is full, state kept otherwise", func(t *testing.T) {
		const id = "bad"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.InvalidDataFile})
		f.p.Requeue = &fakeRequeue{}
		withSource(f, id, 0)
		f.blobs.put(StateBlob, []byte(`{"deltaLink":"https://g/next","mappingHash":"h"}`))
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		st := f.stateDoc(t)
		if st.FullSync == "" || st.DeltaLink != "https://g/next" || st.MappingHash != "h" {
			t.Errorf("state %+v", st)
		}
	})
	t.Run("timed out: queued again", func(t *testing.T) {
		const id = "slow"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Processing})
		rq := &fakeRequeue{}
		f.p.Requeue = rq
		withSource(f, id, 0)
		f.clock = f.clock.Add(2 * time.Hour)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		if len(rq.calls) != 1 || f.record(t, id).RequeuedAs == "" {
			t.Errorf("timed-out job not queued again: %v", rq.calls)
		}
	})
	t.Run("users with errors are carried, counted, and given up on", func(t *testing.T) {
		const id = "b"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "https://t/sites/s/Shared Documents/" + id})
		withSource(f, id, 0)
		// run1 had already sent u2 again three times.
		run, _ := json.Marshal(Run{ID: "run1", Status: StatusSucceeded, JobIDs: []string{id}, Resent: []ResendUser{{ID: "u2", Tries: 3}}})
		f.blobs.put(RunsPrefix+"run1.json", run)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		st := f.stateDoc(t)
		if len(st.Resend) != 1 || st.Resend[0].ID != "ghost@contoso.com" || st.FullSync != "" {
			t.Errorf("state %+v, want ghost carried and u2 given up", st)
		}
		if rec := f.record(t, id); !strings.Contains(rec.Resent, "1 user(s) carried") || !strings.Contains(rec.Resent, "u2") {
			t.Errorf("record says %q", rec.Resent)
		}
	})
	t.Run("e-mail identities cannot be read again: next run is full", func(t *testing.T) {
		const id = "b"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "https://t/sites/s/Shared Documents/" + id})
		ps, _ := json.Marshal(PollState{JobID: id, RunID: "run1", QueuedAt: f.clock, Attempt: 1, IDType: "Email"})
		f.blobs.put(PollsPrefix+id+".json", ps)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		if st := f.stateDoc(t); st.FullSync == "" || len(st.Resend) != 0 {
			t.Errorf("state %+v", st)
		}
	})
	t.Run("a failed requeue is retried by the host", func(t *testing.T) {
		const id = "ie"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.InternalError})
		f.p.Requeue = &fakeRequeue{err: errors.New("503")}
		withSource(f, id, 0)
		if _, err := f.p.Poll(context.Background(), PollMessage{JobID: id, RunID: "run1", Attempt: 1}); err == nil {
			t.Fatal("want an error so the message is delivered again")
		}
		if _, ok := f.blobs.data[JobsPrefix+id+".json"]; ok {
			t.Error("job recorded although its re-send failed")
		}
	})
}

// TestNothingBlocksTheSyncForever: a dead poll chain is revived, a job
// too old or unreadable does not block later syncs.
func TestNothingBlocksTheSyncForever(t *testing.T) {
	f := newFixture(t)
	f.eng.Pending = f.blobs.lister()
	ctx := context.Background()
	now := f.eng.Now()
	// A job polled 3 hours ago for the 4th time whose next message died
	// (poison queue), and one polled 10 minutes ago.
	dead, _ := json.Marshal(PollState{JobID: "dead", RunID: "r0", QueuedAt: now.Add(-5 * time.Hour), Attempt: 5, Scheduled: true, LastPoll: now.Add(-3 * time.Hour)})
	f.blobs.put(PollsPrefix+"dead.json", dead)
	alive, _ := json.Marshal(PollState{JobID: "alive", RunID: "r1", QueuedAt: now.Add(-5 * time.Hour), Attempt: 5, Scheduled: true, LastPoll: now.Add(-10 * time.Minute)})
	f.blobs.put(PollsPrefix+"alive.json", alive)
	n, err := f.eng.RecoverPolls(ctx)
	if err != nil || n != 1 {
		t.Fatalf("revived %d (%v), want 1", n, err)
	}
	var m PollMessage
	json.Unmarshal(f.sched.msgs[len(f.sched.msgs)-1], &m)
	if m.JobID != "dead" || m.Attempt != 5 {
		t.Errorf("revived poll %+v, want job dead at attempt 5", m)
	}
	if n, _ := f.eng.RecoverPolls(ctx); n != 0 {
		t.Errorf("revived again at once: %d", n)
	}
	// The revived message is accepted by the poller (not taken for stale).
	p := &Poller{Jobs: &fakeJobs{states: map[string][]profile.Job{"dead": {{ID: "dead", State: profile.Succeeded}}}, calls: map[string]int{}},
		Blobs: f.blobs, Scheduler: f.sched, Now: f.eng.Now}
	if out, err := p.Poll(ctx, m); err != nil || out.Recorded == nil {
		t.Errorf("revived poll: %+v %v", out, err)
	}

	// Pending check: "alive" is stuck in Processing but 5 hours old with a
	// 4-hour limit; "broken" cannot be read. Neither blocks the sync.
	f.eng.PendingMaxAge = 4 * time.Hour
	broken, _ := json.Marshal(PollState{JobID: "broken", QueuedAt: now, Attempt: 1})
	f.blobs.put(PollsPrefix+"broken.json", broken)
	f.eng.Jobs = jobsFunc(func(id string) (profile.Job, error) {
		if id == "broken" {
			return profile.Job{}, errors.New("csom: 500")
		}
		return profile.Job{ID: id, State: profile.Processing}, nil
	})
	if _, err := f.eng.Sync(ctx, Options{}); err != nil {
		t.Fatalf("an old or unreadable job blocked the sync: %v", err)
	}
	// A young unfinished job still blocks.
	young, _ := json.Marshal(PollState{JobID: "young", QueuedAt: f.eng.Now(), Attempt: 1})
	f.blobs.put(PollsPrefix+"young.json", young)
	if _, err := f.eng.Sync(ctx, Options{}); !errors.Is(err, ErrImportPending) || !strings.Contains(err.Error(), "young") {
		t.Errorf("err = %v, want the young job to block", err)
	}
}

type jobsFunc func(string) (profile.Job, error)

func (f jobsFunc) Job(_ context.Context, id string) (profile.Job, error) { return f(id) }

// TestJobRecordStaysReadable: a log whose lines escape to six bytes a
// character in JSON would make a record over MaxJobBytes, which no reader
// would accept (BlobLimit); the poller keeps fewer results instead, says
// so, and still counts every line.
func TestJobRecordStaysReadable(t *testing.T) {
	const id = "d"
	f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: "https://t/sites/s/Shared Documents/" + id})
	var log strings.Builder
	for i := range MaxResults {
		fmt.Fprintf(&log, "InvalidProperty\tu%d\t%s\n", i, strings.Repeat("\x01", MaxLogLine-40))
	}
	f.p.Logs = fakeLogs{"https://t/sites/s/Shared Documents/" + id: log.String()}
	f.deliver(t, PollMessage{JobID: id, Attempt: 1})
	data := f.blobs.data[JobsPrefix+id+".json"]
	rec := f.record(t, id)
	if len(data) > MaxJobBytes || len(data) < MaxJobBytes/4 {
		t.Errorf("job record of %d bytes, want at most MaxJobBytes (%d) and not far below", len(data), MaxJobBytes)
	}
	if !rec.Truncated || len(rec.Results) == 0 || len(rec.Results) >= MaxResults || rec.ResultCounts["InvalidProperty"] != MaxResults {
		t.Errorf("truncated %v, %d results, counts %v", rec.Truncated, len(rec.Results), rec.ResultCounts)
	}
}
