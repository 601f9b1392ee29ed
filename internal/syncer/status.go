package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/profile"
)

// PollsPrefix holds one document per job still being followed:
// polls/<jobId>.json. The sync creates it when it queues the job; the status
// poller updates it on every poll and deletes it once the job is recorded
// under jobs/<jobId>.json. A document here therefore means "an import of ours
// that has not finished", which is what keeps syncs from overlapping imports.
const PollsPrefix = "polls/"

// MaxResults bounds the per-user results kept in a job record; the counts
// by code always cover every line of the log.
const MaxResults = 5000

// JobSource reads SharePoint's view of an import job.
type JobSource interface {
	Job(ctx context.Context, id string) (profile.Job, error)
}

// LogReader streams the lines of every file in a job's log folder.
type LogReader interface {
	LogLines(ctx context.Context, folderURI string, fn func(line string) error) error
}

// Lister lists blob names under a prefix.
type Lister interface {
	List(ctx context.Context, prefix string) ([]string, error)
}

// Deleter deletes a blob; a missing blob is not an error.
type Deleter interface {
	Delete(ctx context.Context, name string) error
}

// PollState is polls/<jobId>.json.
type PollState struct {
	JobID     string    `json:"jobId"`
	RunID     string    `json:"runId,omitempty"`
	QueuedAt  time.Time `json:"queuedAt"`
	Attempt   int       `json:"attempt"`   // the newest poll scheduled
	Scheduled bool      `json:"scheduled"` // that poll's message is on the queue
	FirstPoll time.Time `json:"firstPoll,omitzero"`
	LastPoll  time.Time `json:"lastPoll,omitzero"`
	LastState string    `json:"lastState,omitempty"`
	Revived   time.Time `json:"revived,omitzero"` // RecoverPolls scheduled a poll for a chain that died
	// What the job imports, so that a job that fails for a reason that may
	// pass can be queued again with the same file.
	SourceURI   string            `json:"sourceUri,omitempty"`
	IDType      string            `json:"idType,omitempty"`
	PropertyMap map[string]string `json:"propertyMap,omitempty"`
	Requeues    int               `json:"requeues,omitempty"` // how many earlier jobs imported this file
}

// JobRecord is jobs/<jobId>.json: how an import job ended.
type JobRecord struct {
	JobID        string         `json:"jobId"`
	RunID        string         `json:"runId,omitempty"`
	State        string         `json:"state"` // Succeeded, Error, or TimedOut (profilesync's verdict)
	ErrorCode    int            `json:"errorCode"`
	ErrorName    string         `json:"error"`
	ErrorMessage string         `json:"errorMessage,omitempty"`
	SourceURI    string         `json:"sourceUri,omitempty"`
	LogFolderURI string         `json:"logFolderUri,omitempty"`
	QueuedAt     time.Time      `json:"queuedAt,omitzero"`
	FirstPoll    time.Time      `json:"firstPoll,omitzero"`
	LastPoll     time.Time      `json:"lastPoll,omitzero"`
	Attempts     int            `json:"attempts"`
	Recorded     time.Time      `json:"recorded"`
	ResultCounts map[string]int `json:"resultCounts,omitempty"` // per-user log lines by code
	Results      []UserResult   `json:"results,omitempty"`
	Truncated    bool           `json:"resultsTruncated,omitempty"`
	LogError     string         `json:"logError,omitempty"` // the log folder could not be read
	// Resent says what profilesync did so that no change is lost when the
	// job did not import everything: "requeued as <job>", "<n> user(s)
	// carried into the next run", "next run is full: …", or why nothing.
	Resent     string    `json:"resent,omitempty"`
	RequeuedAs string    `json:"requeuedAs,omitempty"`
	Cleaned    time.Time `json:"cleaned,omitzero"` // import file and log folder deleted (housekeeping)
	// Fingerprints says how many of the job's users the fingerprint store
	// now remembers as imported, and how many it forgot (fingerprint.go).
	Fingerprints string `json:"fingerprints,omitempty"`
}

// UserResult is one line of a job's log: `<code>\t<identity>\t<message>`.
type UserResult struct {
	Code     string `json:"code"`
	Identity string `json:"identity,omitempty"`
	Message  string `json:"message"`
}

