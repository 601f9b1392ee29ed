// Package sposim simulates the parts of SharePoint Online that profilesync
// talks to: document libraries over REST (folders, simple and chunked
// uploads, downloads, deletion), the bulk user profile import API of
// Office365Tenant over CSOM ProcessQuery, and the user profiles that import
// jobs write.
//
// The handler does no authentication: the composing simulator wraps it with
// bearer-token checks. Uploaded bytes live on disk, metadata in memory; all
// state is guarded by one mutex. Import jobs advance lazily from an injected
// clock whenever they are read, so no goroutines run in the background.
package sposim

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Resolver finds the Entra ID object id of the user an import file record
// names. idType is SharePoint's ImportProfilePropertiesUserIdType:
// 0 Email, 1 CloudId, 2 PrincipalName.
type Resolver interface {
	Resolve(idType int, value string) (objectID string, ok bool)
}

// Options configures a Server.
type Options struct {
	// BaseURL is the SharePoint origin, e.g. "http://127.0.0.1:8081" (no
	// trailing slash). Source files of import jobs outside it are "not in
	// the tenant"; LogFolderUri values start with it.
	BaseURL string
	// Resolver maps record identities to object ids. Nil resolves every
	// identity to itself.
	Resolver Resolver
	// Properties are the user profile property definitions; nil means
	// DefaultProperties().
	Properties []PropertyDef
	// JobStep is the time a job spends in each state. 0 processes a job
	// synchronously while it is queued; a negative value leaves jobs alone
	// until AdvanceJob (or POST /_sim/jobs/{id}/advance) moves them.
	JobStep time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// FileDir holds uploaded file bytes. "" means a temporary directory that
	// Close removes.
	FileDir string
	// Logger receives the simulator's log; nil discards it.
	Logger *slog.Logger
}

// PropertyDef defines one user profile property. Only properties that are
// neither editable by users, multi-valued nor taxonomic can be imported.
type PropertyDef struct {
	Name           string
	EditableByUser bool
	MultiValued    bool
	Taxonomy       bool
}

// DefaultProperties returns the property definitions a new Server uses when
// Options.Properties is nil.
func DefaultProperties() []PropertyDef {
	defs := []PropertyDef{}
	for _, n := range []string{
		"CostCenter", "HomePhone", "Division", "Ext1", "Ext2", "Ext3", "Ext4", "Ext5",
		"ManagerEmail", "Phones", "EmployeeId", "EmployeeType", "HireDate", "Building", "Nickname",
	} {
		defs = append(defs, PropertyDef{Name: n})
	}
	return append(defs,
		PropertyDef{Name: "AboutMe", EditableByUser: true},
		PropertyDef{Name: "SPS-Skills", MultiValued: true, Taxonomy: true},
		PropertyDef{Name: "SPS-Interests", Taxonomy: true},
		PropertyDef{Name: "Languages", MultiValued: true},
	)
}

// JobInfo is what the simulator knows about one import job. The first six
// fields are SharePoint's ImportProfilePropertiesJobInfo; State and Error
// carry SharePoint's numeric enum values.
type JobInfo struct {
	JobID        string            `json:"JobId"`
	State        int               `json:"State"`
	Error        int               `json:"Error"`
	ErrorMessage string            `json:"ErrorMessage,omitempty"`
	SourceURI    string            `json:"SourceUri"`
	LogFolderURI string            `json:"LogFolderUri,omitempty"`
	IDType       int               `json:"IdType"`
	IDProperty   string            `json:"SourceDataIdProperty"`
	PropertyMap  map[string]string `json:"PropertyMap"`
	Submitted    time.Time         `json:"Submitted"`
}

// DefaultSite and DefaultLibrary name the site and document library every
// new Server starts with.
const (
	DefaultSite    = "profilesync"
	DefaultLibrary = "Shared Documents"
)

// Limits SharePoint enforces.
const (
	maxRESTBytes   = 2 << 30 // one REST call, and one import file
	maxImportProps = 500_000
)

// Server is the simulated SharePoint Online tenant. It is an http.Handler.
type Server struct {
	base    *url.URL
	baseURL string
	log     *slog.Logger
	now     func() time.Time
	step    time.Duration
	resolve func(idType int, value string) (string, bool)
	dir     string
	ownDir  bool

	// Limits, lowered by tests.
	maxRequestBytes int64
	maxFileBytes    int64
	maxProps        int64

	mu       sync.Mutex
	closed   bool
	sites    map[string]*site
	props    []PropertyDef
	profiles map[string]map[string]string
	jobs     map[string]*job
	jobOrder []string
	uploads  map[string]*upload
}

