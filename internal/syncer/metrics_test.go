package syncer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

// logBuffer is a concurrency-safe buffer for a JSON logger.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON lines logged so far, each decoded.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("a log line is not JSON: %v\n%s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// events returns the lines whose msg is name.
func (l *logBuffer) events(t *testing.T, name string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range l.lines(t) {
		if m["msg"] == name {
			out = append(out, m)
		}
	}
	return out
}

// quietLogger logs errors only: metric events must get through anyway.
func quietLogger(buf *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelError}))
}

// documentedFields reads the field names of an event's table in the
// README's "Metrics" section.
func documentedFields(t *testing.T, event string) []string {
	t.Helper()
	return testenv.EventFields(t, "../../README.md", event)
}

// checkKeys fails unless ev has exactly the documented fields.
func checkKeys(t *testing.T, ev map[string]any, event string) {
	t.Helper()
	doc := documentedFields(t, event)
	var got []string
	for k := range ev {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Clone(doc)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s carries %v\nREADME documents %v", event, got, want)
	}
}

func num(t *testing.T, ev map[string]any, k string) int64 {
	t.Helper()
	v, ok := ev[k].(float64)
	if !ok {
		t.Fatalf("%s = %#v, want a number", k, ev[k])
	}
	return int64(v)
}

func TestRunEventCarriesTheRunsNumbers(t *testing.T) {
	f := newFixture(t)
	var buf logBuffer
	f.eng.Log, f.eng.Metrics = quietLogger(&buf), quietLogger(&buf)
	run, err := f.eng.Sync(context.Background(), Options{Trigger: "timer"})
	if err != nil {
		t.Fatal(err)
	}
	evs := buf.events(t, RunEvent)
	if len(evs) != 1 {
		t.Fatalf("%d %s events, want 1: %v", len(evs), RunEvent, buf.lines(t))
	}
	if n := len(buf.lines(t)); n != 1 {
		t.Errorf("%d lines at level error, want only the metric event", n)
	}
	ev := evs[0]
	checkKeys(t, ev, RunEvent)
	for k, want := range map[string]any{
		"level": "INFO", "runId": run.ID, "trigger": "timer", "mode": "full", "status": "succeeded", "errorClass": "",
		"error": "", "whatIf": false, "deltaLinkSaved": true, "reason": run.Reason,
	} {
		if ev[k] != want {
			t.Errorf("%s = %#v, want %#v", k, ev[k], want)
		}
	}
	for k, want := range map[string]int64{
		"schemaVersion": MetricsSchema, "usersRead": 4, "usersSent": 1, "usersUnchanged": 0, "usersSkipped": 3,
		"skippedDeleted": 1, "skippedGuest": 1, "skippedDisabled": 1, "skippedNoId": 0, "skippedOther": 0,
		"usersRepeated": 0, "usersResent": 0, "files": 1, "bytes": run.Files[0].Bytes, "jobsQueued": 1, "totalMs": run.DurationMS,
	} {
		if got := num(t, ev, k); got != want {
			t.Errorf("%s = %d, want %d", k, got, want)
		}
	}
	phases := int64(0)
	for _, k := range []string{"graphReadMs", "uploadMs", "queueMs"} {
		d := num(t, ev, k)
		if d < 0 {
			t.Errorf("%s = %d", k, d)
		}
		phases += d
	}
	if phases > run.DurationMS {
		t.Errorf("phases take %d ms, longer than the run's %d ms", phases, run.DurationMS)
	}

	// Without a Metrics logger (the command line's engine), no event.
	g := newFixture(t)
	var logs logBuffer
	g.eng.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	if _, err := g.eng.Sync(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if evs := logs.events(t, RunEvent); len(evs) != 0 || len(logs.lines(t)) == 0 {
		t.Errorf("no Metrics logger, yet %d events (%d lines)", len(evs), len(logs.lines(t)))
	}
}

func TestRunEventSaysWhereARunFailed(t *testing.T) {
	for _, tc := range []struct {
		class string
		setup func(f *fixture)
	}{
		{classUpload, func(f *fixture) { f.tgt.failUp = errors.New("503 server too busy") }},
		{classQueue, func(f *fixture) { f.tgt.failQueue = errors.New("Property Names [X] are editable by user.") }},
		{classGraph, func(f *fixture) { f.src.errFor["link1"] = errors.New("graph: 500") }},
		{classNoMapping, func(f *fixture) { delete(f.blobs.data, MappingBlob) }},
		{classMappingInvalid, func(f *fixture) { f.blobs.put(MappingBlob, []byte(`{"idType":"Upn","properties":{"X":"mobilPhone"}}`)) }},
		{classConflict, func(f *fixture) {
			src := f.src
			f.eng.Source = sourceFunc(func(ctx context.Context, sel profile.Selection, link string, fn func(profile.User) error) (string, error) {
				f.blobs.put(StateBlob, []byte(`{"deltaLink":"other"}`))
				return src.Delta(ctx, sel, link, fn)
			})
		}},
	} {
		t.Run(tc.class, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			if _, err := f.eng.Sync(ctx, Options{}); err != nil {
				t.Fatal(err)
			}
			var buf logBuffer
			f.eng.Log, f.eng.Metrics = quietLogger(&buf), quietLogger(&buf)
			tc.setup(f)
			run, err := f.eng.Sync(ctx, Options{})
			if err == nil || run == nil {
				t.Fatalf("run %v err %v, want a failed run", run, err)
			}
			evs := buf.events(t, RunEvent)
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1", len(evs))
			}
			ev := evs[0]
			checkKeys(t, ev, RunEvent)
			if ev["status"] != "failed" || ev["errorClass"] != tc.class || ev["error"] != firstLine(run.Error, 500) || ev["error"] == "" {
				t.Errorf("status %v errorClass %v error %q; want failed, %s, %q", ev["status"], ev["errorClass"], ev["error"], tc.class, run.Error)
			}
			if ev["deltaLinkSaved"] != false || num(t, ev, "jobsQueued") != int64(len(run.JobIDs)) || num(t, ev, "files") != int64(len(run.Files)) {
				t.Errorf("event %v for run %+v", ev, run)
			}
		})
	}
}

