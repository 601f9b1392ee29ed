package sposim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestAdmin(t *testing.T) {
	setup := func(t *testing.T, s *Server) string {
		seed(t, s)
		putFile(t, s, libPath+"/upa", "in.json", `{"value":[{"IdName":"`+ann+`","CostCenter":"9"}]}`)
		return queue(t, s, 1, stdMap, testBase+libPath+"/upa/in.json")
	}
	tests := []struct {
		name   string
		method string
		target func(id string) string
		body   string
		status int
		check  func(t *testing.T, s *Server, id string, rec *httptest.ResponseRecorder)
	}{
		{name: "jobs", method: "GET", target: func(string) string { return "/_sim/jobs" }, status: 200,
			check: func(t *testing.T, _ *Server, id string, rec *httptest.ResponseRecorder) {
				var jobs []JobInfo
				if err := json.Unmarshal(rec.Body.Bytes(), &jobs); err != nil || len(jobs) != 1 || jobs[0].JobID != id || jobs[0].State != stateSubmitted {
					t.Errorf("jobs %s (%v)", rec.Body.String(), err)
				}
			}},
		{name: "job", method: "GET", target: func(id string) string { return "/_sim/jobs/" + id }, status: 200,
			check: func(t *testing.T, _ *Server, id string, rec *httptest.ResponseRecorder) {
				if m := decode(t, rec); m["JobId"] != id || m["SourceUri"] != testBase+libPath+"/upa/in.json" {
					t.Errorf("job %v", m)
				}
			}},
		{name: "unknown job", method: "GET", target: func(string) string { return "/_sim/jobs/nope" }, status: 404},
		{name: "advance", method: "POST", target: func(id string) string { return "/_sim/jobs/" + id + "/advance" }, status: 200,
			check: func(t *testing.T, _ *Server, _ string, rec *httptest.ResponseRecorder) {
				if m := decode(t, rec); m["State"] != float64(stateProcessing) {
					t.Errorf("after advance %v", m)
				}
			}},
		{name: "advance unknown", method: "POST", target: func(string) string { return "/_sim/jobs/nope/advance" }, status: 404},
		{name: "advance with GET", method: "GET", target: func(id string) string { return "/_sim/jobs/" + id + "/advance" }, status: 405},
		{name: "fail", method: "POST", target: func(id string) string { return "/_sim/jobs/" + id + "/fail" }, status: 200,
			check: func(t *testing.T, s *Server, id string, _ *httptest.ResponseRecorder) {
				if j, _ := s.Job(id); j.State != stateError || j.Error != 1 {
					t.Errorf("after fail %+v", j)
				}
				if rec := do(t, s, "POST", "/_sim/jobs/"+id+"/fail", ""); rec.Code != http.StatusConflict {
					t.Errorf("failing twice: %d", rec.Code)
				}
			}},
		{name: "fail with a code", method: "POST", target: func(id string) string { return "/_sim/jobs/" + id + "/fail?error=21" }, status: 200,
			check: func(t *testing.T, s *Server, id string, _ *httptest.ResponseRecorder) {
				if j, _ := s.Job(id); j.State != stateError || j.Error != 21 || j.ErrorMessage == "" {
					t.Errorf("after fail?error=21 %+v", j)
				}
			}},
		{name: "fail with a code that cannot be injected", method: "POST", target: func(id string) string { return "/_sim/jobs/" + id + "/fail?error=30" }, status: 409},
		{name: "fail with a bad code", method: "POST", target: func(id string) string { return "/_sim/jobs/" + id + "/fail?error=x" }, status: 400},
		{name: "profiles", method: "GET", target: func(string) string { return "/_sim/profiles" }, status: 200,
			check: func(t *testing.T, s *Server, id string, rec *httptest.ResponseRecorder) {
				if rec.Body.String() != "{}" {
					t.Errorf("profiles before import %s", rec.Body.String())
				}
				for range 3 {
					if err := s.AdvanceJob(id); err != nil {
						t.Fatal(err)
					}
				}
				rec = do(t, s, "GET", "/_sim/profiles", "")
				if got := dig(decode(t, rec), ann, "CostCenter"); got != "9" {
					t.Errorf("profiles after import %s", rec.Body.String())
				}
				rec = do(t, s, "GET", "/_sim/profiles/"+ann, "")
				if rec.Code != 200 || decode(t, rec)["CostCenter"] != "9" {
					t.Errorf("profile %d %s", rec.Code, rec.Body.String())
				}
			}},
		{name: "unknown profile", method: "GET", target: func(string) string { return "/_sim/profiles/" + bob }, status: 404},
		{name: "files", method: "GET", target: func(string) string { return "/_sim/files?folder=" + url.QueryEscape(libPath+"/upa") }, status: 200,
			check: func(t *testing.T, _ *Server, _ string, rec *httptest.ResponseRecorder) {
				m := decode(t, rec)
				if dig(m, "Files", 0, "Name") != "a.json" || dig(m, "Files", 1, "Name") != "in.json" || dig(m, "Files", 0, "Length") != 5.0 {
					t.Errorf("listing %s", rec.Body.String())
				}
			}},
		{name: "files of missing folder", method: "GET", target: func(string) string { return "/_sim/files?folder=/sites/x" }, status: 404},
		{name: "file content", method: "GET", target: func(string) string { return "/_sim/files/content?path=" + url.QueryEscape(libPath+"/upa/a.json") }, status: 200,
			check: func(t *testing.T, _ *Server, _ string, rec *httptest.ResponseRecorder) {
				if rec.Body.String() != "hello" {
					t.Errorf("content %q", rec.Body.String())
				}
			}},
		{name: "missing file content", method: "GET", target: func(string) string { return "/_sim/files/content?path=/x" }, status: 404},
		{name: "create site", method: "POST", target: func(string) string { return "/_sim/sites" }, body: `{"name":"hr","libraries":["Shared Documents","Imports"]}`, status: 200,
			check: func(t *testing.T, s *Server, _ string, _ *httptest.ResponseRecorder) {
				putFile(t, s, "/sites/hr/Imports", "x.json", "x")
				if _, ok := s.File("/sites/hr/Imports/x.json"); !ok {
					t.Error("upload to new library failed")
				}
				rec := do(t, s, "GET", "/_sim/sites", "")
				if !strings.Contains(rec.Body.String(), `"libraries":["Imports","Shared Documents"]`) {
					t.Errorf("sites %s", rec.Body.String())
				}
			}},
		{name: "create site bad json", method: "POST", target: func(string) string { return "/_sim/sites" }, body: `{"name":`, status: 400},
		{name: "create site unknown field", method: "POST", target: func(string) string { return "/_sim/sites" }, body: `{"nam":"x"}`, status: 400},
		{name: "create site bad name", method: "POST", target: func(string) string { return "/_sim/sites" }, body: `{"name":"a/b"}`, status: 400},
		{name: "properties", method: "GET", target: func(string) string { return "/_sim/properties" }, status: 200,
			check: func(t *testing.T, _ *Server, _ string, rec *httptest.ResponseRecorder) {
				if !strings.Contains(rec.Body.String(), `{"Name":"AboutMe","EditableByUser":true,"MultiValued":false,"Taxonomy":false}`) {
					t.Errorf("properties %s", rec.Body.String())
				}
			}},
		{name: "replace properties", method: "PUT", target: func(string) string { return "/_sim/properties" }, body: `[{"Name":"Only"}]`, status: 200,
			check: func(t *testing.T, s *Server, _ string, _ *httptest.ResponseRecorder) {
				h, _, raw := csomCall(t, s, processQuery, queueXML(1, "IdName", [][2]string{{"CostCenter", "CostCenter"}}, testBase+libPath+"/upa/in.json"))
				if !strings.Contains(raw, "Property Names [CostCenter] do not exist.") || h["ErrorInfo"] == nil {
					t.Errorf("queue after replacing properties: %s", raw)
				}
			}},
		{name: "duplicate properties", method: "PUT", target: func(string) string { return "/_sim/properties" }, body: `[{"Name":"A"},{"Name":"a"}]`, status: 400},
		{name: "properties bad json", method: "PUT", target: func(string) string { return "/_sim/properties" }, body: `{}`, status: 400},
		{name: "unknown route", method: "GET", target: func(string) string { return "/_sim/nothing" }, status: 404,
			check: func(t *testing.T, _ *Server, _ string, rec *httptest.ResponseRecorder) {
				if m := decode(t, rec); m["error"] == nil {
					t.Errorf("body %s", rec.Body.String())
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, manual)
			id := setup(t, s)
			rec := do(t, s, tc.method, tc.target(id), tc.body)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			if ct := rec.Header().Get("Content-Type"); tc.status != 200 && !strings.HasPrefix(ct, "application/json") {
				t.Errorf("error Content-Type %q", ct)
			}
			if tc.check != nil {
				tc.check(t, s, id, rec)
			}
		})
	}
}

