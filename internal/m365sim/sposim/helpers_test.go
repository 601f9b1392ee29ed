package sposim

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testBase = "http://127.0.0.1:8081"
	siteAPI  = "/sites/profilesync/_api/web/"
	libPath  = "/sites/profilesync/Shared Documents"
	libURL   = "/sites/profilesync/Shared%20Documents"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mapResolver resolves "<idType>:<value>" keys.
type mapResolver map[string]string

func (m mapResolver) Resolve(idType int, v string) (string, bool) {
	id, ok := m[fmt.Sprintf("%d:%s", idType, v)]
	return id, ok
}

var testUsers = mapResolver{
	"1:11111111-1111-1111-1111-111111111111": "11111111-1111-1111-1111-111111111111",
	"1:22222222-2222-2222-2222-222222222222": "22222222-2222-2222-2222-222222222222",
	"2:ann@contoso.com":                      "11111111-1111-1111-1111-111111111111",
	"2:ANN@contoso.com":                      "11111111-1111-1111-1111-111111111111",
	"0:ann@contoso.com":                      "11111111-1111-1111-1111-111111111111",
}

func newTestServer(t *testing.T, mod func(*Options)) *Server {
	t.Helper()
	opts := Options{BaseURL: testBase, Resolver: testUsers, FileDir: t.TempDir(), Now: newClock().Now}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// do sends one request; hdr holds header name/value pairs.
func do(t *testing.T, h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decode parses a JSON response body into a generic map.
func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v\n%s", rec.Code, err, rec.Body.String())
	}
	return m
}

// dig walks nested maps and arrays: dig(m, "d", "results", 0, "Name").
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// putFile uploads content to folder (server-relative, decoded) via REST.
func putFile(t *testing.T, s *Server, folder, name, content string) {
	t.Helper()
	api := "/sites/" + segments(folder)[1] + "/_api/web/"
	target := api + "GetFolderByServerRelativePath(decodedurl='" + escapePath(folder) + "')/Files/AddUsingPath(decodedurl='" + escapePath(name) + "',overwrite=true)"
	if rec := do(t, s, http.MethodPost, target, content); rec.Code != http.StatusOK {
		t.Fatalf("upload %s/%s: %d %s", folder, name, rec.Code, rec.Body.String())
	}
}

// escapePath makes a decoded path safe for a request target.
func escapePath(p string) string {
	return strings.NewReplacer(" ", "%20", "'", "''", "#", "%23", "%", "%25").Replace(p)
}

// queueXML builds a QueueImportProfileProperties request followed by a
// query of the new job.
func queueXML(idType int, idProp string, pmap [][2]string, src string) string {
	var b strings.Builder
	b.WriteString(`<Request AddExpandoFieldTypeSuffix="true" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="test" xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009"><Actions>`)
	b.WriteString(`<ObjectPath Id="2" ObjectPathId="1" /><Method Name="QueueImportProfileProperties" Id="3" ObjectPathId="1"><Parameters>`)
	fmt.Fprintf(&b, `<Parameter Type="Enum">%d</Parameter><Parameter Type="String">%s</Parameter><Parameter Type="Dictionary">`, idType, html.EscapeString(idProp))
	for _, kv := range pmap {
		fmt.Fprintf(&b, `<Property Name="%s" Type="String">%s</Property>`, html.EscapeString(kv[0]), html.EscapeString(kv[1]))
	}
	fmt.Fprintf(&b, `</Parameter><Parameter Type="String">%s</Parameter></Parameters></Method></Actions>`, html.EscapeString(src))
	b.WriteString(`<ObjectPaths><Constructor Id="1" TypeId="{e45fd516-a408-4ca4-b6dc-268e2f1f0f83}" /></ObjectPaths></Request>`)
	return b.String()
}

// jobXML builds a GetImportProfilePropertyJob query.
func jobXML(id string) string {
	return `<Request AddExpandoFieldTypeSuffix="true" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="test" xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009"><Actions><ObjectPath Id="5" ObjectPathId="4" /><Query Id="6" ObjectPathId="4"><Query SelectAllProperties="true"><Properties /></Query></Query></Actions><ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJob"><Parameters><Parameter Type="Guid">{` + id + `}</Parameter></Parameters></Method><Constructor Id="1" TypeId="{e45fd516-a408-4ca4-b6dc-268e2f1f0f83}" /></ObjectPaths></Request>`
}

// csomCall posts a ProcessQuery request and splits the response.
func csomCall(t *testing.T, s *Server, path, body string) (header map[string]any, results []json.RawMessage, raw string) {
	t.Helper()
	rec := do(t, s, http.MethodPost, path, body, "Content-Type", "text/xml")
	if rec.Code != http.StatusOK {
		t.Fatalf("ProcessQuery: status %d %s", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &arr); err != nil || len(arr) == 0 {
		t.Fatalf("ProcessQuery response is not a JSON array: %v\n%s", err, rec.Body.String())
	}
	if err := json.Unmarshal(arr[0], &header); err != nil {
		t.Fatalf("header: %v", err)
	}
	return header, arr[1:], rec.Body.String()
}

const processQuery = "/_vti_bin/client.svc/ProcessQuery"

// queue queues an import and returns the job id, failing on ErrorInfo.
func queue(t *testing.T, s *Server, idType int, pmap [][2]string, src string) string {
	t.Helper()
	h, res, raw := csomCall(t, s, "/sites/profilesync"+processQuery, queueXML(idType, "IdName", pmap, src))
	if h["ErrorInfo"] != nil || len(res) != 4 {
		t.Fatalf("queue failed: %s", raw)
	}
	var g string
	if err := json.Unmarshal(res[3], &g); err != nil {
		t.Fatalf("job id: %v", err)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(g, "/Guid("), ")/")
	if len(id) != 36 {
		t.Fatalf("job id %q is not a guid", g)
	}
	return id
}
