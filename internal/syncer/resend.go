package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/profilesync/profilesync/internal/profile"
)

// A failed import loses no change. The delta link moves on once a run's
// jobs are queued, so users whose import did not land would never be sent
// again by later delta rounds. When a job ends without importing
// everything, the poller therefore arranges a re-send, and says which in the
// job record and the run record:
//
//   - a job-level failure that may pass (InternalError, DataFileNotExist,
//     or a job that never finished): the same file, still in the library,
//     is queued again as a new job, up to MaxRequeues times, each new job's
//     first poll waiting longer;
//   - users with a line in the job's log: carried into the next run, which
//     reads them again by id (State.Resend), up to MaxResendTries times;
//   - anything else (the file is refused, the log cannot be read, too many
//     users, or e-mail identities, which cannot be looked up): the next run
//     is full (State.FullSync).

// MaxResendUsers bounds the users carried into the next run; more than
// that and the next run is full instead.
const MaxResendUsers = 5000

// MaxResendTries bounds how often one user is carried into a later run
// after failing; a user whose import keeps failing is then left to the
// administrator (its job records say why).
const MaxResendTries = 3

// ResendUser is a user whose import failed, to be sent again.
type ResendUser struct {
	ID    string `json:"id"`              // the IdName value SharePoint logged (object id or UPN)
	Tries int    `json:"tries,omitempty"` // runs that already sent it again
}

func (p *Poller) maxRequeues() int {
	if p.MaxRequeues > 0 {
		return p.MaxRequeues
	}
	return 3
}

// requeueable reports job-level failures that queueing the same file again
// may cure.
func requeueable(job profile.Job) bool {
	return job.State == profile.TimedOut || (job.State == profile.Error &&
		(job.Error == profile.InternalError || job.Error == profile.DataFileNotExist))
}

// resend arranges that what a failed job did not import is sent again, and
// notes it in rec. Errors are transient (the message is retried).
func (p *Poller) resend(ctx context.Context, log *slog.Logger, rec *JobRecord, ps PollState) error {
	job := profile.Job{State: mustState(rec.State), Error: profile.JobError(rec.ErrorCode)}
	idType, idErr := profile.ParseIDType(ps.IDType)
	switch {
	case requeueable(job) && p.Requeue != nil && ps.SourceURI != "" && ps.PropertyMap != nil && idErr == nil && ps.Requeues < p.maxRequeues():
		return p.requeue(ctx, log, rec, ps, idType)
	case job.State == profile.Error && job.Error == profile.ImportCompleteWithError && rec.LogError == "" && !rec.Truncated:
		var ids []string
		seen := map[string]bool{}
		for _, r := range rec.Results {
			if r.Identity != "" && !seen[r.Identity] {
				seen[r.Identity] = true
				ids = append(ids, r.Identity)
			}
		}
		switch {
		case len(ids) == 0:
			return p.markFull(ctx, log, rec, "job "+rec.JobID+" reported errors for users it did not name")
		case ps.IDType == profile.Email.String():
			return p.markFull(ctx, log, rec, fmt.Sprintf("job %s failed for %d user(s) identified by e-mail, which cannot be read again one by one", rec.JobID, len(ids)))
		}
		return p.carry(ctx, log, rec, ids)
	}
	why := fmt.Sprintf("job %s ended %s (%s)", rec.JobID, rec.State, rec.ErrorName)
	if requeueable(job) && ps.Requeues >= p.maxRequeues() {
		why += fmt.Sprintf(" after the file was queued %d times", ps.Requeues+1)
	}
	if rec.LogError != "" || rec.Truncated {
		why += ": its log cannot tell every failed user"
	}
	return p.markFull(ctx, log, rec, why)
}

func mustState(name string) profile.JobState {
	s, _ := profile.ParseJobState(name)
	return s
}

