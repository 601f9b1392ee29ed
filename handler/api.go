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

// syncWait is how long POST /api/sync waits for a run to end before it
// answers 202 with the run still going (the HTTP front end of Azure
// Functions gives up on requests after 230 seconds).
var syncWait = 100 * time.Second

// apiRoutes mounts the administration API. The Api function forwards every
// request under /api/ unchanged (enableForwardingHttpRequest); the host has
// already checked the function key.
func (a *app) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/sync", a.apiSync)
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
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{Type: problemType(name), Title: title, Status: status, Detail: detail, Instance: r.URL.Path, Errors: errs})
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
}

// maxUsers bounds the users of one targeted run (PnP's -Users is for a handful).
const maxUsers = 1000

func (req SyncRequest) options() (syncer.Options, []string) {
	var problems []string
	opts := syncer.Options{WhatIf: req.WhatIf, AllowOverlap: req.AllowOverlap, Filter: strings.TrimSpace(req.Filter)}
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

// apiSync is POST /api/sync.
func (a *app) apiSync(w http.ResponseWriter, r *http.Request) {
	var req SyncRequest
	if !readBody(w, r, &req, nil) {
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
	// The run goes on even if the caller goes away; the answer waits for it
	// for a while, then points at the run record.
	started := make(chan string, 1)
	opts.OnStart = func(id string) { started <- id }
	type result struct {
		run *syncer.Run
		err error
	}
	done := make(chan result, 1)
	ctx := context.WithoutCancel(r.Context())
	go func() {
		run, err := a.engine.Sync(ctx, opts)
		done <- result{run, err}
	}()
	timer := time.NewTimer(syncWait)
	defer timer.Stop()
	select {
	case res := <-done:
		if res.err != nil {
			a.runError(w, r, res.err)
			return
		}
		w.Header().Set("Location", "/api/runs/"+res.run.ID)
		writeJSON(w, http.StatusAccepted, res.run)
	case <-timer.C:
		var id string
		select {
		case id = <-started:
		case res := <-done: // it ended (or failed before it started) just now
			if res.err != nil {
				a.runError(w, r, res.err)
				return
			}
			w.Header().Set("Location", "/api/runs/"+res.run.ID)
			writeJSON(w, http.StatusAccepted, res.run)
			return
		}
		w.Header().Set("Location", "/api/runs/"+id)
		writeJSON(w, http.StatusAccepted, map[string]string{"runId": id, "status": syncer.StatusRunning,
			"detail": "the run goes on; GET /api/runs/" + id + " shows its progress"})
	}
}

// runError turns a failed run into the right problem.
func (a *app) runError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, profile.ErrBusy):
		problem(w, r, http.StatusConflict, "sync-running", "A sync is already running", "only one sync runs at a time; try again when it has finished", nil)
	case errors.Is(err, syncer.ErrImportPending):
		problem(w, r, http.StatusConflict, "import-pending", "An earlier import job has not finished", err.Error()+` (send "allowOverlap": true to queue anyway)`, nil)
	case errors.Is(err, syncer.ErrNoMapping) || len(mapping.Problems(err)) > 0:
		var errs []string
		for _, p := range mapping.Problems(err) {
			errs = append(errs, p.Error())
		}
		problem(w, r, http.StatusConflict, "invalid-stored-mapping", "The stored mapping cannot be used", firstLine(err.Error()), errs)
	default:
		if ge := (*graph.Error)(nil); errors.As(err, &ge) && ge.Status == http.StatusBadRequest {
			problem(w, r, http.StatusBadRequest, "graph-rejected", "Microsoft Graph rejected the request", ge.Error(), nil)
			return
		}
		a.internalError(w, r, err)
	}
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