// JobLink is a job's outcome as its run record shows it.
type JobLink struct {
	JobID  string `json:"jobId"`
	State  string `json:"state"`
	Error  string `json:"error,omitempty"`
	Record string `json:"record"`
	Resent string `json:"resent,omitempty"`
}

// Requeuer queues an import job (satisfied by Target).
type Requeuer interface {
	QueueImport(ctx context.Context, idType profile.IDType, idProperty string, propertyMap map[string]string, sourceURI string) (jobID string, err error)
}

// ErrDrop marks a status message that can never succeed: it is logged and
// dropped rather than retried into the poison queue.
var ErrDrop = errors.New("status message dropped")

// Poller follows import jobs: one Poll per queue message.
type Poller struct {
	Jobs      JobSource
	Logs      LogReader
	Blobs     Blobs
	Scheduler Scheduler
	// Requeue queues a failed job's file again (Target's QueueImport). When
	// nil, or after MaxRequeues, a failed job makes the next run full.
	Requeue     Requeuer
	MaxRequeues int // default 3
	// Backoff are the delays between polls: Backoff[0] precedes the first
	// poll (the sync schedules it), Backoff[n] the (n+1)th; the last repeats.
	Backoff []time.Duration
	MaxAge  time.Duration
	Now     func() time.Time
	Log     *slog.Logger
	// TempDir holds a new fingerprint store while a merge writes it ("" =
	// os.TempDir()).
	TempDir string
	// Metrics receives each finished job's metric event (metrics.go),
	// whatever its level; nil writes none.
	Metrics *slog.Logger
}

// Outcome says what one poll did.
type Outcome struct {
	Job       profile.Job
	Recorded  *JobRecord    // set when the job ended (or timed out) and was recorded now
	NextPoll  time.Duration // set when another poll was scheduled
	Duplicate bool          // the message was stale or the job already recorded: nothing changed
}

func (p *Poller) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

func (p *Poller) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Delay returns the wait before poll number attempt+1 (attempt counts from 1).
func Delay(backoff []time.Duration, attempt int) time.Duration {
	if len(backoff) == 0 {
		return time.Minute
	}
	return backoff[min(max(attempt, 0), len(backoff)-1)]
}

// ParsePollMessage decodes a queue message body; a body that can never be
// processed yields an error wrapping ErrDrop.
func ParsePollMessage(body []byte) (PollMessage, error) {
	var m PollMessage
	if err := decodeRecord(body, &m); err != nil {
		return m, fmt.Errorf("%w: not a status message: %w", ErrDrop, err)
	}
	if strings.TrimSpace(m.JobID) == "" {
		return m, fmt.Errorf("%w: the message has no jobId", ErrDrop)
	}
	// The id names blobs (jobs/<id>.json, polls/<id>.json), and anyone who
	// can write to the queue writes messages: only a GUID, in the canonical
	// lower-case form SharePoint's job ids are stored under, names one.
	id, err := uuid.Parse(m.JobID)
	if err != nil || len(m.JobID) != 36 {
		return m, fmt.Errorf("%w: jobId %.80q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", ErrDrop, m.JobID)
	}
	m.JobID = id.String()
	var c checker
	c.id("runId", m.RunID, false)
	if m.Attempt > maxAttempts {
		c.failf("attempt", "%d is out of range (at most %d)", m.Attempt, maxAttempts)
	}
	if c.err != nil {
		return m, fmt.Errorf("%w: %w", ErrDrop, c.err)
	}
	if m.Attempt < 1 {
		m.Attempt = 1
	}
	return m, nil
}

