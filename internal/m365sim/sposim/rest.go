package sposim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// libraryVersion is the SharePoint build the simulator claims to be.
const libraryVersion = "16.0.25213.12005"

// call is one REST request being served.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	st     *site
	method string // after X-HTTP-Method
}

// serveAPI serves <site>/_api/<rest>.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, st *site, rest string) {
	aliases, _ := url.ParseQuery(r.URL.RawQuery) // a bad query leaves aliases unset
	segs, err := parseODataPath(rest, aliases)
	if err != nil {
		writeODataError(w, r, errInvalidQuery(fmt.Sprintf("The expression \"%s\" is not valid: %v.", rest, err)))
		return
	}
	c := &call{w: w, r: r, st: st, method: r.Method}
	if o := r.Header.Get("X-HTTP-Method"); o != "" && r.Method == http.MethodPost {
		c.method = strings.ToUpper(o)
	}
	if len(segs) == 0 {
		writeODataError(w, r, errNoResource("_api"))
		return
	}
	switch key(segs[0].name) {
	case "contextinfo":
		err = s.contextInfo(c, segs[0])
	case "web":
		err = s.serveWeb(c, segs)
	default:
		err = errNoResource(segs[0].name)
	}
	if err != nil {
		writeAnyError(w, r, err)
	}
}

func (s *Server) contextInfo(c *call, seg segment) error {
	if seg.parens {
		return errInvalidQuery("contextinfo takes no arguments.")
	}
	if c.method != http.MethodPost {
		return errMethod(c.method, "contextinfo")
	}
	now := s.now().UTC()
	web := s.baseURL + c.st.root.path
	digest := uuid.New()
	fields := map[string]any{
		"FormDigestTimeoutSeconds": 1800,
		"FormDigestValue":          fmt.Sprintf("0x%X,%s", digest[:], now.Format("02 Jan 2006 15:04:05 -0000")),
		"LibraryVersion":           libraryVersion,
		"SiteFullUrl":              web,
		"SupportedSchemaVersions":  []string{"14.0.0.0", "15.0.0.0"},
		"WebFullUrl":               web,
	}
	f := formatOf(c.r)
	if f == fmtVerbose {
		fields["__metadata"] = map[string]string{"type": "SP.ContextWebInformation"}
		writeJSON(c.w, http.StatusOK, f.contentType(), map[string]any{"d": map[string]any{"GetContextWebInformation": fields}})
		return nil
	}
	writeJSON(c.w, http.StatusOK, f.contentType(), fields)
	return nil
}

// serveWeb serves web and everything below it.
func (s *Server) serveWeb(c *call, segs []segment) error {
	if segs[0].parens {
		return errInvalidQuery("web takes no arguments.")
	}
	rest := segs[1:]
	if len(rest) == 0 {
		if c.method != http.MethodGet {
			return errMethod(c.method, "web")
		}
		uri := s.baseURL + c.st.root.path + "/_api/Web"
		writeEntity(c.w, c.r, http.StatusOK, entity{typ: "SP.Web", id: uri, fields: map[string]any{
			"Title": c.st.name, "ServerRelativeUrl": c.st.root.path, "Url": s.baseURL + c.st.root.path, "Id": c.st.root.id,
		}})
		return nil
	}
	seg := rest[0]
	switch key(seg.name) {
	case "getfolderbyserverrelativepath", "getfolderbyserverrelativeurl":
		p, err := s.pathArg(c.st, seg, "decodedurl", "serverrelativeurl")
		if err != nil {
			return err
		}
		return s.serveFolder(c, p, rest[1:])
	case "getfilebyserverrelativepath", "getfilebyserverrelativeurl":
		p, err := s.pathArg(c.st, seg, "decodedurl", "serverrelativeurl")
		if err != nil {
			return err
		}
		return s.serveFile(c, p, rest[1:])
	case "rootfolder":
		if seg.parens {
			return errInvalidQuery("RootFolder takes no arguments.")
		}
		return s.serveFolder(c, c.st.root.path, rest[1:])
	case "folders":
		return s.serveWebFolders(c, seg, rest[1:])
	}
	return errNoResource(seg.name)
}

