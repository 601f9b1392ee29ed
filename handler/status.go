package main

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// jobView is one job as `handler status` shows it: the record when the job
// ended, SharePoint's live answer while it runs.
type jobView struct {
	syncer.JobRecord
	Live bool // from SharePoint now, not from a record
}

// statusCmd is `handler status [JOBID] [--errors] [--wait]`, the equivalent of
// Get-PnPUPABulkImportStatus [-JobId] [-IncludeErrorDetails].
func statusCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stdout)
	withErrors := fs.Bool("errors", false, "print the per-user results of jobs that ended in error")
	wait := fs.Bool("wait", false, "wait until the job ends (needs JOBID)")
	timeout := fs.Duration("timeout", 2*time.Hour, "give up waiting after this long")
	top := fs.Int("top", 50, "without JOBID: how many recorded jobs to list (0 = all, up to 10,000)")
	// Flags may come after the job id, as administrators type them.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) > 1 {
		return fmt.Errorf("status: at most one JOBID, got %v", pos)
	}
	if *wait && len(pos) == 0 {
		return errors.New("status --wait needs a JOBID")
	}
	a, err := cliApp(getenv, io.Discard)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		views, err := a.allJobs(ctx, *top)
		if err != nil {
			return err
		}
		printJobs(stdout, views)
		if *withErrors {
			for _, v := range views {
				if len(v.Results) > 0 {
					fmt.Fprintf(stdout, "\njob %s:\n", v.JobID)
					printResults(stdout, v.JobRecord)
				}
			}
		}
		return nil
	}
	id := strings.Trim(pos[0], "{}")
	if *wait {
		if err := a.waitJob(ctx, id, *timeout, stdout); err != nil {
			return err
		}
	}
	v, err := a.oneJob(ctx, id, *withErrors)
	if err != nil {
		return err
	}
	printJob(stdout, v)
	if *withErrors {
		printResults(stdout, v.JobRecord)
	}
	return nil
}

// allJobs lists the newest recorded jobs (at most top; 0 = all) and every
// job still followed, newest first.
func (a *app) allJobs(ctx context.Context, top int) ([]jobView, error) {
	var views []jobView
	infos, err := newestJobs(ctx, a.blobs, top)
	if err != nil {
		return nil, err
	}
	for _, b := range infos {
		var r syncer.JobRecord
		if err := a.readJSON(ctx, b.Name, &r); err != nil {
			return nil, err
		}
		views = append(views, jobView{JobRecord: r})
	}
	pending, err := store{a.blobs}.List(ctx, syncer.PollsPrefix)
	if err != nil {
		return nil, err
	}
	for _, n := range pending {
		var ps syncer.PollState
		if err := a.readJSON(ctx, n, &ps); err != nil {
			return nil, err
		}
		v := jobView{JobRecord: syncer.JobRecord{JobID: ps.JobID, RunID: ps.RunID, QueuedAt: ps.QueuedAt, Attempts: max(ps.Attempt-1, 0), State: "?"}, Live: true}
		if job, err := a.spo.Job(ctx, ps.JobID); err == nil {
			v.State, v.ErrorName, v.ErrorMessage, v.SourceURI = job.State.String(), job.Error.String(), job.ErrorMessage, job.SourceURI
		} else {
			v.ErrorMessage = "SharePoint: " + err.Error()
		}
		views = append(views, v)
	}
	sort.SliceStable(views, func(i, k int) bool { return views[i].QueuedAt.After(views[k].QueuedAt) })
	return views, nil
}

// oneJob returns the record of a job, or SharePoint's live view of it.
func (a *app) oneJob(ctx context.Context, id string, withErrors bool) (jobView, error) {
	var r syncer.JobRecord
	err := a.readJSON(ctx, syncer.JobsPrefix+id+".json", &r)
	if err == nil {
		return jobView{JobRecord: r}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return jobView{}, err
	}
	job, err := a.spo.Job(ctx, id)
	if err != nil {
		return jobView{}, fmt.Errorf("job %s: %w", id, err)
	}
	v := jobView{Live: true, JobRecord: syncer.JobRecord{JobID: job.ID, State: job.State.String(), ErrorCode: int(job.Error),
		ErrorName: job.Error.String(), ErrorMessage: job.ErrorMessage, SourceURI: job.SourceURI, LogFolderURI: job.LogFolderURI}}
	var ps syncer.PollState
	if a.readJSON(ctx, syncer.PollsPrefix+id+".json", &ps) == nil {
		v.RunID, v.QueuedAt, v.Attempts = ps.RunID, ps.QueuedAt, ps.Attempt-1
	}
	if withErrors && job.State == profile.Error && job.LogFolderURI != "" {
		err := spoLogs{a.spo}.LogLines(ctx, job.LogFolderURI, func(line string) error {
			if res, ok := syncer.ParseLogLine(line); ok && len(v.Results) < syncer.MaxResults {
				v.Results = append(v.Results, res)
			}
			return nil
		})
		if err != nil {
			v.LogError = err.Error()
		}
	}
	return v, nil
}

