package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// runQueueHost plays the Functions host's part for the SyncRun function: it
// takes each message of the stack's SYNC_RUN_QUEUE, posts it to /SyncRun of
// the handler at url exactly as the host would (queuePayload), and deletes
// it once the invocation succeeded; a failed invocation leaves the message to
// come back, as host.json's visibilityTimeout does. It records every
// invocation, and how many are in flight.
type runQueueHost struct {
	mu       sync.Mutex
	calls    []hostCall
	inFlight atomic.Int32
}

type hostCall struct {
	Message azstorage.Message
	Status  int
	Logs    []string
	Ended   time.Time
}

func (h *runQueueHost) done() []hostCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hostCall(nil), h.calls...)
}

// serveRunQueue starts a runQueueHost for the handler at url until the test ends.
func (s *stack) serveRunQueue(t *testing.T, url string) *runQueueHost {
	t.Helper()
	h := &runQueueHost{}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for ctx.Err() == nil {
			msgs, err := s.runs.Receive(ctx, 1, time.Minute)
			if err != nil || len(msgs) == 0 {
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			m := msgs[0]
			h.inFlight.Add(1)
			status, logs, err := postInvocation(ctx, url, "SyncRun", queuePayload(m))
			h.inFlight.Add(-1)
			if err != nil {
				continue // the test is ending (or the handler died): the message comes back
			}
			h.mu.Lock()
			h.calls = append(h.calls, hostCall{Message: m, Status: status, Logs: logs, Ended: time.Now()})
			h.mu.Unlock()
			if status == http.StatusOK {
				s.runs.Delete(context.Background(), m)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	return h
}

// postInvocation posts a payload to /<function> as the Functions host does
// and returns the status and the Logs of the answer. It may run outside the
// test goroutine, so it reports errors instead of failing the test.
func postInvocation(ctx context.Context, url, function, payload string) (int, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/"+function, strings.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "e2e-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1037.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body struct{ Logs []string }
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		return resp.StatusCode, nil, errors.New("answer is not the host's envelope: " + string(raw))
	}
	return resp.StatusCode, body.Logs, nil
}

// inProcessAPI serves the handler's routes from the test process (so syncWait
// and ticketPoll can be shortened) and returns its URL.
func (s *stack) inProcessAPI(t *testing.T, wait time.Duration) (*app, string) {
	t.Helper()
	a := s.inProcessApp(t)
	oldWait, oldPoll := syncWait, ticketPoll
	syncWait, ticketPoll = wait, 20*time.Millisecond
	t.Cleanup(func() { syncWait, ticketPoll = oldWait, oldPoll })
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func postSync(t *testing.T, url, body string) (*http.Response, map[string]string) {
	t.Helper()
	resp, err := http.Post(url+"/api/sync", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &out)
	return resp, out
}

// syncRequestView is GET /api/sync/{id}.
type syncRequestView struct {
	RequestID string
	Status    string
	RunID     string
	Problem   *Problem
	Run       *syncer.Run
}

func getSyncRequest(t *testing.T, url, id string) (int, syncRequestView) {
	t.Helper()
	resp, err := http.Get(url + "/api/sync/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v syncRequestView
	json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// TestAPISyncRunOutlivesTheHTTPInvocation: a manual run that does not end
// within syncWait is answered 202 with its ids while the SyncRun invocation
// that owns it is still in flight; that invocation ends only after the run
// record is final, so on Flex Consumption the run never goes on without an
// invocation (README, "HTTP API").
func TestAPISyncRunOutlivesTheHTTPInvocation(t *testing.T) {
	s := startStack(t, stackOptions{users: 20})
	s.putMapping(e2eMapping)
	// The run takes 8 s (a slow Graph); the HTTP call waits 3 s for it.
	a, url := s.inProcessAPI(t, 3*time.Second)
	host := s.serveRunQueue(t, url)
	s.sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "/users/delta", Delay: faults.Duration(8 * time.Second), Count: 1})

	resp, body := postSync(t, url, `{}`)
	if resp.StatusCode != 202 || body["status"] != syncer.StatusRunning || body["runId"] == "" || body["requestId"] == "" ||
		resp.Header.Get("Location") != "/api/runs/"+body["runId"] {
		t.Fatalf("%d %v Location %q", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	if n := host.inFlight.Load(); n != 1 || len(host.done()) != 0 {
		t.Fatalf("when POST /api/sync answered, %d SyncRun invocation(s) were in flight and %d had ended; want the run's own invocation still running", n, len(host.done()))
	}
	var run syncer.Run
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := a.readJSON(t.Context(), syncer.RunsPrefix+body["runId"]+".json", &run); err != nil {
			t.Fatal(err)
		}
		if run.Status != syncer.StatusRunning || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if run.Status != syncer.StatusSucceeded || run.Trigger != "http" {
		t.Fatalf("run %s: status %q trigger %q error %q", run.ID, run.Status, run.Trigger, run.Error)
	}
	for len(host.done()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	calls := host.done()
	if len(calls) != 1 || calls[0].Status != 200 || calls[0].Ended.Before(run.Finished) {
		t.Fatalf("SyncRun invocations %+v; want one, ended (200) after the run finished at %s", calls, run.Finished)
	}
	if !strings.Contains(strings.Join(calls[0].Logs, "\n"), "run "+run.ID) {
		t.Errorf("the invocation's logs do not name the run: %q", calls[0].Logs)
	}
	code, v := getSyncRequest(t, url, body["requestId"])
	if code != 200 || v.Status != ticketDone || v.RunID != run.ID || v.Problem != nil || v.Run == nil || v.Run.Status != syncer.StatusSucceeded {
		t.Errorf("GET /api/sync/%s: %d %+v", body["requestId"], code, v)
	}
}

// TestAPISyncQueuedUntilTheFunctionTakesIt: while no SyncRun invocation has
// taken the request, POST /api/sync answers 202 with the request id and a
// Location that follows it; the run starts when the function takes it.
func TestAPISyncQueuedUntilTheFunctionTakesIt(t *testing.T) {
	s := startStack(t, stackOptions{users: 10})
	s.putMapping(e2eMapping)
	_, url := s.inProcessAPI(t, 200*time.Millisecond)

	resp, body := postSync(t, url, `{"mode":"full"}`)
	id := body["requestId"]
	if resp.StatusCode != 202 || body["status"] != ticketQueued || id == "" || body["runId"] != "" ||
		resp.Header.Get("Location") != "/api/sync/"+id {
		t.Fatalf("%d %v Location %q", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	if code, v := getSyncRequest(t, url, id); code != 200 || v.Status != ticketQueued || v.RunID != "" {
		t.Fatalf("GET /api/sync/%s before the function took it: %d %+v", id, code, v)
	}
	msgs, err := s.runs.Peek(t.Context(), 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || string(msgs[0].Body) != `{"requestId":"`+id+`"}` {
		t.Fatalf("run queue holds %d message(s): %+v", len(msgs), msgs)
	}

	s.serveRunQueue(t, url)
	deadline := time.Now().Add(30 * time.Second)
	var v syncRequestView
	for time.Now().Before(deadline) {
		if _, v = getSyncRequest(t, url, id); v.Status == ticketDone {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v.Status != ticketDone || v.Problem != nil || v.Run == nil || v.Run.Status != syncer.StatusSucceeded || v.Run.Mode != syncer.ModeFull {
		t.Fatalf("request %s: %+v (run %+v)", id, v, v.Run)
	}
	if code, _ := getSyncRequest(t, url, "nope"); code != 404 {
		t.Errorf("unknown request: %d", code)
	}
	if code, _ := getSyncRequest(t, url, "a..b"); code != 400 {
		t.Errorf("bad request id: %d", code)
	}
}

// TestSyncRunRunsARequestOnce drives the SyncRun function of the handler
// binary directly, as the host would on an at-least-once queue: a message
// delivered again after its run ended, or after a delivery started the run
// and died, runs nothing; messages that can never succeed are dropped, not
// retried into the poison queue.
func TestSyncRunRunsARequestOnce(t *testing.T) {
	s := startStack(t, stackOptions{users: 10})
	s.putMapping(e2eMapping)
	a := s.inProcessApp(t)
	ctx := t.Context()

	runs := func() int {
		list, err := s.blobs.List(ctx, syncer.RunsPrefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	// What POST /api/sync does: the request record, then its message.
	ticket, err := a.queueSync(ctx, []byte(`{"users":["`+s.sim.Directory.Users()[3].ID+`"]}`))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := s.runs.Receive(ctx, 1, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%v %v", msgs, err)
	}
	before := runs()
	first := s.invoke("SyncRun", queuePayload(msgs[0]))
	if first.Status != 200 || !strings.Contains(strings.Join(first.Body.Logs, "\n"), "1 users read") {
		t.Fatalf("first delivery: %d %s", first.Status, first.Raw)
	}
	again := msgs[0]
	again.DequeueCount = 2
	second := s.invoke("SyncRun", queuePayload(again))
	if second.Status != 200 || !strings.Contains(strings.Join(second.Body.Logs, "\n"), "duplicate message") {
		t.Errorf("second delivery: %d %s", second.Status, second.Raw)
	}
	if n := runs(); n != before+1 {
		t.Errorf("%d run(s) for one request delivered twice, want 1", n-before)
	}
	done, _, err := a.readTicket(ctx, ticket.ID)
	if err != nil || done.Status != ticketDone || done.RunID == "" || done.Problem != nil || done.Finished.IsZero() {
		t.Fatalf("request record %+v %v", done, err)
	}

	// A delivery that started a run and died left the request running: the
	// next delivery does not start a second run.
	crashed, err := a.queueSync(ctx, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	crashed.Status, crashed.RunID = ticketRunning, "20260101T000000.000Z-deadbeef"
	if err := a.putTicket(ctx, crashed, ""); err != nil {
		t.Fatal(err)
	}
	msgs, err = s.runs.Receive(ctx, 1, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%v %v", msgs, err)
	}
	before = runs()
	if inv := s.invoke("SyncRun", queuePayload(msgs[0])); inv.Status != 200 || !strings.Contains(strings.Join(inv.Body.Logs, "\n"), "not run twice") {
		t.Errorf("redelivery of a started request: %d %s", inv.Status, inv.Raw)
	}
	if runs() != before {
		t.Error("a started request ran again")
	}

	// Another sync holds the lock: the request ends with sync-running (409)
	// and the message is done with, as the API always answered.
	busy, err := a.queueSync(ctx, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := s.blobs.Lock(ctx, lockBlob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err = s.runs.Receive(ctx, 1, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%v %v", msgs, err)
	}
	if inv := s.invoke("SyncRun", queuePayload(msgs[0])); inv.Status != 200 {
		t.Errorf("request while locked: %d %s", inv.Status, inv.Raw)
	}
	lease.Release(ctx)
	if got, _, _ := a.readTicket(ctx, busy.ID); got.Status != ticketDone || got.Problem == nil ||
		got.Problem.Status != 409 || got.Problem.Type != problemType("sync-running") || got.RunID != "" {
		t.Errorf("request while locked: %+v problem %+v", got, got.Problem)
	}

	// Messages that can never succeed are dropped (200), not retried.
	for _, body := range []string{`not json`, `{"requestId":"../state"}`, `{"requestId":"20260101T000000.000Z-00000000"}`} {
		m := azstorage.Message{ID: "m-" + strconv.Itoa(len(body)), Body: []byte(body), DequeueCount: 1, InsertionTime: time.Now(), PopReceipt: "p"}
		if inv := s.invoke("SyncRun", queuePayload(m)); inv.Status != 200 || !strings.Contains(inv.Raw, "dropped") {
			t.Errorf("message %s: %d %s", body, inv.Status, inv.Raw)
		}
	}
	if _, _, err := a.blobs.Get(ctx, ticketBlob("20260101T000000.000Z-00000000")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dropped message created a request record: %v", err)
	}
}
