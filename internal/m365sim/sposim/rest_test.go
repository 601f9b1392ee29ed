package sposim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// seed creates Shared Documents/upa/a.json ("hello").
func seed(t *testing.T, s *Server) {
	t.Helper()
	if rec := do(t, s, http.MethodPost, siteAPI+"folders", `{"ServerRelativeUrl":"`+libPath+`/upa"}`); rec.Code != http.StatusCreated {
		t.Fatalf("seed folder: %d %s", rec.Code, rec.Body.String())
	}
	putFile(t, s, libPath+"/upa", "a.json", "hello")
}

func TestREST(t *testing.T) {
	const verbose = "application/json;odata=verbose"
	const nometa = "application/json;odata=nometadata"
	folderURL := siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "/upa')"
	fileURL := siteAPI + "GetFileByServerRelativeUrl('" + libURL + "/upa/a.json')"
	tests := []struct {
		name   string
		method string
		target string
		body   string
		hdr    []string
		mod    func(*Server)
		status int
		want   map[string]any // dig path (dot-separated) -> value
		check  func(t *testing.T, s *Server, rec *httptest.ResponseRecorder)
	}{
		{name: "library metadata, JSON light", method: "GET", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "')",
			status: 200, want: map[string]any{"Name": "Shared Documents", "Exists": true, "ServerRelativeUrl": libPath, "ItemCount": 1.0, "odata.type": "SP.Folder"}},
		{name: "folder metadata, verbose", method: "GET", target: folderURL, hdr: []string{"Accept", verbose},
			status: 200, want: map[string]any{"d.Name": "upa", "d.__metadata.type": "SP.Folder", "d.ItemCount": 1.0}},
		{name: "folder by relative path, nometadata", method: "GET", target: siteAPI + "GetFolderByServerRelativePath(decodedurl='Shared%20Documents/upa')", hdr: []string{"Accept", nometa},
			status: 200, want: map[string]any{"ServerRelativeUrl": libPath + "/upa", "odata.type": nil}},
		{name: "missing folder, JSON light", method: "GET", target: siteAPI + "GetFolderByServerRelativePath(decodedurl='" + libURL + "/nope')",
			status: 404, want: map[string]any{"odata.error.code": codeFileNotFound, "odata.error.message.value": "File Not Found.", "odata.error.message.lang": "en-US"}},
		{name: "missing folder, verbose", method: "GET", target: siteAPI + "GetFolderByServerRelativePath(decodedurl='" + libURL + "/nope')", hdr: []string{"Accept", verbose},
			status: 404, want: map[string]any{"error.code": codeFileNotFound, "error.message.value": "File Not Found."}},
		{name: "missing folder Exists", method: "GET", target: siteAPI + "GetFolderByServerRelativePath(decodedurl='" + libURL + "/nope')/Exists",
			status: 200, want: map[string]any{"value": false}},
		{name: "folder Exists verbose", method: "GET", target: folderURL + "/Exists", hdr: []string{"Accept", verbose},
			status: 200, want: map[string]any{"d.Exists": true}},
		{name: "folder listing", method: "GET", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "')/Folders",
			status: 200, want: map[string]any{"value.0.Name": "upa"}},
		{name: "file listing verbose", method: "GET", target: folderURL + "/Files", hdr: []string{"Accept", verbose},
			status: 200, want: map[string]any{"d.results.0.Name": "a.json", "d.results.0.Length": "5"}},
		{name: "create folders by body", method: "POST", target: siteAPI + "folders", body: `{"__metadata":{"type":"SP.Folder"},"ServerRelativeUrl":"` + libPath + `/x/y"}`,
			status: 201, want: map[string]any{"Name": "y", "ServerRelativeUrl": libPath + "/x/y"},
			check: func(t *testing.T, s *Server, _ *httptest.ResponseRecorder) {
				if s.lookupFolder(libPath+"/x") == nil {
					t.Error("intermediate folder x missing")
				}
			}},
		{name: "create folder AddUsingPath", method: "POST", target: siteAPI + "folders/AddUsingPath(decodedurl='" + libURL + "/z')",
			status: 200, want: map[string]any{"Name": "z"}},
		{name: "create subfolder via folder", method: "POST", target: folderURL + "/Folders/add('sub')",
			status: 200, want: map[string]any{"ServerRelativeUrl": libPath + "/upa/sub"}},
		{name: "create existing folder is idempotent", method: "POST", target: siteAPI + "folders/add('" + libURL + "/upa')",
			status: 200, want: map[string]any{"ItemCount": 1.0}},
		{name: "folder outside a library", method: "POST", target: siteAPI + "folders", body: `{"ServerRelativeUrl":"/sites/profilesync/NoLib/x"}`,
			status: 400, want: map[string]any{"odata.error.code": codeArgument}},
		{name: "folder body without url", method: "POST", target: siteAPI + "folders", body: `{}`,
			status: 400, want: map[string]any{"odata.error.code": codeArgument}},
		{name: "folder body bad json", method: "POST", target: siteAPI + "folders", body: `{"ServerRelativeUrl":`,
			status: 400, want: map[string]any{"odata.error.code": codeInvalidQuery}},
		{name: "folder of another site", method: "GET", target: siteAPI + "GetFolderByServerRelativeUrl('/sites/other/Shared%20Documents')",
			status: 400, want: map[string]any{"odata.error.message.value": "Server relative urls must start with SPWeb.ServerRelativeUrl"}},
		{name: "unknown site", method: "GET", target: "/sites/nosuch/_api/web", status: 404, want: map[string]any{"odata.error.code": codeFileNotFound}},
		{name: "web", method: "GET", target: "/sites/profilesync/_api/web", status: 200, want: map[string]any{"ServerRelativeUrl": "/sites/profilesync", "Url": testBase + "/sites/profilesync"}},
		{name: "root has no REST", method: "GET", target: "/_api/web", status: 404},
		{name: "add file", method: "POST", target: folderURL + "/Files/add(url='b.json',overwrite=true)", body: "data",
			status: 200, want: map[string]any{"Name": "b.json", "Length": "4", "ServerRelativeUrl": libPath + "/upa/b.json", "Exists": true},
			check: func(t *testing.T, s *Server, _ *httptest.ResponseRecorder) {
				if b, ok := s.File(libPath + "/upa/b.json"); !ok || string(b) != "data" {
					t.Errorf("stored %q, %v", b, ok)
				}
			}},
		{name: "add file by server-relative url", method: "POST", target: folderURL + "/Files/add(url='" + libURL + "/sub2.json',overwrite=true)", body: "s",
			status: 200, want: map[string]any{"ServerRelativeUrl": libPath + "/sub2.json"}},
		{name: "add file by relative path with folder", method: "POST", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "')/Files/add(url='upa/e.json',overwrite=true)", body: "e",
			status: 200, want: map[string]any{"ServerRelativeUrl": libPath + "/upa/e.json"}},
		{name: "add file into site root", method: "POST", target: siteAPI + "RootFolder/Files/add(url='e.json',overwrite=true)", body: "e",
			status: 400, want: map[string]any{"odata.error.code": codeArgument}},
		{name: "AddUsingPath, arguments swapped", method: "POST", target: folderURL + "/Files/AddUsingPath(overwrite=false,decodedurl='c.json')", body: "c",
			status: 200, want: map[string]any{"Name": "c.json", "Length": "1"}},
		{name: "add file without overwrite on existing", method: "POST", target: folderURL + "/Files/add(url='a.json',overwrite=false)", body: "x",
			status: 400, want: map[string]any{"odata.error.code": codeFileExists},
			check: func(t *testing.T, s *Server, rec *httptest.ResponseRecorder) {
				if !strings.Contains(rec.Body.String(), "already exists") {
					t.Errorf("message: %s", rec.Body.String())
				}
				if b, _ := s.File(libPath + "/upa/a.json"); string(b) != "hello" {
					t.Errorf("existing file changed to %q", b)
				}
			}},
		{name: "add file overwrite default false", method: "POST", target: folderURL + "/Files/add(url='a.json')", body: "x",
			status: 400, want: map[string]any{"odata.error.code": codeFileExists}},
		{name: "overwrite replaces", method: "POST", target: folderURL + "/Files/AddUsingPath(decodedurl='a.json',overwrite=true)", body: "bye",
			status: 200, want: map[string]any{"Length": "3", "MajorVersion": 2.0, "UIVersionLabel": "2.0"},
			check: func(t *testing.T, s *Server, _ *httptest.ResponseRecorder) {
				if b, _ := s.File(libPath + "/upa/a.json"); string(b) != "bye" {
					t.Errorf("content %q", b)
				}
			}},
		{name: "doubled quotes in names", method: "POST", target: folderURL + "/Files/add(url='it''s%20a.json',overwrite=true)", body: "q",
			status: 200, want: map[string]any{"Name": "it's a.json"}},
		{name: "parameter alias", method: "POST", target: siteAPI + "GetFolderByServerRelativePath(decodedurl=@a1)/Files/AddUsingPath(decodedurl=@a2,overwrite=true)?@a1='" + libURL + "/upa'&@a2='d.json'", body: "d",
			status: 200, want: map[string]any{"ServerRelativeUrl": libPath + "/upa/d.json"}},
		{name: "add file into missing folder", method: "POST", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "/nope')/Files/add(url='a.json',overwrite=true)", body: "x",
			status: 404, want: map[string]any{"odata.error.code": codeFileNotFound}},
		{name: "add file with bad name", method: "POST", target: folderURL + "/Files/add(url='a:b.json',overwrite=true)", body: "x",
			status: 400, want: map[string]any{"odata.error.code": codeArgument}},
		{name: "add file with bad overwrite", method: "POST", target: folderURL + "/Files/add(url='e.json',overwrite='yes')", body: "x",
			status: 400, want: map[string]any{"odata.error.code": codeInvalidQuery}},
		{name: "add file too big", method: "POST", target: folderURL + "/Files/add(url='big.json',overwrite=true)", body: "1234",
			mod: func(s *Server) { s.maxRequestBytes = 3 }, status: 413,
			check: func(t *testing.T, s *Server, _ *httptest.ResponseRecorder) {
				if _, ok := s.File(libPath + "/upa/big.json"); ok {
					t.Error("oversized file was stored")
				}
			}},
		{name: "add file with GET", method: "GET", target: folderURL + "/Files/add(url='a.json',overwrite=true)", status: 405},
		{name: "file metadata", method: "GET", target: fileURL,
			status: 200, want: map[string]any{"Name": "a.json", "Length": "5", "TimeCreated": "2025-01-02T03:04:05Z", "UIVersionLabel": "1.0", "odata.type": "SP.File"},
			check: func(t *testing.T, _ *Server, rec *httptest.ResponseRecorder) {
				m := decode(t, rec)
				if id, _ := m["UniqueId"].(string); len(id) != 36 {
					t.Errorf("UniqueId %q", id)
				}
				if e, _ := m["ETag"].(string); !strings.HasPrefix(e, `"{`) || !strings.HasSuffix(e, `},1"`) {
					t.Errorf("ETag %q", e)
				}
			}},
		{name: "file metadata by path, verbose", method: "GET", target: siteAPI + "GetFileByServerRelativePath(decodedurl='Shared%20Documents/upa/a.json')", hdr: []string{"Accept", verbose},
			status: 200, want: map[string]any{"d.Name": "a.json", "d.__metadata.type": "SP.File"}},
		{name: "file content", method: "GET", target: fileURL + "/$value", status: 200,
			check: func(t *testing.T, _ *Server, rec *httptest.ResponseRecorder) {
				if rec.Body.String() != "hello" {
					t.Errorf("body %q", rec.Body.String())
				}
			}},
		{name: "file by its own URL", method: "GET", target: libURL + "/upa/a.json", status: 200,
			check: func(t *testing.T, _ *Server, rec *httptest.ResponseRecorder) {
				if rec.Body.String() != "hello" {
					t.Errorf("body %q", rec.Body.String())
				}
			}},
		{name: "missing file", method: "GET", target: siteAPI + "GetFileByServerRelativeUrl('" + libURL + "/upa/none.json')", status: 404,
			want: map[string]any{"odata.error.code": codeFileNotFound}},
		{name: "missing file content", method: "GET", target: siteAPI + "GetFileByServerRelativeUrl('" + libURL + "/upa/none.json')/$value", status: 404},
		{name: "missing file Exists", method: "GET", target: siteAPI + "GetFileByServerRelativeUrl('" + libURL + "/upa/none.json')/Exists", status: 200,
			want: map[string]any{"value": false}},
		{name: "delete file", method: "DELETE", target: fileURL, status: 200,
			check: func(t *testing.T, s *Server, rec *httptest.ResponseRecorder) {
				if rec.Body.Len() != 0 {
					t.Errorf("body %q", rec.Body.String())
				}
				if _, ok := s.File(libPath + "/upa/a.json"); ok {
					t.Error("file still there")
				}
			}},
		{name: "delete folder by X-HTTP-Method", method: "POST", target: folderURL, hdr: []string{"X-HTTP-Method", "DELETE"}, status: 200,
			check: func(t *testing.T, s *Server, _ *httptest.ResponseRecorder) {
				if s.lookupFolder(libPath+"/upa") != nil {
					t.Error("folder still there")
				}
				if _, ok := s.File(libPath + "/upa/a.json"); ok {
					t.Error("file in deleted folder still there")
				}
			}},
		{name: "delete library root", method: "DELETE", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "')", status: 400},
		{name: "delete missing file", method: "DELETE", target: siteAPI + "GetFileByServerRelativeUrl('" + libURL + "/upa/none.json')", status: 404},
		{name: "contextinfo", method: "POST", target: "/sites/profilesync/_api/contextinfo", status: 200,
			want: map[string]any{"FormDigestTimeoutSeconds": 1800.0, "WebFullUrl": testBase + "/sites/profilesync"},
			check: func(t *testing.T, _ *Server, rec *httptest.ResponseRecorder) {
				if d, _ := decode(t, rec)["FormDigestValue"].(string); !strings.HasPrefix(d, "0x") || !strings.Contains(d, "-0000") {
					t.Errorf("FormDigestValue %q", d)
				}
			}},
		{name: "contextinfo verbose", method: "POST", target: "/sites/profilesync/_api/contextinfo", hdr: []string{"Accept", verbose}, status: 200,
			want: map[string]any{"d.GetContextWebInformation.FormDigestTimeoutSeconds": 1800.0}},
		{name: "contextinfo GET", method: "GET", target: "/sites/profilesync/_api/contextinfo", status: 405},
		{name: "unterminated literal", method: "GET", target: siteAPI + "GetFolderByServerRelativeUrl('" + libURL,
			status: 400, want: map[string]any{"odata.error.code": codeInvalidQuery}},
		{name: "unknown resource", method: "GET", target: siteAPI + "lists", status: 404, want: map[string]any{"odata.error.code": codeNotFoundRes}},
		{name: "unknown function on folder", method: "GET", target: folderURL + "/Frobnicate", status: 404},
		{name: "folder getter with two args", method: "GET", target: siteAPI + "GetFolderByServerRelativeUrl('a','b')", status: 400},
		{name: "dot-dot segment", method: "GET", target: siteAPI + "GetFolderByServerRelativePath(decodedurl='Shared%20Documents/../x')", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			seed(t, s)
			if tc.mod != nil {
				tc.mod(s)
			}
			rec := do(t, s, tc.method, tc.target, tc.body, tc.hdr...)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			if len(tc.want) > 0 {
				m := decode(t, rec)
				for p, want := range tc.want {
					if got := dig(m, splitDig(p)...); got != want {
						t.Errorf("%s = %#v, want %#v", p, got, want)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, s, rec)
			}
		})
	}
}

