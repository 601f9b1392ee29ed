package sposim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// adminError is the body of every failed /_sim/ request.
type adminError struct {
	Error string `json:"error"`
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	writeJSON(w, status, "application/json; charset=utf-8", v)
}

func adminFail(w http.ResponseWriter, status int, format string, a ...any) {
	writeAdmin(w, status, adminError{Error: fmt.Sprintf(format, a...)})
}

// serveAdmin serves the simulator's /_sim/ routes for SharePoint state.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	parts := segments(strings.TrimPrefix(r.URL.Path, "/_sim"))
	route := strings.Join(parts, "/")
	method := func(m string) bool {
		if r.Method != m {
			adminFail(w, http.StatusMethodNotAllowed, "use %s for /_sim/%s", m, route)
			return false
		}
		return true
	}
	switch {
	case route == "profiles":
		if method(http.MethodGet) {
			s.mu.Lock()
			all := make(map[string]map[string]string, len(s.profiles))
			for id, p := range s.profiles {
				all[id] = p
			}
			writeAdmin(w, http.StatusOK, all) // encoded before the lock is released
			s.mu.Unlock()
		}
	case len(parts) == 2 && parts[0] == "profiles":
		if method(http.MethodGet) {
			if p, ok := s.Profile(parts[1]); ok {
				writeAdmin(w, http.StatusOK, p)
			} else {
				adminFail(w, http.StatusNotFound, "no profile for object id %s", parts[1])
			}
		}
	case route == "jobs":
		if method(http.MethodGet) {
			writeAdmin(w, http.StatusOK, s.Jobs())
		}
	case len(parts) == 2 && parts[0] == "jobs":
		if method(http.MethodGet) {
			if j, ok := s.Job(parts[1]); ok {
				writeAdmin(w, http.StatusOK, j)
			} else {
				adminFail(w, http.StatusNotFound, "no job %s", parts[1])
			}
		}
	case len(parts) == 3 && parts[0] == "jobs" && (parts[2] == "advance" || parts[2] == "fail"):
		if !method(http.MethodPost) {
			return
		}
		act := s.AdvanceJob
		if parts[2] == "fail" {
			code := jobErrInternal
			if v := r.URL.Query().Get("error"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					adminFail(w, http.StatusBadRequest, "error must be a number, got %q", v)
					return
				}
				code = n
			}
			act = func(id string) error { return s.FailJobWith(id, code) }
		}
		if err := act(parts[1]); err != nil {
			status := http.StatusConflict
			if _, ok := s.Job(parts[1]); !ok {
				status = http.StatusNotFound
			}
			adminFail(w, status, "%v", err)
			return
		}
		j, _ := s.Job(parts[1])
		writeAdmin(w, http.StatusOK, j)
	case route == "files":
		if method(http.MethodGet) {
			s.listFiles(w, r.URL.Query().Get("folder"))
		}
	case route == "files/content":
		if method(http.MethodGet) {
			s.mu.Lock()
			defer s.mu.Unlock()
			f := s.lookupFile(r.URL.Query().Get("path"))
			if f == nil {
				adminFail(w, http.StatusNotFound, "no file at %q", r.URL.Query().Get("path"))
				return
			}
			if err := s.download(w, f); err != nil {
				adminFail(w, http.StatusInternalServerError, "%v", err)
			}
		}
	case route == "sites":
		s.adminSites(w, r)
	case route == "properties":
		s.adminProperties(w, r)
	default:
		adminFail(w, http.StatusNotFound, "unknown simulator route %s", r.URL.Path)
	}
}

// fileItem and folderItem describe library contents in /_sim/files.
type fileItem struct {
	Name              string    `json:"Name"`
	ServerRelativeURL string    `json:"ServerRelativeUrl"`
	Length            int64     `json:"Length"`
	TimeLastModified  time.Time `json:"TimeLastModified"`
}

type folderItem struct {
	Name              string `json:"Name"`
	ServerRelativeURL string `json:"ServerRelativeUrl"`
	ItemCount         int    `json:"ItemCount"`
}

func (s *Server) listFiles(w http.ResponseWriter, p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupFolder(p)
	if f == nil {
		adminFail(w, http.StatusNotFound, "no folder at %q", p)
		return
	}
	out := struct {
		Folder  string       `json:"Folder"`
		Folders []folderItem `json:"Folders"`
		Files   []fileItem   `json:"Files"`
	}{Folder: f.path, Folders: []folderItem{}, Files: []fileItem{}}
	for _, sub := range f.sortedFolders() {
		out.Folders = append(out.Folders, folderItem{sub.name, sub.path, sub.itemCount()})
	}
	for _, fi := range f.sortedFiles() {
		out.Files = append(out.Files, fileItem{fi.name, fi.path, fi.size, fi.modified})
	}
	writeAdmin(w, http.StatusOK, out)
}

type siteItem struct {
	Name      string   `json:"name"`
	URL       string   `json:"url"`
	Libraries []string `json:"libraries"`
}

func (s *Server) adminSites(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []siteItem{}
		for _, st := range s.sites {
			out = append(out, s.siteItem(st))
		}
		writeAdmin(w, http.StatusOK, out)
	case http.MethodPost:
		var in struct {
			Name      string   `json:"name"`
			Libraries []string `json:"libraries"`
		}
		if err := decodeStrict(r.Body, &in); err != nil {
			adminFail(w, http.StatusBadRequest, "site: %v", err)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		st, err := s.addSiteLocked(in.Name, in.Libraries)
		if err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
		writeAdmin(w, http.StatusOK, s.siteItem(st))
	default:
		adminFail(w, http.StatusMethodNotAllowed, "use GET or POST for /_sim/sites")
	}
}

func (s *Server) siteItem(st *site) siteItem {
	it := siteItem{Name: st.name, URL: s.baseURL + st.root.path, Libraries: []string{}}
	for _, l := range st.root.sortedFolders() {
		it.Libraries = append(it.Libraries, l.name)
	}
	return it
}

func (s *Server) adminProperties(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		defer s.mu.Unlock()
		writeAdmin(w, http.StatusOK, s.props)
	case http.MethodPut:
		var defs []PropertyDef
		if err := decodeStrict(r.Body, &defs); err != nil {
			adminFail(w, http.StatusBadRequest, "properties: %v", err)
			return
		}
		if defs == nil {
			defs = []PropertyDef{}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.setProperties(defs); err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
		writeAdmin(w, http.StatusOK, s.props)
	default:
		adminFail(w, http.StatusMethodNotAllowed, "use GET or PUT for /_sim/properties")
	}
}

// decodeStrict decodes one JSON document of at most 1 MiB, rejecting
// unknown fields and trailing data.
func decodeStrict(body io.Reader, v any) error {
	if body == nil {
		return errors.New("empty body")
	}
	dec := json.NewDecoder(io.LimitReader(body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decoding body: trailing data after the JSON document")
	}
	return nil
}
