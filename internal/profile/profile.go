// Package profile holds the nouns every other package of profilesync speaks:
// users read from Entra ID, records written to SharePoint's bulk import file,
// import jobs and their states. It imports only the standard library.
package profile

import (
	"errors"
	"fmt"
	"strings"
)

// User is one Entra ID user as one page of Graph returned it.
//
// Props holds the user's properties as Graph's JSON carries them, keyed by
// their Graph names (camelCase, as Graph answers): strings, bools, float64
// numbers, []any for collections, map[string]any for complex values and nil
// for JSON null. A property Graph omitted (never set) is absent.
//
// The manager is stored under the key "manager": a map[string]any of the
// manager's selected properties, or nil when the user has no manager. The key
// is absent when the source does not know (an incremental delta round that did
// not mention the manager); properties drawn from the manager are then left
// out of the user's record so SharePoint keeps what it has.
type User struct {
	ID      string
	Removed bool // Graph reported the user as @removed (deleted or out of scope)
	Props   map[string]any
	// Seq orders the sightings of one read: Graph may hand the same user
	// over more than once, and of two sightings the one with the higher Seq
	// is the newer. 0 means "newer than every sighting before it", which is
	// right for sources that hand users over in the order they read them.
	Seq uint64
}

// IDType says which user attribute identifies a profile in the import file.
// The numbers are SharePoint's ImportProfilePropertiesUserIdType values.
type IDType int

// The identity types SharePoint's bulk import accepts.
const (
	Email         IDType = 0
	CloudID       IDType = 1
	PrincipalName IDType = 2
)

// String returns the name used in the mapping document and by SharePoint.
func (t IDType) String() string {
	switch t {
	case Email:
		return "Email"
	case CloudID:
		return "CloudId"
	case PrincipalName:
		return "PrincipalName"
	}
	return fmt.Sprintf("IDType(%d)", int(t))
}

// ParseIDType parses "CloudId", "PrincipalName" or "Email" (case-insensitive).
func ParseIDType(s string) (IDType, error) {
	switch strings.ToLower(s) {
	case "cloudid":
		return CloudID, nil
	case "principalname":
		return PrincipalName, nil
	case "email":
		return Email, nil
	}
	return 0, fmt.Errorf("unknown idType %q (want CloudId, PrincipalName or Email)", s)
}

// IDProperty is the name of the identity key in every import file record.
const IDProperty = "IdName"

// JobState is SharePoint's ImportProfilePropertiesJobState, plus TimedOut,
// which is profilesync's own verdict for a job that never finished.
type JobState int

// Job states. 0..5 are SharePoint's values.
const (
	Unknown    JobState = 0
	Submitted  JobState = 1
	Processing JobState = 2
	Queued     JobState = 3
	Succeeded  JobState = 4
	Error      JobState = 5
	TimedOut   JobState = 100
)

var stateNames = map[JobState]string{
	Unknown: "Unknown", Submitted: "Submitted", Processing: "Processing", Queued: "Queued",
	Succeeded: "Succeeded", Error: "Error", TimedOut: "TimedOut",
}

// String returns the state's name as SharePoint spells it.
func (s JobState) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("JobState(%d)", int(s))
}

// ParseJobState is the inverse of String.
func ParseJobState(name string) (JobState, error) {
	for s, n := range stateNames {
		if strings.EqualFold(n, name) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown job state %q", name)
}

// MarshalText makes states read as names in JSON documents.
func (s JobState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText accepts the names written by MarshalText.
func (s *JobState) UnmarshalText(b []byte) error {
	v, err := ParseJobState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Done reports whether SharePoint will not change the job any more.
func (s JobState) Done() bool { return s == Succeeded || s == Error || s == TimedOut }

// JobError is SharePoint's ImportProfilePropertiesJobError.
type JobError int

// Job error codes as SharePoint reports them.
const (
	NoError                 JobError = 0
	InternalError           JobError = 1
	DataFileNotExist        JobError = 20
	DataFileNotInTenant     JobError = 21
	DataFileTooBig          JobError = 22
	InvalidDataFile         JobError = 23
	ImportCompleteWithError JobError = 30
)

var errorNames = map[JobError]string{
	NoError: "NoError", InternalError: "InternalError", DataFileNotExist: "DataFileNotExist",
	DataFileNotInTenant: "DataFileNotInTenant", DataFileTooBig: "DataFileTooBig",
	InvalidDataFile: "InvalidDataFile", ImportCompleteWithError: "ImportCompleteWithError",
}

// String returns the error's name as SharePoint spells it.
func (e JobError) String() string {
	if n, ok := errorNames[e]; ok {
		return n
	}
	return fmt.Sprintf("JobError(%d)", int(e))
}

// Job is what SharePoint reports about one import job
// (ImportProfilePropertiesJobInfo).
type Job struct {
	ID           string   `json:"jobId"`
	State        JobState `json:"state"`
	Error        JobError `json:"error"`
	ErrorMessage string   `json:"errorMessage,omitempty"`
	SourceURI    string   `json:"sourceUri,omitempty"`
	LogFolderURI string   `json:"logFolderUri,omitempty"`
}

// Sentinel errors adapters wrap so the engine can tell conditions apart
// without importing any SDK.
var (
	// ErrDeltaExpired: the stored delta link can no longer be used
	// (Graph 400 syncStateNotFound / resyncRequired, or 410 Gone);
	// a full round must be run.
	ErrDeltaExpired = errors.New("delta token expired or reset")
	// ErrStale: a conditional write lost a race (ETag mismatch / blob exists).
	ErrStale = errors.New("stale: the document changed since it was read")
	// ErrBusy: another sync holds the lock.
	ErrBusy = errors.New("another sync is running")
)

// Selection names what to read from Graph for each user.
type Selection struct {
	// Properties are top-level Graph user properties to $select, in Graph's
	// spelling. "manager" is added by the source when Manager is not empty.
	Properties []string
	// Manager lists the manager's properties the mapping needs ("id" included);
	// empty when the mapping draws nothing from the manager.
	Manager []string
}