func TestErrorClass(t *testing.T) {
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	badMapping := fmt.Errorf("invalid mapping.json: %w", errors.Join(&mapping.Problem{Path: "idType", Message: "bad"}))
	for _, tc := range []struct {
		ctx    context.Context
		err    error
		failed string
		want   string
	}{
		{ctx, nil, "", ""},
		{ctx, fmt.Errorf("x: %w", ErrImportPending), "", classImportPending},
		{ctx, fmt.Errorf("%w: reading: boom", ErrLockLost), classGraph, classLockLost},
		{ctx, fmt.Errorf("x: %w", ErrNoMapping), "", classNoMapping},
		{ctx, badMapping, "", classMappingInvalid},
		{done, errors.New("reading users from Graph: context canceled"), classGraph, classCanceled},
		{ctx, errors.New("uploading: 503"), classUpload, classUpload},
		{ctx, fmt.Errorf("saving the delta link: %w", profile.ErrStale), "", classConflict},
		{ctx, errors.New("writing the run record: 500"), "", classStorage},
	} {
		if got := errorClass(tc.ctx, tc.err, tc.failed); got != tc.want {
			t.Errorf("errorClass(%v, %q) = %q, want %q", tc.err, tc.failed, got, tc.want)
		}
	}
	if got := firstLine("one\ntwo", 500); got != "one" {
		t.Errorf("firstLine = %q", got)
	}
	if got := firstLine(strings.Repeat("é", 300), 501); got != strings.Repeat("é", 250)+"…" {
		t.Errorf("firstLine cut inside a rune: %q", got)
	}
}