// New returns a Server holding the site DefaultSite with the library
// DefaultLibrary.
func New(opts Options) (*Server, error) {
	base, err := url.Parse(strings.TrimRight(opts.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("base URL %q: want an absolute http(s) URL", opts.BaseURL)
	}
	s := &Server{
		base:            base,
		baseURL:         base.String(),
		log:             opts.Logger,
		now:             opts.Now,
		step:            opts.JobStep,
		dir:             opts.FileDir,
		maxRequestBytes: maxRESTBytes,
		maxFileBytes:    maxRESTBytes,
		maxProps:        maxImportProps,
		sites:           map[string]*site{},
		profiles:        map[string]map[string]string{},
		jobs:            map[string]*job{},
		uploads:         map[string]*upload{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Resolver != nil {
		s.resolve = opts.Resolver.Resolve
	} else {
		s.resolve = func(_ int, v string) (string, bool) { return v, true }
	}
	props := opts.Properties
	if props == nil {
		props = DefaultProperties()
	}
	if err := s.setProperties(props); err != nil {
		return nil, err
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "sposim-*")
		if err != nil {
			return nil, fmt.Errorf("creating file directory: %w", err)
		}
		s.dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating file directory: %w", err)
	}
	if _, err := s.addSiteLocked(DefaultSite, []string{DefaultLibrary}); err != nil {
		return nil, err
	}
	return s, nil
}

// Close removes the files the server stored. Requests after Close fail with
// 503.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for id, u := range s.uploads {
		delete(s.uploads, id)
		if err := os.Remove(u.disk); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, st := range s.sites {
		for _, f := range st.root.allFiles(nil) {
			if err := os.Remove(f.disk); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if s.ownDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing stored files: %w", err)
	}
	return nil
}

// setProperties replaces the property definitions after checking them.
func (s *Server) setProperties(defs []PropertyDef) error {
	seen := map[string]bool{}
	for _, d := range defs {
		if strings.TrimSpace(d.Name) == "" {
			return errors.New("property definition without a name")
		}
		if seen[key(d.Name)] {
			return fmt.Errorf("property %q defined twice", d.Name)
		}
		seen[key(d.Name)] = true
	}
	s.props = append([]PropertyDef(nil), defs...)
	return nil
}

// property finds a definition by name, ignoring case.
func (s *Server) property(name string) (PropertyDef, bool) {
	for _, d := range s.props {
		if strings.EqualFold(d.Name, name) {
			return d, true
		}
	}
	return PropertyDef{}, false
}

// AddSite creates the site /sites/<name> if it is missing and adds the
// document libraries it does not have yet.
func (s *Server) AddSite(name string, libraries ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.addSiteLocked(name, libraries)
	return err
}

// Profile returns a copy of the profile properties of the user with the
// given object id; ok is false when no import ever wrote to that user.
func (s *Server) Profile(objectID string) (map[string]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.profiles[objectID]
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(p))
	for k, v := range p {
		out[k] = v
	}
	return out, true
}

// SetJobStep changes the time a job spends in each state, for jobs queued
// from now on and for those waiting (a job that waited longer than the new
// step moves on when next read). 0 processes new jobs at queue time and
// leaves waiting ones to AdvanceJob.
func (s *Server) SetJobStep(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.step = d
}

// Jobs returns every import job in the order they were queued, after moving
// each along the clock.
func (s *Server) Jobs() []JobInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]JobInfo, 0, len(s.jobOrder))
	for _, id := range s.jobOrder {
		j := s.jobs[id]
		s.tickLocked(j)
		out = append(out, j.info())
	}
	return out
}

// Job returns one import job, after moving it along the clock. id may use
// any case and braces.
func (s *Server) Job(id string) (JobInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[normGUID(id)]
	if j == nil {
		return JobInfo{}, false
	}
	s.tickLocked(j)
	return j.info(), true
}

