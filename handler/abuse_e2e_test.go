package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// importFolder is the library folder the stacks upload to (SPO_FOLDER).
const importFolder = "/sites/profilesync/Shared Documents/Profile Imports"

// TestAPIConcurrentSyncRequests: 50 callers POST /api/sync at the same
// moment. Exactly one run starts (one request recorded and queued, one
// SyncRun invocation, one upload, one import job); the 49 others are
// answered 409 sync-running at once, with a problem document.
func TestAPIConcurrentSyncRequests(t *testing.T) {
	s := startStack(t, stackOptions{users: 60})
	s.putMapping(e2eMapping)
	host := s.serveRunQueue(t, s.url)
	// The run reads Graph slowly, so every caller arrives while it is
	// queued or running (the answers do not depend on it: a request that
	// arrived after the run ended would start a second run, legitimately).
	s.sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "/users/delta", Delay: faults.Duration(3 * time.Second), Count: 1})
	s.sim.Requests.Reset()

	const callers = 50
	type answer struct {
		status  int
		ctype   string
		problem Problem
		run     syncer.Run
		err     error
	}
	answers := make([]answer, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}, Timeout: 2 * time.Minute}
	for i := range callers {
		wg.Go(func() {
			<-start
			resp, err := client.Post(s.url+"/api/sync?code=functionkey123", "application/json", strings.NewReader(`{}`))
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			answers[i].status, answers[i].ctype = resp.StatusCode, resp.Header.Get("Content-Type")
			if resp.StatusCode >= 400 {
				answers[i].err = json.Unmarshal(body, &answers[i].problem)
			} else {
				answers[i].err = json.Unmarshal(body, &answers[i].run)
			}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	var accepted, conflicts int
	var run syncer.Run
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("caller %d: %v", i, a.err)
		case a.status == http.StatusAccepted:
			accepted++
			run = a.run
		case a.status == http.StatusConflict && a.ctype == "application/problem+json" && a.problem.Type == problemType("sync-running"):
			conflicts++
		default:
			t.Errorf("caller %d: %d %s %+v", i, a.status, a.ctype, a.problem)
		}
	}
	if accepted != 1 || conflicts != callers-1 {
		t.Fatalf("%d accepted, %d answered 409 sync-running; want 1 and %d", accepted, conflicts, callers-1)
	}
	if run.Status != syncer.StatusSucceeded || len(run.JobIDs) != 1 {
		t.Errorf("the one run: %+v", run)
	}
	count := func(prefix string) int {
		list, err := s.blobs.List(t.Context(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	uploads := 0
	for _, r := range s.sim.Requests.All() {
		if r.Method == http.MethodPost && (strings.Contains(r.Path, "/Files/AddUsingPath") || strings.Contains(r.Path, "/StartUpload")) {
			uploads++
		}
	}
	calls := host.done()
	if n := count(syncer.RunsPrefix); n != 1 {
		t.Errorf("%d run records, want 1", n)
	}
	if n := count(requestsPrefix); n != 1 {
		t.Errorf("%d run requests recorded, want 1", n)
	}
	if len(calls) != 1 {
		t.Errorf("%d SyncRun invocations, want 1", len(calls))
	}
	if n := len(s.sim.SPO.Jobs()); n != 1 {
		t.Errorf("%d import jobs queued in SharePoint, want 1", n)
	}
	if n := len(s.sim.SPO.FilesIn(importFolder)); uploads != 1 || n != 1 {
		t.Errorf("%d upload requests, %d files in the library; want 1 and 1", uploads, n)
	}
	if left, err := s.runs.Peek(t.Context(), 32); err != nil || len(left) != 0 {
		t.Errorf("run queue after the burst: %d message(s), %v", len(left), err)
	}
	t.Logf("load: %d concurrent POST /api/sync in %s: %d run (202), %d × 409 sync-running; %d upload, %d import job, %d SyncRun invocation",
		callers, took.Round(time.Millisecond), accepted, conflicts, uploads, len(s.sim.SPO.Jobs()), len(calls))

	// The request that ran no longer blocks the next one.
	if r := s.api("POST", "/api/sync", `{"allowOverlap":true}`); r.Status != http.StatusAccepted {
		t.Errorf("a request after the burst: %d %s", r.Status, r.Body)
	}
}

// TestAPIConcurrentReads: 1,000 callers read /api/runs and /api/jobs at
// once (2 records each; the jobs carry the most per-user results a record
// keeps, 5,000, about 400 kB, which the listing reads and leaves out).
// Every answer is complete, and the handler's peak resident memory stays
// bounded: the reads are served a few at a time (maxReads), where 1,000
// listings held at once need over 600 MB (measured with the gate removed).
// Azurite serves about 200 blob reads a second, hence 2 records each
// rather than 50.
func TestAPIConcurrentReads(t *testing.T) {
	s := startStack(t, stackOptions{users: 40})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	s.clearPolls(t)
	ctx := t.Context()
	results := make([]syncer.UserResult, syncer.MaxResults)
	if raceEnabled {
		// The race detector makes decoding 1,000 such records take
		// minutes; the bound below is then only a sanity check.
		results = results[:200]
	}
	for i := range results {
		results[i] = syncer.UserResult{Code: "UserProfileNotFound", Identity: fmt.Sprintf("user%03d@contoso.com", i), Message: "The user profile does not exist."}
	}
	now := time.Now().UTC()
	for i := range 20 {
		r := run
		r.ID = syncer.NewRunID(now.Add(-time.Duration(i) * time.Second))
		data, _ := json.Marshal(r)
		if _, err := s.blobs.Put(ctx, syncer.RunsPrefix+r.ID+".json", data, ""); err != nil {
			t.Fatal(err)
		}
		job := syncer.JobRecord{JobID: uuid.NewString(), RunID: r.ID, State: "Error", ErrorName: "Error", Recorded: now,
			QueuedAt: now.Add(-time.Duration(i) * time.Second), Results: results, ResultCounts: map[string]int{"UserProfileNotFound": len(results)}}
		data, _ = json.Marshal(job)
		if _, err := s.blobs.Put(ctx, syncer.JobsPrefix+job.JobID+".json", data, ""); err != nil {
			t.Fatal(err)
		}
	}

	before := procStatus(t, s.proc.Pid)
	// Measure this burst's peak alone: writing 5 to clear_refs resets
	// VmHWM to the current resident size (proc(5)).
	resetPeak := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.proc.Pid), []byte("5"), 0)

	const readers = 1000
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: readers}, Timeout: 10 * time.Minute}
	start := make(chan struct{})
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		path, key := "/api/runs?top=2", "runs"
		if i%2 == 1 {
			path, key = "/api/jobs?top=2", "jobs"
		}
		wg.Go(func() {
			<-start
			resp, err := client.Get(s.url + path + "&code=functionkey123")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var out map[string][]json.RawMessage
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out[key]) != 2 {
				errs <- fmt.Errorf("GET %s: %d, %d %s (%v)", path, resp.StatusCode, len(out[key]), key, err)
			}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	after := procStatus(t, s.proc.Pid)
	peak := after["VmHWM"]
	// Generous: the handler idles near 30 MB (about 5 times that under the
	// race detector); 1,000 answers held at once would need far more.
	bound := int64(200 << 10) // kB
	if raceEnabled {
		bound = 800 << 10
	}
	if peak > bound {
		t.Errorf("peak resident memory %d kB during %d concurrent reads, want at most %d kB", peak, readers, bound)
	}
	t.Logf("load: %d concurrent reads (runs and jobs, 2 records each) in %s, %d failed; handler RSS %d kB before, peak %d kB (VmHWM %s), %d threads after",
		readers, took.Round(time.Millisecond), failed, before["VmRSS"], peak, map[bool]string{true: "reset before the burst", false: "since start"}[resetPeak == nil], after["Threads"])
}

