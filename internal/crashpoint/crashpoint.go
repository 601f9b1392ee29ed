// Package crashpoint marks the places where a run can be cut short, so that
// tests can kill the process exactly there and prove that nothing is lost.
//
// In the product, Hit compiles to nothing: the points exist only in builds
// made with the build tag "crashpoints" (the kill matrix's own build of the
// handler), which read PROFILESYNC_CRASH_AT=<point>[#n] and kill the process
// with SIGKILL at the n-th time (default 1) the point is reached. A normal
// build refuses that setting (see Enabled).
package crashpoint

// Points, in the order a run meets them.
const (
	GraphPage          = "graph-page"           // a page of users read from Graph and handed on
	ImportFileWrite    = "import-file-write"    // a record written to the import file on disk
	ChunkedUpload      = "chunked-upload"       // a chunk of the import file acknowledged by SharePoint
	BeforeQueue        = "before-queue"         // the file uploaded and the intent recorded; queue call next
	AfterQueue         = "after-queue"          // SharePoint answered the queue call; nothing written yet
	BeforeStateSave    = "before-state-save"    // the job in the run record; delta link next
	BeforePollSchedule = "before-poll-schedule" // the delta link saved; first status poll next
	PollBeforeRecord   = "poll-before-record"   // a status poll saw the job end; job record next
	PollAfterRecord    = "poll-after-record"    // the job record written; run link and poll document next
)

// All lists every point.
var All = []string{GraphPage, ImportFileWrite, ChunkedUpload, BeforeQueue, AfterQueue,
	BeforeStateSave, BeforePollSchedule, PollBeforeRecord, PollAfterRecord}

// Setting names the environment variable a crashpoints build reads.
const Setting = "PROFILESYNC_CRASH_AT"
