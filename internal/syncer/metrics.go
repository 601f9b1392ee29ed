package syncer

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
)

// Metric events. Every run that started (it has a run record) ends with one
// RunEvent line, and every import job the poller records as finished with
// one JobEvent line, on the engine's and the poller's Metrics logger (the
// handler the Functions host runs sets it: JSON on its stdout, which the host
// forwards to Application Insights as a trace whose message is the line
// itself; README, "Metrics", has the fields and the KQL that reads them, and
// infra/modules/workbook.bicep charts them).
//
// The fields are flat, always present (zero when there is nothing to
// count) and stable: MetricsSchema changes when a field changes meaning or
// goes away, not when one is added.
const (
	RunEvent      = "profilesync.run"
	JobEvent      = "profilesync.job"
	MetricsSchema = 1
)

// Error classes of a failed run (the run event's errorClass).
const (
	classImportPending  = "import-pending"  // an earlier import of ours is unfinished: nothing was read
	classLockLost       = "lock-lost"       // the sync lock could not be kept
	classNoMapping      = "no-mapping"      // no mapping.json stored
	classMappingInvalid = "mapping-invalid" // mapping.json has problems
	classCanceled       = "canceled"        // the invocation ended (host timeout, shutdown)
	classGraph          = "graph"           // reading users from Graph (or writing them to the import files)
	classUpload         = "upload"          // preparing the SharePoint folder or uploading a file
	classQueue          = "queue"           // the QueueImportProfileProperties call
	classConflict       = "conflict"        // state.json changed under the run (another writer)
	classStorage        = "storage"         // profilesync's own records in Blob storage (state, runs), or anything else
)

// runTiming measures the phases of a run for its event: not stored in the
// run record.
type runTiming struct {
	read, upload, queue time.Duration
	phase               string // the timed phase under way: classGraph, classUpload or classQueue
	since               time.Time
	failed              string // the timed phase a failure happened in
}

// begin starts timing phase (classGraph, classUpload or classQueue).
func (t *runTiming) begin(phase string) { t.phase, t.since = phase, time.Now() }

// end adds the time since begin to its phase and, when err is set,
// remembers the phase as the one the run failed in.
func (t *runTiming) end(err error) {
	d := time.Since(t.since)
	switch t.phase {
	case classGraph:
		t.read += d
	case classUpload:
		t.upload += d
	case classQueue:
		t.queue += d
	}
	if err != nil {
		t.failed = t.phase
	}
	t.phase = ""
}

// errorClass sorts the error that ended a run into one of the classes above.
func errorClass(ctx context.Context, err error, failedIn string) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrImportPending):
		return classImportPending
	case errors.Is(err, ErrLockLost):
		return classLockLost
	case errors.Is(err, ErrNoMapping):
		return classNoMapping
	case mapping.Problems(err) != nil:
		return classMappingInvalid
	case ctx.Err() != nil:
		return classCanceled
	case failedIn != "":
		return failedIn
	case errors.Is(err, profile.ErrStale):
		return classConflict
	}
	return classStorage
}

