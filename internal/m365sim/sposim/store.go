package sposim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// site is one site collection, /sites/<name>. Its root folder holds the
// document libraries.
type site struct {
	name string
	root *folder
}

// folder is a site root, a library root folder or a folder inside a library.
type folder struct {
	name     string
	path     string // server-relative, e.g. "/sites/hr/Shared Documents/upa"
	id       string
	library  bool // the root folder of a document library
	site     *site
	parent   *folder // nil for a site root
	folders  map[string]*folder
	files    map[string]*file
	created  time.Time
	modified time.Time
}

// file is one stored file; its bytes are in disk.
type file struct {
	name     string
	path     string
	id       string
	parent   *folder
	disk     string
	size     int64
	version  int
	created  time.Time
	modified time.Time
}

// upload is an open chunked upload session.
type upload struct {
	id     string
	file   *file
	disk   string
	offset int64
	busy   bool // a chunk is being written
}

// key is the map key of a name or path: SharePoint URLs ignore case.
func key(s string) string { return strings.ToLower(s) }

// segments splits a server-relative path into its non-empty segments.
func segments(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// joinPath makes a server-relative path of segments.
func joinPath(segs []string) string { return "/" + strings.Join(segs, "/") }

// validName reports whether SharePoint would accept n as a file or folder
// name.
func validName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > 400 || strings.TrimSpace(n) != n || strings.HasSuffix(n, ".") {
		return false
	}
	for _, r := range n {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`"*:<>?/\|`, r) {
			return false
		}
	}
	return true
}

func (s *Server) newFolder(parent *folder, name string, library bool) *folder {
	now := s.now().UTC()
	f := &folder{
		name: name, path: parent.path + "/" + name, id: uuid.NewString(), library: library,
		site: parent.site, parent: parent, folders: map[string]*folder{}, files: map[string]*file{},
		created: now, modified: now,
	}
	parent.folders[key(name)] = f
	parent.modified = now
	return f
}

// addSiteLocked creates a site if it is missing and adds missing libraries.
func (s *Server) addSiteLocked(name string, libraries []string) (*site, error) {
	if !validName(name) || strings.ContainsAny(name, " #%") {
		return nil, fmt.Errorf("invalid site name %q", name)
	}
	for _, l := range libraries {
		if !validName(l) {
			return nil, fmt.Errorf("invalid library name %q", l)
		}
	}
	st := s.sites[key(name)]
	if st == nil {
		now := s.now().UTC()
		st = &site{name: name}
		st.root = &folder{
			name: name, path: "/sites/" + name, id: uuid.NewString(), site: st,
			folders: map[string]*folder{}, files: map[string]*file{}, created: now, modified: now,
		}
		s.sites[key(name)] = st
	}
	for _, l := range libraries {
		if _, ok := st.root.folders[key(l)]; !ok {
			s.newFolder(st.root, l, true)
		}
	}
	return st, nil
}

// lookupFolder finds the folder at a server-relative path.
func (s *Server) lookupFolder(p string) *folder {
	segs := segments(p)
	if len(segs) < 2 || key(segs[0]) != "sites" {
		return nil
	}
	st := s.sites[key(segs[1])]
	if st == nil {
		return nil
	}
	cur := st.root
	for _, sg := range segs[2:] {
		cur = cur.folders[key(sg)]
		if cur == nil {
			return nil
		}
	}
	return cur
}

// lookupFile finds the file at a server-relative path.
func (s *Server) lookupFile(p string) *file {
	segs := segments(p)
	if len(segs) < 3 {
		return nil
	}
	parent := s.lookupFolder(joinPath(segs[:len(segs)-1]))
	if parent == nil {
		return nil
	}
	return parent.files[key(segs[len(segs)-1])]
}

// library returns the library root folder f lies in, or nil for a site root.
func (f *folder) libraryRoot() *folder {
	for cur := f; cur != nil; cur = cur.parent {
		if cur.library {
			return cur
		}
	}
	return nil
}

// allFiles appends every file below f to dst.
func (f *folder) allFiles(dst []*file) []*file {
	for _, fi := range f.files {
		dst = append(dst, fi)
	}
	for _, sub := range f.folders {
		dst = sub.allFiles(dst)
	}
	return dst
}

// itemCount is the number of files and folders directly in f.
func (f *folder) itemCount() int { return len(f.files) + len(f.folders) }

// sortedFolders and sortedFiles list children by name for stable output.
func (f *folder) sortedFolders() []*folder {
	out := make([]*folder, 0, len(f.folders))
	for _, c := range f.folders {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].name) < key(out[j].name) })
	return out
}

