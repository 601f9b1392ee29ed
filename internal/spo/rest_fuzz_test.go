package spo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/testenv"
)

const (
	fuzzOrigin    = "https://contoso.sharepoint.com"
	fuzzLogFolder = "/sites/hr/Shared Documents/Profile Imports/4dc4c043-25ee-40f2-81d3-b3bf63da7538"
)

// restStep is the request of a REST call whose answer a test supplies;
// every other request of the call gets a well-formed answer.
type restStep uint8

const (
	stepFolder   restStep = iota // GetFolderByServerRelativePath (folderExists)
	stepList                     // …/Files (ListFolder)
	stepAdd                      // Files/AddUsingPath of a one-request Upload
	stepCreate                   // Files/AddUsingPath creating the file of a chunked Upload
	stepStart                    // StartUpload
	stepContinue                 // ContinueUpload
	stepFinish                   // FinishUpload
	numSteps
)

// restCall runs the call that step belongs to against a SharePoint whose
// answer to that step is (status, body). Chunks are 4 bytes; a chunked
// upload sends 12.
type restCall struct {
	c      *Client
	step   restStep
	status int
	body   []byte
}

func newRESTCall(t *testing.T, step restStep, status int, body []byte) *restCall {
	rc := &restCall{step: step, status: status, body: body}
	rc.c, _, _ = testClient(t, fuzzOrigin, func(o *Options) {
		o.ChunkSize = 4
		o.MaxRetries = -1
		o.HTTPClient = &http.Client{Transport: rc}
	})
	return rc
}

// RoundTrip answers in memory: nothing leaves the process.
func (rc *restCall) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	p := req.URL.Path
	file := `{"Name":"a.json","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/a.json","Length":"%d","TimeLastModified":"2025-01-01T00:00:00Z"}`
	var step restStep
	var canned string
	switch {
	case req.Header.Get("X-Http-Method") == "DELETE", strings.Contains(p, "/CancelUpload("):
		return answer(req, http.StatusOK, []byte(`{}`)), nil
	case strings.Contains(p, "/StartUpload("):
		step, canned = stepStart, `{"value":"4"}`
	case strings.Contains(p, "/ContinueUpload("):
		step, canned = stepContinue, `{"value":"8"}`
	case strings.Contains(p, "/FinishUpload("):
		step, canned = stepFinish, fmt.Sprintf(file, 12)
	case strings.Contains(p, "/Files/AddUsingPath("):
		step, canned = stepCreate, fmt.Sprintf(file, 0)
		if rc.step == stepAdd {
			step = stepAdd
		}
	case strings.HasSuffix(p, "/Files"):
		step, canned = stepList, `{"value":[]}`
	default:
		step, canned = stepFolder, `{"Exists":true}`
	}
	if step == rc.step {
		return answer(req, rc.status, rc.body), nil
	}
	return answer(req, http.StatusOK, []byte(canned)), nil
}