// waitJob polls SharePoint with backoff until the job ends, the timeout
// passes or ctx is cancelled (Ctrl-C).
func (a *app) waitJob(ctx context.Context, id string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for attempt := 0; ; attempt++ {
		job, err := a.spo.Job(ctx, id)
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		if s := job.State.String(); s != last {
			fmt.Fprintf(out, "%s  job %s: %s\n", time.Now().UTC().Format(time.TimeOnly), id, s)
			last = s
		}
		if job.State.Done() {
			return nil
		}
		delay := min(syncer.Delay(a.cfg.PollBackoff, attempt), 30*time.Second)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("job %s still %s after %s", id, last, timeout)
			}
			return fmt.Errorf("stopped waiting for job %s (still %s)", id, last)
		case <-time.After(delay):
		}
	}
}

func (a *app) readJSON(ctx context.Context, name string, v any) error {
	data, _, err := a.blobs.Get(ctx, name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

func printJobs(w io.Writer, views []jobView) {
	if len(views) == 0 {
		fmt.Fprintln(w, "no import jobs recorded yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB ID\tSTATE\tERROR\tQUEUED (UTC)\tRUN\tUSER ERRORS")
	for _, v := range views {
		state := v.State
		if v.Live {
			state += " (live)"
		}
		errName := v.ErrorName
		if errName == "NoError" {
			errName = ""
		}
		n := 0
		for _, c := range v.ResultCounts {
			n += c
		}
		queued := ""
		if !v.QueuedAt.IsZero() {
			queued = v.QueuedAt.UTC().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", v.JobID, state, errName, queued, v.RunID, n)
	}
	tw.Flush()
}

func printJob(w io.Writer, v jobView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := v.State
	if v.Live {
		state += " (live from SharePoint)"
	}
	rows := [][2]string{
		{"Job", v.JobID}, {"State", state}, {"Error", fmt.Sprintf("%s (%d)", v.ErrorName, v.ErrorCode)},
		{"Message", v.ErrorMessage}, {"Source file", v.SourceURI}, {"Log folder", v.LogFolderURI}, {"Run", v.RunID},
	}
	if !v.QueuedAt.IsZero() {
		rows = append(rows, [2]string{"Queued", v.QueuedAt.UTC().Format(time.RFC3339)})
	}
	if !v.FirstPoll.IsZero() {
		rows = append(rows, [2]string{"Polled", fmt.Sprintf("%d times, %s .. %s", v.Attempts, v.FirstPoll.UTC().Format(time.RFC3339), v.LastPoll.UTC().Format(time.RFC3339))})
	}
	for code, n := range v.ResultCounts {
		rows = append(rows, [2]string{"User errors", fmt.Sprintf("%d %s", n, code)})
	}
	for _, r := range rows {
		if r[1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
		}
	}
	tw.Flush()
}

func printResults(w io.Writer, r syncer.JobRecord) {
	if r.LogError != "" {
		fmt.Fprintln(w, "log:", r.LogError)
	}
	if len(r.Results) == 0 {
		fmt.Fprintln(w, "no per-user results")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CODE\tIDENTITY\tMESSAGE")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", res.Code, res.Identity, res.Message)
	}
	tw.Flush()
	if r.Truncated {
		fmt.Fprintf(w, "(only the first %d results are kept)\n", len(r.Results))
	}
}

// maxJobsListed bounds a listing asked for "all" jobs.
const maxJobsListed = 10_000

// newestJobs streams the job records and keeps the top newest written
// (records are written once, when a job ends), newest first: memory holds
// top entries however many records there are (retention keeps 90 days'
// worth, which can still be 100,000s for frequent syncs).
func newestJobs(ctx context.Context, b *azstorage.Blobs, top int) ([]azstorage.BlobInfo, error) {
	if top <= 0 || top > maxJobsListed {
		top = maxJobsListed
	}
	h := &oldestFirst{}
	err := b.Each(ctx, syncer.JobsPrefix, func(info azstorage.BlobInfo) error {
		if h.Len() < top {
			heap.Push(h, info)
		} else if info.LastModified.After((*h)[0].LastModified) {
			(*h)[0] = info
			heap.Fix(h, 0)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]azstorage.BlobInfo, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(azstorage.BlobInfo)
	}
	return out, nil
}

// oldestFirst is a min-heap of blobs by write time.
type oldestFirst []azstorage.BlobInfo

func (h oldestFirst) Len() int           { return len(h) }
func (h oldestFirst) Less(i, k int) bool { return h[i].LastModified.Before(h[k].LastModified) }
func (h oldestFirst) Swap(i, k int)      { h[i], h[k] = h[k], h[i] }
func (h *oldestFirst) Push(x any)        { *h = append(*h, x.(azstorage.BlobInfo)) }
func (h *oldestFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
