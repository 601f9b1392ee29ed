package sposim

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ImportProfilePropertiesJobState values.
const (
	stateUnknown    = 0
	stateSubmitted  = 1
	stateProcessing = 2
	stateQueued     = 3
	stateSucceeded  = 4
	stateError      = 5
)

// ImportProfilePropertiesJobError values.
const (
	jobErrNone         = 0
	jobErrInternal     = 1
	jobErrNotExist     = 20
	jobErrNotInTenant  = 21
	jobErrTooBig       = 22
	jobErrInvalidFile  = 23
	jobErrWithProblems = 30
)

// Job error messages.
const (
	msgInternal     = "Failed to import the custom properties due to an unexpected error."
	msgNotExist     = "The data file does not exist."
	msgNotInTenant  = "The data file is not in the tenant's SharePoint."
	msgTooBig       = "The data file is larger than 2 GB or holds more than 500,000 properties."
	msgInvalidFile  = "The data file is not valid. Check the log files in the log folder for details."
	msgWithProblems = "The import completed with errors. Check the log files in the log folder for details."
)

// job is one queued import.
type job struct {
	id        string
	idType    int
	idProp    string
	propMap   map[string]string // JSON key -> UPA property
	sourceURI string            // as the client sent it
	filePath  string            // server-relative path of the source file, once processing found it
	state     int
	errCode   int
	errMsg    string
	logFolder string // absolute URL
	submitted time.Time
	stepAt    time.Time // when the job entered its current state
}

func (j *job) done() bool { return j.state == stateSucceeded || j.state == stateError }

func (j *job) info() JobInfo {
	m := make(map[string]string, len(j.propMap))
	for k, v := range j.propMap {
		m[k] = v
	}
	return JobInfo{
		JobID: j.id, State: j.state, Error: j.errCode, ErrorMessage: j.errMsg,
		SourceURI: j.sourceURI, LogFolderURI: j.logFolder,
		IDType: j.idType, IDProperty: j.idProp, PropertyMap: m, Submitted: j.submitted,
	}
}

// queueLocked validates a QueueImportProfileProperties call and creates the
// job. The caller holds s.mu.
//
// The call checks only its arguments and the property map; the source file
// is not looked at until the job is processed, where a missing file ends the
// job in DataFileNotExist (20) and a file outside the tenant in
// DataFileNotInTenant (21). Sources: SharePoint/sp-dev-docs
// docs/solution-guidance/Bulk-user-profile-update-api-for-sharepoint-online.md
// documents these as job errors ("DataFileNotExist - The data source file
// could not be found", "DataFileNotInTenant - The data source file did not
// belong to the same tenant"); the CSOM doc comment reproduced in pnp/pnpjs
// packages/sp-admin/office-tenant.ts says the queue call "doesn't download
// the source data or do the import, it simply adds it to a queue".
func (s *Server) queueLocked(idType int, idProp string, pmap []mapEntry, src string) (string, *csomError) {
	if idType < 0 || idType > 2 {
		return "", &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: fmt.Sprintf("The value %d is not a valid ImportProfilePropertiesUserIdType. Parameter name: idType", idType)}
	}
	if strings.TrimSpace(idProp) == "" {
		return "", &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: "The sourceDataIdProperty cannot be empty. Parameter name: sourceDataIdProperty"}
	}
	var missing, editable, taxonomy []string
	m := make(map[string]string, len(pmap))
	for _, e := range pmap {
		if e.from == "" {
			return "", &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
				msg: "The propertyMap contains an empty key. Parameter name: propertyMap"}
		}
		m[e.from] = e.to
		d, ok := s.property(e.to)
		switch {
		case !ok:
			missing = append(missing, e.to)
		case d.EditableByUser:
			editable = append(editable, d.Name)
		case d.Taxonomy, d.MultiValued:
			// SharePoint refuses a multi-valued string property with the
			// same words as a taxonomy property: "Property Names [X] are
			// Taxonomic Properties" (SharePoint/sp-dev-docs#7159), so both
			// kinds share one list and one message. The ErrorCode and
			// ErrorTypeName (ServerException, -2146233088) are [inferred]:
			// the report quotes only the message.
			taxonomy = append(taxonomy, d.Name)
		}
	}
	for _, c := range []struct {
		names []string
		what  string
	}{
		{missing, "do not exist"},
		{editable, "are editable by user"},
		{taxonomy, "are Taxonomic Properties"},
	} {
		if len(c.names) > 0 {
			return "", serverError(csomCodeServer, "Property Names [%s] %s.", strings.Join(c.names, ", "), c.what)
		}
	}
	if cerr := checkSourceArg(src); cerr != nil {
		return "", cerr
	}
	now := s.now()
	j := &job{
		id: uuid.NewString(), idType: idType, idProp: idProp, propMap: m, sourceURI: src,
		state: stateSubmitted, submitted: now, stepAt: now,
	}
	s.jobs[j.id] = j
	s.jobOrder = append(s.jobOrder, j.id)
	s.log.Info("import job queued", "job", j.id, "source", src)
	if s.step == 0 {
		for i := 0; i < 3 && !j.done(); i++ {
			s.stepLocked(j)
		}
	}
	return j.id, nil
}

