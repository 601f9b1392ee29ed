package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// Remover deletes a SharePoint file or folder by URL; a missing one wraps
// fs.ErrNotExist. One not below the upload folder (or on another origin) is
// never deleted: the error wraps profile.ErrOutsideFolder (or
// profile.ErrForeignOrigin).
type Remover interface {
	Delete(ctx context.Context, url string) error
}

// AgedLister lists the blobs under prefix last written before a time.
type AgedLister interface {
	ListOlder(ctx context.Context, prefix string, before time.Time) ([]string, error)
}

// Housekeeper deletes the import files and log folders of recorded jobs once
// they are older than After. SharePoint never deletes them, and libraries
// that keep every daily file eventually hit the list view threshold
// (pnp/powershell#3814). Files of jobs that did not end (TimedOut) are kept:
// SharePoint may still read them.
type Housekeeper struct {
	Blobs Blobs
	List  Lister
	Files Remover
	After time.Duration
	Now   func() time.Time
	Log   *slog.Logger
	// Max bounds the jobs cleaned in one sweep (default 100), so a first sweep
	// over a long history does not hold up a sync.
	Max int
	// Retain is how long Prune keeps the records of finished work (0 keeps
	// them all); Walk lists them; MaxPrune bounds one Prune (default
	// DefaultMaxPrune).
	Retain   time.Duration
	Walk     Walker
	MaxPrune int
	// AlsoPrune are more prefixes whose records Prune deletes by write time.
	AlsoPrune []string
}

// refused reports a delete the Remover would not even try: the URL is on
// another origin or not below the upload folder.
func refused(err error) bool {
	return errors.Is(err, profile.ErrOutsideFolder) || errors.Is(err, profile.ErrForeignOrigin)
}

// cleanable reports whether housekeeping deletes a job's files once due:
// jobs that ended (a TimedOut job's file may still be read by SharePoint).
func cleanable(rec JobRecord) bool {
	return rec.State == profile.Succeeded.String() || rec.State == profile.Error.String()
}

// Sweep cleans what is due and reports how many jobs it cleaned.
func (h *Housekeeper) Sweep(ctx context.Context) (int, error) {
	if h.After <= 0 {
		return 0, nil
	}
	now := time.Now().UTC()
	if h.Now != nil {
		now = h.Now().UTC()
	}
	limit := h.Max
	if limit <= 0 {
		limit = 100
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var names []string
	var err error
	if aged, ok := h.List.(AgedLister); ok {
		// Only records written before the cut-off can be due: no need to read the others.
		names, err = aged.ListOlder(ctx, JobsPrefix, now.Add(-h.After))
	} else {
		names, err = h.List.List(ctx, JobsPrefix)
	}
	if err != nil {
		return 0, fmt.Errorf("listing job records: %w", err)
	}
	cleaned := 0
	for _, name := range names {
		if cleaned >= limit {
			break
		}
		data, etag, err := h.Blobs.Get(ctx, name)
		if errors.Is(err, profile.ErrTooLarge) {
			log.Warn("housekeeping: job record too large to read", "blob", name, "err", err)
			continue
		}
		if err != nil {
			return cleaned, fmt.Errorf("reading %s: %w", name, err)
		}
		rec, err := DecodeJobRecord(data)
		if err != nil {
			log.Warn("housekeeping: unreadable job record", "blob", name, "err", err)
			continue
		}
		if !rec.Cleaned.IsZero() || !cleanable(rec) {
			continue
		}
		born := rec.QueuedAt
		if born.IsZero() {
			born = rec.Recorded
		}
		if now.Sub(born) < h.After {
			continue
		}
		for _, u := range []string{rec.SourceURI, rec.LogFolderURI} {
			if u == "" {
				continue
			}
			if err := h.Files.Delete(ctx, u); refused(err) {
				// An edited record, or SharePoint naming a folder that is
				// not the job's own: never deleted, never tried again.
				log.Warn("housekeeping: not deleting what a job record names outside the upload folder",
					"job", rec.JobID, "blob", name, "url", u, "err", err)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return cleaned, fmt.Errorf("housekeeping job %s: deleting %s: %w", rec.JobID, u, err)
			}
		}
		rec.Cleaned = now
		data, _ = json.MarshalIndent(rec, "", "  ")
		if _, err := h.Blobs.Put(ctx, name, data, etag); err != nil && !errors.Is(err, profile.ErrStale) {
			return cleaned, fmt.Errorf("housekeeping job %s: %w", rec.JobID, err)
		}
		log.Info("housekeeping: deleted import file and log folder", "job", rec.JobID, "file", rec.SourceURI, "log", rec.LogFolderURI)
		cleaned++
	}
	return cleaned, nil
}
