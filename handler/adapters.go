package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/spo"
	"github.com/profilesync/profilesync/internal/syncer"
)

// store adapts azstorage.Blobs to the engine's small interfaces: List gives
// names, Delete ignores a blob that is already gone.
type store struct{ *azstorage.Blobs }

func (s store) List(ctx context.Context, prefix string) ([]string, error) {
	infos, err := s.Blobs.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(infos))
	for i, b := range infos {
		names[i] = b.Name
	}
	return names, nil
}

// ListOlder lists the blobs under prefix last written before t.
func (s store) ListOlder(ctx context.Context, prefix string, t time.Time) ([]string, error) {
	infos, err := s.Blobs.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, b := range infos {
		if b.LastModified.Before(t) {
			names = append(names, b.Name)
		}
	}
	return names, nil
}

// Walk streams the blobs under prefix page by page (syncer.Walker).
func (s store) Walk(ctx context.Context, prefix string, fn func(string, time.Time) error) error {
	return s.Blobs.Each(ctx, prefix, func(b azstorage.BlobInfo) error {
		if err := fn(b.Name, b.LastModified); errors.Is(err, syncer.ErrStopWalk) {
			return azstorage.ErrStop
		} else if err != nil {
			return err
		}
		return nil
	})
}

func (s store) Delete(ctx context.Context, name string) error {
	if err := s.Blobs.Delete(ctx, name, ""); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// blobLimit is the most bytes a blob of the state container may hold to be
// read whole (azstorage.Blobs.SetLimits): the engine's own limits, and twice
// the largest request body for a run request (requests/, whose body may hold
// a mapping).
func blobLimit(name string) int64 {
	if strings.HasPrefix(name, requestsPrefix) {
		return 2 * maxBody
	}
	return syncer.BlobLimit(name)
}

// spoLogs reads a job's log folder through SharePoint REST, streaming each file.
type spoLogs struct{ c *spo.Client }

// LogLines hands over the lines of each file of the folder as
// syncer.ScanLogLines reads them (a line longer than syncer.MaxLogLine is
// cut, not an error).
func (l spoLogs) LogLines(ctx context.Context, folderURI string, fn func(string) error) error {
	files, err := l.c.ListFolder(ctx, folderURI)
	if err != nil {
		return err
	}
	for _, f := range files {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(l.c.Download(ctx, f.ServerRelativeURL, pw)) }()
		var fnErr error
		err := syncer.ScanLogLines(pr, func(line string) error {
			fnErr = fn(line)
			return fnErr
		})
		pr.CloseWithError(err) // ends the download if the scan stopped early
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return fmt.Errorf("reading log file %s: %w", f.Name, err)
		}
	}
	return nil
}