func TestJobEventOncePerFinishedJob(t *testing.T) {
	const folder = "https://t/sites/s/Shared Documents/"
	withFile := func(f *pollFixture, job string, rows int) {
		run, _ := json.Marshal(Run{ID: "run1", Status: StatusSucceeded, JobIDs: []string{job},
			Files: []FileRecord{{Name: "f.json", URL: folder + "f.json", Records: rows, JobID: job}}})
		f.blobs.put(RunsPrefix+"run1.json", run)
	}
	t.Run("completed with per-user errors", func(t *testing.T) {
		const id = "b"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.ImportCompleteWithError, LogFolderURI: folder + id})
		withFile(f, id, 10)
		var buf logBuffer
		f.p.Log, f.p.Metrics = quietLogger(&buf), quietLogger(&buf)
		f.clock = f.clock.Add(90 * time.Second)
		msg := PollMessage{JobID: id, RunID: "run1", Attempt: 1}
		f.deliver(t, msg)
		f.deliver(t, msg) // redelivered: the job is recorded already
		evs := buf.events(t, JobEvent)
		if len(evs) != 1 {
			t.Fatalf("%d %s events, want 1", len(evs), JobEvent)
		}
		ev := evs[0]
		checkKeys(t, ev, JobEvent)
		for k, want := range map[string]any{"jobId": id, "runId": "run1", "state": "Error", "error": "ImportCompleteWithError", "resent": true, "resentAs": resentNextRun} {
			if ev[k] != want {
				t.Errorf("%s = %#v, want %#v", k, ev[k], want)
			}
		}
		// Three log lines: two named users and one line without an identity.
		for k, want := range map[string]int64{"schemaVersion": 1, "errorCode": 30, "durationMs": 90000, "polls": 1, "usersInFile": 10,
			"usersWithErrors": 3, "errorLines": 3, "usersImported": 7, "requeues": 0} {
			if got := num(t, ev, k); got != want {
				t.Errorf("%s = %d, want %d", k, got, want)
			}
		}
	})
	t.Run("succeeded", func(t *testing.T) {
		const id = "s"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Succeeded})
		withFile(f, id, 12)
		var buf logBuffer
		f.p.Log, f.p.Metrics = quietLogger(&buf), quietLogger(&buf)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		evs := buf.events(t, JobEvent)
		if len(evs) != 1 || evs[0]["state"] != "Succeeded" || evs[0]["error"] != "NoError" || num(t, evs[0], "usersImported") != 12 ||
			num(t, evs[0], "usersWithErrors") != 0 || evs[0]["resent"] != false || evs[0]["resentAs"] != "" {
			t.Errorf("events %v", evs)
		}
	})
	t.Run("failed as a whole and queued again", func(t *testing.T) {
		const id = "ie"
		f := newPollFixture(t, id, profile.Job{ID: id, State: profile.Error, Error: profile.InternalError})
		f.p.Requeue = &fakeRequeue{}
		ps, _ := json.Marshal(PollState{JobID: id, RunID: "run1", QueuedAt: f.clock, Attempt: 1, Requeues: 1,
			SourceURI: folder + "f.json", IDType: "CloudId", PropertyMap: map[string]string{"A": "A"}})
		f.blobs.put(PollsPrefix+id+".json", ps)
		// The run record names the file with the first job's id: the file
		// is found by its URL.
		withFile(f, "first-job", 5)
		var buf logBuffer
		f.p.Log, f.p.Metrics = quietLogger(&buf), quietLogger(&buf)
		f.deliver(t, PollMessage{JobID: id, RunID: "run1", Attempt: 1})
		evs := buf.events(t, JobEvent)
		if len(evs) != 1 {
			t.Fatalf("%d events", len(evs))
		}
		ev := evs[0]
		if ev["state"] != "Error" || num(t, ev, "errorCode") != 1 || num(t, ev, "usersInFile") != 5 || num(t, ev, "usersImported") != 0 ||
			ev["resentAs"] != resentRequeued || num(t, ev, "requeues") != 1 {
			t.Errorf("event %v", ev)
		}
	})
}
