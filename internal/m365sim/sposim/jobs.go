package sposim

import (
	"fmt"
	"io"
	"net/url"
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
	filePath  string            // server-relative path of the source file
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
func (s *Server) queueLocked(idType int, idProp string, pmap []mapEntry, src string) (string, *csomError) {
	if idType < 0 || idType > 2 {
		return "", &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: fmt.Sprintf("The value %d is not a valid ImportProfilePropertiesUserIdType. Parameter name: idType", idType)}
	}
	if strings.TrimSpace(idProp) == "" {
		return "", &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: "The sourceDataIdProperty cannot be empty. Parameter name: sourceDataIdProperty"}
	}
	var missing, editable, taxonomy, multi []string
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
		case d.Taxonomy:
			taxonomy = append(taxonomy, d.Name)
		case d.MultiValued:
			multi = append(multi, d.Name)
		}
	}
	for _, c := range []struct {
		names []string
		what  string
	}{
		{missing, "do not exist"},
		{editable, "are editable by user"},
		{taxonomy, "are Taxonomic Properties"},
		{multi, "are multi-valued properties"},
	} {
		if len(c.names) > 0 {
			return "", serverError(csomCodeServer, "Property Names [%s] %s.", strings.Join(c.names, ", "), c.what)
		}
	}
	f, cerr := s.sourceFileLocked(src)
	if cerr != nil {
		return "", cerr
	}
	now := s.now()
	j := &job{
		id: uuid.NewString(), idType: idType, idProp: idProp, propMap: m, sourceURI: src,
		filePath: f.path, state: stateSubmitted, submitted: now, stepAt: now,
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

// sourceFileLocked finds the file a sourceUri names. The URI may carry raw
// spaces or percent-encoding.
func (s *Server) sourceFileLocked(src string) (*file, *csomError) {
	raw := strings.TrimSpace(src)
	if raw == "" {
		return nil, &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: "The sourceUri cannot be empty. Parameter name: sourceUri"}
	}
	u, err := url.Parse(strings.ReplaceAll(raw, " ", "%20"))
	if err != nil || !u.IsAbs() || u.Host == "" {
		return nil, &csomError{code: csomCodeArgument, typeName: csomTypeArgument,
			msg: fmt.Sprintf("The sourceUri '%s' is not a valid absolute URI. Parameter name: sourceUri", src)}
	}
	p := u.Path
	bp := strings.TrimRight(s.base.Path, "/")
	inTenant := strings.EqualFold(u.Scheme, s.base.Scheme) && strings.EqualFold(u.Host, s.base.Host) &&
		(bp == "" || strings.HasPrefix(key(p), key(bp)+"/"))
	if !inTenant {
		return nil, serverError(csomCodeServer, "The source URI '%s' is not in the tenant.", src)
	}
	f := s.lookupFile(p[len(bp):])
	if f == nil {
		return nil, &csomError{code: csomCodeNotFound, typeName: csomTypeNotFound,
			msg: fmt.Sprintf("The source file '%s' does not exist.", src)}
	}
	return f, nil
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
	f := s.lookupFile(j.filePath)
	if f == nil {
		return outcome{code: jobErrNotExist, msg: msgNotExist}
	}
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
	if o, err := sc.run(open, nil); err != nil || o.code != jobErrNone {
		return s.failedScan(j, o, err)
	}
	if !apply {
		return outcome{}
	}
	var lines []string
	o, err := sc.run(open, func(rec []pair) {
		if line := s.applyRecordLocked(j, rec); line != "" {
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

// applyRecordLocked writes one record to its user's profile, or returns the
// log line saying why it could not.
func (s *Server) applyRecordLocked(j *job, rec []pair) string {
	id, has := "", false
	for _, p := range rec {
		if p.k == j.idProp {
			id, has = p.v, true
		}
	}
	if !has || id == "" {
		return "MissingIdentity\t\tThe identity is missing for the user object"
	}
	oid, ok := s.resolve(j.idType, id)
	if !ok || oid == "" {
		return "IdentityNotResolvable\t" + id + "\tUser identity cannot be resolved"
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
		if p.v == "" {
			delete(prof, name)
		} else {
			prof[name] = p.v
		}
	}
	return ""
}