// procStatus reads the numeric fields of /proc/<pid>/status (kB for sizes).
func procStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// TestHTTPSlowClientCutOff: a caller that sends its request one byte a
// second is cut off by the server once HTTP_READ_TIMEOUT (2 s here; 30 s by
// default) has passed: on the API (408 problem, then the connection is
// closed), on a custom-handler function (the invocation fails) and while
// still sending its headers. Nothing is started.
func TestHTTPSlowClientCutOff(t *testing.T) {
	s := startStack(t, stackOptions{users: 10, extra: []string{"HTTP_READ_TIMEOUT=2s"}})
	s.putMapping(e2eMapping)
	addr := strings.TrimPrefix(s.url, "http://")
	body := `{"mode":"full","users":["` + strings.Repeat("a", 40) + `"]}`

	for _, tc := range []struct {
		name    string
		head    string // sent at once
		slow    string // then one byte a second
		status  int    // 0: net/http's own answer (400, plain text) or none, then the connection closed
		problem bool
	}{
		{"API body", "POST /api/sync?code=functionkey123 HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n", body, http.StatusRequestTimeout, true},
		{"function payload", "POST /SyncTimer HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(timerFirst)) + "\r\n\r\n", timerFirst, http.StatusInternalServerError, false},
		{"headers", "POST /api/sync HTTP/1.1\r\nHost: " + addr + "\r\n", "X-Slow: " + strings.Repeat("s", 60) + "\r\n\r\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.head); err != nil {
				t.Fatal(err)
			}
			type reply struct {
				resp *http.Response
				body []byte
				err  error
			}
			br := bufio.NewReader(conn)
			got := make(chan reply, 1)
			go func() {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					got <- reply{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- reply{resp: resp, body: b, err: err}
			}()
			sent := 0
			var r reply
		send:
			for { // bounded: the whole request, a byte a second
				select {
				case r = <-got:
					break send
				case <-time.After(time.Second):
				}
				if sent == len(tc.slow) {
					t.Fatalf("the whole request was sent, one byte a second, without the server cutting it off")
				}
				if _, err := io.WriteString(conn, tc.slow[sent:sent+1]); err != nil {
					r = <-got // the server closed the connection; take what it said
					break send
				}
				sent++
			}
			switch {
			case tc.status == 0 && r.resp != nil && (r.resp.StatusCode != http.StatusBadRequest || strings.Contains(string(r.body), ".go:")):
				t.Errorf("answered %d %q while the headers were still arriving", r.resp.StatusCode, r.body)
			case tc.status == 0:
			case r.resp == nil:
				t.Fatalf("no answer before the connection closed: %v", r.err)
			case r.resp != nil && r.resp.StatusCode != tc.status:
				t.Errorf("answered %d %s, want %d", r.resp.StatusCode, r.body, tc.status)
			}
			// Nothing more is sent: the server closes the connection.
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			if n, err := br.Read(make([]byte, 512)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the connection stayed open (read %d bytes, %v)", n, err)
			}
			if tc.problem {
				var p Problem
				if r.resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.body, &p) != nil || p.Type != problemType("request-timeout") {
					t.Errorf("answer %s %s is not the request-timeout problem", r.resp.Header.Get("Content-Type"), r.body)
				}
			}
			t.Logf("cut off after %d of %d bytes sent a second apart", sent, len(tc.slow))
		})
	}
	for _, prefix := range []string{syncer.RunsPrefix, requestsPrefix} {
		if list, err := s.blobs.List(t.Context(), prefix); err != nil || len(list) != 0 {
			t.Errorf("%s after the slow callers: %d blob(s), %v", prefix, len(list), err)
		}
	}
	if left, err := s.runs.Peek(t.Context(), 32); err != nil || len(left) != 0 {
		t.Errorf("run queue: %d message(s), %v", len(left), err)
	}
	if n := len(s.sim.SPO.Jobs()); n != 0 {
		t.Errorf("%d import jobs", n)
	}
	// The handler serves on.
	if r := s.api("GET", "/api/runs", ""); r.Status != 200 {
		t.Errorf("GET /api/runs after the slow callers: %d", r.Status)
	}
}

