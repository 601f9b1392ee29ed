package syncer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"
)

// Walker streams the blobs under a prefix, in name order, with the time
// each was last written. fn returning ErrStopWalk ends the walk early.
type Walker interface {
	Walk(ctx context.Context, prefix string, fn func(name string, written time.Time) error) error
}

// ErrStopWalk ends a Walk without error.
var ErrStopWalk = errors.New("stop walking")

// DefaultMaxPrune bounds the records one Prune deletes, so that a first
// sweep over years of history does not hold up the timer: the next sweeps
// go on where it stopped.
const DefaultMaxPrune = 10_000

// Pruned counts what Prune deleted.
type Pruned struct {
	Runs, Jobs, Polls int
	Files             int  // never-queued import files (what-if runs, failed ones) deleted with their run
	Other             int  // records under AlsoPrune
	More              bool // the bound was reached: more is due
}

// Prune deletes the records of finished work older than Retain: run
// records (runs/, named by their start time, so only the old ones are
// listed), job records (jobs/, by the time they were written) and poll
// documents of jobs already recorded. It never deletes what a job still
// followed needs: its poll document, its run record, or its job record.
// Without retention, runs/ and jobs/ grow forever: one run and a few jobs
// per timer tick reach Blob listing limits within years (an hourly sync
// within months).
func (h *Housekeeper) Prune(ctx context.Context) (Pruned, error) {
	var out Pruned
	if h.Retain <= 0 || h.Walk == nil {
		return out, nil
	}
	now := time.Now().UTC()
	if h.Now != nil {
		now = h.Now().UTC()
	}
	cut := now.Add(-h.Retain)
	limit := h.MaxPrune
	if limit <= 0 {
		limit = DefaultMaxPrune
	}
	del, ok := h.Blobs.(Deleter)
	if !ok {
		return out, errors.New("pruning records: the store cannot delete")
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	budget := func() bool {
		if out.Runs+out.Jobs+out.Polls+out.Other >= limit {
			out.More = true
			return false
		}
		return true
	}

	// What is still followed: every poll document whose job has no record.
	followedJobs, followedRuns := map[string]bool{}, map[string]bool{}
	err := h.Walk.Walk(ctx, PollsPrefix, func(name string, _ time.Time) error {
		id := strings.TrimSuffix(strings.TrimPrefix(name, PollsPrefix), ".json")
		if _, _, err := h.Blobs.Get(ctx, JobsPrefix+id+".json"); err == nil {
			// Recorded: the poller's forget failed. Finished work.
			if !budget() {
				return ErrStopWalk
			}
			if err := del.Delete(ctx, name); err != nil {
				return fmt.Errorf("deleting %s: %w", name, err)
			}
			out.Polls++
			return nil
		}
		followedJobs[id] = true
		if data, _, err := h.Blobs.Get(ctx, name); err == nil {
			if ps, err := DecodePollState(data); err == nil && ps.RunID != "" {
				followedRuns[ps.RunID] = true
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("pruning poll documents: %w", err)
	}
	if cur, _, err := h.Blobs.Get(ctx, CurrentBlob); err == nil {
		if id, err := decodeCurrent(cur); err == nil {
			followedRuns[id] = true
		}
	}

	// Run records: names begin with the run's start time, so the walk
	// stops at the first one young enough to keep.
	err = h.Walk.Walk(ctx, RunsPrefix, func(name string, _ time.Time) error {
		id := strings.TrimSuffix(strings.TrimPrefix(name, RunsPrefix), ".json")
		started, err := time.Parse("20060102T150405.000Z", strings.SplitN(id, "-", 2)[0])
		if err != nil {
			return nil // not a run record of ours
		}
		if !started.Before(cut) {
			return ErrStopWalk
		}
		if followedRuns[id] {
			return nil
		}
		if !budget() {
			return ErrStopWalk
		}
		// Files the run uploaded but never queued (what-if runs keep theirs
		// for the administrator to look at) go with its record.
		if data, _, err := h.Blobs.Get(ctx, name); err == nil && h.Files != nil {
			if run, err := DecodeRun(data); err == nil {
				for _, f := range run.Files {
					if f.URL != "" && f.JobID == "" && !f.Deleted {
						err := h.Files.Delete(ctx, f.URL)
						if refused(err) {
							log.Warn("pruning: not deleting what a run record names outside the upload folder", "run", id, "url", f.URL, "err", err)
							continue
						}
						if err != nil && !errors.Is(err, fs.ErrNotExist) {
							return fmt.Errorf("deleting %s of run %s: %w", f.URL, id, err)
						}
						out.Files++
					}
				}
			}
		}
		if err := del.Delete(ctx, name); err != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		out.Runs++
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("pruning run records: %w", err)
	}

	// Job records: by the time they were written (when the job ended).
	// With file housekeeping on, a record whose files are not cleaned yet
	// is kept: it is how housekeeping finds them.
	err = h.Walk.Walk(ctx, JobsPrefix, func(name string, written time.Time) error {
		id := strings.TrimSuffix(strings.TrimPrefix(name, JobsPrefix), ".json")
		if !written.Before(cut) || followedJobs[id] {
			return nil
		}
		if h.After > 0 {
			data, _, err := h.Blobs.Get(ctx, name)
			if err != nil {
				return nil
			}
			if rec, err := DecodeJobRecord(data); err == nil && rec.Cleaned.IsZero() && cleanable(rec) {
				return nil
			}
		}
		if !budget() {
			return ErrStopWalk
		}
		if err := del.Delete(ctx, name); err != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		out.Jobs++
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("pruning job records: %w", err)
	}
	// Other records (the handler's run requests): by the time they were written.
	for _, prefix := range h.AlsoPrune {
		err = h.Walk.Walk(ctx, prefix, func(name string, written time.Time) error {
			if !written.Before(cut) {
				return nil
			}
			if !budget() {
				return ErrStopWalk
			}
			if err := del.Delete(ctx, name); err != nil {
				return fmt.Errorf("deleting %s: %w", name, err)
			}
			out.Other++
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("pruning %s: %w", prefix, err)
		}
	}
	log.Info("records pruned", "other", out.Other, "runs", out.Runs, "jobs", out.Jobs, "polls", out.Polls, "unqueuedFiles", out.Files, "olderThan", cut, "more", out.More)
	return out, nil
}
