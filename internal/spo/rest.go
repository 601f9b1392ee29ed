package spo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/profile"
)

// FileInfo describes one file of a folder.
type FileInfo struct {
	Name              string
	ServerRelativeURL string // decoded, e.g. "/sites/hr/Shared Documents/a b.json"
	Length            int64
	TimeLastModified  time.Time // zero when SharePoint sent none
}

// fileMeta is the part of SP.File that profilesync reads.
type fileMeta struct {
	Name              string  `json:"Name"`
	ServerRelativeURL string  `json:"ServerRelativeUrl"`
	Length            flexInt `json:"Length"`
	TimeLastModified  string  `json:"TimeLastModified"`
}

func (m fileMeta) info() FileInfo {
	fi := FileInfo{Name: m.Name, ServerRelativeURL: m.ServerRelativeURL, Length: int64(m.Length)}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, m.TimeLastModified); err == nil {
			fi.TimeLastModified = t.UTC()
			break
		}
	}
	return fi
}

// flexInt reads an Edm.Int64, which SharePoint serializes as a JSON string,
// from a string or a number.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	if s == "null" || s == "" {
		*f = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("reading integer %s: %w", clip(b, 100), errors.Unwrap(err)) // err quotes b whole
	}
	*f = flexInt(v)
	return nil
}