// pathArg reads the single path argument of seg and makes it an absolute
// server-relative path inside site st.
func (s *Server) pathArg(st *site, seg segment, names ...string) (string, error) {
	if !seg.parens || len(seg.args) != 1 {
		return "", errInvalidQuery(fmt.Sprintf("%s takes exactly one path argument.", seg.name))
	}
	a := seg.args[0]
	if a.name != "" {
		ok := false
		for _, n := range names {
			ok = ok || strings.EqualFold(a.name, n)
		}
		if !ok {
			return "", errInvalidQuery(fmt.Sprintf("The parameter %s of %s is not known.", a.name, seg.name))
		}
	}
	if a.lit.kind != litString {
		return "", errInvalidQuery(fmt.Sprintf("The argument of %s must be a string.", seg.name))
	}
	return siteRelative(st, a.lit.text)
}

// siteRelative resolves p (absolute or relative to the site) and checks
// that it lies in site st.
func siteRelative(st *site, p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		p = st.root.path + "/" + p
	}
	segs := segments(p)
	if len(segs) < 2 || key(segs[0]) != "sites" || key(segs[1]) != key(st.name) {
		return "", errArgument("Server relative urls must start with SPWeb.ServerRelativeUrl")
	}
	for _, sg := range segs[2:] {
		if sg == "." || sg == ".." {
			return "", errBadName(sg)
		}
	}
	return joinPath(segs), nil
}

func (s *Server) folderEntity(f *folder) entity {
	uri := s.baseURL + f.site.root.path + "/_api/Web/GetFolderByServerRelativePath(decodedurl='" + strings.ReplaceAll(f.path, "'", "''") + "')"
	return entity{typ: "SP.Folder", id: uri, fields: map[string]any{
		"Exists":            true,
		"IsWOPIEnabled":     false,
		"ItemCount":         f.itemCount(),
		"Name":              f.name,
		"ProgID":            nil,
		"ServerRelativeUrl": f.path,
		"TimeCreated":       f.created.Format(time.RFC3339),
		"TimeLastModified":  f.modified.Format(time.RFC3339),
		"UniqueId":          f.id,
		"WelcomePage":       "",
	}}
}

func (s *Server) fileEntity(f *file) entity {
	uri := s.baseURL + f.parent.site.root.path + "/_api/Web/GetFileByServerRelativePath(decodedurl='" + strings.ReplaceAll(f.path, "'", "''") + "')"
	return entity{typ: "SP.File", id: uri, fields: map[string]any{
		"CheckInComment":    "",
		"CheckOutType":      2,
		"ContentTag":        fmt.Sprintf("{%s},%d,%d", strings.ToUpper(f.id), f.version, f.version),
		"ETag":              fmt.Sprintf("\"{%s},%d\"", strings.ToUpper(f.id), f.version),
		"Exists":            true,
		"Length":            strconv.FormatInt(f.size, 10),
		"MajorVersion":      f.version,
		"MinorVersion":      0,
		"Name":              f.name,
		"ServerRelativeUrl": f.path,
		"TimeCreated":       f.created.Format(time.RFC3339),
		"TimeLastModified":  f.modified.Format(time.RFC3339),
		"Title":             nil,
		"UIVersion":         f.version * 512,
		"UIVersionLabel":    fmt.Sprintf("%d.0", f.version),
		"UniqueId":          f.id,
	}}
}

