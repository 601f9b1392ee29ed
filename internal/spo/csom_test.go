package spo

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

// target is the engine's Target interface (internal/syncer), restated so
// this package's tests do not import the engine.
type target interface {
	EnsureFolder(ctx context.Context) error
	Upload(ctx context.Context, name string, r io.Reader, size int64) (fileURL string, err error)
	QueueImport(ctx context.Context, idType profile.IDType, idProperty string, propertyMap map[string]string, sourceURI string) (jobID string, err error)
	Job(ctx context.Context, jobID string) (profile.Job, error)
}

var _ target = (*Client)(nil)

const jobGUID = "4dc4c043-25ee-40f2-81d3-b3bf63da7538"

// TestCSOMRequests compares every CSOM request body with its golden file and
// checks the headers and endpoint.
func TestCSOMRequests(t *testing.T) {
	for _, tc := range []struct {
		name     string
		golden   string
		response string
		call     func(*Client) error
	}{
		{
			name: "queue", golden: "req_queue.xml", response: "queue_ok.json",
			call: func(c *Client) error {
				_, err := c.QueueImport(context.Background(), profile.CloudID, "IdName",
					map[string]string{"Office": "OfficeCode", "City": "City", "R&D <x>": `"Q'"`},
					"https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/import-20250101.json")
				return err
			},
		},
		{
			name: "job", golden: "req_job.xml", response: "job_submitted.json",
			call: func(c *Client) error {
				_, err := c.Job(context.Background(), strings.ToUpper(jobGUID))
				return err
			},
		},
		{
			name: "jobs", golden: "req_jobs.xml", response: "jobs.json",
			call: func(c *Client) error { _, err := c.Jobs(context.Background()); return err },
		},
		{
			name: "delete", golden: "req_delete_job.xml", response: "delete_true.json",
			call: func(c *Client) error { _, err := c.DeleteJob(context.Background(), "{"+jobGUID+"}"); return err },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := readTestdata(t, tc.response)
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) {
				reply(w, 200, "application/json; charset=utf-8", resp)
			})
			c, _, _ := testClient(t, srv.URL, nil)
			if err := tc.call(c); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != "/sites/hr/_vti_bin/client.svc/ProcessQuery" {
				t.Errorf("request %s %s, want POST /sites/hr/_vti_bin/client.svc/ProcessQuery", r.Method, r.Path)
			}
			for h, want := range map[string]string{
				"Content-Type":  "text/xml; charset=utf-8",
				"Authorization": "Bearer " + testToken,
				"User-Agent":    "NONISV|profilesync|profilesync/dev",
			} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			checkGolden(t, tc.golden, r.Body)
		})
	}
}

func TestQueueImportResponses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		response string
		status   int
		wantID   string
		check    func(t *testing.T, err error)
	}{
		{name: "ok", response: "queue_ok.json", wantID: jobGUID},
		{name: "bom and upper-case guid", response: "queue_ok_bom.json", wantID: "0fc2b2a1-0000-4000-8000-00000000abcd"},
		{name: "empty guid", response: "queue_empty_guid.json", check: func(t *testing.T, err error) {
			if !errors.Is(err, ErrNoJobID) {
				t.Errorf("err = %v, want ErrNoJobID", err)
			}
		}},
		{name: "editable property", response: "queue_editable.json", check: func(t *testing.T, err error) {
			var ce *CSOMError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *CSOMError", err)
			}
			want := CSOMError{
				Message:       "Property Names [AboutMe] are editable by user.",
				TypeName:      "Microsoft.SharePoint.Client.ServerException",
				Code:          -2146233088,
				CorrelationID: "9e54299e-208a-4000-8546-cc4139091b26",
			}
			if *ce != want {
				t.Errorf("CSOMError = %+v, want %+v", *ce, want)
			}
			if IsRetryable(err) {
				t.Error("a CSOM error must not be retryable")
			}
		}},
		{name: "access denied hint", response: "queue_access_denied.json", check: func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "Sites.FullControl.All") {
				t.Errorf("err = %v, want a permissions hint", err)
			}
		}},
		{name: "app-only secret token", response: "error_app_only.json", status: 401, check: func(t *testing.T, err error) {
			var re *ResponseError
			if !errors.As(err, &re) || re.StatusCode != 401 {
				t.Fatalf("err = %v, want *ResponseError 401", err)
			}
			if !strings.Contains(err.Error(), "not a client secret") {
				t.Errorf("err = %v, want the certificate hint", err)
			}
		}},
		{name: "not json", response: "error_light.json", check: func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "decoding csom response") {
				t.Errorf("err = %v, want a decoding error", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := readTestdata(t, tc.response)
			status := tc.status
			if status == 0 {
				status = 200
			}
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, status, "application/json", resp) })
			c, _, _ := testClient(t, srv.URL, nil)
			id, err := c.QueueImport(context.Background(), profile.PrincipalName, "IdName",
				map[string]string{"CostCenter": "CostCenter"}, srv.URL+"/sites/hr/Shared%20Documents/a.json")
			if tc.check != nil {
				if id != "" {
					t.Errorf("id = %q on failure, want empty", id)
				}
				tc.check(t, err)
				return
			}
			if err != nil || id != tc.wantID {
				t.Errorf("QueueImport = %q, %v; want %q", id, err, tc.wantID)
			}
		})
	}
}