// checkSourceArg is the queue-time check of sourceUri: only that it is an
// absolute URI (argument validity), not that the file exists or lies in the
// tenant. [inferred] SharePoint's wording for a malformed sourceUri is not
// public; the ArgumentException shape follows the other argument errors.
func checkSourceArg(src string) *csomError {
	raw := strings.TrimSpace(src)
	if raw == "" {
		return &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: "The sourceUri cannot be empty. Parameter name: sourceUri"}
	}
	if !absoluteURI(raw) {
		return &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: fmt.Sprintf("The sourceUri '%s' is not a valid absolute URI. Parameter name: sourceUri", src)}
	}
	return nil
}

// absoluteURI reports whether raw starts with scheme://host.
func absoluteURI(raw string) bool {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return false
	}
	for i, r := range scheme {
		letter := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !letter && (i == 0 || !((r >= '0' && r <= '9') || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	host, _, _ := strings.Cut(rest, "/")
	host, _, _ = strings.Cut(host, "?")
	host, _, _ = strings.Cut(host, "#")
	return host != ""
}

// sourceFileLocked finds the file a job's sourceUri names when the job is
// processed, or the job-level outcome when there is none.
//
// The URI is looked up literally: it must be the tenant's origin (scheme and
// host compared without regard to case) followed by the file's
// server-relative URL as SharePoint names it, spaces as spaces. Path
// segments compare without regard to case (SharePoint URLs are
// case-insensitive). A percent-encoded form such as
// ".../Shared%20Documents/..." is NOT decoded, so it does not match a
// library whose name has a space and the job ends in DataFileNotExist (20).
// [inferred] Nothing public shows SharePoint decoding a sourceUri: every
// public caller passes the unencoded URL ("https://host" + ServerRelativeUrl
// in pnp/powershell src/Commands/Utilities/SharePointUserProfileSync.cs and
// New-PnPUPABulkImportJob; the sample in SharePoint/sp-dev-docs
// docs/solution-guidance/Bulk-user-profile-update-api-for-sharepoint-online.md;
// pnp/powershell#1602 and #2896), so the simulator refuses the encoded form
// rather than let a client depend on a decoding that may not exist.
//
// A URI outside the tenant's origin ends the job in DataFileNotInTenant (21)
// (the job error the bulk API article documents for a file that is not in
// the tenant's SharePoint).
func (s *Server) sourceFileLocked(src string) (*file, outcome) {
	raw := strings.TrimSpace(src)
	n := len(s.baseURL)
	if len(raw) <= n || !strings.EqualFold(raw[:n], s.baseURL) || raw[n] != '/' {
		return nil, outcome{code: jobErrNotInTenant, msg: msgNotInTenant}
	}
	f := s.lookupFile(raw[n:])
	if f == nil {
		return nil, outcome{code: jobErrNotExist, msg: msgNotExist}
	}
	return f, outcome{}
}

// deleteJobLocked deletes a job that has not started yet.
func (s *Server) deleteJobLocked(id string) bool {
	j := s.jobs[id]
	if j == nil {
		return false
	}
	s.tickLocked(j)
	if j.state != stateSubmitted {
		return false
	}
	delete(s.jobs, id)
	for i, x := range s.jobOrder {
		if x == id {
			s.jobOrder = append(s.jobOrder[:i], s.jobOrder[i+1:]...)
			break
		}
	}
	return true
}

// tickLocked moves a job along the clock when JobStep > 0.
func (s *Server) tickLocked(j *job) {
	if s.step <= 0 {
		return
	}
	now := s.now()
	for i := 0; i < 3 && !j.done() && now.Sub(j.stepAt) >= s.step; i++ {
		j.stepAt = j.stepAt.Add(s.step)
		s.stepLocked(j)
	}
}

// stepLocked moves a job one state along. The file is validated on the
// way to Queued and imported on the way to the final state.
func (s *Server) stepLocked(j *job) {
	switch j.state {
	case stateSubmitted:
		j.state = stateProcessing
	case stateProcessing:
		if o := s.importLocked(j, false); o.code != jobErrNone {
			s.finishLocked(j, o)
			return
		}
		j.state = stateQueued
	case stateQueued:
		s.finishLocked(j, s.importLocked(j, true))
	}
}

// outcome is the result of processing an import file.
type outcome struct {
	code  int
	msg   string
	lines []string // log lines; a log folder is written when there are any
}

func (s *Server) finishLocked(j *job, o outcome) {
	j.errCode, j.errMsg = o.code, o.msg
	j.state = stateSucceeded
	if o.code != jobErrNone {
		j.state = stateError
	}
	if len(o.lines) > 0 {
		if err := s.writeLogLocked(j, o.lines); err != nil {
			s.log.Warn("writing import log", "job", j.id, "err", err)
		}
	}
	s.log.Info("import job finished", "job", j.id, "state", j.state, "error", j.errCode)
}

// writeLogLocked writes <library>/<jobId>/<jobId>.log.
func (s *Server) writeLogLocked(j *job, lines []string) error {
	segs := segments(j.filePath)
	parent := s.lookupFolder(joinPath(segs[:len(segs)-1]))
	if parent == nil {
		return fmt.Errorf("folder of %s: %w", j.filePath, os.ErrNotExist)
	}
	lib := parent.libraryRoot()
	if lib == nil {
		return fmt.Errorf("library of %s: %w", j.filePath, os.ErrNotExist)
	}
	dir := lib.folders[key(j.id)]
	if dir == nil {
		dir = s.newFolder(lib, j.id, false)
	}
	if _, err := s.writeFileLocked(dir, j.id+".log", []byte(strings.Join(lines, "\n")+"\n")); err != nil {
		return err
	}
	j.logFolder = s.baseURL + dir.path
	return nil
}

// importLocked validates the job's file and, when apply is set, writes its
// records to the profiles. The caller holds s.mu, so the file cannot change
// between the validating and the applying pass.
func (s *Server) importLocked(j *job, apply bool) outcome {
	f, o := s.sourceFileLocked(j.sourceURI)
	if f == nil {
		return o
	}
	j.filePath = f.path
	if f.size > s.maxFileBytes {
		return outcome{code: jobErrTooBig, msg: msgTooBig}
	}
	disk := f.disk
	open := func() (io.ReadCloser, error) {
		fh, err := os.Open(disk)
		if err != nil {
			return nil, fmt.Errorf("opening import file: %w", err)
		}
		return newTextReader(fh), nil
	}
	sc := scanner{idProp: j.idProp, mapped: func(k string) bool { _, ok := j.propMap[k]; return ok }, maxProps: s.maxProps}
	// The validating pass also counts the rows of each profile, so that the
	// applying pass can refuse every row of a profile the file names more
	// than once (one map entry per profile: linear in the file).
	var rows map[string]int
	var count func([]pair)
	if apply {
		rows = map[string]int{}
		count = func(rec []pair) {
			if _, oid, problem := s.identifyLocked(j, rec); problem == "" {
				rows[oid]++
			}
		}
	}
	if o, err := sc.run(open, count); err != nil || o.code != jobErrNone {
		return s.failedScan(j, o, err)
	}
	if !apply {
		return outcome{}
	}
	var lines []string
	o, err := sc.run(open, func(rec []pair) {
		if line := s.applyRecordLocked(j, rec, rows); line != "" {
			lines = append(lines, line)
		}
	})
	if err != nil || o.code != jobErrNone {
		return s.failedScan(j, o, err)
	}
	if len(lines) > 0 {
		return outcome{code: jobErrWithProblems, msg: msgWithProblems, lines: lines}
	}
	return outcome{}
}

func (s *Server) failedScan(j *job, o outcome, err error) outcome {
	if err != nil {
		s.log.Warn("reading import file", "job", j.id, "err", err)
		return outcome{code: jobErrInternal, msg: msgInternal}
	}
	return o
}

// identifyLocked finds the identity a record carries and the profile (object
// id) it resolves to, or returns the log line saying why it has none.
func (s *Server) identifyLocked(j *job, rec []pair) (id, oid, problem string) {
	has := false
	for _, p := range rec {
		if p.k == j.idProp {
			id, has = p.v, true
		}
	}
	if !has || id == "" {
		return id, "", "MissingIdentity\t\tThe identity is missing for the user object"
	}
	oid, ok := s.resolve(j.idType, id)
	if !ok || oid == "" {
		return id, "", "IdentityNotResolvable\t" + id + "\tUser identity cannot be resolved"
	}
	return id, oid, ""
}

// applyRecordLocked writes one record to its user's profile, or returns the
// log line saying why it could not. rows counts the records of each profile
// in the file.
//
// A profile named by two or more records of one file is not changed at all:
// each of its records gets a GenericError line and the other users of the
// file are imported. Reported in
// techmikael.com/2016/08/why-you-should-use-azure-ad-ids-and-not.html
// ("GenericError <id> System.Data.SqlClient.SqlException ... Input data
// contains multiple instances of the same single-value property for
// RecordId ..."). [inferred] one line per record (with that record's
// identity) and the object id standing in for UPA's numeric RecordId: the
// report shows a single line and SharePoint's record ids are not public.
func (s *Server) applyRecordLocked(j *job, rec []pair, rows map[string]int) string {
	id, oid, problem := s.identifyLocked(j, rec)
	if problem != "" {
		return problem
	}
	if rows[oid] > 1 {
		return "GenericError\t" + id + "\tSqlException: Input data contains multiple instances of the same single-value property for RecordId " + oid + "."
	}
	prof := s.profiles[oid]
	if prof == nil {
		prof = map[string]string{}
		s.profiles[oid] = prof
	}
	for _, p := range rec {
		if p.k == j.idProp {
			continue
		}
		name := j.propMap[p.k]
		if d, ok := s.property(name); ok {
			name = d.Name
		}
		// An empty value clears the property: it is kept as "", so that a
		// property cleared and one never sent can be told apart. (PnP's sync
		// relies on "" clearing a value; the bulk API article's sample file
		// carries empty strings: SharePoint/sp-dev-docs
		// docs/solution-guidance/Bulk-user-profile-update-api-for-sharepoint-online.md.)
		prof[name] = p.v
	}
	return ""
}