// serveFolder serves GetFolderByServerRelative…(p)/rest.
func (s *Server) serveFolder(c *call, p string, rest []segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupFolder(p)
	if len(rest) > 0 && key(rest[0].name) == "exists" && !rest[0].parens && len(rest) == 1 {
		if c.method != http.MethodGet {
			return errMethod(c.method, "Exists")
		}
		writeScalar(c.w, c.r, "Exists", f != nil)
		return nil
	}
	if f == nil {
		return errFileNotFound()
	}
	if len(rest) == 0 {
		switch c.method {
		case http.MethodGet:
			writeEntity(c.w, c.r, http.StatusOK, s.folderEntity(f))
		case http.MethodDelete:
			if err := s.deleteFolderLocked(f); err != nil {
				return err
			}
			c.w.WriteHeader(http.StatusOK)
		default:
			return errMethod(c.method, "Folder")
		}
		return nil
	}
	switch key(rest[0].name) {
	case "folders":
		if rest[0].parens {
			return errInvalidQuery("Folders takes no arguments here.")
		}
		if len(rest) == 1 {
			if c.method != http.MethodGet {
				return errMethod(c.method, "Folders")
			}
			var items []entity
			for _, sub := range f.sortedFolders() {
				items = append(items, s.folderEntity(sub))
			}
			writeList(c.w, c.r, items)
			return nil
		}
		return s.addFolderFn(c, f.path, f.site, rest[1:])
	case "files":
		if rest[0].parens {
			return errInvalidQuery("Files takes no arguments here.")
		}
		if len(rest) == 1 {
			if c.method != http.MethodGet {
				return errMethod(c.method, "Files")
			}
			var items []entity
			for _, fi := range f.sortedFiles() {
				items = append(items, s.fileEntity(fi))
			}
			writeList(c.w, c.r, items)
			return nil
		}
		if len(rest) != 2 {
			return errNoResource(rest[2].name)
		}
		return s.addFileLocked(c, f, rest[1])
	}
	return errNoResource(rest[0].name)
}

// serveWebFolders serves web/folders: POST with {"ServerRelativeUrl":…},
// web/folders/add('…') and web/folders/AddUsingPath(decodedurl='…').
func (s *Server) serveWebFolders(c *call, seg segment, rest []segment) error {
	if seg.parens {
		return errInvalidQuery("Folders takes no arguments here.")
	}
	if len(rest) > 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.addFolderFn(c, c.st.root.path, c.st, rest)
	}
	switch c.method {
	case http.MethodGet:
		s.mu.Lock()
		defer s.mu.Unlock()
		var items []entity
		for _, sub := range c.st.root.sortedFolders() {
			items = append(items, s.folderEntity(sub))
		}
		writeList(c.w, c.r, items)
		return nil
	case http.MethodPost:
		var body struct {
			ServerRelativeURL *string `json:"ServerRelativeUrl"`
		}
		dec := json.NewDecoder(io.LimitReader(c.r.Body, 1<<20))
		if err := dec.Decode(&body); err != nil {
			return errInvalidQuery(fmt.Sprintf("Invalid JSON. %v", err))
		}
		if body.ServerRelativeURL == nil || *body.ServerRelativeURL == "" {
			return errArgument("The parameter ServerRelativeUrl is missing.")
		}
		p, err := siteRelative(c.st, *body.ServerRelativeURL)
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		f, err := s.ensureFolderLocked(c.st, p)
		if err != nil {
			return err
		}
		writeEntity(c.w, c.r, http.StatusCreated, s.folderEntity(f))
		return nil
	}
	return errMethod(c.method, "Folders")
}