// TestHTTPRefusals: oversized URLs, headers and bodies, unknown routes and
// bad queries are all answered with a problem document (s.api checks the
// Content-Type, the document and that no stack trace or secret is in it).
// Headers beyond net/http's own cap get its plain 431 and a closed
// connection; the handler serves on.
func TestHTTPRefusals(t *testing.T) {
	s := startStack(t, stackOptions{users: 10})
	s.putMapping(e2eMapping)
	for _, tc := range []struct {
		method, path, body string
		header             []string
		status             int
		problem            string // its type, or what the detail or errors say
	}{
		{"GET", "/api/runs?x=" + strings.Repeat("a", maxURLBytes), "", nil, 414, "uri-too-long"},
		{"GET", "/api/runs", "", []string{"X-Big", strings.Repeat("b", maxHeaderBytes)}, 431, "headers-too-large"},
		{"POST", "/api/sync", `{"users":["` + strings.Repeat("u", 10<<20) + `"]}`, nil, 413, "body-too-large"},
		{"PUT", "/api/mapping", strings.Repeat(" ", 2<<20), nil, 413, "body-too-large"},
		{"GET", "/nothing-here", "", nil, 404, "not-found"},
		{"GET", "/SyncTimer", "", nil, 404, "not-found"},
		{"POST", "/", "", nil, 404, "not-found"},
		{"DELETE", "/api/runs", "", nil, 404, "not-found"},
		{"GET", "/api/runs?top=abc", "", nil, 400, "top: must be"},
		{"GET", "/api/jobs?top=5&top=6", "", nil, 400, "top: given 2 times"},
		{"GET", "/api/runs?top=%zz", "", nil, 400, "query: "},
		{"GET", "/api/jobs/..%2Fstate", "", nil, 400, "invalid-request"},
		{"POST", "/api/sync", `{"users":[1]}`, nil, 400, "users: number is not a string"},
		{"POST", "/api/sync", `{"limit":-1,"mode":"up"}`, nil, 400, "limit: must be"},
	} {
		r := s.api(tc.method, tc.path, tc.body, tc.header...)
		if r.Status != tc.status || !(r.Problem.Type == problemType(tc.problem) || strings.Contains(string(r.Body), tc.problem)) {
			t.Errorf("%s %.60s: %d %.300s; want %d %s", tc.method, tc.path, r.Status, r.Body, tc.status, tc.problem)
		}
	}

	// Beyond MaxHeaderBytes net/http answers by itself (plain text) and
	// closes the connection.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		fmt.Fprintf(conn, "GET /api/runs HTTP/1.1\r\nHost: x\r\nX-Huge: %s\r\n\r\n", strings.Repeat("h", 1<<20))
	}()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("1 MiB of headers: no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || strings.Contains(string(b), "goroutine") || strings.Contains(string(b), ".go:") {
		t.Errorf("1 MiB of headers: %d %q", resp.StatusCode, b)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("1 MiB of headers: the connection stayed open")
	}

	if list, err := s.blobs.List(t.Context(), syncer.RunsPrefix); err != nil || len(list) != 0 {
		t.Errorf("runs after the refusals: %d, %v", len(list), err)
	}
	if r := s.api("GET", "/api/runs", ""); r.Status != 200 {
		t.Errorf("GET /api/runs after the refusals: %d", r.Status)
	}
}