// emit writes one metric event through log's handler whatever the level it
// was set to (LOG_LEVEL): the events are the data the workbook charts, not
// diagnostics. The handler's own attributes (none in the handler process)
// come along. A nil log writes nothing.
func emit(ctx context.Context, log *slog.Logger, msg string, attrs []slog.Attr) {
	if log == nil {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	_ = log.Handler().Handle(ctx, r)
}

// firstLine returns s up to its first line break, cut to at most n bytes
// (at a rune boundary).
func firstLine(s string, n int) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// runEventAttrs are the fields of a run's RunEvent.
func runEventAttrs(ctx context.Context, run *Run, err error) []slog.Attr {
	var bytes int64
	for _, f := range run.Files {
		bytes += f.Bytes
	}
	skipped, other := 0, 0
	for reason, n := range run.Skipped {
		skipped += n
		switch mapping.SkipReason(reason) {
		case mapping.SkipDeleted, mapping.SkipGuest, mapping.SkipDisabled, mapping.SkipNoID:
		default:
			other += n
		}
	}
	t := &run.timing
	return []slog.Attr{
		slog.Int("schemaVersion", MetricsSchema),
		slog.String("runId", run.ID),
		slog.String("trigger", run.Trigger),
		slog.String("mode", string(run.Mode)),
		slog.String("reason", run.Reason),
		slog.Bool("whatIf", run.WhatIf),
		slog.String("status", run.Status),
		slog.String("errorClass", errorClass(ctx, err, t.failed)),
		slog.String("error", firstLine(run.Error, 500)),
		slog.Int("usersRead", run.Read),
		slog.Int("usersSent", run.Sent),
		slog.Int("usersUnchanged", run.Unchanged),
		slog.Int("usersSkipped", skipped),
		slog.Int("skippedDeleted", run.Skipped[string(mapping.SkipDeleted)]),
		slog.Int("skippedGuest", run.Skipped[string(mapping.SkipGuest)]),
		slog.Int("skippedDisabled", run.Skipped[string(mapping.SkipDisabled)]),
		slog.Int("skippedNoId", run.Skipped[string(mapping.SkipNoID)]),
		slog.Int("skippedOther", other),
		slog.Int("usersRepeated", run.Repeated),
		slog.Int("usersResent", len(run.Resent)),
		slog.Int("files", len(run.Files)),
		slog.Int64("bytes", bytes),
		slog.Int("jobsQueued", len(run.JobIDs)),
		slog.Bool("deltaLinkSaved", run.DeltaSaved),
		slog.Int64("graphReadMs", t.read.Milliseconds()),
		slog.Int64("uploadMs", t.upload.Milliseconds()),
		slog.Int64("queueMs", t.queue.Milliseconds()),
		slog.Int64("totalMs", run.DurationMS),
	}
}

// emitRun writes the run's RunEvent; err is the error that ended it.
func (e *Engine) emitRun(ctx context.Context, run *Run, err error) {
	emit(ctx, e.Metrics, RunEvent, runEventAttrs(ctx, run, err))
}

// How a job's users were re-sent (the job event's resentAs).
const (
	resentRequeued = "requeued"  // the same file queued again as a new job
	resentNextRun  = "next-run"  // the users with an error line carried into the next run
	resentFullSync = "full-sync" // the next run is full
)

// resentAs classifies what JobRecord.Resent says (resend.go writes it).
func resentAs(rec *JobRecord) string {
	switch {
	case rec.RequeuedAs != "":
		return resentRequeued
	case strings.HasPrefix(rec.Resent, "next run is full"):
		return resentFullSync
	case strings.Contains(rec.Resent, "carried into the next run"):
		return resentNextRun
	}
	return ""
}

// usersWithErrors counts the users a job's log names: distinct identities,
// a line without one counting once; lines beyond the results kept
// (MaxResults) count one user each, as profilesync sends one row per user.
func usersWithErrors(rec *JobRecord, lines int) int {
	seen := map[string]bool{}
	n := 0
	for _, r := range rec.Results {
		id := strings.ToLower(r.Identity)
		if id == "" || !seen[id] {
			n++
		}
		if id != "" {
			seen[id] = true
		}
	}
	return n + max(lines-len(rec.Results), 0)
}

// fileRows returns how many users the job's import file holds, from its
// run record (the file with the job's id, or, for a file queued again,
// with its URL); 0 when the record no longer says.
func (p *Poller) fileRows(ctx context.Context, rec *JobRecord, ps PollState) int {
	if rec.RunID == "" {
		return 0
	}
	data, _, err := p.Blobs.Get(ctx, RunsPrefix+rec.RunID+".json")
	if err != nil {
		return 0
	}
	run, err := DecodeRun(data)
	if err != nil {
		return 0
	}
	for _, f := range run.Files {
		if f.JobID != "" && strings.EqualFold(f.JobID, rec.JobID) {
			return f.Records
		}
	}
	for _, src := range []string{ps.SourceURI, rec.SourceURI} {
		for _, f := range run.Files {
			if src != "" && strings.EqualFold(f.URL, src) {
				return f.Records
			}
		}
	}
	return 0
}

// jobEventAttrs are the fields of a finished job's JobEvent; rows is how
// many users its file holds.
func jobEventAttrs(rec *JobRecord, ps PollState, rows int) []slog.Attr {
	lines := 0
	for _, n := range rec.ResultCounts {
		lines += n
	}
	withErrors := usersWithErrors(rec, lines)
	// SharePoint imported the file's users less those its log names when
	// the job succeeded, or completed with per-user errors and the log was
	// read; a job that failed as a whole, or timed out, imported nobody we
	// can count.
	imported := 0
	switch {
	case rec.State == profile.Succeeded.String():
		imported = rows
	case rec.State == profile.Error.String() && rec.ErrorCode == int(profile.ImportCompleteWithError) && rec.LogError == "":
		imported = max(rows-withErrors, 0)
	}
	end := rec.LastPoll
	if end.IsZero() {
		end = rec.Recorded
	}
	var duration int64
	if !rec.QueuedAt.IsZero() && end.After(rec.QueuedAt) {
		duration = end.Sub(rec.QueuedAt).Milliseconds()
	}
	how := resentAs(rec)
	return []slog.Attr{
		slog.Int("schemaVersion", MetricsSchema),
		slog.String("jobId", rec.JobID),
		slog.String("runId", rec.RunID),
		slog.String("state", rec.State),
		slog.Int("errorCode", rec.ErrorCode),
		slog.String("error", rec.ErrorName),
		slog.Int64("durationMs", duration),
		slog.Int("polls", rec.Attempts),
		slog.Int("usersInFile", rows),
		slog.Int("usersImported", imported),
		slog.Int("usersWithErrors", withErrors),
		slog.Int("errorLines", lines),
		slog.Bool("resent", how != ""),
		slog.String("resentAs", how),
		slog.Int("requeues", ps.Requeues),
	}
}

// emitJob writes a finished job's JobEvent.
func (p *Poller) emitJob(ctx context.Context, rec *JobRecord, ps PollState) {
	if p.Metrics == nil {
		return
	}
	emit(ctx, p.Metrics, JobEvent, jobEventAttrs(rec, ps, p.fileRows(ctx, rec, ps)))
}