// splitDig splits "a.b.0.c" into a dig path; "odata.error" and the other
// dotted OData names stay whole.
func splitDig(p string) []any {
	var out []any
	for _, dotted := range []string{"odata.error", "odata.type", "odata.id", "odata.null"} {
		p = strings.ReplaceAll(p, dotted, strings.ReplaceAll(dotted, ".", "\x00"))
	}
	for _, part := range strings.Split(p, ".") {
		part = strings.ReplaceAll(part, "\x00", ".")
		if len(part) == 1 && part[0] >= '0' && part[0] <= '9' {
			out = append(out, int(part[0]-'0'))
		} else {
			out = append(out, part)
		}
	}
	return out
}

func TestChunkedUpload(t *testing.T) {
	const u1 = "guid'0b7e2c3a-1111-4d2e-9c1a-000000000001'"
	const u2 = "guid'0b7e2c3a-1111-4d2e-9c1a-000000000002'"
	file := siteAPI + "GetFileByServerRelativePath(decodedurl='" + libURL + "/upa/big.json')/"
	type step struct {
		call   string
		body   string
		accept string
		status int
		want   map[string]any
	}
	tests := []struct {
		name    string
		steps   []step
		content string // final content of big.json
	}{
		{name: "start, continue, finish", steps: []step{
			{call: "StartUpload(uploadId=" + u1 + ")", body: "abc", status: 200, want: map[string]any{"value": "3"}},
			{call: "ContinueUpload(uploadId=" + u1 + ",fileOffset=3)", body: "def", status: 200, want: map[string]any{"value": "6"}},
			{call: "FinishUpload(uploadId=" + u1 + ",fileOffset=6)", body: "g", status: 200, want: map[string]any{"Length": "7", "Name": "big.json"}},
		}, content: "abcdefg"},
		{name: "verbose responses", steps: []step{
			{call: "StartUpload(uploadId=" + u1 + ")", body: "ab", accept: "application/json;odata=verbose", status: 200, want: map[string]any{"d.StartUpload": "2"}},
			{call: "ContinueUpload(fileOffset=2,uploadId=" + u1 + ")", body: "c", accept: "application/json;odata=verbose", status: 200, want: map[string]any{"d.ContinueUpload": "3"}},
			{call: "FinishUpload(uploadId=" + u1 + ",fileOffset=3)", accept: "application/json;odata=verbose", status: 200, want: map[string]any{"d.Length": "3"}},
		}, content: "abc"},
		{name: "wrong offset", steps: []step{
			{call: "StartUpload(uploadId=" + u1 + ")", body: "abc", status: 200},
			{call: "ContinueUpload(uploadId=" + u1 + ",fileOffset=2)", body: "def", status: 400, want: map[string]any{"odata.error.code": codeArgument}},
			{call: "FinishUpload(uploadId=" + u1 + ",fileOffset=4)", body: "def", status: 400},
			{call: "FinishUpload(uploadId=" + u1 + ",fileOffset=3)", body: "d", status: 200, want: map[string]any{"Length": "4"}},
		}, content: "abcd"},
		{name: "unknown session", steps: []step{
			{call: "ContinueUpload(uploadId=" + u2 + ",fileOffset=0)", body: "x", status: 400, want: map[string]any{"odata.error.code": codeUploadSession}},
		}, content: ""},
		{name: "cancel", steps: []step{
			{call: "StartUpload(uploadId=" + u1 + ")", body: "abc", status: 200},
			{call: "CancelUpload(uploadId=" + u1 + ")", status: 200, want: map[string]any{"odata.null": true}},
			{call: "FinishUpload(uploadId=" + u1 + ",fileOffset=3)", body: "d", status: 400},
		}, content: ""},
		{name: "start twice", steps: []step{
			{call: "StartUpload(uploadId=" + u1 + ")", body: "abc", status: 200},
			{call: "StartUpload(uploadId=" + u1 + ")", body: "abc", status: 400},
		}, content: ""},
		{name: "bad arguments", steps: []step{
			{call: "StartUpload(uploadId='not-a-guid')", status: 400},
			{call: "StartUpload()", status: 400},
			{call: "ContinueUpload(uploadId=" + u1 + ")", status: 400},
			{call: "ContinueUpload(uploadId=" + u1 + ",fileOffset=-1)", status: 400},
			{call: "StartUpload(uploadId=" + u1 + ",fileOffset=0)", status: 400},
		}, content: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			seed(t, s)
			putFile(t, s, libPath+"/upa", "big.json", "")
			for i, st := range tc.steps {
				var hdr []string
				if st.accept != "" {
					hdr = []string{"Accept", st.accept}
				}
				rec := do(t, s, http.MethodPost, file+st.call, st.body, hdr...)
				if rec.Code != st.status {
					t.Fatalf("step %d %s: status %d, want %d: %s", i, st.call, rec.Code, st.status, rec.Body.String())
				}
				m := map[string]any{}
				if len(st.want) > 0 {
					m = decode(t, rec)
				}
				for p, want := range st.want {
					if got := dig(m, splitDig(p)...); got != want {
						t.Errorf("step %d: %s = %#v, want %#v", i, p, got, want)
					}
				}
			}
			if b, ok := s.File(libPath + "/upa/big.json"); !ok || string(b) != tc.content {
				t.Errorf("content %q (%v), want %q", b, ok, tc.content)
			}
		})
	}
}

func TestChunkOnMissingFile(t *testing.T) {
	s := newTestServer(t, nil)
	rec := do(t, s, http.MethodPost, siteAPI+"GetFileByServerRelativeUrl('"+libURL+"/no.json')/StartUpload(uploadId=guid'0b7e2c3a-1111-4d2e-9c1a-000000000001')", "x")
	if rec.Code != http.StatusNotFound {
		t.Fatalf("status %d", rec.Code)
	}
	if len(s.uploads) != 0 {
		t.Errorf("%d sessions left", len(s.uploads))
	}
}

// BenchmarkUpload measures a simple upload; allocations must not grow with
// the body, which is streamed to disk.
func BenchmarkUpload(b *testing.B) {
	s, err := New(Options{BaseURL: testBase, FileDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := strings.Repeat("x", 8<<20)
	target := siteAPI + "GetFolderByServerRelativeUrl('" + libURL + "')/Files/add(url='big.json',overwrite=true)"
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
