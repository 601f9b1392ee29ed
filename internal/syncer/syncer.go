// Package syncer is profilesync's engine: it reads users changed in Entra ID,
// turns them into SharePoint bulk-import files through the mapping, uploads
// and queues those files, and only then advances the stored delta link.
//
// A run has one commit point, in this order:
//
//  1. read mapping.json and state.json from blob storage;
//  2. read users from Graph (delta round, or a full round when there is no
//     usable delta link or the mapping changed) into import files on local
//     disk, split below SharePoint's limits;
//  3. upload each file, queue its import job and record the job id in the
//     run record at once (a crash never loses a job id);
//  4. save the new delta link in state.json, conditionally on its ETag;
//  5. write the final run record and schedule the first status poll per job.
//
// Any failure before step 4 leaves the stored delta link untouched, so the
// next run sends the same users again; SharePoint's import is idempotent.
//
// The engine talks to the outside world only through the small interfaces
// below; it imports no Azure SDK.
package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
)

// Blob names in the state container.
const (
	MappingBlob = "mapping.json"
	StateBlob   = "state.json"
	// CurrentBlob names the run in progress. A run that finds it naming
	// another run (it holds the lock, so that run is dead) marks that run's
	// record as interrupted.
	CurrentBlob = "current-run.json"
	RunsPrefix  = "runs/"
	JobsPrefix  = "jobs/"
)

// Source reads users from Entra ID.
type Source interface {
	// Delta runs one delta round ("" = initial round), calling fn per user,
	// and returns the new delta link. A link Graph no longer honours yields
	// an error wrapping profile.ErrDeltaExpired.
	Delta(ctx context.Context, sel profile.Selection, deltaLink string, fn func(profile.User) error) (string, error)
}

// Target is SharePoint: the library receiving import files and the bulk
// import API.
type Target interface {
	EnsureFolder(ctx context.Context) error
	Upload(ctx context.Context, name string, r io.Reader, size int64) (fileURL string, err error)
	QueueImport(ctx context.Context, idType profile.IDType, idProperty string, propertyMap map[string]string, sourceURI string) (jobID string, err error)
}

// Blobs reads and writes small named documents. Get wraps fs.ErrNotExist
// for a missing blob; conditional writes wrap profile.ErrStale when the
// precondition fails. Put with ifMatch "" is unconditional.
type Blobs interface {
	Get(ctx context.Context, name string) (data []byte, etag string, err error)
	Put(ctx context.Context, name string, data []byte, ifMatch string) (etag string, err error)
	Create(ctx context.Context, name string, data []byte) (etag string, err error)
}

// Scheduler sends a message that becomes visible after delay.
type Scheduler interface {
	Schedule(ctx context.Context, msg []byte, delay time.Duration) error
}

// LockFunc takes the sync lock; it returns an error wrapping profile.ErrBusy
// when another sync holds it.
type LockFunc func(ctx context.Context) (Lease, error)

// Lease is the sync lock while held. Lost is closed when the lock could not
// be kept (its renewal failed): another sync may then take it, so the run
// stops before its commit point.
type Lease interface {
	Release(ctx context.Context) error
	Lost() <-chan struct{}
}

// ErrLockLost: the run lost the sync lock and stopped before its commit
// point; the next run sends its users again.
var ErrLockLost = errors.New("the sync lock was lost (its lease could not be renewed)")

// Engine runs syncs. All fields but Log, Now, TempDir and Limits are required.
type Engine struct {
	Source    Source
	Target    Target
	Blobs     Blobs
	Scheduler Scheduler
	Lock      LockFunc
	Log       *slog.Logger
	// Metrics receives each run's metric event (metrics.go), whatever its
	// level; nil writes none.
	Metrics *slog.Logger
	Now     func() time.Time
	// TempDir holds import files while a run builds them ("" = os.TempDir()).
	TempDir string
	// Limits split import files below SharePoint's limits (zero = defaults).
	Limits importfile.Limits
	// FirstPoll is the delay of the status poll a run schedules per job.
	FirstPoll time.Duration
	// Jobs and Pending, when both set, keep a run from queueing an import
	// while an earlier import of ours has not finished.
	Jobs    JobSource
	Pending Lister
	// PollRevive: a followed job not polled for this long is polled again
	// by RecoverPolls (default 2h; set it above the longest poll backoff).
	PollRevive time.Duration
	// PendingMaxAge: an unfinished earlier job queued longer ago than this
	// no longer keeps a run from queueing (default 48h).
	PendingMaxAge time.Duration
	// Files deletes import files that were uploaded but never queued
	// (optional; the Target's Delete).
	Files Remover
	// AllJobs finds, after a crash, the job a queue call created before the
	// process could record it (optional).
	AllJobs JobLister
	// Lookup serves runs limited to chosen users or a filter, and reads
	// again the users an earlier import failed for.
	Lookup UserLookup
}

// checkLease fails when the run no longer holds the sync lock.
func checkLease(lease Lease) error {
	if lease == nil {
		return nil
	}
	select {
	case <-lease.Lost():
		return ErrLockLost
	default:
		return nil
	}
}

// ErrNoMapping: no mapping.json is stored yet.
var ErrNoMapping = errors.New("no mapping stored")

// ErrImportPending: an earlier import job of ours has not finished, so the
// run queued nothing (Options.AllowOverlap overrides).
var ErrImportPending = errors.New("an earlier import job has not finished")

// Mode says how users are read.
type Mode string