func answer(req *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{"Content-Type": {"application/json;odata=nometadata;charset=utf-8"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
		ProtoMajor: 1, ProtoMinor: 1,
	}
}

// run makes the call: its result (bool, []FileInfo or the uploaded file's
// URL) or its error.
func (rc *restCall) run() (any, error) {
	ctx := context.Background()
	switch rc.step {
	case stepFolder:
		return rc.c.folderExists(ctx, rc.c.FolderPath())
	case stepList:
		return rc.c.ListFolder(ctx, fuzzOrigin+fuzzLogFolder)
	case stepAdd:
		return rc.c.Upload(ctx, "a.json", strings.NewReader("0123"), 4)
	}
	return rc.c.Upload(ctx, "a.json", bytes.NewReader([]byte("0123456789ab")), 12)
}

// fileJSON writes fi back as SP.File in the nometadata shape.
func fileJSON(fi FileInfo) map[string]any {
	m := map[string]any{"Name": fi.Name, "ServerRelativeUrl": fi.ServerRelativeURL, "Length": strconv.FormatInt(fi.Length, 10)}
	if !fi.TimeLastModified.IsZero() {
		m["TimeLastModified"] = fi.TimeLastModified.Format(time.RFC3339Nano)
	}
	return m
}

// reencoded writes an accepted answer back, in the nometadata shape and
// in the verbose {"d":…} one.
func (rc *restCall) reencoded(t *testing.T, result any) [][]byte {
	t.Helper()
	var v any
	switch rc.step {
	case stepFolder:
		v = map[string]any{"Exists": result.(bool)}
	case stepList:
		items := []any{}
		for _, fi := range result.([]FileInfo) {
			items = append(items, fileJSON(fi))
		}
		return [][]byte{mustJSON(t, map[string]any{"value": items}), mustJSON(t, map[string]any{"d": map[string]any{"results": items}})}
	case stepStart:
		return [][]byte{[]byte(`{"value":"4"}`), []byte(`{"d":{"StartUpload":"4"}}`), []byte(`{"value":4}`)}
	case stepContinue:
		return [][]byte{[]byte(`{"value":"8"}`), []byte(`{"d":{"ContinueUpload":"8"}}`)}
	default:
		n := int64(12)
		switch rc.step {
		case stepAdd:
			n = 4
		case stepCreate:
			n = 0
		}
		v = fileJSON(FileInfo{Name: "a.json", ServerRelativeURL: strings.TrimPrefix(result.(string), fuzzOrigin), Length: n})
	}
	return [][]byte{mustJSON(t, v), mustJSON(t, map[string]any{"d": v})}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkRESTAnswer holds one call to its properties (see FuzzRESTAnswer).
func checkRESTAnswer(t *testing.T, step restStep, status int, body []byte) {
	t.Helper()
	rc := newRESTCall(t, step, status, body)
	result, err := rc.run()
	if status < 200 || status > 299 {
		if step == stepFolder && status == http.StatusNotFound {
			if err != nil || result.(bool) {
				t.Fatalf("folder answered 404: %v, %v; want false, nil", result, err)
			}
			return
		}
		var re *ResponseError
		if !errors.As(err, &re) || re.StatusCode != status {
			t.Fatalf("status %d: got %v, %v; want a ResponseError", status, result, err)
		}
		checkErrText(t, err, strconv.Itoa(status))
		return
	}
	if err != nil {
		checkErrText(t, err, "decoding sharepoint response", "acknowledged offset", "sharepoint stored")
		return
	}
	if u, ok := result.(string); ok {
		// The URL names the uploaded file on the site: the client (and
		// housekeeping) can read and delete it later.
		p, err := rc.c.resolve(u)
		if err != nil {
			t.Fatalf("upload URL %q: %v", u, err)
		}
		if want := rc.c.FolderPath() + "/a.json"; !strings.EqualFold(p, want) {
			t.Fatalf("upload URL %q names %q, want the uploaded file %q", u, p, want)
		}
	}
	for _, again := range rc.reencoded(t, result) {
		got, err := newRESTCall(t, step, status, again).run()
		if err != nil {
			t.Fatalf("re-encoded answer %s: %v", again, err)
		}
		if !reflect.DeepEqual(got, result) {
			t.Fatalf("re-encoded answer %s: %#v, want %#v", again, got, result)
		}
	}
}

// FuzzRESTAnswer answers one request of a SharePoint REST call (folder
// check, folder listing, one-request upload, each step of a chunked
// upload) with a fuzzed status and body, through the client's real
// transport code (in memory, no listener). Properties: a non-2xx status
// is a ResponseError carrying it; a 2xx answer the client accepts, written
// back in the nometadata and verbose shapes, gives the same result; an
// upload's URL names the uploaded file on the site; a refused answer gives
// a short error naming what is wrong. The seed corpus
// (testdata/fuzz/FuzzRESTAnswer) holds the simulator's answers in every
// OData flavour and SharePoint's error documents.
func FuzzRESTAnswer(f *testing.F) {
	f.Fuzz(func(t *testing.T, step uint8, status uint16, body []byte) {
		code := int(status)
		if code < 200 || code > 599 {
			code = http.StatusOK
		}
		checkRESTAnswer(t, restStep(step%uint8(numSteps)), code, body)
	})
}

// FuzzFlexInt: an Edm.Int64 read from a string or a number reads back the
// same written either way; anything else is a short error. Seeds: the
// Length and upload offsets SharePoint and the simulator send, limits.
func FuzzFlexInt(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var v flexInt
		if err := json.Unmarshal(b, &v); err != nil {
			checkErrText(t, err, "reading integer", "invalid character", "unexpected end", "json:")
			return
		}
		for _, again := range []string{strconv.FormatInt(int64(v), 10), `"` + strconv.FormatInt(int64(v), 10) + `"`} {
			var w flexInt
			if err := json.Unmarshal([]byte(again), &w); err != nil || w != v {
				t.Fatalf("%s read as %d, then %s read as %d, %v", b, v, again, w, err)
			}
		}
	})
}