// addFolderFn serves …/folders/add('url') and …/folders/AddUsingPath(decodedurl='…')
// relative to the folder at base. The caller holds s.mu.
func (s *Server) addFolderFn(c *call, base string, st *site, rest []segment) error {
	fn := rest[0]
	if len(rest) > 1 {
		return errNoResource(rest[1].name)
	}
	var names []string
	switch key(fn.name) {
	case "add":
		names = []string{"url"}
	case "addusingpath":
		names = []string{"decodedurl", "path"}
	default:
		return errNoResource(fn.name)
	}
	if c.method != http.MethodPost {
		return errMethod(c.method, fn.name)
	}
	if !fn.parens || len(fn.args) == 0 {
		return errInvalidQuery(fmt.Sprintf("%s needs a path argument.", fn.name))
	}
	var rel string
	found := false
	for i, a := range fn.args {
		isPath := (a.name == "" && i == 0) || containsFold(names, a.name)
		switch {
		case isPath && a.lit.kind == litString:
			rel, found = a.lit.text, true
		case isPath:
			return errInvalidQuery(fmt.Sprintf("The path argument of %s must be a string.", fn.name))
		case strings.EqualFold(a.name, "overwrite"):
		default:
			return errInvalidQuery(fmt.Sprintf("The parameter %s of %s is not known.", a.name, fn.name))
		}
	}
	if !found || rel == "" {
		return errInvalidQuery(fmt.Sprintf("%s needs a path argument.", fn.name))
	}
	if !strings.HasPrefix(rel, "/") {
		rel = base + "/" + rel
	}
	p, err := siteRelative(st, rel)
	if err != nil {
		return err
	}
	f, err := s.ensureFolderLocked(st, p)
	if err != nil {
		return err
	}
	writeEntity(c.w, c.r, http.StatusOK, s.folderEntity(f))
	return nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// addFileLocked serves Files/add(url='…',overwrite=…) and
// Files/AddUsingPath(decodedurl='…',overwrite=…). It is entered with s.mu
// held and releases it while the body is spooled to disk.
func (s *Server) addFileLocked(c *call, parent *folder, fn segment) error {
	var pathNames []string
	switch key(fn.name) {
	case "add":
		pathNames = []string{"url"}
	case "addusingpath":
		pathNames = []string{"decodedurl", "path"}
	default:
		return errNoResource(fn.name)
	}
	if c.method != http.MethodPost {
		return errMethod(c.method, fn.name)
	}
	if !fn.parens {
		return errInvalidQuery(fmt.Sprintf("%s needs arguments.", fn.name))
	}
	var name string
	overwrite, found := false, false
	for i, a := range fn.args {
		switch {
		case containsFold(pathNames, a.name) || (a.name == "" && i == 0):
			if a.lit.kind != litString {
				return errInvalidQuery(fmt.Sprintf("The file name argument of %s must be a string.", fn.name))
			}
			name, found = a.lit.text, true
		case strings.EqualFold(a.name, "overwrite") || (a.name == "" && i == 1):
			if a.lit.kind != litBool {
				return errInvalidQuery("The parameter overwrite must be true or false.")
			}
			overwrite = a.lit.text == "true"
		case strings.EqualFold(a.name, "autocheckoutoninvaliddata"):
		default:
			return errInvalidQuery(fmt.Sprintf("The parameter %s of %s is not known.", a.name, fn.name))
		}
	}
	if !found || name == "" {
		return errInvalidQuery(fmt.Sprintf("%s needs a file name.", fn.name))
	}
	// A name with slashes addresses a file in another folder.
	if strings.Contains(name, "/") {
		full := name
		if !strings.HasPrefix(full, "/") {
			full = parent.path + "/" + name
		}
		p, err := siteRelative(parent.site, full)
		if err != nil {
			return err
		}
		segs := segments(p)
		parent = s.lookupFolder(joinPath(segs[:len(segs)-1]))
		if parent == nil {
			return errFileNotFound()
		}
		name = segs[len(segs)-1]
	}
	if !validName(name) {
		return errBadName(name)
	}
	if existing := parent.files[key(name)]; existing != nil && !overwrite {
		return errExists(existing.path)
	}
	parentPath := parent.path
	if c.r.ContentLength > s.maxRequestBytes {
		return errBodyTooBig(s.maxRequestBytes)
	}

	// Spool the body without holding the lock.
	s.mu.Unlock()
	disk, size, err := s.spool(c.r.Body)
	s.mu.Lock()
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return errBodyTooBig(s.maxRequestBytes)
		}
		return err
	}
	parent = s.lookupFolder(parentPath) // it may have gone meanwhile
	if parent == nil {
		s.removeDisk(disk)
		return errFileNotFound()
	}
	f, err := s.commitFileLocked(parent, name, disk, size, overwrite)
	if err != nil {
		s.removeDisk(disk)
		return err
	}
	s.log.Info("file uploaded", "path", f.path, "bytes", size)
	writeEntity(c.w, c.r, http.StatusOK, s.fileEntity(f))
	return nil
}

