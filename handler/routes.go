package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/azfunc"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// routes is the whole HTTP surface the Functions host talks to.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", azfunc.Ping())
	mux.Handle("POST /SyncTimer", azfunc.Handler(a.log, a.syncTimer))
	mux.Handle("POST /ImportStatus", azfunc.Handler(a.log, a.importStatus))
	mux.Handle("POST /SyncRun", azfunc.Handler(a.log, a.syncRun))
	a.apiRoutes(mux)
	return mux
}

// syncTimer is the SyncTimer function: one scheduled sync.
func (a *app) syncTimer(ctx context.Context, req *azfunc.Request) (*azfunc.Response, error) {
	log := azfunc.Logger(ctx)
	resp := &azfunc.Response{}
	var t azfunc.Timer
	if err := req.Bind("timer", &t); err != nil {
		// The schedule fired either way; a payload we cannot read changes nothing.
		log.Warn("timer payload not understood", "err", err)
	}
	log.Info("SyncTimer fired", "isPastDue", t.IsPastDue, "firstRun", t.FirstRun())
	defer a.housekeeping(ctx, log)
	// Every job of ours is followed to its end: before the sync, and again
	// after it (the sync closes the record of a run that died, which lets
	// the first polls it never sent be recovered at once).
	recoverPolls := func() {
		if n, err := a.engine.RecoverPolls(ctx); err != nil {
			log.Warn("checking for lost status polls", "err", err)
		} else if n > 0 {
			resp.Log("scheduled again the lost status poll of %d import job(s)", n)
		}
	}
	recoverPolls()
	defer recoverPolls()
	run, err := a.engine.Sync(ctx, syncer.Options{Trigger: "timer"})
	if errors.Is(err, profile.ErrBusy) {
		resp.Log("another sync is running; this occurrence is skipped and the next one tries again")
		log.Warn("sync skipped: another sync holds the lock")
		return resp, nil
	}
	if errors.Is(err, syncer.ErrImportPending) {
		resp.Log("%v", err)
		log.Warn("sync skipped", "reason", err)
		return resp, nil
	}
	if err != nil {
		return nil, err
	}
	resp.Log("%s", summary(run))
	return resp, nil
}

// housekeeping deletes old import files and log folders when
// CLEANUP_AFTER_DAYS is set, and the records of finished work older than
// RECORDS_RETENTION_DAYS; its failures never fail the sync.
func (a *app) housekeeping(ctx context.Context, log *slog.Logger) {
	if a.cfg.CleanupAfter > 0 {
		n, err := a.house.Sweep(ctx)
		if err != nil {
			log.Warn("housekeeping: import files", "cleaned", n, "err", err)
		} else {
			log.Info("housekeeping: import files", "jobsCleaned", n, "afterDays", int(a.cfg.CleanupAfter.Hours()/24))
		}
	}
	if a.cfg.Retention > 0 {
		p, err := a.house.Prune(ctx)
		if err != nil {
			log.Warn("housekeeping: records", "runs", p.Runs, "jobs", p.Jobs, "polls", p.Polls, "err", err)
		}
	}
}

// importStatus is the ImportStatus function: one poll of one import job.
func (a *app) importStatus(ctx context.Context, req *azfunc.Request) (*azfunc.Response, error) {
	resp := &azfunc.Response{}
	qm, err := req.Queue("msg")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", azfunc.ErrDrop, err)
	}
	msg, err := syncer.ParsePollMessage(qm.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (message %s, dequeued %d times)", azfunc.ErrDrop, err, qm.ID, qm.DequeueCount)
	}
	out, err := a.poller.Poll(ctx, msg)
	if errors.Is(err, syncer.ErrDrop) {
		return nil, fmt.Errorf("%w: %v", azfunc.ErrDrop, err)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case out.Duplicate:
		resp.Log("job %s: duplicate or stale status message, nothing to do", msg.JobID)
	case out.Recorded != nil:
		resp.Log("job %s ended: %s %s %s", msg.JobID, out.Recorded.State, out.Recorded.ErrorName, out.Recorded.ErrorMessage)
	default:
		resp.Log("job %s is %s; next poll in %s", msg.JobID, out.Job.State, out.NextPoll)
	}
	return resp, nil
}

// summary is a one-line account of a run.
func summary(r *syncer.Run) string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s: %s sync", r.ID, r.Mode)
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	fmt.Fprintf(&b, ", %d users read, %d sent", r.Read, r.Sent)
	if r.Unchanged > 0 {
		fmt.Fprintf(&b, ", %d unchanged", r.Unchanged)
	}
	for _, k := range []string{"deleted", "guest", "disabled", "no-id"} {
		if n := r.Skipped[k]; n > 0 {
			fmt.Fprintf(&b, ", %d skipped (%s)", n, k)
		}
	}
	fmt.Fprintf(&b, ", %d file(s)", len(r.Files))
	if len(r.JobIDs) > 0 {
		fmt.Fprintf(&b, ", jobs %s", strings.Join(r.JobIDs, " "))
	}
	if r.WhatIf {
		b.WriteString(", what-if: nothing queued")
	}
	return b.String()
}

// serve runs the custom-handler HTTP server until ctx ends.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("serve takes no arguments")
	}
	log := newLogger(stdout, getenv)
	addr, err := azfunc.ListenAddr(getenv)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("invalid settings:\n%w", err)
	}
	a, err := newApp(cfg, log, false)
	if err != nil {
		return err
	}
	if err := a.prepare(ctx); err != nil {
		// Storage may come up later (local runs); each sync reports its own errors.
		log.Warn("preparing storage", "err", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("profilesync handler listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	log.Info("shutting down")
	return srv.Shutdown(shutdown)
}