// hugeAnswers are 10 MB answers of the shapes that cost the most: one
// huge string, a huge number, many small items, deep nesting, no JSON.
func hugeAnswers() map[string][]byte {
	const size = 10 << 20
	items := strings.Repeat(`{"Name":"x.log","ServerRelativeUrl":"/sites/hr/Shared Documents/x.log","Length":"1"},`, size/80)
	return map[string][]byte{
		"huge string":  []byte(`{"value":"` + strings.Repeat("é", size/2) + `","ServerRelativeUrl":"/` + strings.Repeat("a", size/4) + `"}`),
		"huge number":  []byte(`{"Exists":` + strings.Repeat("7", size/3) + `,"value":` + strings.Repeat("7", size/3) + `,"Length":"` + strings.Repeat("7", size/3) + `"}`),
		"many items":   []byte(`{"value":[` + strings.TrimSuffix(items, ",") + `]}`),
		"deep nesting": []byte(`{"value":` + strings.Repeat("[", size) + `}`),
		"not json":     bytes.Repeat([]byte("<html>\n"), size/7),
	}
}

// TestRESTAnswersHuge: a 10 MB answer to any step costs a small multiple
// of itself and gives a short error (checkRESTAnswer).
func TestRESTAnswersHuge(t *testing.T) {
	for name, body := range hugeAnswers() {
		// The other steps decode into the same types as these.
		for _, step := range []restStep{stepFolder, stepList, stepAdd, stepStart} {
			for _, status := range []int{http.StatusOK, http.StatusBadRequest} {
				if status != http.StatusOK && step != stepAdd {
					continue // an error answer is read the same way by every step
				}
				rc := newRESTCall(t, step, status, body)
				alloc := testenv.Allocated(func() { _, _ = rc.run() })
				t.Logf("%s, step %d, status %d: %.1f× the answer allocated", name, step, status, float64(alloc)/float64(len(body)))
				// Listing 139,000 files costs ~9× the answer; one value
				// costs reading it, its copy and perhaps its error text.
				limit := uint64(6)
				if step == stepList {
					limit = 12
				}
				if alloc > limit*uint64(len(body)) && !testenv.Race {
					t.Errorf("%s, step %d, status %d: %d bytes allocated for a %d-byte answer", name, step, status, alloc, len(body))
				}
				if name != "many items" || step != stepList { // 139,000 times the properties of one file
					checkRESTAnswer(t, step, status, body)
				}
			}
		}
	}
}