// spool copies a request body into a new file in the data directory.
func (s *Server) spool(body io.Reader) (string, int64, error) {
	tmp, err := os.CreateTemp(s.dir, "blob-*")
	if err != nil {
		return "", 0, fmt.Errorf("creating stored file: %w", err)
	}
	n, err := copyLimited(tmp, body, s.maxRequestBytes)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing stored file: %w", cerr)
	}
	if err != nil {
		s.removeDisk(tmp.Name())
		return "", 0, err
	}
	return tmp.Name(), n, nil
}

// serveFile serves GetFileByServerRelative…(p)/rest.
func (s *Server) serveFile(c *call, p string, rest []segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupFile(p)
	if len(rest) == 1 && key(rest[0].name) == "exists" && !rest[0].parens {
		if c.method != http.MethodGet {
			return errMethod(c.method, "Exists")
		}
		writeScalar(c.w, c.r, "Exists", f != nil)
		return nil
	}
	if f == nil {
		return errFileNotFound()
	}
	if len(rest) == 0 {
		switch c.method {
		case http.MethodGet:
			writeEntity(c.w, c.r, http.StatusOK, s.fileEntity(f))
		case http.MethodDelete:
			s.deleteFileLocked(f)
			c.w.WriteHeader(http.StatusOK)
		default:
			return errMethod(c.method, "File")
		}
		return nil
	}
	if len(rest) > 1 {
		return errNoResource(rest[1].name)
	}
	fn := rest[0]
	switch key(fn.name) {
	case "$value":
		if c.method != http.MethodGet {
			return errMethod(c.method, "$value")
		}
		return s.download(c.w, f)
	case "startupload", "continueupload", "finishupload", "cancelupload":
		if c.method != http.MethodPost {
			return errMethod(c.method, fn.name)
		}
		return s.chunkLocked(c, f, fn)
	}
	return errNoResource(fn.name)
}

// download streams f's bytes. It is entered with s.mu held and releases it
// while copying.
func (s *Server) download(w http.ResponseWriter, f *file) error {
	fh, err := os.Open(f.disk)
	if err != nil {
		return fmt.Errorf("opening stored file: %w", err)
	}
	size := f.size
	s.mu.Unlock()
	defer s.mu.Lock()
	defer fh.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, fh); err != nil {
		s.log.Debug("download interrupted", "path", f.path, "err", err)
	}
	return nil
}

// serveDownloadByURL serves GET of a file's own URL, as SharePoint does.
func (s *Server) serveDownloadByURL(w http.ResponseWriter, r *http.Request, p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupFile(p)
	if f == nil {
		writeODataError(w, r, errFileNotFound())
		return
	}
	if err := s.download(w, f); err != nil {
		writeAnyError(w, r, err)
	}
}