// AdvanceJob moves a job one state along (Submitted, Processing, Queued,
// then Succeeded or Error), processing the import file on the way.
func (s *Server) AdvanceJob(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[normGUID(id)]
	if j == nil {
		return fmt.Errorf("job %s: %w", id, os.ErrNotExist)
	}
	s.tickLocked(j)
	if j.done() {
		return fmt.Errorf("job %s is already finished", id)
	}
	s.stepLocked(j)
	j.stepAt = s.now()
	return nil
}

// FailJob ends an unfinished job with InternalError (1), as SharePoint
// sometimes does.
func (s *Server) FailJob(id string) error { return s.FailJobWith(id, jobErrInternal) }

// jobErrorMessages are the messages FailJobWith sets for the job-level
// errors it can inject.
var jobErrorMessages = map[int]string{
	jobErrInternal:    msgInternal,
	jobErrNotExist:    msgNotExist,
	jobErrNotInTenant: msgNotInTenant,
	jobErrTooBig:      msgTooBig,
	jobErrInvalidFile: msgInvalidFile,
}

// FailJobWith ends an unfinished job in Error with a job-level error code
// (1, 20, 21, 22 or 23) and no log folder. Processing reaches 20 and 21 by
// itself (a sourceUri naming no file, or one outside the tenant); this lets
// tests force any of them on a job whose file is fine.
func (s *Server) FailJobWith(id string, code int) error {
	msg, ok := jobErrorMessages[code]
	if !ok {
		return fmt.Errorf("error code %d cannot be injected (want 1, 20, 21, 22 or 23)", code)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[normGUID(id)]
	if j == nil {
		return fmt.Errorf("job %s: %w", id, os.ErrNotExist)
	}
	s.tickLocked(j)
	if j.done() {
		return fmt.Errorf("job %s is already finished", id)
	}
	s.finishLocked(j, outcome{code: code, msg: msg})
	return nil
}

// FilesIn returns the server-relative paths of the files directly in a
// folder (nil when the folder does not exist), sorted by name.
func (s *Server) FilesIn(folderPath string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupFolder(folderPath)
	if f == nil {
		return nil
	}
	var out []string
	for _, fi := range f.sortedFiles() {
		out = append(out, fi.path)
	}
	return out
}

// File returns the bytes of the file at a server-relative path such as
// "/sites/profilesync/Shared Documents/a.json".
func (s *Server) File(serverRelativePath string) ([]byte, bool) {
	s.mu.Lock()
	f := s.lookupFile(serverRelativePath)
	var disk string
	if f != nil {
		disk = f.disk
	}
	s.mu.Unlock()
	if f == nil {
		return nil, false
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		return nil, false
	}
	return b, true
}

// ServeHTTP serves SharePoint REST under /sites/<name>/_api/, CSOM at
// [/sites/<name>]/_vti_bin/client.svc/ProcessQuery, file downloads by URL and
// the simulator's own /_sim/ routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeODataError(w, r, &spError{status: http.StatusServiceUnavailable, code: codeServerBusy, msg: "The server is closed."})
		return
	}
	p := r.URL.Path
	if p == "/_sim" || strings.HasPrefix(p, "/_sim/") {
		s.serveAdmin(w, r)
		return
	}
	siteName, rest, named := splitSitePath(p)
	var st *site
	if named {
		s.mu.Lock()
		st = s.sites[key(siteName)]
		s.mu.Unlock()
		if st == nil {
			writeODataError(w, r, errFileNotFound())
			return
		}
	}
	lower := key(rest)
	switch {
	case lower == "_vti_bin/client.svc/processquery":
		s.serveProcessQuery(w, r)
	case st != nil && (lower == "_api" || strings.HasPrefix(lower, "_api/")):
		s.serveAPI(w, r, st, strings.TrimPrefix(rest[len("_api"):], "/"))
	case st != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveDownloadByURL(w, r, p)
	default:
		writeODataError(w, r, errFileNotFound())
	}
}

// splitSitePath splits "/sites/<name>/<rest>" into name and rest; paths not
// under /sites/ belong to the tenant root.
func splitSitePath(p string) (name, rest string, named bool) {
	trimmed := strings.TrimPrefix(p, "/")
	if len(trimmed) >= len("sites/") && key(trimmed[:len("sites/")]) == "sites/" {
		after := trimmed[len("sites/"):]
		name, rest, _ = strings.Cut(after, "/")
		return name, rest, name != ""
	}
	return "", trimmed, false
}
