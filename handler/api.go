package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/azfunc"
	"github.com/profilesync/profilesync/internal/graph"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// maxBody bounds request bodies of the administration API.
const maxBody = 1 << 20

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
	mux.HandleFunc("GET /api/sync/{id}", a.apiSyncRequest)
	mux.HandleFunc("GET /api/runs", a.apiRuns)
	mux.HandleFunc("GET /api/runs/{id}", a.apiRun)
	mux.HandleFunc("GET /api/jobs", a.apiJobs)
	mux.HandleFunc("GET /api/jobs/{id}", a.apiJob)
	mux.HandleFunc("GET /api/mapping", a.apiGetMapping)
	mux.HandleFunc("PUT /api/mapping", a.apiPutMapping)
	mux.HandleFunc("GET /api/health", a.apiHealth)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, r, http.StatusNotFound, "not-found", "No such resource", fmt.Sprintf("%s %s is not part of the API; see README, \"HTTP API\"", r.Method, r.URL.Path), nil)
	})
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
	p.Instance = r.URL.Path
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

// readBody reads a size-limited JSON body into v, rejecting unknown fields.
// It answers the problem itself and returns false when the body is not acceptable.
func readBody(w http.ResponseWriter, r *http.Request, v any, raw *[]byte) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		problem(w, r, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			fmt.Sprintf("the body may be at most %d bytes", maxBody), nil)
		return false
	}
	if err != nil {
		problem(w, r, http.StatusBadRequest, "bad-body", "Unreadable request body", err.Error(), nil)
		return false
	}
	if raw != nil {
		*raw = data
	}
	if v == nil {
		return true
	}
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		problem(w, r, http.StatusBadRequest, "bad-json", "The body is not the expected JSON", err.Error(), nil)
		return false
	}
	if dec.More() {
		problem(w, r, http.StatusBadRequest, "bad-json", "The body is not the expected JSON", "extra data after the JSON object", nil)
		return false
	}
	return true
}

// SyncRequest is the body of POST /api/sync; every field is optional.
type SyncRequest struct {
	Mode         string          `json:"mode"` // "delta" (default) or "full"
	WhatIf       bool            `json:"whatIf"`
	DryRun       bool            `json:"dryRun"`
	Users        []string        `json:"users"`
	Filter       string          `json:"filter"`
	Mapping      json.RawMessage `json:"mapping"`
	AllowOverlap bool            `json:"allowOverlap"`
	Limit        int             `json:"limit"` // dry run: users listed in the plan
	// Force sends every user read, also those whose values SharePoint
	// already has (the fingerprint store is not used to skip anyone).
	Force bool `json:"force"`
}

// maxUsers bounds the users of one targeted run (PnP's -Users is for a handful).
const maxUsers = 1000