// Modes of a run.
const (
	ModeAuto  Mode = ""       // delta when possible, else full
	ModeDelta Mode = "delta"  // same as auto: a delta round needs a usable link
	ModeFull  Mode = "full"   // an initial delta round: every user
	ModeUsers Mode = "users"  // chosen users, looked up one by one
	ModeQuery Mode = "filter" // the users a Graph $filter selects
)

// Options of one run.
type Options struct {
	Mode    Mode
	WhatIf  bool   // build and upload the files, queue nothing, keep the delta link (PnP's -WhatIf)
	Trigger string // "timer", "cli", "http": recorded in the run
	// AllowOverlap queues a new import even while an earlier one is unfinished.
	AllowOverlap bool
	// Users limits the run to these users (UPNs or object ids; PnP's -Users).
	// Unknown users are reported, not fatal. The delta link is not touched.
	Users []string
	// Filter reads the users a Graph $filter selects (e.g. jobTitle eq 'IT
	// Administrator'). The delta link is not touched.
	Filter string
	// Mapping replaces the stored mapping for this run only. Such a run reads
	// every user (unless Users or Filter narrow it) and never touches the
	// delta link.
	Mapping *mapping.Mapping
	// OnStart, if set, is called with the run id once the run has its lock
	// and its record exists.
	OnStart func(runID string)
	// Progress, if set, is called at each phase change and, while users
	// are read, at most every 250 ms (progress.go); never on two
	// goroutines at once. It must return quickly.
	Progress func(Progress)
	progress *reporter // set by Sync and Plan from Progress
	// Force sends every user read, also those whose mapped values are the
	// ones SharePoint last imported (the fingerprint store is not used to
	// skip anyone; it is still updated when the jobs end).
	Force        bool
	fingerprints *fpRun // set by Sync and Plan (fingerprint.go)
}

// targeted reports whether the run reads a chosen set of users or uses a
// one-off mapping: such runs never move the delta link.
func (o Options) targeted() bool { return len(o.Users) > 0 || o.Filter != "" || o.Mapping != nil }

// UserLookup reads chosen users rather than a delta round.
type UserLookup interface {
	// Lookup reads users by object id or UPN and returns those Graph does not know.
	Lookup(ctx context.Context, sel profile.Selection, ids []string, fn func(profile.User) error) (missing []string, err error)
	// List reads the users a Graph $filter selects.
	List(ctx context.Context, sel profile.Selection, filter string, fn func(profile.User) error) error
}

// State is state.json.
type State struct {
	DeltaLink   string    `json:"deltaLink,omitempty"`
	MappingHash string    `json:"mappingHash,omitempty"`
	LastRunID   string    `json:"lastRunId,omitempty"`
	Updated     time.Time `json:"updated"`
	// FullSync, when set, makes the next run full and says why: an import
	// failed in a way that sending chosen users again cannot repair.
	FullSync string `json:"fullSyncNeeded,omitempty"`
	// Resend lists users an import failed for; the next delta run reads
	// them again by id and sends them with the changed users.
	Resend []ResendUser `json:"resendUsers,omitempty"`
}