// EnsureFolder creates the configured folder path inside its document
// library, one missing segment at a time. The library itself must exist:
// creating libraries is an administrator's decision.
func (c *Client) EnsureFolder(ctx context.Context) error {
	full := c.FolderPath()
	ok, err := c.folderExists(ctx, full)
	if err != nil {
		return fmt.Errorf("checking folder %q: %w", full, err)
	}
	if ok {
		return nil
	}
	p := c.sitePath + "/" + c.folder[0]
	if len(c.folder) > 1 {
		ok, err = c.folderExists(ctx, p)
		if err != nil {
			return fmt.Errorf("checking document library %q: %w", p, err)
		}
	}
	if !ok {
		return fmt.Errorf("document library %q does not exist in site %s%s: create it or correct SPO_FOLDER",
			c.folder[0], c.origin, c.sitePath)
	}
	for _, seg := range c.folder[1:] {
		p += "/" + seg
		ok, err := c.folderExists(ctx, p)
		if err != nil {
			return fmt.Errorf("checking folder %q: %w", p, err)
		}
		if ok {
			continue
		}
		if err := c.createFolder(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// folderExists asks for a folder; SharePoint answers a missing one with 404
// or with Exists=false, depending on the API generation.
func (c *Client) folderExists(ctx context.Context, serverRelative string) (bool, error) {
	resp, err := c.do(ctx, &request{
		method:     http.MethodGet,
		path:       "_api/web/GetFolderByServerRelativePath(decodedurl=" + literal(serverRelative) + ")",
		accept:     acceptJSON,
		idempotent: true,
	})
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var f struct {
		Exists *bool `json:"Exists"`
	}
	if err := decodeJSON(resp, &f); err != nil {
		return false, err
	}
	return f.Exists == nil || *f.Exists, nil
}

func (c *Client) createFolder(ctx context.Context, serverRelative string) error {
	resp, err := c.do(ctx, &request{
		method:     http.MethodPost,
		path:       "_api/web/Folders/AddUsingPath(decodedurl=" + literal(serverRelative) + ")",
		accept:     acceptJSON,
		idempotent: true,
	})
	if err != nil {
		// Someone else may have created it meanwhile.
		if ok, cerr := c.folderExists(ctx, serverRelative); cerr == nil && ok {
			return nil
		}
		return fmt.Errorf("creating folder %q: %w", serverRelative, err)
	}
	discard(resp)
	return nil
}

// Upload writes size bytes read from r to the folder as name, replacing any
// file of that name, and returns the file's absolute URL.
//
// Files up to ChunkSize go in one AddUsingPath request whose body is r
// itself (retried on throttling only when r is an io.Seeker). Larger files
// are created empty and then filled with StartUpload / ContinueUpload /
// FinishUpload, reading one chunk at a time into a single reused buffer
// or, when r is an io.ReaderAt such as an *os.File (read from offset 0),
// sending each chunk straight from its offset without any copy; a failed
// chunked upload is cancelled (best effort) before the error is returned.
//
// The URL is the file's absolute URL exactly as SharePoint names it: the
// site's origin followed by the ServerRelativeUrl of the upload's answer,
// not percent-encoded (…/Shared Documents/…). It is what the bulk import
// API receives as sourceUri, and every public caller passes that form: PnP
// PowerShell's Sync-PnPSharePointUserProfilesFromAzureActiveDirectory and
// New-PnPUPABulkImportJob (pnp/powershell
// src/Commands/Utilities/SharePointUserProfileSync.cs: "https://host" +
// ServerRelativeUrl), Microsoft's sample in SharePoint/sp-dev-docs
// docs/solution-guidance/Bulk-user-profile-update-api-for-sharepoint-online.md,
// and pnp/powershell#1602 and #2896. Nothing public shows that SharePoint
// decodes a percent-encoded sourceUri; if it looks the path up literally, an
// encoded one would end every job in DataFileNotExist. SharePoint reports
// the same form back (a job's SourceUri and LogFolderUri), so URLs read back
// compare equal to what was sent (see resolve).
func (c *Client) Upload(ctx context.Context, name string, r io.Reader, size int64) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("uploading %q: %w", name, err)
	}
	if size < 0 {
		return "", fmt.Errorf("uploading %q: negative size %d", name, size)
	}
	var (
		m   fileMeta
		err error
	)
	if size <= c.chunkSize {
		m, err = c.addFile(ctx, name, newStreamBody(r, size))
	} else {
		m, err = c.uploadChunked(ctx, name, r, size)
	}
	if err != nil {
		return "", fmt.Errorf("uploading %q to %q: %w", name, c.FolderPath(), err)
	}
	if int64(m.Length) != size && m.Length != 0 {
		return "", fmt.Errorf("uploading %q: sharepoint stored %d bytes, want %d", name, m.Length, size)
	}
	sr, err := c.uploadedPath(name, m)
	if err != nil {
		return "", fmt.Errorf("uploading %q: %w", name, err)
	}
	return c.origin + sr, nil
}

// uploadedPath returns the server-relative path of the file name just
// written to the upload folder, as SharePoint's answer m spells it (its
// case may differ from the configured one's). SharePoint answers
// Files/AddUsingPath and FinishUpload with the SP.File it wrote, whose
// ServerRelativeUrl is the folder's path and the name (SharePoint/sp-dev-docs
// docs/sp-add-ins/working-with-folders-and-files-with-rest.md; PnP builds
// sourceUri from it, pnp/powershell SharePointUserProfileSync.cs). An
// answer naming any other file is refused: the URL is queued for import,
// written to records and deleted by housekeeping, and a failed chunked
// upload deletes it at once.
func (c *Client) uploadedPath(name string, m fileMeta) (string, error) {
	want := c.FolderPath() + "/" + name
	switch {
	case m.ServerRelativeURL == "":
		return want, nil
	case !strings.EqualFold(m.ServerRelativeURL, want):
		return "", fmt.Errorf("sharepoint stored the file as %q, not %q", clip(m.ServerRelativeURL, 300), want)
	}
	return m.ServerRelativeURL, nil
}

// addFile sends Files/AddUsingPath with the given body (nil: empty file).
func (c *Client) addFile(ctx context.Context, name string, body *streamBody) (fileMeta, error) {
	rq := &request{
		method: http.MethodPost,
		path: "_api/web/GetFolderByServerRelativePath(decodedurl=" + literal(c.FolderPath()) +
			")/Files/AddUsingPath(decodedurl=" + literal(name) + ",overwrite=true)",
		accept:      acceptJSON,
		contentType: "application/octet-stream",
		stream:      body,
		idempotent:  true, // overwrite=true: sending twice stores the same file
	}
	if body == nil {
		rq.body = []byte{}
	}
	resp, err := c.do(ctx, rq)
	if err != nil {
		return fileMeta{}, err
	}
	var m fileMeta
	err = decodeJSON(resp, &m)
	return m, err
}

func (c *Client) uploadChunked(ctx context.Context, name string, r io.Reader, size int64) (_ fileMeta, err error) {
	created, err := c.addFile(ctx, name, nil)
	if err != nil {
		return fileMeta{}, fmt.Errorf("creating empty file: %w", err)
	}
	file, err := c.uploadedPath(name, created)
	if err != nil {
		return fileMeta{}, fmt.Errorf("creating empty file: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		// The empty (or partial) file would stay in the library for good:
		// nobody queues it and housekeeping knows only queued files.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := c.Delete(dctx, file); derr != nil && !errors.Is(derr, fs.ErrNotExist) {
			c.log.WarnContext(ctx, "removing the file of a failed upload", "file", file, "err", derr)
		}
	}()
	base := "_api/web/GetFileByServerRelativePath(decodedurl=" + literal(file) + ")/"
	id := uuid.New().String()
	// A source that can be read at any offset (a file) is sent chunk by chunk
	// straight from it: no copy in memory, and each chunk can be resent.
	// Any other reader goes through one reused chunk buffer.
	ra, _ := r.(io.ReaderAt)
	var buf []byte
	if ra == nil {
		buf = make([]byte, c.chunkSize) // the only copy of the data held at a time
	}
	var offset int64
	for {
		n := min(c.chunkSize, size-offset)
		var chunk []byte
		var stream *streamBody
		if ra != nil {
			stream = newStreamBody(io.NewSectionReader(ra, offset, n), n)
		} else {
			chunk = buf[:n]
			if _, err := io.ReadFull(r, chunk); err != nil {
				if offset > 0 {
					c.cancelUpload(ctx, base, id)
				}
				return fileMeta{}, fmt.Errorf("reading source at offset %d: %w", offset, err)
			}
		}
		var op string
		last := offset+n == size
		switch {
		case offset == 0:
			op = fmt.Sprintf("StartUpload(uploadId=guid'%s')", id)
		case last:
			op = fmt.Sprintf("FinishUpload(uploadId=guid'%s',fileOffset=%d)", id, offset)
		default:
			op = fmt.Sprintf("ContinueUpload(uploadId=guid'%s',fileOffset=%d)", id, offset)
		}
		resp, err := c.do(ctx, &request{
			method:      http.MethodPost,
			path:        base + op,
			accept:      acceptJSON,
			contentType: "application/octet-stream",
			body:        chunk,
			stream:      stream,
			idempotent:  true, // a repeated offset is refused, not applied twice
		})
		if err != nil {
			c.cancelUpload(ctx, base, id)
			return fileMeta{}, fmt.Errorf("sending bytes %d-%d: %w", offset, offset+n-1, err)
		}
		if last {
			var m fileMeta
			if err := decodeJSON(resp, &m); err != nil {
				return fileMeta{}, fmt.Errorf("finishing upload: %w", err)
			}
			if m.ServerRelativeURL == "" {
				m.ServerRelativeURL = file
			}
			return m, nil
		}
		var v struct {
			Value json.RawMessage `json:"value"`
			// verbose answers name the value after the method
			Start    json.RawMessage `json:"StartUpload"`
			Continue json.RawMessage `json:"ContinueUpload"`
		}
		if err := decodeJSON(resp, &v); err != nil {
			c.cancelUpload(ctx, base, id)
			return fileMeta{}, fmt.Errorf("reading upload offset: %w", err)
		}
		var got flexInt
		raw := firstNonEmpty(v.Value, v.Start, v.Continue)
		if err := got.UnmarshalJSON(raw); err != nil || raw == nil || int64(got) != offset+n {
			c.cancelUpload(ctx, base, id)
			return fileMeta{}, fmt.Errorf("sharepoint acknowledged offset %s after sending bytes %d-%d", clip(raw, 100), offset, offset+n-1)
		}
		offset += n
		crashpoint.Hit(crashpoint.ChunkedUpload)
	}
}

func firstNonEmpty(vs ...json.RawMessage) json.RawMessage {
	for _, v := range vs {
		if len(v) > 0 {
			return v
		}
	}
	return nil
}

// cancelUpload ends an upload session, best effort: even when ctx is done,
// and without retries. A failure is logged, not returned.
func (c *Client) cancelUpload(ctx context.Context, base, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	resp, err := c.do(ctx, &request{
		method:  http.MethodPost,
		path:    base + fmt.Sprintf("CancelUpload(uploadId=guid'%s')", id),
		accept:  acceptJSON,
		noRetry: true,
	})
	if err != nil {
		c.log.WarnContext(ctx, "cancelling sharepoint upload", "uploadId", id, "err", err)
		return
	}
	discard(resp)
}

// ListFolder lists the files (not sub-folders) of a folder given by its
// server-relative path or absolute URL, such as a job's LogFolderUri.
func (c *Client) ListFolder(ctx context.Context, serverRelativeURL string) ([]FileInfo, error) {
	p, err := c.resolve(serverRelativeURL)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, &request{
		method:     http.MethodGet,
		path:       "_api/web/GetFolderByServerRelativePath(decodedurl=" + literal(p) + ")/Files",
		accept:     acceptJSON,
		idempotent: true,
	})
	if err != nil {
		return nil, fmt.Errorf("listing folder %q: %w", p, err)
	}
	var list struct {
		Value   []fileMeta `json:"value"`
		Results []fileMeta `json:"results"` // verbose
	}
	if err := decodeJSON(resp, &list); err != nil {
		return nil, fmt.Errorf("listing folder %q: %w", p, err)
	}
	files := make([]FileInfo, 0, len(list.Value)+len(list.Results))
	for _, m := range append(list.Value, list.Results...) {
		files = append(files, m.info())
	}
	return files, nil
}

