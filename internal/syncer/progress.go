package syncer

import (
	"sync"
	"time"
)

// Phase is what a run is doing, as Progress reports it.
type Phase string

// The phases of a run, in the order a run goes through them; uploading and
// queueing alternate, once per import file (a what-if run only uploads).
const (
	PhaseReading   Phase = "reading"   // reading users from Graph into import files
	PhaseWriting   Phase = "writing"   // finishing the import files (one row per user)
	PhaseUploading Phase = "uploading" // uploading import file File of Files
	PhaseQueueing  Phase = "queueing"  // queueing the import of file File of Files
)

// Progress is what a run has done so far, handed to Options.Progress.
type Progress struct {
	RunID   string // "" in a dry run
	Mode    Mode
	Phase   Phase
	Pages   int           // pages of users Graph answered so far (when the Source counts them, see PageCounter)
	Read    int           // users read from Graph so far
	Sent    int           // users written to the import files so far (to be sent)
	Files   int           // import files of the run, known from PhaseUploading on
	File    int           // the file being uploaded or queued, from 1
	Elapsed time.Duration // since the run started
}

const (
	// progressEvery is the least time between two reports while users
	// are read.
	progressEvery = 250 * time.Millisecond
	// progressMask: while users are read, the clock is looked at once
	// per 256 users only.
	progressMask = 255
)

// reporter calls Options.Progress at each phase change and, while users
// are read, at most every progressEvery. A nil reporter reports nothing.
// Its mutex keeps the callback from ever running on two goroutines at once.
type reporter struct {
	mu     sync.Mutex
	fn     func(Progress)
	start  time.Time
	last   time.Time
	pages  PageCounter // nil: pages are not counted
	pages0 int64
}

// PageCounter is an optional interface of a Source (or UserLookup): how
// many pages of users it has handed over since it was made. Progress
// reports the pages of the run.
type PageCounter interface {
	PagesRead() int64
}

func newReporter(fn func(Progress), src any) *reporter {
	if fn == nil {
		return nil
	}
	r := &reporter{fn: fn, start: time.Now()}
	if pc, ok := src.(PageCounter); ok {
		r.pages, r.pages0 = pc, pc.PagesRead()
	}
	return r
}

// phase reports that the run entered p (file and files: the import file
// at hand, from 1, and how many there are).
func (r *reporter) phase(p Phase, run *Run, file, files int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report(p, run, file, files, time.Now())
}

// reading is called once per user read; it looks at the clock once per
// 256 users and reports when progressEvery has passed since the last report.
func (r *reporter) reading(run *Run) {
	if r == nil || run.Read&progressMask != 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.last) >= progressEvery {
		r.report(PhaseReading, run, 0, 0, now)
	}
}

func (r *reporter) report(p Phase, run *Run, file, files int, now time.Time) {
	r.last = now
	pages := 0
	if r.pages != nil {
		pages = int(r.pages.PagesRead() - r.pages0)
	}
	r.fn(Progress{RunID: run.ID, Mode: run.Mode, Phase: p, Pages: pages, Read: run.Read, Sent: run.Sent,
		Files: files, File: file, Elapsed: now.Sub(r.start)})
}