// Run is the record of one run, stored as runs/<id>.json.
type Run struct {
	ID          string    `json:"runId"`
	Trigger     string    `json:"trigger,omitempty"`
	Mode        Mode      `json:"mode"`
	Reason      string    `json:"reason,omitempty"` // why this mode
	WhatIf      bool      `json:"whatIf,omitempty"`
	Status      string    `json:"status"` // running, succeeded, failed
	Error       string    `json:"error,omitempty"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
	DurationMS  int64     `json:"durationMs,omitempty"`
	MappingHash string    `json:"mappingHash,omitempty"`
	Read        int       `json:"usersRead"`
	Sent        int       `json:"usersSent"`
	// Repeated counts sightings of users Graph had already handed over in
	// this run; each user is still sent (or skipped) once, as last seen.
	Repeated int `json:"usersRepeated,omitempty"`
	// Unchanged counts users not sent because their mapped values are those
	// SharePoint last imported (the fingerprint store).
	Unchanged   int            `json:"usersUnchanged,omitempty"`
	Skipped     map[string]int `json:"usersSkipped,omitempty"` // by reason: deleted, guest, disabled, no-id
	Files       []FileRecord   `json:"files,omitempty"`
	JobIDs      []string       `json:"jobIds,omitempty"`
	DeltaSaved  bool           `json:"deltaLinkSaved"`
	PollsQueued bool           `json:"statusPollsQueued,omitempty"`
	JobResults  []JobLink      `json:"jobResults,omitempty"`   // filled in by the status poller as jobs end
	Users       []string       `json:"users,omitempty"`        // the users asked for (mode users)
	Unknown     []string       `json:"unknownUsers,omitempty"` // asked for, but unknown to Graph
	Filter      string         `json:"filter,omitempty"`
	// Resent lists the users an earlier import failed for that this run
	// read again and sent (with how many runs sent them again so far).
	Resent    []ResendUser `json:"resentUsers,omitempty"`
	OneOffMap bool         `json:"mappingForThisRun,omitempty"`
	// Fingerprints says why the run did not skip unchanged users, when it
	// did not (forced, or the store could not be read).
	Fingerprints string `json:"fingerprints,omitempty"`
	// timing measures the run's phases for its metric event (metrics.go).
	timing runTiming
}

// FileRecord describes one import file of a run.
type FileRecord struct {
	Name       string `json:"name"`
	URL        string `json:"url,omitempty"`
	Records    int    `json:"records"`
	Properties int    `json:"properties"`
	Bytes      int64  `json:"bytes"`
	JobID      string `json:"jobId,omitempty"`
	// Queueing is set while the queue call is under way, Uploading while
	// the upload is: a record left with either set means the process died
	// there.
	Queueing  bool `json:"queueing,omitempty"`
	Uploading bool `json:"uploading,omitempty"`
	// Deleted: the file was never queued and is gone from the library.
	Deleted bool `json:"deleted,omitempty"`
}

// PollMessage is the body of a status-poll queue message.
type PollMessage struct {
	JobID    string    `json:"jobId"`
	RunID    string    `json:"runId,omitempty"`
	QueuedAt time.Time `json:"queuedAt"`
	Attempt  int       `json:"attempt"`
}

// Status values of a Run.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Engine) pollRevive() time.Duration {
	if e.PollRevive > 0 {
		return e.PollRevive
	}
	return 2 * time.Hour
}

func (e *Engine) pendingMaxAge() time.Duration {
	if e.PendingMaxAge > 0 {
		return e.PendingMaxAge
	}
	return 48 * time.Hour
}

func (e *Engine) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.New(slog.DiscardHandler)
}

// NewRunID returns a time-ordered run id such as 20261128T183000.123Z-1a2b3c4d.
func NewRunID(t time.Time) string {
	return t.UTC().Format("20060102T150405.000Z") + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8]
}

// Sync performs one run. It returns the run record (also when the run
// failed after it started) and the error that ended it. A run that could
// not take the lock returns an error wrapping profile.ErrBusy and no record.
func (e *Engine) Sync(ctx context.Context, opts Options) (*Run, error) {
	lease, err := e.Lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("taking the sync lock: %w", err)
	}
	defer func() {
		if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
			e.log().Warn("releasing the sync lock", "err", err)
		}
	}()
	// Losing the lock ends the run: every call under way is cancelled, and
	// the commit point checks it (checkLease) before it moves the link.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-lease.Lost():
			cancel(ErrLockLost)
		case <-ctx.Done():
		}
	}()

	start := e.now()
	run := &Run{ID: NewRunID(start), Trigger: opts.Trigger, WhatIf: opts.WhatIf, Status: StatusRunning, Started: start,
		Users: opts.Users, Filter: opts.Filter, OneOffMap: opts.Mapping != nil}
	log := e.log().With("run", run.ID)
	e.closeInterrupted(ctx, log)
	e.removeStaleTemp(log)
	if err := e.putRun(ctx, run); err != nil {
		return nil, err
	}
	cur, _ := json.Marshal(current{RunID: run.ID})
	if _, err := e.Blobs.Put(ctx, CurrentBlob, cur, ""); err != nil {
		log.Warn("recording the run in progress", "err", err)
	}
	if opts.OnStart != nil {
		opts.OnStart(run.ID)
	}
	err = e.sync(ctx, log, run, opts, lease)
	if err != nil && errors.Is(context.Cause(ctx), ErrLockLost) && !errors.Is(err, ErrLockLost) {
		err = fmt.Errorf("%w: %v", ErrLockLost, err)
	}
	run.Finished = e.now()
	run.DurationMS = run.Finished.Sub(run.Started).Milliseconds()
	if err != nil {
		run.Status = StatusFailed
		run.Error = err.Error()
	} else {
		run.Status = StatusSucceeded
	}
	if perr := e.putRun(context.WithoutCancel(ctx), run); perr != nil {
		log.Error("writing the run record", "err", perr)
		if err == nil {
			err = perr
		}
	}
	if d, ok := e.Blobs.(Deleter); ok {
		if derr := d.Delete(context.WithoutCancel(ctx), CurrentBlob); derr != nil {
			log.Warn("clearing the run in progress", "err", derr)
		}
	}
	e.emitRun(ctx, run, err) // the run's one metric event (metrics.go)
	if err != nil {
		log.Error("sync failed", "mode", run.Mode, "err", err)
		return run, err
	}
	log.Info("sync done", "mode", run.Mode, "reason", run.Reason, "whatIf", run.WhatIf,
		"read", run.Read, "sent", run.Sent, "skipped", run.Skipped, "files", len(run.Files),
		"jobs", run.JobIDs, "duration", (time.Duration(run.DurationMS) * time.Millisecond).String())
	return run, nil
}

func (e *Engine) sync(ctx context.Context, log *slog.Logger, run *Run, opts Options, lease Lease) error {
	opts.progress = newReporter(opts.Progress, e.Source)
	m, st, etag, link, err := e.prepare(ctx, run, opts)
	if err != nil {
		return err
	}
	var resend []ResendUser
	if run.Mode == ModeDelta {
		resend = st.Resend
	}
	if !opts.WhatIf && !opts.AllowOverlap {
		if err := e.checkPending(ctx); err != nil {
			return err
		}
	}
	log.Info("sync starting", "mode", run.Mode, "reason", run.Reason, "trigger", run.Trigger, "whatIf", opts.WhatIf)
	opts.fingerprints = e.fingerprints(ctx, log, run, opts, m)

	run.timing.begin(classGraph)
	files, next, err := e.read(ctx, log, m, run, opts, link, resend)
	if errors.Is(err, profile.ErrDeltaExpired) && link != "" {
		log.Warn("the delta link is no longer valid; running a full sync", "err", err)
		run.Mode, run.Reason, link = ModeFull, "delta link expired or reset by Graph", ""
		files, next, err = e.read(ctx, log, m, run, opts, "", nil)
	}
	run.timing.end(err)
	if err != nil {
		return err
	}
	defer removeFiles(files)

	if len(files) > 0 {
		run.timing.begin(classUpload)
		err := e.Target.EnsureFolder(ctx)
		run.timing.end(err)
		if err != nil {
			return fmt.Errorf("preparing the SharePoint folder: %w", err)
		}
	}
	stamp := run.Started.Format("20060102150405")
	for i, f := range files {
		rec := FileRecord{
			Name:    fmt.Sprintf("userprofilesyncdata-%s-%s.json", stamp, strings.ReplaceAll(uuid.NewString(), "-", "")),
			Records: f.Records, Properties: f.Properties, Bytes: f.Bytes,
		}
		// The fingerprints of the file's rows reach storage before its job
		// can exist (merged into the store when the job ends).
		if !opts.WhatIf {
			if err := e.putSidecar(ctx, rec.Name, f); err != nil {
				return err
			}
		}
		// The upload's intent reaches storage first: a process that dies
		// mid-upload leaves a file the next run can name and delete.
		if n, ok := e.Target.(FileNamer); ok && !opts.WhatIf {
			rec.URL, rec.Uploading = n.FileURL(rec.Name), true
			run.Files = append(run.Files, rec)
			if err := e.putRun(ctx, run); err != nil {
				return err
			}
			run.Files = run.Files[:len(run.Files)-1]
			rec.Uploading = false
		}
		opts.progress.phase(PhaseUploading, run, i+1, len(files))
		run.timing.begin(classUpload)
		url, err := e.upload(ctx, f, rec.Name)
		run.timing.end(err)
		if err != nil {
			return fmt.Errorf("uploading import file %d of %d: %w", i+1, len(files), err)
		}
		rec.URL = url
		log.Info("import file uploaded", "file", rec.Name, "records", rec.Records, "bytes", rec.Bytes, "url", url)
		if opts.WhatIf {
			run.Files = append(run.Files, rec)
			if err := e.putRun(ctx, run); err != nil {
				return err
			}
			continue
		}
		// The intent reaches storage before the queue call: if the process
		// dies between SharePoint's answer and the next write, the next run
		// finds the job by its source file (adoptJobs).
		rec.Queueing = true
		run.Files = append(run.Files, rec)
		if err := e.putRun(ctx, run); err != nil {
			return err
		}
		fr := &run.Files[len(run.Files)-1]
		opts.progress.phase(PhaseQueueing, run, i+1, len(files))
		crashpoint.Hit(crashpoint.BeforeQueue)
		run.timing.begin(classQueue)
		id, err := e.Target.QueueImport(ctx, m.IDType, profile.IDProperty, m.PropertyMap(), url)
		run.timing.end(err)
		if err != nil {
			// The call may have reached SharePoint before it failed (a
			// timeout, a lost answer): look for the job before giving up.
			if e.adoptJobs(context.WithoutCancel(ctx), log, run) {
				log.Warn("the queue call failed but SharePoint has the job; it is followed", "file", rec.Name)
			}
			return fmt.Errorf("queueing the import of %s: %w", rec.Name, err)
		}
		crashpoint.Hit(crashpoint.AfterQueue)
		if err := e.follow(ctx, run, fr, id, m); err != nil {
			return err
		}
		log.Info("import job queued", "job", id, "file", rec.Name)
		if err := e.putRun(ctx, run); err != nil { // job ids reach storage before anything else happens
			return err
		}
	}

	if opts.WhatIf {
		log.Info("what-if: files uploaded, nothing queued, delta link kept", "files", len(run.Files))
		return nil
	}
	if err := e.forgetUsers(ctx, log, run, opts.fingerprints); err != nil {
		return err
	}
	if opts.targeted() {
		if err := e.schedulePolls(ctx, run); err != nil {
			log.Error("scheduling status polls", "err", err)
		} else {
			run.PollsQueued = len(run.JobIDs) > 0
		}
		log.Info("targeted run: delta link untouched", "unknownUsers", run.Unknown)
		return nil
	}
	crashpoint.Hit(crashpoint.BeforeStateSave)
	if err := checkLease(lease); err != nil {
		return err
	}
	newState := State{DeltaLink: next, MappingHash: run.MappingHash, LastRunID: run.ID, Updated: e.now()}
	if err := e.saveState(ctx, newState, etag); err != nil {
		return err
	}
	run.DeltaSaved = true
	crashpoint.Hit(crashpoint.BeforePollSchedule)

	if len(run.JobIDs) > 0 {
		if err := e.schedulePolls(ctx, run); err != nil {
			// The jobs are queued and recorded; only the follow-up is missing.
			log.Error("scheduling status polls", "err", err)
		} else {
			run.PollsQueued = true
		}
	} else {
		log.Info("nobody changed: no import file, no job; delta link advanced")
	}
	return nil
}

// follow records a queued job: in the file record, the run's job ids and
// polls/<id>.json, the document that has the job followed to its end.
func (e *Engine) follow(ctx context.Context, run *Run, fr *FileRecord, id string, m *mapping.Mapping) error {
	fr.JobID, fr.Queueing = id, false
	run.JobIDs = append(run.JobIDs, id)
	ps, _ := json.MarshalIndent(PollState{JobID: id, RunID: run.ID, QueuedAt: e.now(), Attempt: 1,
		SourceURI: fr.URL, IDType: m.IDType.String(), PropertyMap: m.PropertyMap()}, "", "  ")
	if _, err := e.Blobs.Put(ctx, PollsPrefix+id+".json", ps, ""); err != nil {
		return fmt.Errorf("recording job %s: %w", id, err)
	}
	return nil
}

// FileNamer names the URL a file gets once uploaded (optional on Target).
type FileNamer interface {
	FileURL(name string) string
}

// JobLister lists SharePoint's import jobs (GetImportProfilePropertyJobs).
type JobLister interface {
	Jobs(ctx context.Context) ([]profile.Job, error)
}

// adoptJobs finds the jobs of files an interrupted run was queueing when
// it died (the queue call may have reached SharePoint) by their source
// file, and has them followed like any other. A file SharePoint has no job
// for was never queued; its users are sent again anyway, since the
// interrupted run did not move the delta link.
func (e *Engine) adoptJobs(ctx context.Context, log *slog.Logger, run *Run) bool {
	var pending []int
	for i := range run.Files {
		f := &run.Files[i]
		switch {
		case f.Uploading:
			// Died mid-upload: never queued; the partial file goes.
			f.Uploading = false
			if e.Files != nil && f.URL != "" {
				if err := e.Files.Delete(ctx, f.URL); err == nil || errors.Is(err, fs.ErrNotExist) {
					f.Deleted = true
					log.Info("deleted the file of an interrupted upload", "file", f.URL)
				} else {
					log.Warn("deleting the file of an interrupted upload", "file", f.URL, "err", err)
				}
			}
		case f.Queueing && f.JobID == "":
			pending = append(pending, i)
		}
	}
	if len(pending) == 0 || e.AllJobs == nil {
		return false
	}
	jobs, err := e.AllJobs.Jobs(ctx)
	if err != nil {
		log.Warn("listing SharePoint's import jobs to find those of an interrupted run", "run", run.ID, "err", err)
		return false
	}
	changed := false
	for _, i := range pending {
		fr := &run.Files[i]
		found := false
		for _, j := range jobs {
			// Both URLs are as SharePoint names the file (see spo.Upload).
			if j.ID != "" && strings.EqualFold(j.SourceURI, fr.URL) {
				fr.JobID = j.ID
				run.JobIDs = append(run.JobIDs, j.ID)
				ps := PollState{JobID: j.ID, RunID: run.ID, QueuedAt: run.Started, Attempt: 1, SourceURI: fr.URL}
				data, _ := json.MarshalIndent(ps, "", "  ")
				if _, err := e.Blobs.Create(ctx, PollsPrefix+j.ID+".json", data); err != nil && !errors.Is(err, profile.ErrStale) {
					log.Warn("following the job of an interrupted run", "job", j.ID, "err", err)
					continue
				}
				msg, _ := json.Marshal(PollMessage{JobID: j.ID, RunID: run.ID, QueuedAt: run.Started, Attempt: 1})
				if err := e.Scheduler.Schedule(ctx, msg, e.FirstPoll); err == nil {
					ps.Scheduled = true
					e.markScheduled(ctx, ps)
				} // else RecoverPolls schedules it later
				log.Warn("found the job an interrupted run had queued; following it", "run", run.ID, "job", j.ID, "file", fr.URL)
				changed, found = true, true
			}
		}
		if !found && e.Files != nil {
			// Never queued: nobody will read the file, and housekeeping knows
			// only the files of jobs. Its users go in the next run's files.
			if err := e.Files.Delete(ctx, fr.URL); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.Warn("deleting an import file that was never queued", "file", fr.URL, "err", err)
			} else {
				fr.Deleted = true
				log.Info("deleted an import file that was never queued", "file", fr.URL)
			}
		}
		fr.Queueing = false
	}
	return changed
}

// closeInterrupted marks the record of a run that died mid-way (its process
// was killed: the host's timeout, a crash, a scale-in) as failed, so that no
// record says "running" forever. It is called while holding the lock.
func (e *Engine) closeInterrupted(ctx context.Context, log *slog.Logger) {
	data, _, err := e.Blobs.Get(ctx, CurrentBlob)
	if err != nil {
		return
	}
	runID, err := decodeCurrent(data)
	if err != nil {
		log.Warn("ignoring an unreadable "+CurrentBlob, "err", err)
		return
	}
	data, etag, err := e.Blobs.Get(ctx, RunsPrefix+runID+".json")
	if err != nil {
		return
	}
	// The record must be the one its name says: it is written back under
	// its own id.
	run, err := DecodeRun(data)
	if err != nil || run.ID != runID || run.Status != StatusRunning {
		return
	}
	e.adoptJobs(ctx, log, &run)
	run.Status = StatusFailed
	run.Error = "interrupted: the process ended before the run finished (nothing after the last recorded step happened; the delta link was not moved unless deltaLinkSaved is true)"
	run.Finished = e.now()
	data, _ = json.MarshalIndent(run, "", "  ")
	if _, err := e.Blobs.Put(ctx, RunsPrefix+run.ID+".json", data, etag); err == nil {
		log.Warn("an earlier run was interrupted; its record is closed", "interrupted", run.ID, "jobs", run.JobIDs)
	}
}

// checkPending fails with ErrImportPending when an import job of ours is
// still running in SharePoint.
func (e *Engine) checkPending(ctx context.Context) error {
	if e.Jobs == nil || e.Pending == nil {
		return nil
	}
	names, err := e.Pending.List(ctx, PollsPrefix)
	if err != nil {
		return fmt.Errorf("listing unfinished jobs: %w", err)
	}
	var busy []string
	for _, n := range names {
		id := strings.TrimSuffix(strings.TrimPrefix(n, PollsPrefix), ".json")
		// A job queued long ago (stuck in Processing, or followed by a poll
		// chain that died) must not block every later sync.
		if data, _, err := e.Blobs.Get(ctx, n); err == nil {
			if ps, err := DecodePollState(data); err == nil && !ps.QueuedAt.IsZero() && e.now().Sub(ps.QueuedAt) > e.pendingMaxAge() {
				e.log().Warn("an earlier import job is unfinished but too old to wait for", "job", id, "queued", ps.QueuedAt, "maxAge", e.pendingMaxAge())
				continue
			}
		}
		job, err := e.Jobs.Job(ctx, id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			// One unreadable job does not block the sync; its poller
			// follows it.
			e.log().Warn("checking an earlier import job; not waiting for it", "job", id, "err", err)
			continue
		}
		if !job.State.Done() {
			busy = append(busy, id+" ("+job.State.String()+")")
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("%w: %s; nothing was read or queued, the next run tries again", ErrImportPending, strings.Join(busy, ", "))
	}
	return nil
}

// prepare picks the mapping and the mode of a run.
func (e *Engine) prepare(ctx context.Context, run *Run, opts Options) (m *mapping.Mapping, st State, etag, link string, err error) {
	m = opts.Mapping
	if m == nil {
		if m, err = e.LoadMapping(ctx); err != nil {
			return nil, State{}, "", "", err
		}
	}
	run.MappingHash = m.Hash()
	st, etag, err = e.LoadState(ctx)
	if err != nil {
		return nil, State{}, "", "", err
	}
	link = st.DeltaLink
	switch {
	case len(opts.Users) > 0:
		run.Mode, run.Reason, link = ModeUsers, fmt.Sprintf("%d chosen user(s)", len(opts.Users)), ""
	case opts.Filter != "":
		run.Mode, run.Reason, link = ModeQuery, "users matching the filter", ""
	case opts.Mapping != nil:
		run.Mode, run.Reason, link = ModeFull, "a mapping given for this run only", ""
	case opts.Mode == ModeFull:
		run.Mode, run.Reason, link = ModeFull, "full sync requested", ""
	case link == "":
		run.Mode, run.Reason = ModeFull, "no delta link yet (first run)"
	case st.MappingHash != run.MappingHash:
		run.Mode, run.Reason, link = ModeFull, "the mapping changed since the last sync", ""
	case st.FullSync != "":
		run.Mode, run.Reason, link = ModeFull, "an earlier import failed: "+st.FullSync, ""
	default:
		run.Mode = ModeDelta
	}
	if (len(opts.Users) > 0 || opts.Filter != "") && e.Lookup == nil {
		return nil, State{}, "", "", errors.New("this engine cannot look users up (no UserLookup)")
	}
	return m, st, etag, link, nil
}

// sink receives what a read produces: records to send, and skipped users.
type sink struct {
	record func(u profile.User, rec mapping.Record) error
	skip   func(u profile.User, reason mapping.SkipReason)
}

// collect reads users (delta round, lookups or filter) through the mapping into s.
func (e *Engine) collect(ctx context.Context, m *mapping.Mapping, run *Run, opts Options, link string, s sink) (string, error) {
	run.Read, run.Sent, run.Skipped, run.Unknown, run.Unchanged = 0, 0, map[string]int{}, nil, 0
	opts.progress.phase(PhaseReading, run, 0, 0)
	sel := profile.Selection{Properties: m.Select(), Manager: m.ManagerSelect()}
	// One record reused for every user: the sinks copy its values before
	// the next one (read into the import file, Plan into its own map).
	var rec mapping.Record
	fn := func(u profile.User) error {
		run.Read++
		opts.progress.reading(run)
		skip := m.ApplyInto(&rec, u)
		if skip != "" {
			run.Skipped[string(skip)]++
			if s.skip != nil {
				s.skip(u, skip)
			}
			return nil
		}
		if err := s.record(u, rec); err != nil {
			if err == errUnchanged {
				run.Unchanged++
				return nil
			}
			return err
		}
		run.Sent++
		return nil
	}
	switch run.Mode {
	case ModeUsers:
		missing, err := e.Lookup.Lookup(ctx, sel, opts.Users, fn)
		run.Unknown = missing
		return "", err
	case ModeQuery:
		return "", e.Lookup.List(ctx, sel, opts.Filter, fn)
	}
	return e.Source.Delta(ctx, sel, link, fn)
}

// read runs one read into import files.
func (e *Engine) read(ctx context.Context, log *slog.Logger, m *mapping.Mapping, run *Run, opts Options, link string, resend []ResendUser) ([]importfile.File, string, error) {
	// One row per user across the files of a run, with the values of its
	// newest sighting: SharePoint refuses a file holding two rows of one
	// user, and Graph may repeat users (see importfile.Latest).
	w := importfile.NewWriter(e.TempDir, e.Limits)
	kvs := make([]importfile.KV, 0, len(m.Properties))
	anonymous := 0
	fp := opts.fingerprints
	fp.reset()
	// The users of the fingerprint store are numbered by it: the writer
	// keeps their newest sightings in 8 bytes each, not in its hash table.
	w.Dense(fp.users())
	s := sink{
		record: func(u profile.User, rec mapping.Record) error {
			// An unchanged user is dropped like a skipped one: of its
			// sightings, the newest decides (importfile.Latest).
			note, unchanged, at := fp.row(u, rec)
			if unchanged {
				key := u.ID
				if key == "" {
					key = rec.ID
				}
				w.DropAt(key, at, u.Seq, skipTag(skipUnchanged))
				return errUnchanged
			}
			kvs = kvs[:0]
			for _, kv := range rec.Values {
				kvs = append(kvs, importfile.KV{Name: kv.Name, Value: kv.Value})
			}
			if err := w.Put(importfile.Appearance{Key: u.ID, Seq: u.Seq, ID: rec.ID, Values: kvs, Note: note, At: at}); err != nil {
				return fmt.Errorf("writing the import file: %w", err)
			}
			return nil
		},
		skip: func(u profile.User, reason mapping.SkipReason) {
			at := fp.drop(u)
			key := u.ID
			if key == "" { // cannot be told apart: counted each time
				anonymous++
				key = "\x00" + strconv.Itoa(anonymous)
			}
			w.DropAt(key, at, u.Seq, skipTag(reason))
		},
	}
	next, err := e.collect(ctx, m, run, opts, link, s)
	if err == nil && len(resend) > 0 {
		err = e.readAgain(ctx, log, m, run, resend, s)
	}
	if err != nil {
		w.Abort()
		return nil, "", fmt.Errorf("reading users from Graph: %w", err)
	}
	opts.progress.phase(PhaseWriting, run, 0, 0)
	files, err := w.Close()
	if err != nil {
		w.Abort()
		return nil, "", fmt.Errorf("finishing the import files: %w", err)
	}
	countUsers(run, w.Stats())
	log.Info("users read", "read", run.Read, "sent", run.Sent, "repeated", run.Repeated, "skipped", run.Skipped, "unknown", run.Unknown, "files", len(files))
	return files, next, nil
}

// readAgain reads the users an earlier import failed for (after the delta
// round, so theirs are the newest sightings) into the same files.
func (e *Engine) readAgain(ctx context.Context, log *slog.Logger, m *mapping.Mapping, run *Run, resend []ResendUser, s sink) error {
	if e.Lookup == nil {
		return errors.New("users wait to be sent again, but this engine cannot look users up (no UserLookup)")
	}
	ids := make([]string, len(resend))
	for i, u := range resend {
		ids[i] = u.ID
	}
	sel := profile.Selection{Properties: m.Select(), Manager: m.ManagerSelect()}
	missing, err := e.Lookup.Lookup(ctx, sel, ids, func(u profile.User) error {
		run.Read++
		rec, skip := m.Apply(u)
		if skip != "" {
			s.skip(u, skip)
			return nil
		}
		if err := s.record(u, rec); err != errUnchanged {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading again the users an earlier import failed for: %w", err)
	}
	for _, u := range resend {
		run.Resent = append(run.Resent, ResendUser{ID: u.ID, Tries: u.Tries + 1})
	}
	log.Info("users an earlier import failed for are sent again", "users", len(resend), "unknownNow", len(missing))
	return nil
}

// skipReasons numbers the skip reasons for importfile.Latest's tags.
var skipReasons = []mapping.SkipReason{"", mapping.SkipDeleted, mapping.SkipGuest, mapping.SkipDisabled, mapping.SkipNoID, skipUnchanged}

func skipTag(r mapping.SkipReason) uint8 {
	for i, s := range skipReasons {
		if s == r {
			return uint8(i)
		}
	}
	return 0
}

// countUsers sets a run's counts from the users' newest sightings: a user
// Graph handed over twice is sent (or skipped) once.
func countUsers(run *Run, st importfile.Stats) {
	run.Sent, run.Repeated, run.Unchanged = st.Rows, st.Repeats, 0
	skipped := map[string]int{}
	for tag, n := range st.Dropped {
		name := "other"
		if int(tag) < len(skipReasons) && tag > 0 {
			name = string(skipReasons[tag])
		}
		if name == string(skipUnchanged) {
			run.Unchanged += n
			continue
		}
		skipped[name] += n
	}
	run.Skipped = skipped
}

func (e *Engine) upload(ctx context.Context, f importfile.File, name string) (string, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	return e.Target.Upload(ctx, name, fh, f.Bytes)
}

// removeStaleTemp deletes the import and spill files a killed process
// left in the temp folder (profilesync-*.json, profilesync-*.jsonl and
// profilesync-*.notes: the import files, the manager join's spill files
// and the rows' fingerprints). It runs while holding
// the sync lock, so no other sync of this machine is writing them.
func (e *Engine) removeStaleTemp(log *slog.Logger) {
	dir := e.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	n := 0
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() || !strings.HasPrefix(name, "profilesync-") ||
			!(strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".notes")) {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	if n > 0 {
		log.Warn("removed files an interrupted run left in the temp folder", "files", n, "dir", dir)
	}
}

func removeFiles(files []importfile.File) {
	for _, f := range files {
		os.Remove(f.Path)
		if f.Notes != "" {
			os.Remove(f.Notes)
		}
	}
}

// LoadMapping reads and validates mapping.json.
func (e *Engine) LoadMapping(ctx context.Context) (*mapping.Mapping, error) {
	data, _, err := e.Blobs.Get(ctx, MappingBlob)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in the state container: upload a mapping first (see README, \"The mapping\")", ErrNoMapping, MappingBlob)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", MappingBlob, err)
	}
	m, err := mapping.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("invalid %s: %w", MappingBlob, err)
	}
	return m, nil
}

// LoadState reads state.json and its ETag ("" when there is none yet).
func (e *Engine) LoadState(ctx context.Context) (State, string, error) {
	var st State
	data, etag, err := e.Blobs.Get(ctx, StateBlob)
	if errors.Is(err, fs.ErrNotExist) {
		return st, "", nil
	}
	if err != nil {
		return st, "", fmt.Errorf("reading %s: %w", StateBlob, err)
	}
	if st, err = DecodeState(data); err != nil {
		return st, "", fmt.Errorf("reading %s: %w", StateBlob, err)
	}
	return st, etag, nil
}

func (e *Engine) saveState(ctx context.Context, st State, etag string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if etag == "" {
		_, err = e.Blobs.Create(ctx, StateBlob, data)
	} else {
		_, err = e.Blobs.Put(ctx, StateBlob, data, etag)
	}
	if err != nil {
		return fmt.Errorf("saving the delta link in %s: %w", StateBlob, err)
	}
	return nil
}

func (e *Engine) putRun(ctx context.Context, run *Run) error {
	data, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		return err
	}
	if _, err := e.Blobs.Put(ctx, RunsPrefix+run.ID+".json", data, ""); err != nil {
		return fmt.Errorf("writing the run record: %w", err)
	}
	return nil
}

func (e *Engine) schedulePolls(ctx context.Context, run *Run) error {
	var errs []error
	for _, id := range run.JobIDs {
		now := e.now()
		msg, _ := json.Marshal(PollMessage{JobID: id, RunID: run.ID, QueuedAt: now, Attempt: 1})
		if err := e.Scheduler.Schedule(ctx, msg, e.FirstPoll); err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", id, err))
			continue
		}
		e.markScheduled(ctx, PollState{JobID: id, RunID: run.ID, QueuedAt: now, Attempt: 1, Scheduled: true})
	}
	return errors.Join(errs...)
}

// markScheduled notes in a job's poll document that its first poll is on
// the queue, keeping what else the document holds (the file and mapping a
// re-send needs).
func (e *Engine) markScheduled(ctx context.Context, ps PollState) {
	name := PollsPrefix + ps.JobID + ".json"
	etag := ""
	if data, tag, err := e.Blobs.Get(ctx, name); err == nil {
		if cur, err := DecodePollState(data); err == nil && cur.JobID == ps.JobID {
			if cur.Attempt > 1 || !cur.LastPoll.IsZero() {
				return // the poller is already at work: its document wins
			}
			cur.Scheduled = true
			ps, etag = cur, tag
		}
	}
	data, _ := json.MarshalIndent(ps, "", "  ")
	if _, err := e.Blobs.Put(ctx, name, data, etag); err != nil && !errors.Is(err, profile.ErrStale) {
		e.log().Warn("recording the scheduled status poll", "job", ps.JobID, "err", err)
	}
}

// runEnded reports whether a run's record says it is over (succeeded,
// failed, or closed as interrupted).
func (e *Engine) runEnded(ctx context.Context, runID string) bool {
	if runID == "" {
		return false
	}
	data, _, err := e.Blobs.Get(ctx, RunsPrefix+runID+".json")
	if err != nil {
		return false
	}
	run, err := DecodeRun(data)
	return err == nil && run.Status != "" && run.Status != StatusRunning
}

// RecoverPolls schedules again the status poll of every job nobody
// follows any more: a first poll never scheduled (the process died, or the
// queue failed, right after the job was queued), or a poll chain that died
// later (no poll for PollRevive). Every job of ours is thus followed to its
// end. It returns how many polls it scheduled.
func (e *Engine) RecoverPolls(ctx context.Context) (int, error) {
	if e.Pending == nil {
		return 0, nil
	}
	names, err := e.Pending.List(ctx, PollsPrefix)
	if err != nil {
		return 0, fmt.Errorf("listing followed jobs: %w", err)
	}
	n := 0
	for _, name := range names {
		data, etag, err := e.Blobs.Get(ctx, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		// The poll it schedules reads polls/<jobId>.json: that must be
		// this document.
		ps, err := DecodePollState(data)
		if err != nil || name != PollsPrefix+ps.JobID+".json" {
			e.log().Warn("ignoring an unreadable poll record", "blob", name, "err", err, "jobId", ps.JobID)
			continue
		}
		last := ps.QueuedAt
		for _, t := range []time.Time{ps.LastPoll, ps.Revived} {
			if t.After(last) {
				last = t
			}
		}
		// A first poll never sent: its run has ended (the run schedules
		// first polls before it ends) or, if the run record cannot tell,
		// enough time has passed.
		neverSent := !ps.Scheduled && ps.Attempt <= 1 &&
			(e.runEnded(ctx, ps.RunID) || e.now().Sub(ps.QueuedAt) >= e.FirstPoll+10*time.Minute)
		// A poll chain can also die later: its message dropped, or moved to
		// the poison queue after failed deliveries. No poll for longer than
		// the longest backoff (plus slack) means nobody follows the job.
		chainDied := e.now().Sub(last) >= e.pollRevive()
		if !neverSent && !chainDied {
			continue
		}
		msg, _ := json.Marshal(PollMessage{JobID: ps.JobID, RunID: ps.RunID, QueuedAt: ps.QueuedAt, Attempt: max(ps.Attempt, 1)})
		if err := e.Scheduler.Schedule(ctx, msg, 0); err != nil {
			return n, fmt.Errorf("scheduling a status poll for job %s: %w", ps.JobID, err)
		}
		ps.Scheduled, ps.Revived = true, e.now()
		data, _ = json.MarshalIndent(ps, "", "  ")
		if _, err := e.Blobs.Put(ctx, name, data, etag); err != nil && !errors.Is(err, profile.ErrStale) {
			return n, err
		}
		e.log().Warn("status poll of an import job was missing; scheduled it again", "job", ps.JobID, "run", ps.RunID)
		n++
	}
	return n, nil
}