// Download copies a file's bytes, given by absolute URL or server-relative
// path, to w. A missing file gives an error matching fs.ErrNotExist.
func (c *Client) Download(ctx context.Context, fileURL string, w io.Writer) error {
	p, err := c.resolve(fileURL)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, &request{
		method:     http.MethodGet,
		path:       "_api/web/GetFileByServerRelativePath(decodedurl=" + literal(p) + ")/$value",
		accept:     "*/*",
		idempotent: true,
	})
	if err != nil {
		return fmt.Errorf("downloading %q: %w", p, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("downloading %q: %w", p, err)
	}
	return nil
}

// Delete removes a file, or else a folder with everything in it, given by
// server-relative path or absolute URL on the site's origin. Only what lies
// strictly below the upload folder is deleted, or a job's log folder in its
// library (see below): anything else, the folder itself and its library
// included, gives an error wrapping profile.ErrOutsideFolder, and nothing
// is sent. Deleting nothing gives an error matching fs.ErrNotExist.
func (c *Client) Delete(ctx context.Context, serverRelativeURL string) error {
	p, err := c.resolve(serverRelativeURL)
	if err != nil {
		return err
	}
	ok, logFolder := c.below(p)
	if !ok {
		return fmt.Errorf("spo: refusing to delete %.200q: it is not below the upload folder %q: %w", p, c.FolderPath(), profile.ErrOutsideFolder)
	}
	kinds := []string{"GetFileByServerRelativePath", "GetFolderByServerRelativePath"}
	if logFolder {
		kinds = kinds[1:] // a log folder, never a file
	}
	for _, kind := range kinds {
		resp, err := c.do(ctx, &request{
			method:     http.MethodPost,
			path:       "_api/web/" + kind + "(decodedurl=" + literal(p) + ")",
			header:     http.Header{"X-Http-Method": {"DELETE"}, "If-Match": {"*"}},
			accept:     acceptJSON,
			idempotent: true,
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("deleting %q: %w", p, err)
		}
		discard(resp)
		return nil
	}
	return fmt.Errorf("deleting %q: %w", p, fs.ErrNotExist)
}

// resolve turns a server-relative path or an absolute URL on this site's
// origin into a server-relative path. Both are taken literally, never
// percent-decoded: SharePoint's own URIs (a job's SourceUri and
// LogFolderUri, a file's ServerRelativeUrl) come unencoded, and so do the
// URLs Upload returns (a '%' in them is a '%' of the name). A URL whose
// scheme, host or port is not the site's is refused before anything is
// sent (an error wrapping profile.ErrForeignOrigin), so the site's token
// never leaves it.
func (c *Client) resolve(s string) (string, error) {
	p := s
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		end := 0 // the end of scheme://authority; 0 when s has none
		if i := strings.Index(s, "://"); i >= 0 {
			end = len(s)
			if j := strings.IndexAny(s[i+3:], "/?#"); j >= 0 {
				end = i + 3 + j
			}
		}
		// Only the origin is parsed: the path may hold any character of a name.
		if err := profile.PinOrigin("SharePoint URL", s[:end]+escapePath(s[end:]), c.origin); err != nil {
			return "", fmt.Errorf("spo: %w", shortError(err)) // it quotes the URL whole
		}
		if p = s[end:]; p != "" && (p[0] != '/' || strings.HasPrefix(p, "//")) {
			return "", fmt.Errorf("spo: %.200q names no file or folder", s)
		}
	}
	if p = strings.TrimRight(p, "/"); p == "" {
		return "", fmt.Errorf("spo: %.200q names the site root, not a file or folder", s)
	}
	return p, nil
}