// TestGarbage sends malformed requests; none may panic or fail with 500.
func TestGarbage(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.JobStep = 0 })
	seed(t, s)
	paths := []string{
		"/", "/sites", "/sites/", "/sites/profilesync", "/sites/profilesync/", "/sites/profilesync/_api",
		"/sites/profilesync/_api/", "/sites/profilesync/_api/web/", "/sites/profilesync/_api/web//x",
		"/sites/profilesync/_api/web/(", "/sites/profilesync/_api/web/GetFolderByServerRelativeUrl(",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl()", "/sites/profilesync/_api/web/GetFolderByServerRelativeUrl(1)",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('')", "/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('/')",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('/sites')", "/sites/profilesync/_api/web/GetFolderByServerRelativeUrl(guid'x')",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('a'",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('a')x", "/sites/profilesync/_api/web/GetFolderByServerRelativePath(decodedurl=@x)",
		"/sites/profilesync/_api/web/GetFolderByServerRelativePath(decodedurl=@x)?@x=@y",
		"/sites/profilesync/_api/web/GetFolderByServerRelativePath(decodedurl=@x)?@x='a'b",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add()",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add(,)",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add(url=)",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add(url='x',url='y',z=1)",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Files/add(url='x')/more",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Folders/add(url='..')",
		"/sites/profilesync/_api/web/GetFolderByServerRelativeUrl('Shared%20Documents')/Folders/add()",
		"/sites/profilesync/_api/web/GetFileByServerRelativeUrl('Shared%20Documents/upa/a.json')/StartUpload",
		"/sites/profilesync/_api/web/GetFileByServerRelativeUrl('Shared%20Documents/upa/a.json')/StartUpload(uploadId=guid'')",
		"/sites/profilesync/_api/web/GetFileByServerRelativeUrl('Shared%20Documents/upa/a.json')/FinishUpload(uploadId=guid'0b7e2c3a-1111-4d2e-9c1a-000000000001',fileOffset=99999999999999999999)",
		"/sites/profilesync/_api/web/GetFileByServerRelativeUrl('Shared%20Documents/upa/a.json')/$value/x",
		"/sites/profilesync/_api/web/folders(1)", "/sites/profilesync/_api/web/folders/x/y",
		"/sites/profilesync/_api/contextinfo(1)", "/sites/profilesync/_api/web(1)", "/sites/profilesync/_api/web/RootFolder/Files",
		"/_vti_bin/client.svc/ProcessQuery", "/sites/profilesync/_vti_bin/client.svc/ProcessQuery",
		"/_sim", "/_sim/", "/_sim/jobs/x/y/z", "/_sim/files", "/_sim/files/content",
	}
	bodies := []string{
		"", "{", "null", "[]", `{"ServerRelativeUrl":5}`, "\x00\xff\xfe", "<Request>", "<Request><Actions><Query Id=\"1\" ObjectPathId=\"1\"/></Actions></Request>",
		reqOpen + `<Actions><Method Name="QueueImportProfileProperties" Id="3" ObjectPathId="1"><Parameters><Parameter Type="Enum">1</Parameter><Parameter Type="String">IdName</Parameter><Parameter Type="Dictionary" /><Parameter Type="String">` + testBase + libPath + `/upa/a.json</Parameter></Parameters></Method></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`,
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><Request>&a;</Request>`,
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "MERGE"}
	n := 0
	for _, p := range paths {
		for _, m := range methods {
			for _, b := range bodies {
				n++
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Errorf("%s %s %q panicked: %v", m, p, b, r)
						}
					}()
					rec := do(t, s, m, p, b, "X-HTTP-Method", []string{"", "DELETE", "MERGE"}[n%3])
					if rec.Code >= 500 {
						t.Errorf("%s %s %q: status %d %s", m, p, b, rec.Code, rec.Body.String())
					}
					if ct := rec.Header().Get("Content-Type"); rec.Code >= 400 && !strings.HasPrefix(ct, "application/json") {
						t.Errorf("%s %s: error with Content-Type %q", m, p, ct)
					}
				}()
			}
		}
	}
	if n == 0 {
		t.Fatal("no requests sent")
	}
}

// TestConcurrentUse uploads, queues and reads from many goroutines; run
// with -race.
func TestConcurrentUse(t *testing.T) {
	clock := newClock()
	s := newTestServer(t, func(o *Options) { o.JobStep = -1; o.Now = clock.Now })
	const workers = 8
	var wg sync.WaitGroup
	ids := make([]string, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("in-%d.json", w)
			body := `{"value":[{"IdName":"` + ann + `","CostCenter":"` + fmt.Sprint(w) + `"}]}`
			rec := do(t, s, http.MethodPost, siteAPI+"GetFolderByServerRelativeUrl('"+libURL+"')/Files/add(url='"+name+"',overwrite=true)", body)
			if rec.Code != http.StatusOK {
				t.Errorf("upload %d: %d", w, rec.Code)
				return
			}
			rec = do(t, s, http.MethodPost, processQuery, queueXML(1, "IdName", stdMap, testBase+libPath+"/"+name))
			var arr []json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &arr); err != nil || len(arr) != 5 {
				t.Errorf("queue %d: %s", w, rec.Body.String())
				return
			}
			var g string
			_ = json.Unmarshal(arr[4], &g)
			ids[w] = strings.TrimSuffix(strings.TrimPrefix(g, "/Guid("), ")/")
			for range 3 {
				if err := s.AdvanceJob(ids[w]); err != nil {
					t.Errorf("advance %d: %v", w, err)
				}
				_ = do(t, s, http.MethodGet, "/_sim/jobs", "")
			}
		}()
	}
	wg.Wait()
	for w, id := range ids {
		if j, ok := s.Job(id); !ok || j.State != stateSucceeded {
			t.Errorf("job %d: %+v %v", w, j, ok)
		}
	}
	if p, _ := s.Profile(ann); p["CostCenter"] == "" {
		t.Errorf("profile %v", p)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no base URL", Options{}},
		{"relative base URL", Options{BaseURL: "/x"}},
		{"ftp base URL", Options{BaseURL: "ftp://h"}},
		{"unnamed property", Options{BaseURL: testBase, Properties: []PropertyDef{{Name: " "}}}},
		{"duplicate property", Options{BaseURL: testBase, Properties: []PropertyDef{{Name: "A"}, {Name: "a"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.FileDir = t.TempDir()
			if s, err := New(tc.opts); err == nil {
				s.Close()
				t.Error("New succeeded")
			}
		})
	}
}

func TestCloseRemovesOwnDir(t *testing.T) {
	s, err := New(Options{BaseURL: testBase + "/"})
	if err != nil {
		t.Fatal(err)
	}
	putFile(t, s, libPath, "a.json", "x")
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s still exists", dir)
	}
	if rec := do(t, s, http.MethodGet, siteAPI, ""); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d", rec.Code)
	}
}