// Poll handles one status message. Transient failures (SharePoint, storage)
// are returned as errors so the host retries the message; a message that can
// never succeed returns an error wrapping ErrDrop.
//
// Every step is idempotent: a job already recorded, or a message older than
// the newest poll scheduled, changes nothing.
func (p *Poller) Poll(ctx context.Context, msg PollMessage) (Outcome, error) {
	log := p.log().With("job", msg.JobID, "attempt", msg.Attempt)
	var out Outcome
	if data, _, err := p.Blobs.Get(ctx, JobsPrefix+msg.JobID+".json"); err == nil {
		log.Info("job already recorded; duplicate status message ignored")
		out.Duplicate = true
		// The delivery that wrote the record may have died before it linked
		// the job into its run: link it now (linking twice changes nothing).
		if rec, err := DecodeJobRecord(data); err == nil && rec.RunID != "" {
			if err := p.linkRun(ctx, &rec); err != nil {
				return out, err
			}
		}
		p.forget(ctx, msg.JobID)
		return out, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return out, fmt.Errorf("reading the job record: %w", err)
	}
	ps, etag, err := p.pollState(ctx, msg.JobID)
	if errors.Is(err, fs.ErrNotExist) {
		return out, fmt.Errorf("%w: job %s is not one of ours (no %s%s.json)", ErrDrop, msg.JobID, PollsPrefix, msg.JobID)
	}
	if err != nil {
		return out, err
	}
	if ps.Attempt > msg.Attempt+1 || (ps.Attempt == msg.Attempt+1 && ps.Scheduled) {
		log.Info("stale status message: a newer poll is already scheduled", "scheduled", ps.Attempt)
		out.Duplicate = true
		return out, nil
	}

	job, err := p.Jobs.Job(ctx, msg.JobID)
	if errors.Is(err, fs.ErrNotExist) {
		// A job of ours (its poll document says so) that SharePoint does not
		// know (any more): dropping the message would leave its users
		// unsent. Soon after queueing it may not be visible yet, so it is
		// polled again; after an hour it counts as lost and is re-sent
		// like a job that never finished.
		queued := ps.QueuedAt
		if queued.IsZero() {
			queued = msg.QueuedAt
		}
		if p.now().Sub(queued) < time.Hour {
			job = profile.Job{ID: msg.JobID, State: profile.Unknown}
		} else {
			log.Warn("SharePoint does not know this import job; it counts as lost", "queued", queued)
			job = profile.Job{ID: msg.JobID, State: profile.TimedOut, SourceURI: ps.SourceURI,
				ErrorMessage: "SharePoint does not know the job (GetImportProfilePropertyJob)"}
			out.Job = job
			ps.LastPoll, ps.LastState = p.now(), "Unknown"
			rec, err := p.record(ctx, log, job, ps, msg.Attempt)
			out.Recorded = rec
			return out, err
		}
		err = nil
	}
	if err != nil {
		return out, fmt.Errorf("reading job %s from SharePoint: %w", msg.JobID, err)
	}
	out.Job = job
	now := p.now()
	if ps.FirstPoll.IsZero() {
		ps.FirstPoll = now
	}
	ps.LastPoll, ps.LastState = now, job.State.String()
	queuedAt := ps.QueuedAt
	if queuedAt.IsZero() {
		queuedAt = msg.QueuedAt
	}

	if !job.State.Done() {
		if p.MaxAge > 0 && now.Sub(queuedAt) >= p.MaxAge {
			log.Warn("import job still not finished; giving up", "state", job.State, "age", now.Sub(queuedAt).Round(time.Second), "maxAge", p.MaxAge)
			job.State = profile.TimedOut
			rec, err := p.record(ctx, log, job, ps, msg.Attempt)
			out.Recorded = rec
			return out, err
		}
		next := msg.Attempt + 1
		delay := Delay(p.Backoff, msg.Attempt)
		// Claim the next poll first (conditionally), then send it, then mark it sent:
		// a duplicate of this message loses the claim; a retry after a crash
		// between the steps sends the poll again rather than never.
		ps.Attempt, ps.Scheduled = next, false
		etag, err = p.putPollState(ctx, ps, etag)
		if errors.Is(err, profile.ErrStale) {
			log.Info("another delivery of this message is handling the job")
			out.Duplicate = true
			return out, nil
		}
		if err != nil {
			return out, err
		}
		body, _ := json.Marshal(PollMessage{JobID: msg.JobID, RunID: ps.RunID, QueuedAt: queuedAt, Attempt: next})
		if err := p.Scheduler.Schedule(ctx, body, delay); err != nil {
			return out, fmt.Errorf("scheduling the next status poll: %w", err)
		}
		ps.Scheduled = true
		if _, err := p.putPollState(ctx, ps, etag); err != nil && !errors.Is(err, profile.ErrStale) {
			log.Warn("marking the next poll as scheduled", "err", err)
		}
		log.Info("import job not finished yet", "state", job.State, "nextPollIn", delay)
		out.NextPoll = delay
		return out, nil
	}
	rec, err := p.record(ctx, log, job, ps, msg.Attempt)
	out.Recorded = rec
	return out, err
}

