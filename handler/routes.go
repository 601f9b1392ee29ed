package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
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
	// Anything else is answered with a problem document too, never with
	// the mux's plain-text 404 or 405.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, r, http.StatusNotFound, "not-found", "No such resource", fmt.Sprintf("%s %s is not served by the handler", r.Method, shorten(r.URL.Path)), nil)
	})
	return a.guard(mux)
}

// Limits of what the server reads of a request. The Functions front end
// refuses URLs longer than 4 KB (learn.microsoft.com/azure/azure-functions/
// functions-bindings-http-webhook-trigger, "Limits": "the URL length is
// limited to 4 KB (4,096 bytes)"), and its Kestrel server request headers
// above 32 KB in all (MaxRequestHeadersTotalSize, learn.microsoft.com/
// aspnet/core/fundamentals/servers/kestrel/options); the host forwards a
// request with its headers plus a few of its own (X-Azure-Functions-*,
// functions-custom-handler.md §1.6.2). Nothing legitimate is larger.
const (
	maxURLBytes = 4096
	// maxHeaderBytes is the most the handler accepts of a request's
	// header lines (names and values); above it, 431 with a problem.
	maxHeaderBytes = 48 << 10
	// serverHeaderBytes is net/http's own cap on the request line and
	// headers (MaxHeaderBytes): beyond it the server answers 431 itself,
	// in plain text, and closes the connection.
	serverHeaderBytes = 64 << 10
	// idleTimeout closes a kept-alive connection after this long without
	// a request. The host's HttpClient drops its idle pooled connections
	// after 1 minute (.NET 6 and later; 2 in .NET 5: PooledConnectionIdleTimeout,
	// learn.microsoft.com/dotnet/api/system.net.http.socketshttphandler.pooledconnectionidletimeout),
	// so the handler never closes one the host is about to reuse.
	idleTimeout = 5 * time.Minute
)

// guard refuses oversized URLs and headers with a problem document, and
// turns a panic anywhere in the API into a 500 problem (the custom-handler
// functions recover their own, azfunc.Handler): no answer carries a stack
// trace, which goes to the log instead.
func (a *app) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := len(r.RequestURI); n > maxURLBytes {
			problem(w, r, http.StatusRequestURITooLong, "uri-too-long", "URL too long",
				fmt.Sprintf("the URL has %d bytes; at most %d are accepted", n, maxURLBytes), nil)
			return
		}
		if n := headerBytes(r.Header); n > maxHeaderBytes {
			problem(w, r, http.StatusRequestHeaderFieldsTooLarge, "headers-too-large", "Request headers too large",
				fmt.Sprintf("the headers have %d bytes; at most %d are accepted", n, maxHeaderBytes), nil)
			return
		}
		defer func() {
			switch v := recover(); v {
			case nil:
				return
			case http.ErrAbortHandler: // net/http's way to cut an answer short
				panic(v)
			default:
				a.log.Error("request handler panicked", "method", r.Method, "path", shorten(r.URL.Path),
					"invocation", azfunc.InvocationID(r), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				problem(w, r, http.StatusInternalServerError, "internal", "The request failed",
					"see the function's logs for invocation "+azfunc.InvocationID(r), nil)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// headerBytes counts a request's header lines as they came: name, ": ",
// value, CRLF.
func headerBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// shorten cuts s to 200 bytes for a message or a problem's instance.
func shorten(s string) string {
	if len(s) <= 200 {
		return s
	}
	return strings.ToValidUTF8(s[:200], "") + "…"
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
	// ReadTimeout bounds how long a request may take to arrive, headers
	// and body, so a caller sending a byte a second holds nothing for
	// long; net/http clears the deadline once the body is read, so an
	// invocation may then run for as long as functionTimeout. There is no
	// WriteTimeout: the host waits for an answer up to functionTimeout
	// plus a minute (functions-custom-handler.md §1.2, §2.4).
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: cfg.ReadTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    serverHeaderBytes,
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
