package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/syncer"
)

// The kill matrix: the real handler binary, built with the crashpoints tag,
// is killed with SIGKILL at each named point of a run or of a status poll
// (internal/crashpoint). After each kill the harness does what the
// Functions host and time do: it starts the handler again, recovers the
// sync lock (a dead holder's lease, broken as an operator would rather than
// waiting its 60 seconds out), delivers queue messages as the host does (a
// message whose invocation died is delivered again once its visibility
// timeout ends), changes some users, and fires the timer until the sync is
// quiet. Then it asserts convergence: every profile equals what the mapping
// gives for the current directory, every job SharePoint accepted was
// followed to its end, no file was queued twice, no run is left running,
// nothing is left in the temp folder.

// killCell is one cell of the matrix: a point and which hit of it kills.
type killCell struct {
	point string
	nth   int
}

func (c killCell) String() string { return c.point + "#" + strconv.Itoa(c.nth) }

// killMatrix lists the cells: every point; the long ones at a later hit too.
func killMatrix(full bool) []killCell {
	cells := []killCell{
		{crashpoint.GraphPage, 1},
		{crashpoint.ImportFileWrite, 20},
		{crashpoint.ChunkedUpload, 1},
		{crashpoint.BeforeQueue, 1},
		{crashpoint.AfterQueue, 1},
		{crashpoint.BeforeStateSave, 1},
		{crashpoint.BeforePollSchedule, 1},
		{crashpoint.PollBeforeRecord, 1},
		{crashpoint.PollAfterRecord, 1},
	}
	if full {
		cells = append(cells,
			killCell{crashpoint.GraphPage, 2},
			killCell{crashpoint.ImportFileWrite, 1},
			killCell{crashpoint.ImportFileWrite, 55},
			killCell{crashpoint.ChunkedUpload, 2},
			// The second run (a delta round after the first run's changes).
			killCell{crashpoint.BeforeQueue, 2},
			killCell{crashpoint.AfterQueue, 2},
			killCell{crashpoint.BeforeStateSave, 2},
			killCell{crashpoint.PollBeforeRecord, 2},
		)
	}
	return cells
}

var crashBinary builtHandler

// crashHandlerBinary builds the handler with its crash points compiled in.
func crashHandlerBinary(t testing.TB) string {
	t.Helper()
	return crashBinary.build(t, "profilesync-crash-", "crashpoints")
}