func (req SyncRequest) options() (syncer.Options, []string) {
	var problems []string
	opts := syncer.Options{WhatIf: req.WhatIf, AllowOverlap: req.AllowOverlap, Filter: strings.TrimSpace(req.Filter), Force: req.Force}
	switch strings.ToLower(req.Mode) {
	case "", "delta":
	case "full":
		opts.Mode = syncer.ModeFull
	default:
		problems = append(problems, fmt.Sprintf("mode: %q is not delta or full", req.Mode))
	}
	if req.WhatIf && req.DryRun {
		problems = append(problems, "whatIf and dryRun: choose one (what-if uploads the file, dry run changes nothing)")
	}
	if len(req.Users) > 0 && opts.Filter != "" {
		problems = append(problems, "users and filter: choose one")
	}
	if len(req.Users) > maxUsers {
		problems = append(problems, fmt.Sprintf("users: at most %d per run, got %d", maxUsers, len(req.Users)))
	}
	for i, u := range req.Users {
		if strings.TrimSpace(u) == "" {
			problems = append(problems, fmt.Sprintf("users[%d]: empty", i))
		} else {
			opts.Users = append(opts.Users, strings.TrimSpace(u))
		}
	}
	if req.Limit < 0 {
		problems = append(problems, "limit: must not be negative")
	}
	if len(req.Mapping) > 0 && string(req.Mapping) != "null" {
		m, err := mapping.Parse(req.Mapping)
		if err != nil {
			for _, p := range mapping.Problems(err) {
				problems = append(problems, "mapping: "+p.Error())
			}
		} else {
			opts.Mapping = m
		}
	}
	return opts, problems
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
	var req SyncRequest
	var raw []byte
	if !readBody(w, r, &req, &raw) {
		return
	}
	opts, problems := req.options()
	if len(problems) > 0 {
		problem(w, r, http.StatusBadRequest, "invalid-request", "The sync request is not valid", "", problems)
		return
	}
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
	t, err := a.queueSync(r.Context(), raw)
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

// queueSync records a run request and queues it for the SyncRun function.
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
	if _, err := a.blobs.Create(ctx, ticketBlob(t.ID), data); err != nil {
		return t, fmt.Errorf("recording the run request: %w", err)
	}
	msg, _ := json.Marshal(runMessage{RequestID: t.ID})
	if err := a.runs.Schedule(ctx, msg, 0); err != nil {
		// No message will ever take it: leave no request waiting forever.
		if derr := (store{a.blobs}).Delete(context.WithoutCancel(ctx), ticketBlob(t.ID)); derr != nil {
			a.log.Warn("removing an unqueued run request", "request", t.ID, "err", derr)
		}
		return t, fmt.Errorf("queueing the run request: %w", err)
	}
	a.log.Info("sync requested over HTTP", "request", t.ID, "queue", a.cfg.RunQueue)
	return t, nil
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
	if !safeID(id) {
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
	if err := json.Unmarshal(qm.Body, &msg); err != nil || !safeID(msg.RequestID) {
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
		resp.Log("request %s already ended (run %s): duplicate message, nothing to do", t.ID, t.RunID)
		return resp, nil
	case ticketRunning:
		resp.Log("request %s already started run %s (message dequeued %d times): it is not run twice; GET /api/runs/%s tells how it went",
			t.ID, t.RunID, qm.DequeueCount, t.RunID)
		return resp, nil
	}

	var sreq SyncRequest
	dec := json.NewDecoder(bytes.NewReader(t.Request))
	dec.DisallowUnknownFields()
	err = dec.Decode(&sreq)
	opts, problems := sreq.options()
	if err != nil || len(problems) > 0 {
		if err != nil {
			problems = append(problems, err.Error())
		}
		t.Status, t.Finished = ticketDone, time.Now().UTC()
		t.Problem = &Problem{Type: problemType("invalid-request"), Title: "The sync request is not valid", Status: http.StatusBadRequest, Errors: problems}
		if err := a.putTicket(ctx, t, etag); err != nil {
			return nil, err
		}
		resp.Log("request %s is not valid: %s", t.ID, strings.Join(problems, "; "))
		return resp, nil
	}
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
	top, ok := topParam(w, r)
	if !ok {
		return
	}
	runs, err := a.listRuns(r.Context(), top)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// topParam reads ?top=N (1..1000, default 50), answering the problem itself.
func topParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("top")
	if v == "" {
		return 50, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		problem(w, r, http.StatusBadRequest, "invalid-request", "Invalid query", "top must be a number from 1 to 1000", nil)
		return 0, false
	}
	return n, true
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
	if !safeID(id) {
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

// safeID accepts run and job ids (letters, digits, '-', '.', braces) and nothing that could reach other blobs.
func safeID(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '.' || c == '{' || c == '}' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')) {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

// apiJobs is GET /api/jobs?top=N: the newest recorded jobs and the ones still followed.
func (a *app) apiJobs(w http.ResponseWriter, r *http.Request) {
	top, ok := topParam(w, r)
	if !ok {
		return
	}
	views, err := a.allJobs(r.Context(), top)
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
	if !safeID(id) {
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
	var data []byte
	if !readBody(w, r, nil, &data) {
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