// record writes jobs/<id>.json (first writer wins), links it from the run
// record and stops following the job.
func (p *Poller) record(ctx context.Context, log *slog.Logger, job profile.Job, ps PollState, attempts int) (*JobRecord, error) {
	rec := &JobRecord{
		JobID: job.ID, RunID: ps.RunID, State: job.State.String(),
		ErrorCode: int(job.Error), ErrorName: job.Error.String(), ErrorMessage: job.ErrorMessage,
		SourceURI: job.SourceURI, LogFolderURI: job.LogFolderURI,
		QueuedAt: ps.QueuedAt, FirstPoll: ps.FirstPoll, LastPoll: ps.LastPoll, Attempts: attempts,
		Recorded: p.now(),
	}
	if rec.JobID == "" {
		rec.JobID = ps.JobID
	}
	if job.State == profile.TimedOut && rec.ErrorMessage == "" {
		rec.ErrorMessage = fmt.Sprintf("still %s after %s; profilesync stopped polling (STATUS_POLL_MAX_AGE)", ps.LastState, p.MaxAge)
	}
	if job.State == profile.Error && job.LogFolderURI != "" && p.Logs != nil {
		rec.ResultCounts = map[string]int{}
		err := p.Logs.LogLines(ctx, job.LogFolderURI, func(line string) error {
			r, ok := ParseLogLine(line)
			if !ok {
				return nil
			}
			countResult(rec.ResultCounts, r.Code)
			if len(rec.Results) < MaxResults {
				rec.Results = append(rec.Results, r)
			} else {
				rec.Truncated = true
			}
			return nil
		})
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			rec.LogError = "the log folder does not exist: " + job.LogFolderURI
		case errors.Is(err, profile.ErrForeignOrigin):
			// Never read, however often the message comes back: the job
			// ends as one whose log could not be read.
			log.Warn("the job's log folder is not on the SharePoint site's origin; it is not read", "logFolder", job.LogFolderURI, "err", err)
			rec.LogError = "the log folder is not on the site's origin, not read: " + err.Error()
		default:
			return nil, fmt.Errorf("reading the job's log folder: %w", err)
		}
	}
	if job.State != profile.Succeeded {
		if err := p.resend(ctx, log, rec, ps); err != nil {
			return nil, err
		}
	}
	// Before the record: a crash in between leaves the message to merge
	// again, which changes nothing.
	if err := p.rememberFingerprints(ctx, log, rec, ps); err != nil {
		return nil, err
	}
	data, _ := json.MarshalIndent(rec, "", "  ")
	for len(data) > MaxJobBytes && len(rec.Results) > 0 {
		// Lines of odd characters escape to several bytes each: keep fewer
		// results rather than write a record no one could read back.
		rec.Results, rec.Truncated = rec.Results[:len(rec.Results)/2], true
		data, _ = json.MarshalIndent(rec, "", "  ")
	}
	crashpoint.Hit(crashpoint.PollBeforeRecord)
	_, cerr := p.Blobs.Create(ctx, JobsPrefix+rec.JobID+".json", data)
	if cerr != nil && !errors.Is(cerr, profile.ErrStale) {
		return nil, fmt.Errorf("writing the job record: %w", cerr)
	}
	if cerr == nil { // the delivery that wrote the record reports the job: one event per job
		p.emitJob(ctx, rec, ps)
	}
	crashpoint.Hit(crashpoint.PollAfterRecord)
	p.forgetSidecar(ctx, rec, ps)
	if rec.RunID != "" {
		if err := p.linkRun(ctx, rec); err != nil {
			return nil, err
		}
	}
	p.forget(ctx, rec.JobID)
	lvl := slog.LevelInfo
	if job.State != profile.Succeeded {
		lvl = slog.LevelWarn
	}
	log.Log(ctx, lvl, "import job finished", "state", rec.State, "error", rec.ErrorName, "message", rec.ErrorMessage,
		"userErrors", rec.ResultCounts, "attempts", attempts, "source", rec.SourceURI)
	return rec, nil
}