// chunkLocked serves StartUpload, ContinueUpload, FinishUpload and
// CancelUpload on f. Entered with s.mu held; releases it while a chunk is
// written.
func (s *Server) chunkLocked(c *call, f *file, fn segment) error {
	name := key(fn.name)
	if !fn.parens {
		return errInvalidQuery(fmt.Sprintf("%s needs arguments.", fn.name))
	}
	var id string
	offset := int64(-1)
	for _, a := range fn.args {
		switch {
		case strings.EqualFold(a.name, "uploadId"):
			u, err := uuid.Parse(a.lit.text)
			if err != nil || (a.lit.kind != litGUID && a.lit.kind != litString) {
				return errInvalidQuery("The parameter uploadId must be a guid.")
			}
			id = u.String()
		case strings.EqualFold(a.name, "fileOffset") && name != "startupload" && name != "cancelupload":
			n, err := strconv.ParseInt(a.lit.text, 10, 64)
			if err != nil || a.lit.kind != litNumber || n < 0 {
				return errInvalidQuery("The parameter fileOffset must be a non-negative number.")
			}
			offset = n
		default:
			return errInvalidQuery(fmt.Sprintf("The parameter %s of %s is not known.", a.name, fn.name))
		}
	}
	if id == "" {
		return errInvalidQuery(fmt.Sprintf("%s needs the parameter uploadId.", fn.name))
	}
	if (name == "continueupload" || name == "finishupload") && offset < 0 {
		return errInvalidQuery(fmt.Sprintf("%s needs the parameter fileOffset.", fn.name))
	}
	u := s.uploads[id]
	switch name {
	case "startupload":
		if u != nil {
			return &spError{status: http.StatusBadRequest, code: codeUploadSession, msg: fmt.Sprintf("The upload session %s already exists.", id)}
		}
		tmp, err := os.CreateTemp(s.dir, "upload-*")
		if err != nil {
			return fmt.Errorf("creating upload session: %w", err)
		}
		if err := tmp.Close(); err != nil {
			s.removeDisk(tmp.Name())
			return fmt.Errorf("creating upload session: %w", err)
		}
		u = &upload{id: id, file: f, disk: tmp.Name()}
		s.uploads[id] = u
	case "cancelupload":
		if u == nil || u.file != f {
			return errUploadSession(id)
		}
		if u.busy {
			return errUploadBusy(id)
		}
		delete(s.uploads, id)
		s.removeDisk(u.disk)
		writeScalar(c.w, c.r, fn.name, nil)
		return nil
	default:
		if u == nil || u.file != f {
			return errUploadSession(id)
		}
		if offset != u.offset {
			return errArgument(fmt.Sprintf("The file offset %d does not match the expected offset %d of upload session %s.", offset, u.offset, id))
		}
	}
	if u.busy {
		return errUploadBusy(id)
	}
	if c.r.ContentLength > s.maxRequestBytes {
		return errBodyTooBig(s.maxRequestBytes)
	}
	u.busy = true
	s.mu.Unlock()
	n, err := appendTo(u.disk, c.r.Body, s.maxRequestBytes)
	s.mu.Lock()
	u.busy = false
	if err != nil {
		if name == "startupload" {
			delete(s.uploads, id)
			s.removeDisk(u.disk)
		} else if terr := os.Truncate(u.disk, u.offset); terr != nil {
			// The session cannot be trusted any more.
			delete(s.uploads, id)
			s.removeDisk(u.disk)
		}
		if errors.Is(err, errTooLarge) {
			return errBodyTooBig(s.maxRequestBytes)
		}
		return err
	}
	u.offset += n
	if name != "finishupload" {
		writeScalar(c.w, c.r, fn.name, strconv.FormatInt(u.offset, 10))
		return nil
	}
	delete(s.uploads, id)
	if u.file.parent.files[key(u.file.name)] != u.file || s.lookupFolder(u.file.parent.path) != u.file.parent {
		s.removeDisk(u.disk)
		return errFileNotFound()
	}
	now := s.now().UTC()
	old := u.file.disk
	u.file.disk, u.file.size, u.file.modified = u.disk, u.offset, now
	u.file.version++
	s.removeDisk(old)
	s.log.Info("chunked upload finished", "path", u.file.path, "bytes", u.offset)
	writeEntity(c.w, c.r, http.StatusOK, s.fileEntity(u.file))
	return nil
}

func errUploadSession(id string) *spError {
	return &spError{status: http.StatusBadRequest, code: codeUploadSession, msg: fmt.Sprintf("The upload session %s was not found for this file.", id)}
}

func errUploadBusy(id string) *spError {
	return &spError{status: http.StatusConflict, code: codeUploadSession, msg: fmt.Sprintf("The upload session %s is already receiving a chunk.", id)}
}

// appendTo appends at most limit bytes of r to the file at path.
func appendTo(path string, r io.Reader, limit int64) (int64, error) {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return 0, fmt.Errorf("opening upload session: %w", err)
	}
	n, err := copyLimited(fh, r, limit)
	if cerr := fh.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing upload session: %w", cerr)
	}
	return n, err
}