// handlerProc is one handler process.
type handlerProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// launch starts the handler binary with the stack's settings plus extra,
// and waits until it answers (or dies).
func (s *stack) launch(t *testing.T, bin string, extra ...string) *handlerProc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(append([]string(nil), s.env...), extra...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &handlerProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if strings.Contains(s.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in the handler process")
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.url + "/")
		if err == nil {
			resp.Body.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("handler exited at start: %v\n%s", cmd.ProcessState, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler did not answer GET / within 20 s: %v", err)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func (p *handlerProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// killed waits (bounded) for the process to end and reports whether
// SIGKILL ended it.
func (p *handlerProc) killed(within time.Duration) bool {
	select {
	case <-p.done:
	case <-time.After(within):
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// tryInvoke posts a host payload; a handler that dies answers nothing.
func (s *stack) tryInvoke(function, payload string) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, s.url+"/"+function, strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "kill-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// breakLock ends the lease a killed holder left on the sync lock, as
// `az storage blob lease break` would (waiting out its 60 seconds gives the
// same result, slower).
func (s *stack) breakLock(t *testing.T) {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(s.getenv("AzureWebJobsStorage"), nil)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := lease.NewBlobClient(c.ServiceClient().NewContainerClient(s.container).NewBlobClient(lockBlob), nil)
	if err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	if _, err := lc.BreakLease(t.Context(), &lease.BlobBreakOptions{BreakPeriod: &zero}); err != nil && !strings.Contains(err.Error(), "LeaseNotPresent") && !strings.Contains(err.Error(), "BlobNotFound") {
		t.Fatalf("breaking the lock's lease: %v", err)
	}
}

// hostVisibility is how long a message whose invocation died stays hidden
// before the harness (as the host) delivers it again.
const hostVisibility = 2 * time.Second

// deliver hands every visible status message to ImportStatus once, as the
// host does: a message is deleted when its invocation succeeds; one whose
// invocation failed or died comes back after its visibility timeout. It
// returns how many were delivered and whether an invocation died.
func (s *stack) deliver(t *testing.T) (n int, died bool) {
	t.Helper()
	for range 50 {
		msgs, err := s.queue.Receive(t.Context(), 16, hostVisibility)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return n, died
		}
		for _, m := range msgs {
			n++
			status, err := s.tryInvoke("ImportStatus", queuePayload(m))
			if err != nil {
				return n, true
			}
			if status == 200 {
				if err := s.queue.Delete(t.Context(), m); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}
		}
	}
	t.Fatal("more than 50 rounds of status messages")
	return n, died
}

// cellOutcome is what one cell of the matrix saw.
type cellOutcome struct {
	cell      killCell
	killed    bool
	rounds    int // timer runs until quiet
	jobs      int
	converged bool
	note      string
}

func TestKillMatrix(t *testing.T) {
	runKillMatrix(t, os.Getenv("PROFILESYNC_RELIABILITY") == "full")
}

func runKillMatrix(t *testing.T, full bool) {
	var (
		mu      sync.Mutex
		results []cellOutcome
	)
	for _, cell := range killMatrix(full) {
		t.Run(cell.String(), func(t *testing.T) {
			out := killAndConverge(t, cell)
			out.converged = !t.Failed()
			mu.Lock()
			results = append(results, out)
			mu.Unlock()
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nkill matrix: %d cells\n%-26s %-7s %-7s %-5s %-10s %s\n", len(results), "point", "killed", "rounds", "jobs", "converged", "note")
	for _, r := range results {
		fmt.Fprintf(&b, "%-26s %-7v %-7d %-5d %-10v %s\n", r.cell, r.killed, r.rounds, r.jobs, r.converged, r.note)
	}
	t.Log(b.String())
	if os.Getenv("PROFILESYNC_RELIABILITY") != "" {
		fmt.Print(b.String())
	}
}

// killAndConverge runs one cell.
func killAndConverge(t *testing.T, cell killCell) cellOutcome {
	out := cellOutcome{cell: cell}
	s := startStack(t, stackOptions{users: 60, noHandler: true, extra: []string{
		"STATUS_POLL_BACKOFF=1s,2s", "SPO_CHUNK_SIZE=4096",
	}})
	bin := crashHandlerBinary(t)
	tmp := s.getenv("TMPDIR")
	s.putMapping(e2eMapping)
	p := s.launch(t, bin, crashpoint.Setting+"="+cell.String())

	// Drive runs and polls until the process dies at the point (bounded).
	changed := 0
	for step := 0; step < 4 && !out.killed; step++ {
		payload := timerNormal
		if step == 0 {
			payload = timerFirst
		}
		if _, err := s.tryInvoke("SyncTimer", payload); err != nil {
			out.killed = p.killed(10 * time.Second)
			break
		}
		// Follow the run's jobs: status polls become visible after their delay.
		died := false
		for wait := 0; wait < 60 && !died && !s.queueEmpty(t); wait++ {
			_, died = s.deliver(t)
			if !died {
				time.Sleep(250 * time.Millisecond)
			}
		}
		if died {
			out.killed = p.killed(10 * time.Second)
			break
		}
		// Some change for the next run to carry.
		changed += changeUsers(t, s, 2, fmt.Sprintf("before run %d", step+2))
	}
	if !out.killed {
		t.Fatalf("the handler was not killed at %s: the point was never reached", cell)
	}

	// Restart (same binary, no crash point), recover the lock, change
	// users, and run until quiet.
	s.launch(t, bin)
	s.breakLock(t)
	changed += changeUsers(t, s, 3, "after the kill")
	out.rounds = s.runUntilQuiet(t, nil)
	out.jobs = assertConverged(t, s, tmp)
	out.note = fmt.Sprintf("%d user changes", changed)
	return out
}

// runUntilQuiet fires the timer and delivers status messages as the host
// does until a delta run sends nobody and no job is followed any more (at
// most 8 timer rounds); between rounds it calls between (if set). It
// returns the rounds it took.
func (s *stack) runUntilQuiet(t *testing.T, between func(round int)) int {
	t.Helper()
	for round := 1; round <= 8; round++ {
		if status, err := s.tryInvoke("SyncTimer", timerNormal); err != nil || status != 200 {
			t.Logf("timer round %d: %d %v", round, status, err)
		}
		for range 15 {
			n, died := s.deliver(t)
			if died {
				t.Fatal("the handler died without a crash point")
			}
			if n == 0 && s.queueEmpty(t) {
				break
			}
			time.Sleep(hostVisibility) // invisible messages come back
		}
		run := s.lastRun()
		if run.Status == syncer.StatusSucceeded && run.Mode == syncer.ModeDelta && run.Sent == 0 &&
			len(s.blobNames(t, syncer.PollsPrefix)) == 0 && s.queueEmpty(t) {
			return round
		}
		if between != nil {
			between(round)
		}
	}
	t.Errorf("not quiet after 8 timer rounds")
	return 8
}

// changeUsers gives n members a new job title.
func changeUsers(t *testing.T, s *stack, n int, why string) int {
	t.Helper()
	done := 0
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if done == n {
			break
		}
		if u.Deleted || isGuest(u) || isDisabled(u) {
			continue
		}
		title := fmt.Sprintf("%v / %s", u.Props["jobTitle"], why)
		if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": title}}); err != nil {
			t.Fatal(err)
		}
		done++
	}
	return done
}

func (s *stack) queueEmpty(t *testing.T) bool {
	t.Helper()
	n, err := s.queue.Count(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n == 0
}

func (s *stack) blobNames(t *testing.T, prefix string) []string {
	t.Helper()
	infos, err := s.blobs.List(t.Context(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range infos {
		names = append(names, b.Name)
	}
	return names
}

// assertConverged checks what the sync promises, whatever happened; it
// returns how many jobs SharePoint accepted.
func assertConverged(t *testing.T, s *stack, tmp string) int {
	t.Helper()
	checkProfiles(t, s)
	jobs := s.sim.SPO.Jobs()
	records := map[string]syncer.JobRecord{}
	for _, j := range jobs {
		rec, ok := s.jobRecord(t, j.JobID)
		if !ok {
			t.Errorf("job %s (SharePoint state %d) has no job record: nobody followed it to its end", j.JobID, j.State)
			continue
		}
		records[j.JobID] = rec
	}
	// A job that did not succeed must have been re-sent: its file queued
	// again as a job that (in the end) succeeded. Only such requeues may
	// share a file.
	requeued := map[string]bool{}
	for id, rec := range records {
		seen := map[string]bool{}
		for cur := rec; cur.State != "Succeeded"; {
			next, ok := records[cur.RequeuedAs]
			if cur.RequeuedAs == "" || !ok || seen[cur.RequeuedAs] {
				t.Errorf("job %s ended %s (%s) and was not re-sent to success (resent: %q)", id, rec.State, rec.ErrorMessage, cur.Resent)
				break
			}
			seen[cur.RequeuedAs] = true
			requeued[cur.RequeuedAs] = true
			cur = next
		}
	}
	sources := map[string]string{}
	for _, j := range jobs {
		if other, dup := sources[j.SourceURI]; dup && !requeued[j.JobID] {
			t.Errorf("file %s queued twice (jobs %s and %s)", j.SourceURI, other, j.JobID)
		}
		sources[j.SourceURI] = j.JobID
	}
	for _, name := range s.blobNames(t, syncer.RunsPrefix) {
		data, _, err := s.blobs.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		var run syncer.Run
		if err := json.Unmarshal(data, &run); err != nil {
			t.Fatal(err)
		}
		if run.Status == syncer.StatusRunning {
			t.Errorf("run %s is still marked running", run.ID)
		}
		for _, f := range run.Files {
			if f.Queueing || f.Uploading {
				t.Errorf("run %s: file %s left in the middle of its upload or queue call", run.ID, f.Name)
			}
		}
		// Every job of the run that ended is linked into the run record
		// (a poll that died after writing the job record links it when
		// its message comes back).
		linked := map[string]bool{}
		for _, l := range run.JobResults {
			linked[l.JobID] = true
		}
		for _, id := range run.JobIDs {
			if _, recorded := records[id]; recorded && !linked[id] {
				t.Errorf("run %s: job %s ended but is not linked into the run record", run.ID, id)
			}
		}
	}
	if left := s.blobNames(t, syncer.PollsPrefix); len(left) != 0 {
		t.Errorf("jobs still followed: %v", left)
	}
	// No orphan in the library: every import file there was queued.
	for _, p := range s.sim.SPO.FilesIn("/sites/profilesync/Shared Documents/Profile Imports") {
		if _, queued := sources[s.sim.SPOURL+p]; !queued {
			t.Errorf("import file %s is in the library but was never queued", p)
		}
	}
	entries, _ := os.ReadDir(tmp)
	var stale []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "profilesync-") {
			stale = append(stale, e.Name())
		}
	}
	slices.Sort(stale)
	if len(stale) > 0 {
		t.Errorf("temp folder still holds %v", stale)
	}
	return len(jobs)
}

var _ = azstorage.Message{}