// TestGuardPanics: a panic in an API handler is answered 500 with a
// problem document that names the invocation, never the panic or a stack
// trace; those go to the log.
func TestGuardPanics(t *testing.T) {
	var logs syncBuffer
	a := &app{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	srv := httptest.NewServer(a.guard(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("secret-panic-value")
	})))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+"/api/runs", nil)
	req.Header.Set("X-Azure-Functions-InvocationId", "inv-42")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var p Problem
	if resp.StatusCode != 500 || resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil ||
		p.Type != problemType("internal") || !strings.Contains(p.Detail, "inv-42") {
		t.Errorf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if strings.Contains(string(body), "secret-panic-value") || strings.Contains(string(body), "goroutine") {
		t.Errorf("the answer leaks the panic: %s", body)
	}
	if l := logs.String(); !strings.Contains(l, "secret-panic-value") || !strings.Contains(l, "abuse_e2e_test.go") {
		t.Errorf("the log lacks the panic and its stack: %s", l)
	}
}

// TestSyncRequestAdmission: while a run request is queued or running, no
// other is recorded or queued; one that ended, or can no longer run, gives
// way to the next.
func TestSyncRequestAdmission(t *testing.T) {
	s := startStack(t, stackOptions{users: 5, noHandler: true})
	a := s.inProcessApp(t)
	ctx := t.Context()
	queue := func() (syncTicket, error) {
		t.Helper()
		return a.queueSync(ctx, []byte(`{}`))
	}
	busyWith := func(err error) string {
		var busy *requestBusy
		if !errors.As(err, &busy) {
			return fmt.Sprintf("not busy: %v", err)
		}
		return busy.other.ID
	}
	first, err := queue()
	if err != nil {
		t.Fatal(err)
	}
	requests := func() int {
		list, err := s.blobs.List(ctx, requestsPrefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	// Queued, then running: the next request is refused, recorded nowhere.
	if _, err := queue(); busyWith(err) != first.ID {
		t.Fatalf("while %s is queued: %s", first.ID, busyWith(err))
	}
	runID := syncer.NewRunID(time.Now())
	running, _ := json.Marshal(syncer.Run{ID: runID, Status: syncer.StatusRunning})
	if _, err := s.blobs.Put(ctx, syncer.RunsPrefix+runID+".json", running, ""); err != nil {
		t.Fatal(err)
	}
	first.Status, first.RunID = ticketRunning, runID
	if err := a.putTicket(ctx, first, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := queue(); busyWith(err) != first.ID {
		t.Fatalf("while %s is running: %s", first.ID, busyWith(err))
	}
	if n := requests(); n != 1 {
		t.Errorf("%d requests recorded, want 1", n)
	}
	if msgs, err := s.runs.Peek(ctx, 32); err != nil || len(msgs) != 1 {
		t.Errorf("run queue: %d message(s), %v; want 1", len(msgs), err)
	}

	// Each way a request stops being live lets the next one in.
	for _, tc := range []struct {
		name string
		end  func(active syncTicket)
	}{
		{"its run ended", func(syncTicket) {
			ended, _ := json.Marshal(syncer.Run{ID: runID, Status: syncer.StatusSucceeded})
			s.blobs.Put(ctx, syncer.RunsPrefix+runID+".json", ended, "")
		}},
		{"it is done", func(active syncTicket) {
			active.Status = ticketDone
			a.putTicket(ctx, active, "")
		}},
		{"its record is gone", func(active syncTicket) {
			s.blobs.Delete(ctx, ticketBlob(active.ID), "")
		}},
		{"its record is not JSON", func(active syncTicket) {
			s.blobs.Put(ctx, ticketBlob(active.ID), []byte("{garbage"), "")
		}},
		{"it is older than requestMaxAge", func(active syncTicket) {
			old, _ := json.Marshal(activeRequest{RequestID: active.ID, Since: time.Now().Add(-requestMaxAge - time.Minute)})
			s.blobs.Put(ctx, activeBlob, old, "")
		}},
		{"the active-request blob is not JSON", func(syncTicket) {
			s.blobs.Put(ctx, activeBlob, []byte("\x00"), "")
		}},
		{"its SyncRun invocation released it", func(active syncTicket) {
			a.release(ctx, active.ID)
		}},
	} {
		active := first
		if data, _, err := s.blobs.Get(ctx, activeBlob); err == nil {
			var ar activeRequest
			json.Unmarshal(data, &ar)
			active, _, _ = a.readTicket(ctx, ar.RequestID)
		}
		if _, err := queue(); busyWith(err) != active.ID {
			t.Fatalf("%s: before: %s, want busy with %s", tc.name, busyWith(err), active.ID)
		}
		tc.end(active)
		next, err := queue()
		if err != nil {
			t.Fatalf("once %s: %v", tc.name, err)
		}
		if _, err := queue(); busyWith(err) != next.ID {
			t.Fatalf("once %s: the new request %s is not the active one: %s", tc.name, next.ID, busyWith(err))
		}
	}
}