func (f *folder) sortedFiles() []*file {
	out := make([]*file, 0, len(f.files))
	for _, c := range f.files {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].name) < key(out[j].name) })
	return out
}

// ensureFolderLocked creates the folder at the server-relative path p of
// site st with any missing intermediate folders. The first segment below
// the site must be an existing library.
func (s *Server) ensureFolderLocked(st *site, p string) (*folder, error) {
	segs := segments(p)
	if len(segs) < 3 || key(segs[0]) != "sites" || key(segs[1]) != key(st.name) {
		return nil, errArgument(fmt.Sprintf("The folder '%s' is not in a document library.", p))
	}
	lib := st.root.folders[key(segs[2])]
	if lib == nil {
		return nil, errArgument(fmt.Sprintf("The folder '%s' is not in a document library of this site.", p))
	}
	cur := lib
	for _, sg := range segs[3:] {
		next := cur.folders[key(sg)]
		if next == nil {
			if !validName(sg) {
				return nil, errBadName(sg)
			}
			if cur.files[key(sg)] != nil {
				return nil, errExists(cur.path + "/" + sg)
			}
			next = s.newFolder(cur, sg, false)
		}
		cur = next
	}
	return cur, nil
}

// commitFileLocked puts the bytes already stored in disk at parent/name.
// On success the file owns disk; on failure the caller removes it.
func (s *Server) commitFileLocked(parent *folder, name, disk string, size int64, overwrite bool) (*file, error) {
	if !validName(name) {
		return nil, errBadName(name)
	}
	if parent.libraryRoot() == nil {
		return nil, errArgument("Files can only be added to folders of a document library.")
	}
	if parent.folders[key(name)] != nil {
		return nil, errExists(parent.path + "/" + name)
	}
	now := s.now().UTC()
	if f := parent.files[key(name)]; f != nil {
		if !overwrite {
			return nil, errExists(f.path)
		}
		old := f.disk
		f.disk, f.size, f.modified = disk, size, now
		f.version++
		s.removeDisk(old)
		parent.modified = now
		return f, nil
	}
	f := &file{
		name: name, path: parent.path + "/" + name, id: uuid.NewString(), parent: parent,
		disk: disk, size: size, version: 1, created: now, modified: now,
	}
	parent.files[key(name)] = f
	parent.modified = now
	return f, nil
}

// writeFileLocked stores data as parent/name, replacing any file there.
func (s *Server) writeFileLocked(parent *folder, name string, data []byte) (*file, error) {
	tmp, err := os.CreateTemp(s.dir, "blob-*")
	if err != nil {
		return nil, fmt.Errorf("creating stored file: %w", err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		s.removeDisk(tmp.Name())
		return nil, fmt.Errorf("writing stored file: %w", err)
	}
	f, err := s.commitFileLocked(parent, name, tmp.Name(), int64(len(data)), true)
	if err != nil {
		s.removeDisk(tmp.Name())
		return nil, err
	}
	return f, nil
}

// deleteFileLocked removes a file and any upload session on it.
func (s *Server) deleteFileLocked(f *file) {
	delete(f.parent.files, key(f.name))
	f.parent.modified = s.now().UTC()
	s.removeDisk(f.disk)
	for id, u := range s.uploads {
		if u.file == f && !u.busy {
			delete(s.uploads, id)
			s.removeDisk(u.disk)
		}
	}
}

// deleteFolderLocked removes a folder with everything in it. Site and
// library roots cannot be deleted.
func (s *Server) deleteFolderLocked(f *folder) error {
	if f.parent == nil || f.library {
		return errArgument(fmt.Sprintf("The folder '%s' is the root folder of a site or library and cannot be deleted.", f.path))
	}
	for _, fi := range f.allFiles(nil) {
		s.deleteFileLocked(fi)
	}
	delete(f.parent.folders, key(f.name))
	f.parent.modified = s.now().UTC()
	return nil
}

// removeDisk deletes a stored file, logging failures: there is no caller
// that could do better.
func (s *Server) removeDisk(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing stored file", "path", path, "err", err)
	}
}

// errTooLarge reports a request body over the limit of one REST call.
var errTooLarge = errors.New("request body too large")

// copyLimited copies at most limit bytes of r to w, failing with
// errTooLarge when r holds more.
func copyLimited(w io.Writer, r io.Reader, limit int64) (int64, error) {
	if r == nil {
		return 0, nil
	}
	n, err := io.Copy(w, io.LimitReader(r, limit+1))
	if err != nil {
		return n, fmt.Errorf("reading request body: %w", err)
	}
	if n > limit {
		return n, errTooLarge
	}
	return n, nil
}
