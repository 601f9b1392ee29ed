package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/apiparse"
	"github.com/profilesync/profilesync/internal/azfunc"
	"github.com/profilesync/profilesync/internal/graph"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// maxBody bounds request bodies of the administration API.
const maxBody = apiparse.MaxBody

// syncWait is how long POST /api/sync waits for the run it asked for to end
// before it answers 202 with the run (or the request) still going. The HTTP
// front end of Azure Functions gives up on requests after 230 seconds.
var syncWait = 100 * time.Second

// ticketPoll is how often POST /api/sync reads the request record while it waits.
var ticketPoll = 250 * time.Millisecond

// apiRoutes mounts the administration API. The Api function forwards every
// request under /api/ unchanged (enableForwardingHttpRequest); the host has
// already checked the function key.
func (a *app) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/sync", a.apiSync)
	mux.HandleFunc("GET /api/sync/{id}", a.gated(a.apiSyncRequest))
	mux.HandleFunc("GET /api/runs", a.gated(a.apiRuns))
	mux.HandleFunc("GET /api/runs/{id}", a.gated(a.apiRun))
	mux.HandleFunc("GET /api/jobs", a.gated(a.apiJobs))
	mux.HandleFunc("GET /api/jobs/{id}", a.gated(a.apiJob))
	mux.HandleFunc("GET /api/mapping", a.gated(a.apiGetMapping))
	mux.HandleFunc("PUT /api/mapping", a.apiPutMapping)
	mux.HandleFunc("GET /api/health", a.gated(a.apiHealth))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, r, http.StatusNotFound, "not-found", "No such resource", fmt.Sprintf("%s %s is not part of the API; see README, \"HTTP API\"", r.Method, shorten(r.URL.Path)), nil)
	})
}