// FuzzErrorBody reads non-2xx answers (responseError): every OData error
// shape (JSON light "odata.error", verbose and v4 "error" with the message
// an object or a string), OAuth errors, HTML. Properties: the status is
// kept; a body with any text gives a code or a message; the error text is
// short; code and message written back in each OData shape read the same.
func FuzzErrorBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, status uint16, body []byte) {
		code := int(status)
		if code < 400 || code > 599 {
			code = 400 + code%200
		}
		body = body[:min(len(body), maxErrorBody)] // readError reads no more
		e := responseError(http.MethodPost, "/sites/hr/_api/web/GetFolderByServerRelativePath(decodedurl='/sites/hr/x')", code, body)
		if e.StatusCode != code {
			t.Fatalf("status %d, want %d", e.StatusCode, code)
		}
		checkErrText(t, e, strconv.Itoa(code))
		if len(strings.Fields(string(trimBOM(body)))) > 0 && e.Code == "" && e.Message == "" {
			t.Fatalf("%q gave neither code nor message", body)
		}
		if e.Code == "" && e.Message == "" {
			return
		}
		// encoding/json writes invalid UTF-8 as U+FFFD.
		wantCode, wantMsg := jsonString(t, e.Code), jsonString(t, e.Message)
		for _, doc := range []any{
			map[string]any{"odata.error": map[string]any{"code": e.Code, "message": map[string]any{"lang": "en-US", "value": e.Message}}},
			map[string]any{"error": map[string]any{"code": e.Code, "message": map[string]any{"lang": "en-US", "value": e.Message}}},
			map[string]any{"error": map[string]any{"code": e.Code, "message": e.Message}},
		} {
			again := responseError(http.MethodPost, e.Path, code, mustJSON(t, doc))
			if again.Code != wantCode || again.Message != wantMsg || again.Hint != e.Hint {
				t.Fatalf("re-encoded as %s: %+v, want code %q, message %q, hint %q", mustJSON(t, doc), again, wantCode, wantMsg, e.Hint)
			}
		}
	})
}

func jsonString(t *testing.T, s string) string {
	t.Helper()
	var out string
	if err := json.Unmarshal(mustJSON(t, s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzSPOPath: literal and escapePath percent-encode reversibly, keeping
// only characters safe in a URL path; resolve is consistent: what it
// accepts is a server-relative path it maps to itself, alone or behind the
// site's origin. Seeds: the paths and URLs of the simulator's and the
// reference's answers, and URLs on look-alike origins.
func FuzzSPOPath(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		lit := literal(s)
		if len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
			t.Fatalf("literal(%q) = %s, not quoted", s, lit)
		}
		for _, enc := range []string{lit, escapePath(s)} {
			for i := 0; i < len(enc); i++ {
				if ch := enc[i]; !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("-._~/'%", ch) >= 0) {
					t.Fatalf("%q encoded as %s, which has %q", s, enc, ch)
				}
			}
		}
		if dec, err := url.PathUnescape(lit[1 : len(lit)-1]); err != nil || strings.ReplaceAll(dec, "''", "'") != s {
			t.Fatalf("literal(%q) = %s decodes to %q, %v", s, lit, dec, err)
		}
		if dec, err := url.PathUnescape(escapePath(s)); err != nil || dec != s {
			t.Fatalf("escapePath(%q) decodes to %q, %v", s, dec, err)
		}
		c, _, _ := testClient(t, fuzzOrigin, nil)
		p, err := c.resolve(s)
		if err != nil {
			checkErrText(t, err, "spo:")
			return
		}
		if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || strings.HasSuffix(p, "/") {
			t.Fatalf("resolve(%q) = %q, not a server-relative path", s, p)
		}
		for _, again := range []string{p, fuzzOrigin + p} {
			if p2, err := c.resolve(again); err != nil || p2 != p {
				t.Fatalf("resolve(%q) = %q, but resolve(%q) = %q, %v", s, p, again, p2, err)
			}
		}
	})
}

// TestResolveHuge: a 10 MB URL (a tampered record's LogFolderUri) is
// refused, or accepted, with a short error (FuzzSPOPath's properties).
func TestResolveHuge(t *testing.T) {
	huge := strings.Repeat("a b", 10<<20/3)
	for _, s := range []string{
		"https://evil.example/" + huge, fuzzOrigin + "?" + huge, fuzzOrigin + "//" + huge,
		"/" + huge, "/" + strings.Repeat("/", 10<<20), huge,
	} {
		c, _, _ := testClient(t, fuzzOrigin, nil)
		if p, err := c.resolve(s); err != nil {
			checkErrText(t, err, "spo:")
		} else if p != s {
			t.Errorf("resolve(%.40q…) = %.40q…", s, p)
		}
	}
}
