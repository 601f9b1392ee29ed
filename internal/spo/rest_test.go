package spo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	cred := &fakeCred{}
	for _, tc := range []struct {
		name, site, folder string
		wantFolder         string // FolderPath(); "" = New must fail
	}{
		{name: "default folder", site: "https://contoso.sharepoint.com/sites/hr", wantFolder: "/sites/hr/Shared Documents"},
		{name: "trailing slash", site: "https://contoso.sharepoint.com/sites/hr/", folder: "Docs", wantFolder: "/sites/hr/Docs"},
		{name: "root site", site: "https://contoso.sharepoint.com", folder: "Shared Documents/upa", wantFolder: "/Shared Documents/upa"},
		{name: "root site slash", site: "https://contoso.sharepoint.com/", folder: "/Shared Documents/", wantFolder: "/Shared Documents"},
		{name: "backslashes", site: "https://contoso.sharepoint.com/sites/hr", folder: `Shared Documents\Profile Imports`, wantFolder: "/sites/hr/Shared Documents/Profile Imports"},
		{name: "server-relative folder", site: "https://contoso.sharepoint.com/sites/HR", folder: "/sites/hr/Shared Documents/x", wantFolder: "/sites/HR/Shared Documents/x"},
		{name: "site prefix needs a boundary", site: "https://contoso.sharepoint.com/sites/hr", folder: "/sites/hrx/Docs", wantFolder: "/sites/hr/sites/hrx/Docs"},
		{name: "encoded site path", site: "http://127.0.0.1:8371/sites/my%20site", folder: "O'Brien #1", wantFolder: "/sites/my site/O'Brien #1"},
		{name: "empty site", site: ""},
		{name: "relative site", site: "/sites/hr"},
		{name: "ftp site", site: "ftp://contoso.sharepoint.com/sites/hr"},
		{name: "query", site: "https://contoso.sharepoint.com/sites/hr?x=1"},
		{name: "fragment", site: "https://contoso.sharepoint.com/sites/hr#x"},
		{name: "user info", site: "https://u:p@contoso.sharepoint.com/sites/hr"},
		{name: "dot dot", site: "https://contoso.sharepoint.com/sites/hr", folder: "Shared Documents/../x"},
		{name: "colon", site: "https://contoso.sharepoint.com/sites/hr", folder: "Shared Documents/a:b"},
		{name: "only slashes", site: "https://contoso.sharepoint.com/sites/hr", folder: "///"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Options{SiteURL: tc.site, Folder: tc.folder, Credential: cred})
			if tc.wantFolder == "" {
				if err == nil {
					t.Errorf("New succeeded, want an error (folder %q)", c.FolderPath())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.FolderPath(); got != tc.wantFolder {
				t.Errorf("FolderPath = %q, want %q", got, tc.wantFolder)
			}
		})
	}
	if _, err := New(Options{SiteURL: "https://contoso.sharepoint.com"}); err == nil {
		t.Error("New without credential succeeded")
	}
	if _, err := New(Options{SiteURL: "https://contoso.sharepoint.com", Credential: cred, ChunkSize: -1}); err == nil {
		t.Error("New with a negative chunk size succeeded")
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/sites/hr/Shared Documents/Profile Imports", "'/sites/hr/Shared%20Documents/Profile%20Imports'"},
		{"/sites/hr/O'Brien's", "'/sites/hr/O''Brien''s'"},
		{"a#b%c+d&e?f", "'a%23b%25c%2Bd%26e%3Ff'"},
		{"Müller ü", "'M%C3%BCller%20%C3%BC'"},
		{"plain-name_1.json~", "'plain-name_1.json~'"},
	} {
		if got := literal(tc.in); got != tc.want {
			t.Errorf("literal(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestRESTPaths checks the exact escaped request line SharePoint receives,
// for folder names with spaces and with quotes.
func TestRESTPaths(t *testing.T) {
	for _, tc := range []struct {
		folder  string
		wantURI string
	}{
		{"Shared Documents/Profile Imports", "/sites/hr/_api/web/GetFolderByServerRelativePath(decodedurl='/sites/hr/Shared%20Documents/Profile%20Imports')/Files/AddUsingPath(decodedurl='imp%20ort.json',overwrite=true)"},
		{"Shared Documents/O'Neil #5", "/sites/hr/_api/web/GetFolderByServerRelativePath(decodedurl='/sites/hr/Shared%20Documents/O''Neil%20%235')/Files/AddUsingPath(decodedurl='imp%20ort.json',overwrite=true)"},
	} {
		t.Run(tc.folder, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", []byte(`{}`)) })
			c, _, _ := testClient(t, srv.URL, func(o *Options) { o.Folder = tc.folder })
			u, err := c.Upload(context.Background(), "imp ort.json", strings.NewReader("{}"), 2)
			if err != nil {
				t.Fatal(err)
			}
			if r := srv.requests()[0]; r.URI != tc.wantURI {
				t.Errorf("request path\n got %s\nwant %s", r.URI, tc.wantURI)
			}
			// The sourceUri form: origin + the path as SharePoint names it.
			wantURL := srv.URL + c.FolderPath() + "/imp ort.json"
			if u != wantURL {
				t.Errorf("URL = %s, want %s", u, wantURL)
			}
		})
	}
}

func TestUploadSmall(t *testing.T) {
	addFile := readTestdata(t, "add_file.json")
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", addFile) })
	c, _, _ := testClient(t, srv.URL, func(o *Options) { o.ChunkSize = 11 })
	data := "hello world"
	u, err := c.Upload(context.Background(), "import.json", strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.URL + "/sites/hr/Shared Documents/Profile Imports/import.json"; u != want {
		t.Errorf("URL = %s, want %s", u, want)
	}
	if named := c.FileURL("import.json"); named != u {
		t.Errorf("FileURL before the upload = %s, the upload says %s", named, u)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || string(r.Body) != data {
		t.Errorf("request %s body %q, want POST %q", r.Method, r.Body, data)
	}
	if got := r.Header.Get("Content-Length"); got != "11" {
		t.Errorf("Content-Length = %q, want 11", got)
	}
	if got := r.Header.Get("Accept"); got != "application/json;odata=nometadata" {
		t.Errorf("Accept = %q", got)
	}
}

func TestUploadRejects(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", []byte(`{}`)) })
	c, _, _ := testClient(t, srv.URL, func(o *Options) { o.ChunkSize = 4 })
	for _, tc := range []struct {
		name, file, data string
		size             int64
	}{
		{name: "slash in name", file: "a/b.json", data: "x", size: 1},
		{name: "empty name", file: "", data: "x", size: 1},
		{name: "negative size", file: "a.json", data: "", size: -1},
		{name: "short small body", file: "a.json", data: "ab", size: 3},
		{name: "short chunked body", file: "a.json", data: "abcdef", size: 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Upload(context.Background(), tc.file, strings.NewReader(tc.data), tc.size); err == nil {
				t.Error("Upload succeeded, want an error")
			} else if IsRetryable(err) {
				t.Errorf("err %v is retryable; a caller bug must not be", err)
			}
		})
	}
}

// chunkServer fakes SharePoint's chunked upload: it keeps the upload
// sessions' bytes and answers offsets as JSON strings. fail, when set,
// decides per request whether to answer 400 instead.
type chunkServer struct {
	t       *testing.T
	src     *countingReader // the client's source, to check read-ahead
	chunk   int64
	data    bytes.Buffer
	cancels []string
	deletes int
	fail    func(op string) bool
	offset  func(n int64) int64 // how the server reports the new offset
}

var chunkOp = regexp.MustCompile(`/(StartUpload|ContinueUpload|FinishUpload|CancelUpload)\(uploadId=guid'([0-9a-f-]{36})'(?:,fileOffset=(\d+))?\)$`)

func (cs *chunkServer) handle(w http.ResponseWriter, r recorded, _ int) {
	if strings.Contains(r.Path, "/Files/AddUsingPath(") {
		if len(r.Body) != 0 {
			cs.t.Errorf("AddUsingPath body of %d bytes, want an empty file", len(r.Body))
		}
		reply(w, 200, "application/json", []byte(`{"Length":"0","Name":"big.json","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/big.json"}`))
		return
	}
	m := chunkOp.FindStringSubmatch(r.Path)
	if m == nil && strings.HasSuffix(r.Path, "/GetFileByServerRelativePath(decodedurl='/sites/hr/Shared Documents/Profile Imports/big.json')") {
		cs.deletes++ // X-HTTP-Method: DELETE of the failed upload's file
		w.WriteHeader(200)
		return
	}
	if m == nil {
		cs.t.Errorf("unexpected request %s %s", r.Method, r.URI)
		w.WriteHeader(404)
		return
	}
	op := m[1]
	if op == "CancelUpload" {
		cs.cancels = append(cs.cancels, m[2])
		w.WriteHeader(200)
		return
	}
	if cs.fail != nil && cs.fail(op) {
		reply(w, 400, "application/json", []byte(`{"odata.error":{"code":"-1, Microsoft.SharePoint.Client.InvalidClientQueryException","message":{"lang":"en-US","value":"bad chunk"}}}`))
		return
	}
	if op != "StartUpload" && m[3] != fmt.Sprint(cs.data.Len()) {
		cs.t.Errorf("%s at offset %s, server has %d bytes", op, m[3], cs.data.Len())
	}
	if int64(len(r.Body)) > cs.chunk {
		cs.t.Errorf("%s sent %d bytes, chunk size is %d", op, len(r.Body), cs.chunk)
	}
	cs.data.Write(r.Body)
	// Bounded memory: the client must not have read further than what it
	// has sent so far.
	if read := cs.src.total.Load(); read != int64(cs.data.Len()) {
		cs.t.Errorf("%s: client read %d bytes of its source, sent %d", op, read, cs.data.Len())
	}
	if op == "FinishUpload" {
		reply(w, 200, "application/json", fmt.Appendf(nil, `{"Length":"%d","Name":"big.json","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/big.json"}`, cs.data.Len()))
		return
	}
	n := int64(cs.data.Len())
	if cs.offset != nil {
		n = cs.offset(n)
	}
	reply(w, 200, "application/json", fmt.Appendf(nil, `{"value":"%d"}`, n))
}

// countingReader counts bytes read and remembers the largest read.
type countingReader struct {
	r       io.Reader
	total   atomic.Int64
	maxRead atomic.Int64
	failAt  int64 // >0: fail once total reaches this
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.failAt > 0 && c.total.Load() >= c.failAt {
		return 0, errors.New("disk on fire")
	}
	if int64(len(p)) > c.maxRead.Load() {
		c.maxRead.Store(int64(len(p)))
	}
	n, err := c.r.Read(p)
	c.total.Add(int64(n))
	return n, err
}

func TestUploadChunked(t *testing.T) {
	data := []byte("0123456789") // 10 bytes in chunks of 4: Start 4, Continue 4, Finish 2
	src := &countingReader{r: bytes.NewReader(data)}
	cs := &chunkServer{t: t, src: src, chunk: 4}
	srv := newFake(t, cs.handle)
	c, _, _ := testClient(t, srv.URL, func(o *Options) { o.ChunkSize = 4 })
	u, err := c.Upload(context.Background(), "big.json", src, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.URL + "/sites/hr/Shared Documents/Profile Imports/big.json"; u != want {
		t.Errorf("URL = %s, want %s", u, want)
	}
	if !bytes.Equal(cs.data.Bytes(), data) {
		t.Errorf("server assembled %q, want %q", cs.data.Bytes(), data)
	}
	if src.maxRead.Load() > 4 {
		t.Errorf("largest read from the source was %d bytes, want at most one chunk (4)", src.maxRead.Load())
	}
	var ops []string
	var ids = map[string]bool{}
	for _, r := range srv.requests() {
		if m := chunkOp.FindStringSubmatch(r.Path); m != nil {
			ops = append(ops, m[1]+":"+m[3])
			ids[m[2]] = true
		} else {
			ops = append(ops, "AddUsingPath")
		}
		if !strings.HasPrefix(r.URI, "/sites/hr/_api/web/") {
			t.Errorf("path %s not below the site's _api/web", r.URI)
		}
	}
	want := []string{"AddUsingPath", "StartUpload:", "ContinueUpload:4", "FinishUpload:8"}
	if !reflect.DeepEqual(ops, want) {
		t.Errorf("operations %v, want %v", ops, want)
	}
	if len(ids) != 1 {
		t.Errorf("%d upload ids used, want 1", len(ids))
	}
	if len(cs.cancels) != 0 {
		t.Errorf("CancelUpload called after a successful upload")
	}
	wantStart := "/sites/hr/_api/web/GetFileByServerRelativePath(decodedurl='/sites/hr/Shared%20Documents/Profile%20Imports/big.json')/StartUpload(uploadId=guid'"
	if r := srv.requests()[1]; !strings.HasPrefix(r.URI, wantStart) {
		t.Errorf("StartUpload path\n got %s\nwant %s…", r.URI, wantStart)
	}
}

func TestUploadChunkedCancelsOnFailure(t *testing.T) {
	data := []byte("0123456789abcdef") // 4 chunks of 4
	for _, tc := range []struct {
		name       string
		fail       func(op string) bool
		offset     func(int64) int64
		failAt     int64
		wantCancel bool
	}{
		{name: "continue refused", fail: func(op string) bool { return op == "ContinueUpload" }, wantCancel: true},
		{name: "finish refused", fail: func(op string) bool { return op == "FinishUpload" }, wantCancel: true},
		{name: "start refused", fail: func(op string) bool { return op == "StartUpload" }, wantCancel: true},
		{name: "wrong offset acknowledged", offset: func(n int64) int64 { return n - 1 }, wantCancel: true},
		{name: "source fails mid-way", failAt: 8, wantCancel: true},
		{name: "source fails before start", failAt: 1, wantCancel: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{r: bytes.NewReader(data), failAt: tc.failAt}
			cs := &chunkServer{t: t, src: src, chunk: 4, fail: tc.fail, offset: tc.offset}
			srv := newFake(t, cs.handle)
			c, _, _ := testClient(t, srv.URL, func(o *Options) { o.ChunkSize = 4 })
			if tc.failAt == 1 {
				src.total.Store(1) // fail on the very first read
			}
			_, err := c.Upload(context.Background(), "big.json", src, int64(len(data)))
			if err == nil {
				t.Fatal("Upload succeeded, want an error")
			}
			if got := len(cs.cancels) == 1; got != tc.wantCancel {
				t.Errorf("cancels = %v, want one: %v", cs.cancels, tc.wantCancel)
			}
			if cs.deletes != 1 {
				t.Errorf("the failed upload's file was deleted %d times, want once (no orphan in the library)", cs.deletes)
			}
			if tc.wantCancel {
				var startID string
				for _, r := range srv.requests() {
					if m := chunkOp.FindStringSubmatch(r.Path); m != nil && m[1] == "StartUpload" {
						startID = m[2]
					}
				}
				if len(cs.cancels) == 1 && cs.cancels[0] != startID {
					t.Errorf("cancelled upload %s, started %s", cs.cancels[0], startID)
				}
			}
		})
	}
}

func TestEnsureFolder(t *testing.T) {
	const (
		lib = "/sites/hr/Shared Documents"
		a   = lib + "/Profile Imports"
		b   = a + "/O'Brien"
	)
	for _, tc := range []struct {
		name      string
		folder    string            // default "Shared Documents/Profile Imports/O'Brien"
		exists    map[string]string // decoded path -> how a GET answers: "404", "false", "true"
		want      []string          // "GET path" / "CREATE path"
		wantError string
	}{
		{
			name:   "all there",
			exists: map[string]string{b: "true"},
			want:   []string{"GET " + b},
		},
		{
			name:   "create two levels, 404 style",
			exists: map[string]string{lib: "true", a: "404", b: "404"},
			want:   []string{"GET " + b, "GET " + lib, "GET " + a, "CREATE " + a, "GET " + b, "CREATE " + b},
		},
		{
			name:   "create one level, Exists=false style",
			exists: map[string]string{lib: "true", a: "true", b: "false"},
			want:   []string{"GET " + b, "GET " + lib, "GET " + a, "GET " + b, "CREATE " + b},
		},
		{
			name:      "library missing",
			exists:    map[string]string{lib: "404"},
			want:      []string{"GET " + b, "GET " + lib},
			wantError: "SPO_FOLDER",
		},
		{
			name:      "library only, missing",
			folder:    "Shared Documents",
			exists:    map[string]string{lib: "false"},
			want:      []string{"GET " + lib},
			wantError: "SPO_FOLDER",
		},
		{
			name:   "library only, present",
			folder: "Shared Documents",
			exists: map[string]string{lib: "true"},
			want:   []string{"GET " + lib},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
				p, ok := strings.CutPrefix(r.Path, "/sites/hr/_api/web/GetFolderByServerRelativePath(decodedurl='")
				if ok && r.Method == http.MethodGet {
					p = strings.ReplaceAll(strings.TrimSuffix(p, "')"), "''", "'")
					switch tc.exists[p] {
					case "true":
						reply(w, 200, "application/json", []byte(`{"Exists":true,"Name":"x"}`))
					case "false":
						reply(w, 200, "application/json", []byte(`{"Exists":false}`))
					default:
						reply(w, 404, "application/json", readTestdata(t, "error_light.json"))
					}
					return
				}
				if p, ok := strings.CutPrefix(r.Path, "/sites/hr/_api/web/Folders/AddUsingPath(decodedurl='"); ok && r.Method == http.MethodPost {
					tc.exists[strings.ReplaceAll(strings.TrimSuffix(p, "')"), "''", "'")] = "true"
					reply(w, 200, "application/json", []byte(`{"Exists":true}`))
					return
				}
				t.Errorf("unexpected %s %s", r.Method, r.URI)
				w.WriteHeader(400)
			})
			c, _, _ := testClient(t, srv.URL, func(o *Options) {
				o.Folder = cmp.Or(tc.folder, "Shared Documents/Profile Imports/O'Brien")
			})
			err := c.EnsureFolder(context.Background())
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) || !strings.Contains(err.Error(), "Shared Documents") {
					t.Errorf("err = %v, want one naming the library and %s", err, tc.wantError)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range srv.requests() {
				_, p, _ := strings.Cut(r.Path, "(decodedurl='")
				p = strings.ReplaceAll(strings.TrimSuffix(p, "')"), "''", "'")
				verb := "GET"
				if r.Method == http.MethodPost {
					verb = "CREATE"
				}
				got = append(got, verb+" "+p)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("requests\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestRESTErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body  string
		status      int
		wantMsg     string
		wantCode    string
		wantHint    string
		wantMissing bool
	}{
		{name: "json light 404", body: "error_light.json", status: 404, wantMsg: "File Not Found.",
			wantCode: "-2147024894, System.IO.FileNotFoundException", wantMissing: true},
		{name: "verbose", body: "error_verbose.json", status: 423, wantMsg: "The file is locked for exclusive use.",
			wantCode: "-2130575338, Microsoft.SharePoint.SPException"},
		{name: "odata v4 string message", body: `inline:{"error":{"code":"x","message":"plain"}}`, status: 400, wantMsg: "plain", wantCode: "x"},
		{name: "app-only secret", body: "error_app_only.json", status: 401, wantMsg: "Unsupported app only token.",
			wantHint: "SharePoint needs a certificate or managed identity token, not a client secret"},
		{name: "foreign issuer", body: "error_issuer.json", status: 401, wantMsg: "Invalid issuer or signature.",
			wantHint: "audience"},
		{name: "html", body: "inline:<html>\n<body>Server   Error</body></html>", status: 500, wantMsg: "<html> <body>Server Error</body></html>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if s, ok := strings.CutPrefix(tc.body, "inline:"); ok {
				body = []byte(s)
			} else {
				body = readTestdata(t, tc.body)
			}
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, tc.status, "application/json", body) })
			c, _, sl := testClient(t, srv.URL, nil)
			err := c.Download(context.Background(), "/sites/hr/Shared Documents/x.json", io.Discard)
			var re *ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want *ResponseError", err)
			}
			if re.StatusCode != tc.status || re.Message != tc.wantMsg || re.Code != tc.wantCode || !strings.Contains(re.Hint, tc.wantHint) {
				t.Errorf("got %+v", *re)
			}
			if tc.wantHint == "" && re.Hint != "" {
				t.Errorf("unexpected hint %q", re.Hint)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tc.wantMissing {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v", got)
			}
			if IsRetryable(err) || len(sl.got()) != 0 {
				t.Errorf("status %d retried or marked retryable", tc.status)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Error() = %q lacks the message", err)
			}
		})
	}
}