// below reports whether the server-relative path p names something strictly
// below the upload folder: compared segment by segment, ignoring case as
// SharePoint does, with any empty, "." or ".." segment, backslash or
// percent-encoded slash refused outright (SharePoint's own paths, and the
// ones Upload returns, never hold them). One place outside the folder is
// allowed too: a folder directly in the upload folder's library named by a
// GUID, where SharePoint writes a job's log ("in the same document library
// where the import file was located", in a folder "named by using the
// unique identifier of the specific import job":
// learn.microsoft.com/sharepoint/dev/solution-guidance/bulk-user-profile-update-api-for-sharepoint-online).
// logFolder tells that it matched only that way.
func (c *Client) below(p string) (ok, logFolder bool) {
	segs := strings.Split(p, "/")
	if segs[0] != "" {
		return false, false // not server-relative
	}
	segs = segs[1:]
	for _, s := range segs {
		l := strings.ToLower(s)
		if s == "" || s == "." || s == ".." || strings.Contains(s, `\`) ||
			strings.Contains(l, "%2f") || strings.Contains(l, "%5c") {
			return false, false
		}
	}
	var site []string
	if c.sitePath != "" {
		site = strings.Split(c.sitePath[1:], "/")
	}
	folder := append(site, c.folder...)
	prefix := func(n int) bool {
		if len(segs) < n {
			return false
		}
		for i := range n {
			if !strings.EqualFold(segs[i], folder[i]) {
				return false
			}
		}
		return true
	}
	if len(segs) > len(folder) && prefix(len(folder)) {
		return true, false
	}
	lib := len(site) + 1 // the library's segments end here
	if len(segs) == lib+1 && prefix(lib) {
		if _, err := uuid.Parse(segs[lib]); err == nil && len(segs[lib]) == 36 {
			return true, true
		}
	}
	return false, false
}

// escapePath percent-encodes a decoded path, keeping its slashes.
func escapePath(p string) string { return escape(p, "/") }

// literal quotes s as an OData string literal inside a URL path: quotes are
// doubled, then everything but unreserved characters, '/' and the quotes
// is percent-encoded (spaces, '#', '%', '+', '&', non-ASCII).
func literal(s string) string {
	return "'" + escape(strings.ReplaceAll(s, "'", "''"), "/'") + "'"
}

func escape(s, keep string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			strings.IndexByte("-._~", ch) >= 0 || strings.IndexByte(keep, ch) >= 0 {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&15])
	}
	return b.String()
}