// gated serves h once one of the maxReads slots is free; a caller that
// goes away while it waits is not served at all.
func (a *app) gated(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.reads <- struct{}{}:
			defer func() { <-a.reads }()
			h(w, r)
		case <-r.Context().Done():
		}
	}
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type     string   `json:"type"`
	Title    string   `json:"title"`
	Status   int      `json:"status"`
	Detail   string   `json:"detail,omitempty"`
	Instance string   `json:"instance,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// problemType makes the stable type URI of a problem.
func problemType(name string) string { return "urn:profilesync:problem:" + name }

func problem(w http.ResponseWriter, r *http.Request, status int, name, title, detail string, errs []string) {
	writeProblem(w, r, Problem{Type: problemType(name), Title: title, Status: status, Detail: detail, Errors: errs})
}

// writeProblem answers p, its instance being this request's path.
func writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	p.Instance = shorten(r.URL.Path)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// internalError logs the real error and answers without it: no stack trace,
// token or connection string ever leaves the handler.
func (a *app) internalError(w http.ResponseWriter, r *http.Request, err error) {
	id := azfunc.InvocationID(r)
	a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "invocation", id, "err", err)
	problem(w, r, http.StatusInternalServerError, "internal", "The request failed",
		"see the function's logs for invocation "+id, nil)
}

// readBody reads a request body of at most maxBody bytes. It answers the
// problem itself and returns false when the body is too large or does not
// arrive within HTTP_READ_TIMEOUT (the server's read deadline).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case err == nil:
		return data, true
	case errors.As(err, &tooBig):
		w.Header().Set("Connection", "close") // the rest of the body is not read
		problem(w, r, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			fmt.Sprintf("the body may be at most %d bytes", maxBody), nil)
	case errors.As(err, &netErr) && netErr.Timeout():
		w.Header().Set("Connection", "close")
		problem(w, r, http.StatusRequestTimeout, "request-timeout", "The request body did not arrive in time",
			"the whole request must arrive within HTTP_READ_TIMEOUT; the connection is closed", nil)
	default:
		problem(w, r, http.StatusBadRequest, "bad-body", "Unreadable request body", "the body could not be read to its end", nil)
	}
	return nil, false
}

// requestProblem answers a request apiparse refused, listing every problem.
func requestProblem(w http.ResponseWriter, r *http.Request, err error) {
	var pe *apiparse.Error
	if !errors.As(err, &pe) {
		problem(w, r, http.StatusBadRequest, "invalid-request", "The request is not valid", firstLine(err.Error()), nil)
		return
	}
	if pe.Syntax {
		problem(w, r, http.StatusBadRequest, "bad-json", "The body is not the expected JSON", pe.Problems[0], pe.Problems)
		return
	}
	problem(w, r, http.StatusBadRequest, "invalid-request", "The request is not valid", "", pe.Problems)
}

// syncOptions are the engine's options for a checked sync request.
func syncOptions(req apiparse.Sync) syncer.Options {
	opts := syncer.Options{WhatIf: req.WhatIf, AllowOverlap: req.AllowOverlap, Filter: req.Filter, Force: req.Force,
		Users: req.Users, Mapping: req.ParsedMapping()}
	if req.Mode == apiparse.ModeFull {
		opts.Mode = syncer.ModeFull
	}
	return opts
}

// apiSync is POST /api/sync. A dry run reads only and is answered by this
// invocation. Any other run is handed to the SyncRun queue function: the
// request is recorded (requests/<id>.json) and its id queued on
// SYNC_RUN_QUEUE, and the SyncRun invocation that takes the message runs the
// sync from start to end. On Flex Consumption an instance with no invocation
// running may be scaled in, so a run carried on by a goroutine after its
// HTTP invocation answered could be cut; an invocation that owns the run
// cannot. This invocation waits up to syncWait for the run to end and
// answers with its record, else 202 with the ids to follow it.
func (a *app) apiSync(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := apiparse.ParseSync(raw)
	if err != nil {
		requestProblem(w, r, err)
		return
	}
	opts := syncOptions(req)
	opts.Trigger = "http"
	if req.DryRun {
		plan, err := a.engine.Plan(r.Context(), opts, req.Limit)
		if err != nil {
			a.runError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, plan)
		return
	}
	t, err := a.queueSync(r.Context(), req.Encode())
	var busy *requestBusy
	if errors.As(err, &busy) {
		problem(w, r, http.StatusConflict, "sync-running", "A sync is already requested", busy.detail(), nil)
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	a.awaitSync(w, r, t)
}

// requestsPrefix holds one record per run requested over HTTP.
const requestsPrefix = "requests/"

func ticketBlob(id string) string { return requestsPrefix + id + ".json" }

// States of a syncTicket.
const (
	ticketQueued  = "queued"  // its message waits for the SyncRun function
	ticketRunning = "running" // a SyncRun invocation took the lock and started run runId
	ticketDone    = "done"    // the run ended (problem set if it failed), or could not start (problem)
)

// syncTicket is the record of one POST /api/sync, requests/<requestId>.json.
type syncTicket struct {
	ID       string          `json:"requestId"`
	Status   string          `json:"status"`
	Request  json.RawMessage `json:"request"` // the POST body, validated
	Queued   time.Time       `json:"queued"`
	Started  time.Time       `json:"started,omitzero"`
	Finished time.Time       `json:"finished,omitzero"`
	RunID    string          `json:"runId,omitempty"`
	Problem  *Problem        `json:"problem,omitempty"` // why the run failed or could not start
}

// runMessage is the body of a SyncRun queue message; the request itself
// (which may hold a mapping of up to 1 MiB) stays in its record.
type runMessage struct {
	RequestID string `json:"requestId"`
}

// queueSync records a run request, makes it the active one and queues it
// for the SyncRun function. While another request is queued or running it
// records nothing and returns a *requestBusy: one run at a time, however
// many callers ask at once.
func (a *app) queueSync(ctx context.Context, body []byte) (syncTicket, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	now := time.Now().UTC()
	t := syncTicket{ID: syncer.NewRunID(now), Status: ticketQueued, Request: body, Queued: now}
	data, err := json.Marshal(t)
	if err != nil {
		return t, err
	}
	// The record first: an active-request blob always names a request
	// that exists, so a missing one means it is gone for good.
	if _, err := a.blobs.Create(ctx, ticketBlob(t.ID), data); err != nil {
		return t, fmt.Errorf("recording the run request: %w", err)
	}
	forget := func() {
		if derr := (store{a.blobs}).Delete(context.WithoutCancel(ctx), ticketBlob(t.ID)); derr != nil {
			a.log.Warn("removing an unqueued run request", "request", t.ID, "err", derr)
		}
	}
	if err := a.admit(ctx, t); err != nil {
		forget()
		return t, err
	}
	msg, _ := json.Marshal(runMessage{RequestID: t.ID})
	if err := a.runs.Schedule(ctx, msg, 0); err != nil {
		// No message will ever take it: leave no request waiting forever.
		forget()
		a.release(context.WithoutCancel(ctx), t.ID)
		return t, fmt.Errorf("queueing the run request: %w", err)
	}
	a.log.Info("sync requested over HTTP", "request", t.ID, "queue", a.cfg.RunQueue)
	return t, nil
}

// activeBlob names the run request POST /api/sync admitted last
// ({"requestId", "since"}). While that request is queued or running, POST
// /api/sync answers 409 and queues nothing. The blob is created with
// If-None-Match: *, replaced (If-Match) only once its request has ended or
// can no longer run, and deleted by the SyncRun invocation that ends the
// request. The lease on sync.lock still keeps runs apart; this keeps a burst
// of requests from queueing runs that would follow one another.
const activeBlob = "requests-active.json"

// requestMaxAge is how long an admitted request may stay queued or running
// before another may replace it: twice host.json's functionTimeout (30
// minutes), which no SyncRun invocation outlives. A request whose message
// went to the poison queue, or whose process died, blocks no longer.
const requestMaxAge = time.Hour

type activeRequest struct {
	RequestID string    `json:"requestId"`
	Since     time.Time `json:"since"`
}

// requestBusy is queueSync's answer while another request is queued or running.
type requestBusy struct{ other syncTicket }

func (e *requestBusy) Error() string {
	return "another run request is " + e.other.Status + ": " + e.other.ID
}
func (e *requestBusy) Unwrap() error { return profile.ErrBusy }

func (e *requestBusy) detail() string {
	if e.other.ID == "" {
		return "another run request is being queued; try again in a moment"
	}
	return fmt.Sprintf("run request %s is %s; one sync runs at a time (GET /api/sync/%s follows it)", e.other.ID, e.other.Status, e.other.ID)
}

// admit makes t the active request, unless another one is still queued or running.
func (a *app) admit(ctx context.Context, t syncTicket) error {
	data, err := json.Marshal(activeRequest{RequestID: t.ID, Since: t.Queued})
	if err != nil {
		return err
	}
	for range 4 {
		_, err := a.blobs.Create(ctx, activeBlob, data)
		if !errors.Is(err, profile.ErrStale) {
			return err // admitted, or a storage fault
		}
		cur, etag, err := a.blobs.Get(ctx, activeBlob)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return err
		}
		var ar activeRequest
		_ = json.Unmarshal(cur, &ar) // unreadable: nothing live is named
		other, live, err := a.liveRequest(ctx, ar)
		if err != nil {
			return err
		}
		if live {
			return &requestBusy{other: other}
		}
		_, err = a.blobs.Put(ctx, activeBlob, data, etag)
		if !errors.Is(err, profile.ErrStale) {
			return err
		}
		// Another caller replaced it first: look at its request.
	}
	return &requestBusy{}
}

// liveRequest reads the request ar names and reports whether it may still
// run: queued or running, for less than requestMaxAge, and, once running,
// with a run record that says so. Records that cannot be read as such (a
// bad id, JSON that does not decode) name nothing live; only a storage
// fault is an error.
func (a *app) liveRequest(ctx context.Context, ar activeRequest) (syncTicket, bool, error) {
	var t syncTicket
	if !apiparse.ValidID(ar.RequestID) || time.Since(ar.Since) > requestMaxAge {
		return t, false, nil
	}
	data, _, err := a.blobs.Get(ctx, ticketBlob(ar.RequestID))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return t, false, nil
	case err != nil:
		return t, false, err
	case json.Unmarshal(data, &t) != nil || t.Status == ticketDone:
		return t, false, nil
	case t.Status != ticketRunning:
		return t, true, nil
	case !apiparse.ValidID(t.RunID):
		return t, false, nil
	}
	data, _, err = a.blobs.Get(ctx, syncer.RunsPrefix+t.RunID+".json")
	var run syncer.Run
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return t, false, nil // the run never was
	case err != nil:
		return t, false, err
	case json.Unmarshal(data, &run) != nil || run.Status != syncer.StatusRunning:
		return t, false, nil // the run ended (its invocation is recording it)
	}
	return t, true, nil
}

// release deletes the active-request blob if it still names request id.
// A failure only delays the next request until liveRequest sees this one
// ended, so it is logged, not returned.
func (a *app) release(ctx context.Context, id string) {
	data, etag, err := a.blobs.Get(ctx, activeBlob)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("releasing the active run request", "request", id, "err", err)
		}
		return
	}
	var ar activeRequest
	if json.Unmarshal(data, &ar) != nil || ar.RequestID != id {
		return
	}
	if err := a.blobs.Delete(ctx, activeBlob, etag); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, profile.ErrStale) {
		a.log.Warn("releasing the active run request", "request", id, "err", err)
	}
}

func (a *app) readTicket(ctx context.Context, id string) (syncTicket, string, error) {
	var t syncTicket
	data, etag, err := a.blobs.Get(ctx, ticketBlob(id))
	if err != nil {
		return t, "", err
	}
	if err := json.Unmarshal(data, &t); err != nil {
		return t, "", fmt.Errorf("reading %s: %w", ticketBlob(id), err)
	}
	return t, etag, nil
}

// putTicket writes t, unconditionally with ifMatch "" (see Blobs.Put).
func (a *app) putTicket(ctx context.Context, t syncTicket, ifMatch string) error {
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = a.blobs.Put(ctx, ticketBlob(t.ID), data, ifMatch)
	return err
}

// awaitSync waits up to syncWait for the SyncRun function to end the
// requested run, then answers. The run does not depend on this invocation:
// a caller that goes away, or a front end that gives up, changes nothing.
func (a *app) awaitSync(w http.ResponseWriter, r *http.Request, t syncTicket) {
	deadline := time.NewTimer(syncWait)
	defer deadline.Stop()
	tick := time.NewTicker(ticketPoll)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-deadline.C:
			if cur, _, err := a.readTicket(r.Context(), t.ID); err == nil {
				t = cur
			}
			a.answerTicket(w, r, t)
			return
		case <-tick.C:
			cur, _, err := a.readTicket(r.Context(), t.ID)
			if err != nil {
				a.log.Warn("reading the run request", "request", t.ID, "err", err)
				continue
			}
			if t = cur; t.Status == ticketDone {
				a.answerTicket(w, r, t)
				return
			}
		}
	}
}

// answerTicket answers POST /api/sync with what the request has become: the
// run record (202) or the problem once it ended, else 202 with the ids to
// follow it and a Location to poll.
func (a *app) answerTicket(w http.ResponseWriter, r *http.Request, t syncTicket) {
	switch {
	case t.Status == ticketDone && t.Problem != nil:
		writeProblem(w, r, *t.Problem)
	case t.Status == ticketDone:
		var run syncer.Run
		if err := a.readJSON(r.Context(), syncer.RunsPrefix+t.RunID+".json", &run); err != nil {
			a.internalError(w, r, err)
			return
		}
		w.Header().Set("Location", "/api/runs/"+run.ID)
		writeJSON(w, http.StatusAccepted, run)
	case t.RunID != "":
		w.Header().Set("Location", "/api/runs/"+t.RunID)
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": t.ID, "runId": t.RunID, "status": syncer.StatusRunning,
			"detail": "the run goes on in the SyncRun function; GET /api/runs/" + t.RunID + " shows its progress"})
	default:
		w.Header().Set("Location", "/api/sync/"+t.ID)
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": t.ID, "status": ticketQueued,
			"detail": "queued for the SyncRun function; GET /api/sync/" + t.ID + " shows its run id once it starts, and how it ended"})
	}
}

// apiSyncRequest is GET /api/sync/{id}: a run request, with its run record
// once it started.
func (a *app) apiSyncRequest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !apiparse.ValidID(id) {
		problem(w, r, http.StatusBadRequest, "invalid-request", "Invalid request id", "", nil)
		return
	}
	t, _, err := a.readTicket(r.Context(), id)
	if errors.Is(err, fs.ErrNotExist) {
		problem(w, r, http.StatusNotFound, "not-found", "No such sync request", id, nil)
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := struct {
		syncTicket
		Run *syncer.Run `json:"run,omitempty"`
	}{syncTicket: t}
	if t.RunID != "" {
		var run syncer.Run
		if err := a.readJSON(r.Context(), syncer.RunsPrefix+t.RunID+".json", &run); err == nil {
			out.Run = &run
		} else if !errors.Is(err, fs.ErrNotExist) {
			a.internalError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// syncRun is the SyncRun function: the run one POST /api/sync asked for,
// owned by this queue invocation from start to end (within functionTimeout).
// Delivery is at least once, so a message whose request already started its
// run (the record says running) or ended changes nothing: a request is not
// run twice, unless recording its start failed and its process then died. A run that cannot start
// because another sync holds the lock ends the request with 409
// sync-running, as the API always answered; a storage fault before the run
// started fails the invocation, so the host delivers the message again.
func (a *app) syncRun(ctx context.Context, req *azfunc.Request) (*azfunc.Response, error) {
	resp := &azfunc.Response{}
	qm, err := req.Queue("msg")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", azfunc.ErrDrop, err)
	}
	var msg runMessage
	if err := json.Unmarshal(qm.Body, &msg); err != nil || !apiparse.ValidID(msg.RequestID) {
		return nil, fmt.Errorf("%w: not a run request (message %s, dequeued %d times)", azfunc.ErrDrop, qm.ID, qm.DequeueCount)
	}
	t, etag, err := a.readTicket(ctx, msg.RequestID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: run request %s has no record", azfunc.ErrDrop, msg.RequestID)
	}
	if err != nil {
		return nil, err
	}
	switch t.Status {
	case ticketDone:
		a.release(ctx, t.ID) // in case the delivery that ended it died before
		resp.Log("request %s already ended (run %s): duplicate message, nothing to do", t.ID, t.RunID)
		return resp, nil
	case ticketRunning:
		resp.Log("request %s already started run %s (message dequeued %d times): it is not run twice; GET /api/runs/%s tells how it went",
			t.ID, t.RunID, qm.DequeueCount, t.RunID)
		return resp, nil
	}

	sreq, err := apiparse.ParseSync(t.Request)
	if err != nil {
		var problems []string
		if pe := (*apiparse.Error)(nil); errors.As(err, &pe) {
			problems = pe.Problems
		}
		t.Status, t.Finished = ticketDone, time.Now().UTC()
		t.Problem = &Problem{Type: problemType("invalid-request"), Title: "The sync request is not valid", Status: http.StatusBadRequest, Errors: problems}
		if err := a.putTicket(ctx, t, etag); err != nil {
			return nil, err
		}
		a.release(ctx, t.ID)
		resp.Log("request %s is not valid: %v", t.ID, err)
		return resp, nil
	}
	opts := syncOptions(sreq)
	opts.Trigger = "http"
	opts.OnStart = func(id string) {
		t.Status, t.RunID, t.Started = ticketRunning, id, time.Now().UTC()
		if err := a.putTicket(ctx, t, ""); err != nil {
			azfunc.Logger(ctx).Warn("recording the start of the requested run", "request", t.ID, "run", id, "err", err)
		}
	}
	run, err := a.engine.Sync(ctx, opts)
	if run == nil && err != nil && !errors.Is(err, profile.ErrBusy) {
		return nil, err
	}
	t.Status, t.Finished = ticketDone, time.Now().UTC()
	ifMatch := "" // the run started: this invocation owns the request
	if run != nil {
		t.RunID = run.ID
	} else {
		ifMatch = etag // not started: only if no other delivery moved it meanwhile
	}
	if err != nil {
		p, ok := runProblem(err)
		if !ok {
			p = Problem{Type: problemType("internal"), Title: "The run failed", Status: http.StatusInternalServerError,
				Detail: "run " + t.RunID + " failed; GET /api/runs/" + t.RunID + " shows why"}
		}
		t.Problem = &p
	}
	switch perr := a.putTicket(ctx, t, ifMatch); {
	case errors.Is(perr, profile.ErrStale):
		resp.Log("request %s was taken by another delivery meanwhile; this one changes nothing", t.ID)
		return resp, nil
	case perr != nil && run == nil:
		return nil, perr // nothing ran: deliver again
	case perr != nil:
		// The run happened and its record says how it went; running it again
		// would be worse than a request record that lags.
		azfunc.Logger(ctx).Warn("recording the end of the requested run", "request", t.ID, "run", t.RunID, "err", perr)
	default:
		a.release(ctx, t.ID)
	}
	switch {
	case err != nil && run == nil:
		resp.Log("request %s: %v", t.ID, err)
	case err != nil:
		resp.Log("request %s: run %s failed: %v", t.ID, run.ID, err)
	default:
		resp.Log("request %s: %s", t.ID, summary(run))
	}
	return resp, nil
}

// runProblem is the problem a run's error answers with; ok is false when
// the error is not the caller's to act on (an internal failure).
func runProblem(err error) (p Problem, ok bool) {
	mk := func(status int, name, title, detail string, errs []string) (Problem, bool) {
		return Problem{Type: problemType(name), Title: title, Status: status, Detail: detail, Errors: errs}, true
	}
	switch {
	case errors.Is(err, profile.ErrBusy):
		return mk(http.StatusConflict, "sync-running", "A sync is already running", "only one sync runs at a time; try again when it has finished", nil)
	case errors.Is(err, syncer.ErrImportPending):
		return mk(http.StatusConflict, "import-pending", "An earlier import job has not finished", err.Error()+` (send "allowOverlap": true to queue anyway)`, nil)
	case errors.Is(err, syncer.ErrNoMapping) || len(mapping.Problems(err)) > 0:
		var errs []string
		for _, p := range mapping.Problems(err) {
			errs = append(errs, p.Error())
		}
		return mk(http.StatusConflict, "invalid-stored-mapping", "The stored mapping cannot be used", firstLine(err.Error()), errs)
	}
	if ge := (*graph.Error)(nil); errors.As(err, &ge) && ge.Status == http.StatusBadRequest {
		return mk(http.StatusBadRequest, "graph-rejected", "Microsoft Graph rejected the request", ge.Error(), nil)
	}
	return Problem{}, false
}

// runError turns a failed run into the right problem.
func (a *app) runError(w http.ResponseWriter, r *http.Request, err error) {
	if p, ok := runProblem(err); ok {
		writeProblem(w, r, p)
		return
	}
	a.internalError(w, r, err)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// apiRuns is GET /api/runs?top=N: run records, newest first.
func (a *app) apiRuns(w http.ResponseWriter, r *http.Request) {
	q, ok := listQuery(w, r)
	if !ok {
		return
	}
	runs, err := a.listRuns(r.Context(), q.Top)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// listQuery reads the query of a listing, answering the problem itself.
func listQuery(w http.ResponseWriter, r *http.Request) (apiparse.List, bool) {
	l, err := apiparse.ParseList(r.URL.RawQuery)
	if err != nil {
		requestProblem(w, r, err)
		return l, false
	}
	return l, true
}

// listRuns reads the newest top run records. Run ids start with their UTC
// time, so it lists month by month backwards (at most three years) instead
// of listing every record ever written.
func (a *app) listRuns(ctx context.Context, top int) ([]syncer.Run, error) {
	runs := []syncer.Run{}
	month := time.Now().UTC()
	month = time.Date(month.Year(), month.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0) // clocks may differ a little
	for range 38 {
		names, err := store{a.blobs}.List(ctx, syncer.RunsPrefix+month.Format("200601"))
		if err != nil {
			return nil, err
		}
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
		for _, n := range names {
			if len(runs) == top {
				return runs, nil
			}
			var run syncer.Run
			if err := a.readJSON(ctx, n, &run); err != nil {
				return nil, err
			}
			runs = append(runs, run)
		}
		month = month.AddDate(0, -1, 0)
	}
	return runs, nil
}

// apiRun is GET /api/runs/{id}.
func (a *app) apiRun(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !apiparse.ValidID(id) {
		problem(w, r, http.StatusBadRequest, "invalid-request", "Invalid run id", "", nil)
		return
	}
	var run syncer.Run
	if err := a.readJSON(r.Context(), syncer.RunsPrefix+id+".json", &run); errors.Is(err, fs.ErrNotExist) {
		problem(w, r, http.StatusNotFound, "not-found", "No such run", id, nil)
		return
	} else if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// apiJobs is GET /api/jobs?top=N: the newest recorded jobs and the ones still followed.
func (a *app) apiJobs(w http.ResponseWriter, r *http.Request) {
	q, ok := listQuery(w, r)
	if !ok {
		return
	}
	views, err := a.allJobs(r.Context(), q.Top)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := []jobJSON{}
	for _, v := range views {
		v.Results = nil // the list stays small; GET /api/jobs/{id} has them
		out = append(out, jobJSON{v.JobRecord, v.Live})
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out})
}

type jobJSON struct {
	syncer.JobRecord
	Live bool `json:"live,omitempty"` // SharePoint's answer now; the job has no record yet
}

// apiJob is GET /api/jobs/{id}, with the per-user results.
func (a *app) apiJob(w http.ResponseWriter, r *http.Request) {
	id := strings.Trim(r.PathValue("id"), "{}")
	if !apiparse.ValidID(id) {
		problem(w, r, http.StatusBadRequest, "invalid-request", "Invalid job id", "", nil)
		return
	}
	v, err := a.oneJob(r.Context(), id, true)
	if errors.Is(err, fs.ErrNotExist) {
		problem(w, r, http.StatusNotFound, "not-found", "No such job", id, nil)
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, jobJSON{v.JobRecord, v.Live})
}

// apiGetMapping is GET /api/mapping; the ETag guards a later PUT.
func (a *app) apiGetMapping(w http.ResponseWriter, r *http.Request) {
	data, etag, err := a.blobs.Get(r.Context(), syncer.MappingBlob)
	if errors.Is(err, fs.ErrNotExist) {
		problem(w, r, http.StatusNotFound, "no-mapping", "No mapping stored yet", "PUT /api/mapping stores one", nil)
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(data)
}

// apiPutMapping is PUT /api/mapping: validated exactly as a sync validates
// it; a rejected document changes nothing. Replacing a stored mapping needs
// If-Match with its ETag, so two administrators cannot overwrite each other;
// If-None-Match: * creates one only if there is none.
func (a *app) apiPutMapping(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	m, err := mapping.Parse(data)
	if err != nil {
		var errs []string
		for _, p := range mapping.Problems(err) {
			errs = append(errs, p.Error())
		}
		problem(w, r, http.StatusBadRequest, "invalid-mapping", "The mapping is not valid", "nothing was changed", errs)
		return
	}
	ctx := r.Context()
	ifMatch, ifNoneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	var etag string
	switch {
	case ifMatch != "" && ifMatch != "*":
		etag, err = a.blobs.Put(ctx, syncer.MappingBlob, data, ifMatch)
		if errors.Is(err, fs.ErrNotExist) {
			err = profile.ErrStale
		}
	case ifNoneMatch == "*":
		etag, err = a.blobs.Create(ctx, syncer.MappingBlob, data)
	default:
		_, cur, gerr := a.blobs.Get(ctx, syncer.MappingBlob)
		switch {
		case errors.Is(gerr, fs.ErrNotExist) && ifMatch == "*":
			err = profile.ErrStale
		case errors.Is(gerr, fs.ErrNotExist):
			etag, err = a.blobs.Create(ctx, syncer.MappingBlob, data)
		case gerr != nil:
			err = gerr
		case ifMatch == "*":
			etag, err = a.blobs.Put(ctx, syncer.MappingBlob, data, cur)
		default:
			problem(w, r, http.StatusPreconditionRequired, "if-match-required", "If-Match is required",
				"a mapping exists: GET /api/mapping, then PUT with If-Match set to its ETag", nil)
			return
		}
	}
	if errors.Is(err, profile.ErrStale) {
		problem(w, r, http.StatusPreconditionFailed, "mapping-changed", "The mapping changed since you read it",
			"GET /api/mapping again, reapply your change and PUT with the new ETag", nil)
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	a.log.Info("mapping replaced through the API", "properties", len(m.Properties), "hash", m.Hash())
	w.Header().Set("ETag", etag)
	writeJSON(w, http.StatusOK, map[string]any{"saved": true, "properties": len(m.Properties), "hash": m.Hash(),
		"detail": "the next sync reads every user if the mapping changed"})
}

// apiHealth is GET /api/health: storage, Graph and SharePoint each checked
// with a token and one cheap call.
func (a *app) apiHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	type check struct {
		Status string `json:"status"`
		Detail string `json:"detail,omitempty"`
		MS     int64  `json:"ms"`
	}
	run := func(f func(context.Context) error) check {
		start := time.Now()
		err := f(ctx)
		c := check{Status: "ok", MS: time.Since(start).Milliseconds()}
		if err != nil {
			c.Status, c.Detail = "failed", firstLine(err.Error())
			a.log.Warn("health check failed", "err", err)
		}
		return c
	}
	checks := map[string]check{
		"storage": run(func(ctx context.Context) error {
			_, _, err := a.blobs.Get(ctx, syncer.StateBlob)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}),
		"graph": run(a.graph.Ping),
		"sharepoint": run(func(ctx context.Context) error {
			_, err := a.spo.ListFolder(ctx, a.spo.FolderPath())
			return tolerateMissing(err)
		}),
	}
	status := http.StatusOK
	overall := "ok"
	for _, c := range checks {
		if c.Status != "ok" {
			status, overall = http.StatusServiceUnavailable, "failed"
		}
	}
	writeJSON(w, status, map[string]any{"status": overall, "checks": checks})
}

// tolerateMissing: a folder the first sync will create is healthy.
func tolerateMissing(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