func TestListFolder(t *testing.T) {
	list := readTestdata(t, "list_files.json")
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", list) })
	c, _, _ := testClient(t, srv.URL, nil)
	// LogFolderUri as SharePoint reports it: absolute, spaces unencoded.
	logFolder := srv.URL + "/sites/hr/Shared Documents/upa/" + jobGUID
	got, err := c.ListFolder(context.Background(), logFolder)
	if err != nil {
		t.Fatal(err)
	}
	want := []FileInfo{
		{Name: "import-0001.log", ServerRelativeURL: "/sites/hr/Shared Documents/upa/" + jobGUID + "/import-0001.log", Length: 120,
			TimeLastModified: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Name: "más.log", ServerRelativeURL: "/sites/hr/Shared Documents/upa/" + jobGUID + "/más.log", Length: 7,
			TimeLastModified: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListFolder =\n %+v\nwant\n %+v", got, want)
	}
	wantURI := "/sites/hr/_api/web/GetFolderByServerRelativePath(decodedurl='/sites/hr/Shared%20Documents/upa/" + jobGUID + "')/Files"
	if r := srv.requests()[0]; r.Method != http.MethodGet || r.URI != wantURI {
		t.Errorf("request %s %s, want GET %s", r.Method, r.URI, wantURI)
	}
}

func TestResolve(t *testing.T) {
	c, _, _ := testClient(t, "https://contoso.sharepoint.com", nil)
	for _, tc := range []struct{ in, want string }{
		{"/sites/hr/Shared Documents/a b.json", "/sites/hr/Shared Documents/a b.json"},
		{"https://contoso.sharepoint.com/sites/hr/Shared Documents/a%20b.json", "/sites/hr/Shared Documents/a%20b.json"},
		// Never decoded: SharePoint names files with their raw characters,
		// so "%23" is three characters of a name, not '#'.
		{"https://contoso.sharepoint.com/sites/hr/Shared%20Documents/a%23b.json", "/sites/hr/Shared%20Documents/a%23b.json"},
		{"https://contoso.sharepoint.com/sites/hr/Shared Documents/O'Neil #5/a.json", "/sites/hr/Shared Documents/O'Neil #5/a.json"},
		{"HTTPS://Contoso.SharePoint.com/sites/hr/x/", "/sites/hr/x"},
		{"https://evil.example.com/sites/hr/x", ""},
		{"https://contoso.sharepoint.com.evil.example/x", ""},
		{"//contoso.sharepoint.com/x", ""},
		{"relative/x", ""},
		{"https://contoso.sharepoint.com/", ""},
	} {
		got, err := c.resolve(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("resolve(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("resolve(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestDownload(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
		if strings.Contains(r.Path, "missing") {
			reply(w, 404, "application/json", readTestdata(t, "error_light.json"))
			return
		}
		reply(w, 200, "application/octet-stream", []byte("log line\n"))
	})
	c, _, _ := testClient(t, srv.URL, nil)
	var buf bytes.Buffer
	if err := c.Download(context.Background(), srv.URL+"/sites/hr/Shared Documents/upa/a'b #1.log", &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "log line\n" {
		t.Errorf("downloaded %q", buf.String())
	}
	wantURI := "/sites/hr/_api/web/GetFileByServerRelativePath(decodedurl='/sites/hr/Shared%20Documents/upa/a''b%20%231.log')/$value"
	if r := srv.requests()[0]; r.URI != wantURI {
		t.Errorf("path\n got %s\nwant %s", r.URI, wantURI)
	}
	if err := c.Download(context.Background(), "/sites/hr/missing.log", &buf); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
	if err := c.Download(context.Background(), "https://elsewhere.example/x", &buf); err == nil {
		t.Error("download from another host succeeded")
	}
	if n := len(srv.requests()); n != 2 {
		t.Errorf("%d requests, want 2 (none for the foreign host)", n)
	}
}

func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    bool // the path is a file (else a folder)
		missing bool
		want    []string
	}{
		{name: "file", file: true, want: []string{"GetFileByServerRelativePath"}},
		{name: "folder", want: []string{"GetFileByServerRelativePath", "GetFolderByServerRelativePath"}},
		{name: "missing", missing: true, want: []string{"GetFileByServerRelativePath", "GetFolderByServerRelativePath"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
				isFile := strings.Contains(r.Path, "GetFileBy")
				if tc.missing || isFile != tc.file {
					reply(w, 404, "application/json", readTestdata(t, "error_light.json"))
					return
				}
				w.WriteHeader(200)
			})
			c, _, _ := testClient(t, srv.URL, nil)
			err := c.Delete(context.Background(), "/sites/hr/Shared Documents/Profile Imports/"+jobGUID)
			if tc.missing != errors.Is(err, fs.ErrNotExist) || (!tc.missing && err != nil) {
				t.Errorf("err = %v (missing %v)", err, tc.missing)
			}
			var got []string
			for _, r := range srv.requests() {
				if r.Method != http.MethodPost || r.Header.Get("X-HTTP-Method") != "DELETE" || r.Header.Get("If-Match") != "*" {
					t.Errorf("request %s %v is not a POST with X-HTTP-Method: DELETE and If-Match: *", r.Method, r.Header)
				}
				if got := r.Header.Get("Content-Length"); got != "0" {
					t.Errorf("Content-Length = %q, want 0 (SharePoint answers 411 without it)", got)
				}
				kind, _, _ := strings.Cut(strings.TrimPrefix(r.Path, "/sites/hr/_api/web/"), "(")
				got = append(got, kind)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("requests %v, want %v", got, tc.want)
			}
		})
	}
}

// TestUploadChunkedFromFile sends chunks straight from a file (an
// io.ReaderAt): no chunk buffer, and a throttled chunk is resent as is.
func TestUploadChunkedFromFile(t *testing.T) {
	data := []byte("abcdefghijklm") // 13 bytes, chunks of 5: 5, 5, 3
	path := filepath.Join(t.TempDir(), "import.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got bytes.Buffer
	throttled := false
	srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
		if strings.Contains(r.Path, "/Files/AddUsingPath(") {
			reply(w, 200, "application/json", []byte(`{"Length":"0","Name":"f.json","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/f.json"}`))
			return
		}
		m := chunkOp.FindStringSubmatch(r.Path)
		if m == nil {
			t.Errorf("unexpected %s", r.URI)
			w.WriteHeader(404)
			return
		}
		if m[1] == "ContinueUpload" && !throttled {
			throttled = true
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return
		}
		got.Write(r.Body)
		if m[1] == "FinishUpload" {
			reply(w, 200, "application/json", fmt.Appendf(nil, `{"Length":"%d","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/f.json"}`, got.Len()))
			return
		}
		reply(w, 200, "application/json", fmt.Appendf(nil, `{"value":"%d"}`, got.Len()))
	})
	c, _, sleeps := testClient(t, srv.URL, func(o *Options) { o.ChunkSize = 5 })
	if _, err := c.Upload(context.Background(), "f.json", f, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Errorf("server assembled %q, want %q", got.Bytes(), data)
	}
	if !throttled || len(sleeps.got()) != 1 {
		t.Errorf("throttled %v, waits %v: the 429 chunk was not retried once", throttled, sleeps.got())
	}
}
