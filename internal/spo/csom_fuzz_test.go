package spo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

// maxErrText bounds the text of an error made from an answer, whatever the
// answer: a value in it can be megabytes long.
const maxErrText = 1 << 10

// checkErrText fails unless err says what it is about (one of want) in a
// bounded text.
func checkErrText(t *testing.T, err error, want ...string) {
	t.Helper()
	msg := err.Error()
	if len(msg) > maxErrText {
		t.Fatalf("error of %d bytes: %.300s…", len(msg), msg)
	}
	for _, w := range want {
		if strings.Contains(msg, w) {
			return
		}
	}
	t.Fatalf("error %q names none of %q", msg, want)
}

// csomAnswer builds a ProcessQuery answer: the header, then each result
// after its action id, in id order.
func csomAnswer(results map[int]json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteString(`[{"SchemaVersion":"15.0.0.0","LibraryVersion":"16.0.25213.12005","ErrorInfo":null,"TraceCorrelationId":"b2c8a49f-1234-4000-8000-000000000001"}`)
	for _, id := range slices.Sorted(maps.Keys(results)) {
		fmt.Fprintf(&b, ",%d,%s", id, results[id])
	}
	b.WriteByte(']')
	return b.Bytes()
}

// jobInfoJSON writes j back as CSOM serializes an
// ImportProfilePropertiesJobInfo: enums as numbers, the id as "\/Guid(…)\/".
func jobInfoJSON(t *testing.T, j profile.Job) json.RawMessage {
	t.Helper()
	m := map[string]any{
		"_ObjectType_": "Microsoft.Online.SharePoint.TenantManagement.ImportProfilePropertiesJobInfo",
		"Error":        int(j.Error), "State": int(j.State),
		"ErrorMessage": j.ErrorMessage, "LogFolderUri": j.LogFolderURI, "SourceUri": j.SourceURI,
	}
	if j.ID != "" {
		m["JobId"] = "/Guid(" + j.ID + ")/"
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkJobInfo holds jobInfo.job to its properties: an accepted job info
// written back as CSOM does decodes to the same job; a refused one says
// which field is wrong.
func checkJobInfo(t *testing.T, info jobInfo) {
	t.Helper()
	j, err := info.job()
	if err != nil {
		checkErrText(t, err, "job state", "job error", "csom guid")
		return
	}
	if j.ID != "" && !isCanonicalGUID(j.ID) {
		t.Fatalf("job id %q is not a lower-case GUID", j.ID)
	}
	res, err := parseCSOM(csomAnswer(map[int]json.RawMessage{5: json.RawMessage(`{"IsNull":false}`), 6: jobInfoJSON(t, j)}))
	if err != nil {
		t.Fatalf("re-encoded job: %v", err)
	}
	var again jobInfo
	if err := res.get(6, &again); err != nil {
		t.Fatalf("re-encoded job: %v", err)
	}
	j2, err := again.job()
	if err != nil {
		t.Fatalf("re-encoded job %+v: %v", j, err)
	}
	if j2 != j {
		t.Fatalf("re-encoded job\n got %+v\nwant %+v", j2, j)
	}
}

func isCanonicalGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// checkGUID holds parseGUID to its properties: an accepted id is canonical
// and reads back the same in CSOM's "/Guid(…)/" form and in upper case.
func checkGUID(t *testing.T, s string) {
	t.Helper()
	g, err := parseGUID(s)
	if err != nil {
		checkErrText(t, err, "csom guid")
		return
	}
	if !isCanonicalGUID(g) {
		t.Fatalf("parseGUID(%q) = %q, not a lower-case GUID", s, g)
	}
	for _, again := range []string{"/Guid(" + g + ")/", strings.ToUpper(g), g} {
		if g2, err := parseGUID(again); err != nil || g2 != g {
			t.Fatalf("parseGUID(%q) = %q, %v; want %q", again, g2, err, g)
		}
	}
}

// FuzzParseCSOM feeds ProcessQuery answers to parseCSOM and reads every
// result the way QueueImport (a GUID), DeleteJob (a bool), Job (a job
// info) and Jobs (a job collection) do. Properties: an accepted answer
// written back (header, then id/result pairs) parses to the same results;
// a CSOMError written back as ErrorInfo gives the same error; job infos
// and GUIDs re-encode to themselves (checkJobInfo, checkGUID); every
// error is short and names what is wrong. The seed corpus
// (testdata/fuzz/FuzzParseCSOM) holds the answers of the reference
// documentation and of the simulator: queued, empty GUID, access denied,
// editable property, job submitted/failed/unknown/null, job lists, delete.
func FuzzParseCSOM(f *testing.F) {
	f.Fuzz(checkCSOMAnswer)
}

// checkCSOMAnswer holds parseCSOM and the readers of its results to their
// properties (see FuzzParseCSOM).
func checkCSOMAnswer(t *testing.T, body []byte) {
	res, err := parseCSOM(body)
	if err != nil {
		var ce *CSOMError
		if !errors.As(err, &ce) {
			checkErrText(t, err, "csom response")
			return
		}
		hdr, _ := json.Marshal(map[string]any{"ErrorInfo": map[string]any{
			"ErrorMessage": ce.Message, "ErrorCode": ce.Code, "ErrorTypeName": ce.TypeName,
			"TraceCorrelationId": ce.CorrelationID, "ErrorValue": nil,
		}})
		_, err2 := parseCSOM([]byte("[" + string(hdr) + "]"))
		var ce2 *CSOMError
		if !errors.As(err2, &ce2) || *ce2 != *ce {
			t.Fatalf("re-encoded CSOM error: %v, want %v", err2, err)
		}
		return
	}
	again, err := parseCSOM(csomAnswer(res))
	if err != nil {
		t.Fatalf("re-encoded answer: %v", err)
	}
	if !reflect.DeepEqual(again, res) {
		t.Fatalf("re-encoded answer: %v, want %v", again, res)
	}
	for id := range res {
		var s string
		if err := res.get(id, &s); err == nil {
			checkGUID(t, s)
		} else {
			checkErrText(t, err, fmt.Sprintf("csom result %d", id))
		}
		var info jobInfo
		if res.get(id, &info) == nil {
			checkJobInfo(t, info)
		}
		var coll struct {
			Items []jobInfo `json:"_Child_Items_"`
		}
		if res.get(id, &coll) == nil {
			for _, it := range coll.Items {
				checkJobInfo(t, it)
			}
		}
		var ok bool
		_ = res.get(id, &ok)
	}
	if _, ok := res[999]; !ok {
		checkErrText(t, res.get(999, new(string)), "no result for action 999")
	}
}

// readCSOM reads an answer as the client's calls do: a GUID (QueueImport),
// a job info (Job), a job collection (Jobs).
func readCSOM(body []byte) {
	res, err := parseCSOM(body)
	if err != nil {
		return
	}
	var s string
	if res.get(3, &s) == nil {
		_, _ = parseGUID(s)
	}
	var info jobInfo
	if res.get(6, &info) == nil {
		_, _ = info.job()
	}
	var coll struct {
		Items []jobInfo `json:"_Child_Items_"`
	}
	if res.get(6, &coll) == nil {
		for _, it := range coll.Items {
			_, _ = it.job()
		}
	}
}

// TestParseCSOMHuge: a 10 MB ProcessQuery answer costs a small multiple of
// itself and gives short errors (checkCSOMAnswer).
func TestParseCSOMHuge(t *testing.T) {
	const size = 10 << 20
	hdr := `[{"SchemaVersion":"15.0.0.0","ErrorInfo":null}`
	job := func(field, value string) []byte {
		return []byte(hdr + `,5,{"IsNull":false},6,{"Error":0,"JobId":"\/Guid(4dc4c043-25ee-40f2-81d3-b3bf63da7538)\/","State":1,"SourceUri":"https://contoso.sharepoint.com/a.json",` +
			`"` + field + `":` + value + `}]`)
	}
	for name, body := range map[string][]byte{
		"huge guid":          []byte(hdr + `,2,{"IsNull":false},3,"\/Guid(` + strings.Repeat("a", size) + `)\/"]`),
		"huge error message": job("ErrorMessage", `"`+strings.Repeat(`é`, size/6)+`"`),
		"huge state number":  job("State", strings.Repeat("9", size)),
		"huge state name":    job("State", `"`+strings.Repeat("S", size)+`"`),
		"huge error object":  job("Error", `{"x":"`+strings.Repeat("e", size)+`"}`),
		"many results":       []byte(hdr + strings.Repeat(`,3,true`, size/7) + `]`),
		"many jobs":          []byte(hdr + `,5,{"IsNull":false},6,{"_Child_Items_":[` + strings.TrimSuffix(strings.Repeat(`{"Error":30,"JobId":"\/Guid(4dc4c043-25ee-40f2-81d3-b3bf63da7538)\/","State":5},`, size/90), ",") + `]}]`),
		"huge action id":     []byte(hdr + `,` + strings.Repeat("7", size) + `,true]`),
		"huge header error":  []byte(`[{"ErrorInfo":{"ErrorCode":` + strings.Repeat("7", size) + `}}]`),
		"deep nesting":       []byte(hdr + `,3,` + strings.Repeat("[", size) + `]`),
		"not json":           bytes.Repeat([]byte("<html>\n"), size/7),
	} {
		alloc := testenv.Allocated(func() { readCSOM(body) })
		t.Logf("%s: %.1f× the answer allocated", name, float64(alloc)/float64(len(body)))
		// A list costs its items (~1.2 kB for a 90-byte job info, most of
		// it growing the slice); one value up to 3× for the decoder's
		// buffer, the result and a copy for an error.
		limit := uint64(10)
		if name == "many jobs" {
			limit = 16
		}
		if alloc > limit*uint64(len(body)) {
			t.Errorf("%s: %d bytes allocated for a %d-byte answer", name, alloc, len(body))
		}
		if name != "many jobs" { // 100,000 times the properties of one job
			checkCSOMAnswer(t, body)
		}
	}
}