func TestQueueImportRejectsBadInput(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { t.Error("no request expected") })
	c, _, _ := testClient(t, srv.URL, nil)
	m := map[string]string{"A": "B"}
	for _, tc := range []struct {
		name   string
		idType profile.IDType
		idProp string
		m      map[string]string
		uri    string
	}{
		{"bad id type", profile.IDType(7), "IdName", m, "https://x/a.json"},
		{"no id property", profile.CloudID, "", m, "https://x/a.json"},
		{"empty map", profile.CloudID, "IdName", nil, "https://x/a.json"},
		{"empty map value", profile.CloudID, "IdName", map[string]string{"A": ""}, "https://x/a.json"},
		{"relative uri", profile.CloudID, "IdName", m, "/sites/hr/a.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.QueueImport(context.Background(), tc.idType, tc.idProp, tc.m, tc.uri); err == nil {
				t.Error("QueueImport succeeded, want an error")
			}
		})
	}
}

func TestJobResponses(t *testing.T) {
	src := "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/import-20250101.json"
	for _, tc := range []struct {
		name     string
		response string
		want     profile.Job
		wantErr  error
	}{
		{name: "submitted", response: "job_submitted.json", want: profile.Job{
			ID: jobGUID, State: profile.Submitted, Error: profile.NoError, SourceURI: src,
		}},
		{name: "failed with log folder", response: "job_failed.json", want: profile.Job{
			ID: jobGUID, State: profile.Error, Error: profile.InvalidDataFile, ErrorMessage: "The data file is not valid.",
			SourceURI: src, LogFolderURI: "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/" + jobGUID,
		}},
		{name: "enum names", response: "inline:" + `[{"ErrorInfo":null},5,{"IsNull":false},6,{"Error":"DataFileNotExist","JobId":"\/Guid(` + jobGUID + `)\/","State":"Error"}]`,
			want: profile.Job{ID: jobGUID, State: profile.Error, Error: profile.DataFileNotExist}},
		{name: "null object", response: "job_null.json", wantErr: fs.ErrNotExist},
		{name: "empty job id", response: "inline:" + `[{"ErrorInfo":null},5,{"IsNull":false},6,{"Error":0,"JobId":"\/Guid(00000000-0000-0000-0000-000000000000)\/","State":0}]`,
			wantErr: fs.ErrNotExist},
		// The simulator's answer for an id it does not know (inferred: no
		// public source shows SharePoint's): the id echoed, nothing filled.
		{name: "unknown id echoed, nothing filled", response: "inline:" + `[{"SchemaVersion":"15.0.0.0","LibraryVersion":"16.0.25213.12005","ErrorInfo":null,"TraceCorrelationId":"x"},5,{"IsNull":false},6,{"_ObjectType_":"Microsoft.Online.SharePoint.TenantManagement.ImportProfilePropertiesJobInfo","Error":0,"ErrorMessage":null,"JobId":"\/Guid(` + jobGUID + `)\/","LogFolderUri":null,"SourceUri":null,"State":0}]`,
			wantErr: fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp []byte
			if s, ok := strings.CutPrefix(tc.response, "inline:"); ok {
				resp = []byte(s)
			} else {
				resp = readTestdata(t, tc.response)
			}
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", resp) })
			c, _, _ := testClient(t, srv.URL, nil)
			got, err := c.Job(context.Background(), jobGUID)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Job =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestJobRejectsBadID(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { t.Error("no request expected") })
	c, _, _ := testClient(t, srv.URL, nil)
	for _, id := range []string{"", "not-a-guid", "4dc4c043-25ee-40f2-81d3"} {
		if _, err := c.Job(context.Background(), id); err == nil {
			t.Errorf("Job(%q) succeeded", id)
		}
		if _, err := c.DeleteJob(context.Background(), id); err == nil {
			t.Errorf("DeleteJob(%q) succeeded", id)
		}
	}
}

func TestJobs(t *testing.T) {
	for _, tc := range []struct {
		response string
		want     []profile.Job
	}{
		{response: "jobs_empty.json", want: []profile.Job{}},
		{response: "jobs.json", want: []profile.Job{
			{ID: jobGUID, State: profile.Succeeded, SourceURI: "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/a.json"},
			{ID: "11111111-2222-4333-8444-555555555555", State: profile.Error, Error: profile.ImportCompleteWithError,
				ErrorMessage: "Import completed with errors",
				SourceURI:    "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/b.json",
				LogFolderURI: "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/11111111-2222-4333-8444-555555555555"},
		}},
	} {
		t.Run(tc.response, func(t *testing.T) {
			resp := readTestdata(t, tc.response)
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", resp) })
			c, _, _ := testClient(t, srv.URL, nil)
			got, err := c.Jobs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Jobs =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestDeleteJob(t *testing.T) {
	for _, tc := range []struct {
		response string
		want     bool
	}{
		{"delete_true.json", true},
		{"delete_false.json", false},
	} {
		t.Run(tc.response, func(t *testing.T) {
			resp := readTestdata(t, tc.response)
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", resp) })
			c, _, _ := testClient(t, srv.URL, nil)
			got, err := c.DeleteJob(context.Background(), jobGUID)
			if err != nil || got != tc.want {
				t.Errorf("DeleteJob = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseCSOM(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantIDs []int
		wantErr bool
	}{
		{name: "header only", in: `[{"ErrorInfo":null}]`},
		{name: "pairs", in: `[{"ErrorInfo":null},2,{"IsNull":false},3,"x"]`, wantIDs: []int{2, 3}},
		{name: "bom", in: "\xef\xbb\xbf" + `[{"ErrorInfo":null},3,true]`, wantIDs: []int{3}},
		{name: "empty array", in: `[]`, wantErr: true},
		{name: "object", in: `{"ErrorInfo":null}`, wantErr: true},
		{name: "bad id", in: `[{"ErrorInfo":null},"x",1]`, wantErr: true},
		{name: "html", in: `<html>sign in</html>`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := parseCSOM([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			for _, id := range tc.wantIDs {
				if _, ok := res[id]; !ok {
					t.Errorf("result %d missing", id)
				}
			}
			if !tc.wantErr && len(res) != len(tc.wantIDs) {
				t.Errorf("%d results, want %d", len(res), len(tc.wantIDs))
			}
		})
	}
}

func TestParseGUID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/Guid(" + jobGUID + ")/", want: jobGUID},
		{in: "/Guid(4DC4C043-25EE-40F2-81D3-B3BF63DA7538)/", want: jobGUID},
		{in: jobGUID, want: jobGUID},
		{in: "/Guid()/", wantErr: true},
		{in: "/Guid(nope)/", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := parseGUID(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseGUID(%q) = %q, %v; want %q (err %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