// requeue queues the job's file again and follows the new job. The new
// job's poll document is written before its first poll is scheduled, so a
// crash in between leaves it for RecoverPolls.
func (p *Poller) requeue(ctx context.Context, log *slog.Logger, rec *JobRecord, ps PollState, idType profile.IDType) error {
	id, err := p.Requeue.QueueImport(ctx, idType, profile.IDProperty, ps.PropertyMap, ps.SourceURI)
	if err != nil {
		return fmt.Errorf("queueing the file of job %s again: %w", rec.JobID, err)
	}
	now := p.now()
	nps := PollState{JobID: id, RunID: ps.RunID, QueuedAt: now, Attempt: 1,
		SourceURI: ps.SourceURI, IDType: ps.IDType, PropertyMap: ps.PropertyMap, Requeues: ps.Requeues + 1}
	etag, err := p.putPollState(ctx, nps, "")
	if err != nil {
		return fmt.Errorf("recording job %s: %w", id, err)
	}
	delay := Delay(p.Backoff, 0) << min(nps.Requeues, 6)
	msg, _ := json.Marshal(PollMessage{JobID: id, RunID: ps.RunID, QueuedAt: now, Attempt: 1})
	if err := p.Scheduler.Schedule(ctx, msg, delay); err != nil {
		log.Warn("scheduling the first poll of the queued-again job; the next timer run will", "job", id, "err", err)
	} else {
		nps.Scheduled = true
		if _, err := p.putPollState(ctx, nps, etag); err != nil && !errors.Is(err, profile.ErrStale) {
			log.Warn("marking the first poll as scheduled", "job", id, "err", err)
		}
	}
	rec.RequeuedAs = id
	rec.Resent = fmt.Sprintf("requeued as job %s (the same file, attempt %d of %d)", id, nps.Requeues+1, p.maxRequeues()+1)
	log.Warn("import job failed; its file is queued again", "newJob", id, "error", rec.ErrorName, "attempt", nps.Requeues+1, "firstPollIn", delay)
	return nil
}

// carry adds the users a job failed for to State.Resend, counting how often
// each was carried before (from the run that sent them).
func (p *Poller) carry(ctx context.Context, log *slog.Logger, rec *JobRecord, ids []string) error {
	tries := map[string]int{}
	if rec.RunID != "" {
		if data, _, err := p.Blobs.Get(ctx, RunsPrefix+rec.RunID+".json"); err == nil {
			if run, err := DecodeRun(data); err == nil {
				for _, u := range run.Resent {
					tries[strings.ToLower(u.ID)] = u.Tries
				}
			}
		}
	}
	var add []ResendUser
	var gaveUp []string
	for _, id := range ids {
		t := tries[strings.ToLower(id)] + 1
		if t > MaxResendTries {
			gaveUp = append(gaveUp, id)
			continue
		}
		add = append(add, ResendUser{ID: id, Tries: tries[strings.ToLower(id)]})
	}
	full := ""
	err := updateState(ctx, p.Blobs, func(st *State) {
		have := map[string]int{}
		for i, u := range st.Resend {
			have[strings.ToLower(u.ID)] = i
		}
		for _, u := range add {
			if i, ok := have[strings.ToLower(u.ID)]; ok {
				st.Resend[i].Tries = max(st.Resend[i].Tries, u.Tries)
				continue
			}
			st.Resend = append(st.Resend, u)
		}
		if len(st.Resend) > MaxResendUsers {
			full = fmt.Sprintf("more than %d users wait to be sent again", MaxResendUsers)
			st.FullSync, st.Resend = full, nil
		}
	})
	if err != nil {
		return err
	}
	switch {
	case full != "":
		rec.Resent = "next run is full: " + full
	case len(add) > 0:
		rec.Resent = fmt.Sprintf("%d user(s) carried into the next run", len(add))
	}
	if len(gaveUp) > 0 {
		rec.Resent = strings.TrimPrefix(rec.Resent+fmt.Sprintf("; %d user(s) failed %d times and are not sent again: %s", len(gaveUp), MaxResendTries+1, strings.Join(gaveUp[:min(len(gaveUp), 20)], ", ")), "; ")
		log.Warn("users keep failing to import; not sending them again", "users", len(gaveUp), "job", rec.JobID)
	}
	log.Warn("import job failed for some users; they are sent again by the next run", "users", len(add), "job", rec.JobID)
	return nil
}

// markFull makes the next run full.
func (p *Poller) markFull(ctx context.Context, log *slog.Logger, rec *JobRecord, why string) error {
	if err := updateState(ctx, p.Blobs, func(st *State) {
		st.FullSync = why
	}); err != nil {
		return err
	}
	rec.Resent = "next run is full: " + why
	log.Warn("import job failed; the next run sends every user", "why", why)
	return nil
}

// updateState changes state.json with read-modify-write on its ETag.
func updateState(ctx context.Context, b Blobs, change func(*State)) error {
	for range 8 {
		var st State
		data, etag, err := b.Get(ctx, StateBlob)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			etag = ""
		case err != nil:
			return fmt.Errorf("reading %s: %w", StateBlob, err)
		default:
			if st, err = DecodeState(data); err != nil {
				return fmt.Errorf("reading %s: %w", StateBlob, err)
			}
		}
		change(&st)
		data, _ = json.MarshalIndent(st, "", "  ")
		if etag == "" {
			_, err = b.Create(ctx, StateBlob, data)
		} else {
			_, err = b.Put(ctx, StateBlob, data, etag)
		}
		if errors.Is(err, profile.ErrStale) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", StateBlob, err)
		}
		return nil
	}
	return fmt.Errorf("writing %s: it kept changing", StateBlob)
}