// linkRun adds the job's outcome to its run record (read-modify-write on the ETag).
func (p *Poller) linkRun(ctx context.Context, rec *JobRecord) error {
	name := RunsPrefix + rec.RunID + ".json"
	for range 5 {
		data, etag, err := p.Blobs.Get(ctx, name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the run record is gone (cleaned up by hand): nothing to link
		}
		if err != nil {
			return fmt.Errorf("reading run %s: %w", rec.RunID, err)
		}
		run, err := DecodeRun(data)
		if err != nil {
			return nil // not ours to repair
		}
		link := JobLink{JobID: rec.JobID, State: rec.State, Record: JobsPrefix + rec.JobID + ".json", Resent: rec.Resent}
		if rec.ErrorCode != 0 {
			link.Error = rec.ErrorName
		}
		replaced := false
		for i := range run.JobResults {
			if run.JobResults[i].JobID == rec.JobID {
				run.JobResults[i], replaced = link, true
			}
		}
		if !replaced {
			run.JobResults = append(run.JobResults, link)
		}
		data, _ = json.MarshalIndent(run, "", "  ")
		if _, err := p.Blobs.Put(ctx, name, data, etag); errors.Is(err, profile.ErrStale) {
			continue
		} else if err != nil {
			return fmt.Errorf("linking job %s from run %s: %w", rec.JobID, rec.RunID, err)
		}
		return nil
	}
	return fmt.Errorf("linking job %s from run %s: the run record kept changing", rec.JobID, rec.RunID)
}

func (p *Poller) forget(ctx context.Context, jobID string) {
	d, ok := p.Blobs.(Deleter)
	if !ok {
		return
	}
	if err := d.Delete(ctx, PollsPrefix+jobID+".json"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log().Warn("removing the poll state", "job", jobID, "err", err)
	}
}

func (p *Poller) pollState(ctx context.Context, jobID string) (PollState, string, error) {
	var ps PollState
	data, etag, err := p.Blobs.Get(ctx, PollsPrefix+jobID+".json")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ps, "", err
		}
		return ps, "", fmt.Errorf("reading the poll state: %w", err)
	}
	if ps, err = DecodePollState(data); err != nil {
		return ps, "", fmt.Errorf("%w: corrupt poll state for job %s: %v", ErrDrop, jobID, err)
	}
	if ps.JobID != jobID {
		// It is written back under its own id.
		return ps, "", fmt.Errorf("%w: the poll state of job %s names job %s", ErrDrop, jobID, ps.JobID)
	}
	return ps, etag, nil
}

func (p *Poller) putPollState(ctx context.Context, ps PollState, etag string) (string, error) {
	data, _ := json.MarshalIndent(ps, "", "  ")
	return p.Blobs.Put(ctx, PollsPrefix+ps.JobID+".json", data, etag)
}

// ParseLogLine parses `<ErrorCode>\t<identity>\t<message>` (also tolerating
// `<ErrorCode> - <message>` lines); lines that leave code, identity and
// message all empty (blank ones, a lone "-") are skipped. Fields are
// trimmed of spaces and byte order marks.
func ParseLogLine(line string) (UserResult, bool) {
	var r UserResult
	switch parts := strings.SplitN(line, "\t", 3); len(parts) {
	case 3:
		r = UserResult{Code: logField(parts[0]), Identity: logField(parts[1]), Message: logField(parts[2])}
	case 2:
		r = UserResult{Code: logField(parts[0]), Message: logField(parts[1])}
	default:
		code, msg, _ := strings.Cut(logField(line), " ")
		r = UserResult{Code: logField(code), Message: logField(strings.TrimPrefix(logField(msg), "-"))}
	}
	return r, r != UserResult{}
}

func logField(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\ufeff' })
}
