package sposim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

const (
	reqOpen   = `<Request AddExpandoFieldTypeSuffix="true" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="test" xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009">`
	tenantCtr = `<Constructor Id="1" TypeId="{e45fd516-a408-4ca4-b6dc-268e2f1f0f83}" />`
)

func manual(o *Options) { o.JobStep = -1 }

func TestQueueResponseShape(t *testing.T) {
	for _, endpoint := range []string{processQuery, "/sites/profilesync" + processQuery, "/sites/PROFILESYNC" + processQuery} {
		t.Run(endpoint, func(t *testing.T) {
			s := newTestServer(t, manual)
			seed(t, s)
			src := testBase + libPath + "/upa/a.json"
			h, res, raw := csomCall(t, s, endpoint, queueXML(1, "IdName", [][2]string{{"CostCenter", "CostCenter"}}, src))
			if !strings.HasPrefix(raw, `[{"SchemaVersion":"15.0.0.0","LibraryVersion":"16.0.25213.12005","ErrorInfo":null,"TraceCorrelationId":"`) {
				t.Errorf("header: %s", raw)
			}
			if h["ErrorInfo"] != nil || len(res) != 4 {
				t.Fatalf("response: %s", raw)
			}
			if string(res[0]) != "2" || string(res[1]) != `{"IsNull":false}` || string(res[2]) != "3" {
				t.Errorf("ack: %s", raw)
			}
			if !strings.HasPrefix(string(res[3]), `"\/Guid(`) || !strings.HasSuffix(string(res[3]), `)\/"`) {
				t.Errorf("job id: %s", res[3])
			}
			id := strings.TrimSuffix(strings.TrimPrefix(string(res[3]), `"\/Guid(`), `)\/"`)

			_, res, raw = csomCall(t, s, endpoint, jobXML(id))
			if len(res) != 4 || string(res[0]) != "5" || string(res[2]) != "6" {
				t.Fatalf("job query: %s", raw)
			}
			want := `{"_ObjectType_":"Microsoft.Online.SharePoint.TenantManagement.ImportProfilePropertiesJobInfo","Error":0,"ErrorMessage":null,"JobId":"\/Guid(` + id +
				`)\/","LogFolderUri":null,"SourceUri":"http:\u002f\u002f127.0.0.1:8081\u002fsites\u002fprofilesync\u002fShared Documents\u002fupa\u002fa.json","State":1}`
			if string(res[3]) != want {
				t.Errorf("job info\n got %s\nwant %s", res[3], want)
			}
			if j, ok := s.Job(id); !ok || j.State != stateSubmitted || j.IDType != 1 || j.PropertyMap["CostCenter"] != "CostCenter" {
				t.Errorf("Job(%s) = %+v, %v", id, j, ok)
			}
		})
	}
}

func TestQueueValidation(t *testing.T) {
	good := testBase + libPath + "/upa/a.json"
	cc := [][2]string{{"CostCenter", "CostCenter"}}
	tests := []struct {
		name     string
		idType   int
		idProp   string
		pmap     [][2]string
		src      string
		code     float64
		typeName string
		msg      string
	}{
		{name: "idType out of range", idType: 3, idProp: "IdName", pmap: cc, src: good, code: -2147024809, typeName: "System.ArgumentException", msg: "idType"},
		{name: "negative idType", idType: -1, idProp: "IdName", pmap: cc, src: good, code: -2147024809, msg: "idType"},
		{name: "empty id property", idType: 1, idProp: "", pmap: cc, src: good, code: -2147024809, msg: "sourceDataIdProperty"},
		{name: "unknown property", idType: 1, idProp: "IdName", pmap: [][2]string{{"A", "NoSuch"}, {"B", "CostCenter"}}, src: good,
			code: -2146233088, typeName: "Microsoft.SharePoint.Client.ServerException", msg: "Property Names [NoSuch] do not exist."},
		{name: "editable by user", idType: 1, idProp: "IdName", pmap: [][2]string{{"AboutMe", "AboutMe"}}, src: good,
			code: -2146233088, msg: "Property Names [AboutMe] are editable by user."},
		{name: "taxonomy", idType: 1, idProp: "IdName", pmap: [][2]string{{"Skills", "SPS-Skills"}, {"I", "SPS-Interests"}}, src: good,
			code: -2146233088, msg: "Property Names [SPS-Skills, SPS-Interests] are Taxonomic Properties."},
		// SharePoint/sp-dev-docs#7159: a multi-valued property is refused as
		// a taxonomic one.
		{name: "multi-valued", idType: 1, idProp: "IdName", pmap: [][2]string{{"Languages", "languages"}}, src: good,
			code: -2146233088, typeName: "Microsoft.SharePoint.Client.ServerException", msg: "Property Names [Languages] are Taxonomic Properties."},
		{name: "multi-valued and taxonomy", idType: 1, idProp: "IdName", pmap: [][2]string{{"L", "Languages"}, {"I", "SPS-Interests"}}, src: good,
			code: -2146233088, typeName: "Microsoft.SharePoint.Client.ServerException", msg: "Property Names [Languages, SPS-Interests] are Taxonomic Properties."},
		{name: "relative source", idType: 1, idProp: "IdName", pmap: cc, src: libPath + "/upa/a.json", code: -2147024809, msg: "not a valid absolute URI"},
		{name: "no host", idType: 1, idProp: "IdName", pmap: cc, src: "http:///sites/a.json", code: -2147024809, msg: "not a valid absolute URI"},
		{name: "empty source", idType: 1, idProp: "IdName", pmap: cc, src: "", code: -2147024809, msg: "sourceUri"},
		{name: "map checked before the file", idType: 1, idProp: "IdName", pmap: [][2]string{{"A", "NoSuch"}}, src: testBase + libPath + "/upa/none.json",
			code: -2146233088, msg: "Property Names [NoSuch] do not exist."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, manual)
			seed(t, s)
			h, res, raw := csomCall(t, s, processQuery, queueXML(tc.idType, tc.idProp, tc.pmap, tc.src))
			if len(res) != 0 {
				t.Errorf("error response carries results: %s", raw)
			}
			ei, _ := h["ErrorInfo"].(map[string]any)
			if ei == nil {
				t.Fatalf("no ErrorInfo: %s", raw)
			}
			if ei["ErrorCode"] != tc.code {
				t.Errorf("ErrorCode %v, want %v", ei["ErrorCode"], tc.code)
			}
			if tc.typeName != "" && ei["ErrorTypeName"] != tc.typeName {
				t.Errorf("ErrorTypeName %v, want %v", ei["ErrorTypeName"], tc.typeName)
			}
			if msg, _ := ei["ErrorMessage"].(string); !strings.Contains(msg, tc.msg) {
				t.Errorf("ErrorMessage %q, want it to contain %q", msg, tc.msg)
			}
			if _, ok := ei["ErrorValue"]; !ok || ei["ErrorValue"] != nil {
				t.Errorf("ErrorValue missing or not null: %s", raw)
			}
			if ei["TraceCorrelationId"] != h["TraceCorrelationId"] {
				t.Errorf("trace ids differ: %s", raw)
			}
			if n := len(s.Jobs()); n != 0 {
				t.Errorf("%d jobs created", n)
			}
		})
	}
}

// TestQueueSourceURIForms checks that the queue call accepts any absolute
// sourceUri and that the job, when processed, looks the file up literally:
// only origin + ServerRelativeUrl (spaces as spaces, any case) finds it; a
// percent-encoded path or a missing file ends in DataFileNotExist (20), a URI
// outside the tenant in DataFileNotInTenant (21).
func TestQueueSourceURIForms(t *testing.T) {
	tests := []struct {
		src     string
		state   int
		errCode int
	}{
		{testBase + libPath + "/upa/in.json", stateSucceeded, 0},
		{"HTTP://127.0.0.1:8081/SITES/profilesync/shared documents/UPA/IN.JSON", stateSucceeded, 0},
		{testBase + "/sites/profilesync/Imports/in.json", stateSucceeded, 0}, // no space, no percent sign
		{testBase + libURL + "/upa/in.json", stateError, 20},                 // percent-encoded: not decoded
		{testBase + "/sites/profilesync/Imports%2Fin.json", stateError, 20},
		{testBase + libPath + "/upa/in.json?web=1", stateError, 20},
		{testBase + libPath + "/upa/none.json", stateError, 20},
		{testBase + "/sites/none/x/in.json", stateError, 20},
		{testBase + libPath + "/upa", stateError, 20}, // a folder
		{"http://contoso.sharepoint.com" + libPath + "/upa/in.json", stateError, 21},
		{"https://127.0.0.1:8081" + libPath + "/upa/in.json", stateError, 21},
		{"http://127.0.0.1:80810" + libPath + "/upa/in.json", stateError, 21},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			s := newTestServer(t, manual)
			seed(t, s)
			if err := s.AddSite("profilesync", "Imports"); err != nil {
				t.Fatal(err)
			}
			content := `{"value":[{"IdName":"` + ann + `","CostCenter":"1"}]}`
			putFile(t, s, libPath+"/upa", "in.json", content)
			putFile(t, s, "/sites/profilesync/Imports", "in.json", content)
			id := queue(t, s, 1, [][2]string{{"CostCenter", "CostCenter"}}, tc.src)
			if j, _ := s.Job(id); j.SourceURI != tc.src || j.State != stateSubmitted {
				t.Errorf("after queueing: %+v, want SourceUri as sent and state Submitted", j)
			}
			for range 3 {
				if err := s.AdvanceJob(id); err != nil {
					break
				}
			}
			j, _ := s.Job(id)
			if j.State != tc.state || j.Error != tc.errCode {
				t.Fatalf("state %d error %d (%q), want %d %d", j.State, j.Error, j.ErrorMessage, tc.state, tc.errCode)
			}
			if tc.errCode != 0 && (j.ErrorMessage == "" || j.LogFolderURI != "") {
				t.Errorf("job-level error: ErrorMessage %q, LogFolderUri %q", j.ErrorMessage, j.LogFolderURI)
			}
			if _, applied := s.Profile(ann); applied != (tc.errCode == 0) {
				t.Errorf("profile applied = %v", applied)
			}
		})
	}
	t.Run("synchronous job", func(t *testing.T) {
		s := newTestServer(t, func(o *Options) { o.JobStep = 0 })
		id := queue(t, s, 1, stdMap, testBase+libPath+"/missing.json")
		if j, _ := s.Job(id); j.State != stateError || j.Error != 20 {
			t.Errorf("job %+v, want Error 20", j)
		}
	})
}

// TestCSOMUnknownJob pins the answer for a job id SharePoint does not know
// ([inferred]; see callMethod): a job object in state Unknown.
func TestCSOMUnknownJob(t *testing.T) {
	s := newTestServer(t, manual)
	const id = "00000000-0000-0000-0000-0000000000aa"
	h, _, raw := csomCall(t, s, processQuery, jobXML(id))
	trace, _ := h["TraceCorrelationId"].(string)
	want := `[{"SchemaVersion":"15.0.0.0","LibraryVersion":"16.0.25213.12005","ErrorInfo":null,"TraceCorrelationId":"` + trace + `"},` +
		`5,{"IsNull":false},6,{"_ObjectType_":"Microsoft.Online.SharePoint.TenantManagement.ImportProfilePropertiesJobInfo",` +
		`"Error":0,"ErrorMessage":null,"JobId":"\/Guid(` + id + `)\/","LogFolderUri":null,"SourceUri":null,"State":0}]`
	if raw != want {
		t.Errorf("unknown job\n got %s\nwant %s", raw, want)
	}
	// A deleted job is unknown too.
	putFile(t, s, libPath, "in.json", `{"value":[]}`)
	del := queue(t, s, 1, stdMap, testBase+libPath+"/in.json")
	body := reqOpen + `<Actions><Method Name="DeleteImportProfilePropertiesJob" Id="3" ObjectPathId="1"><Parameters><Parameter Type="Guid">{` + del + `}</Parameter></Parameters></Method></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`
	if _, res, raw := csomCall(t, s, processQuery, body); len(res) != 2 || string(res[1]) != "true" {
		t.Fatalf("delete: %s", raw)
	}
	_, res, raw := csomCall(t, s, processQuery, jobXML(del))
	if len(res) != 4 || !strings.HasSuffix(string(res[3]), `"JobId":"\/Guid(`+del+`)\/","LogFolderUri":null,"SourceUri":null,"State":0}`) {
		t.Errorf("deleted job: %s", raw)
	}
}

func TestCSOMErrors(t *testing.T) {
	guid := "{4dc4c043-25ee-40f2-81d3-b3bf63da7538}"
	method := func(name, params string) string {
		return reqOpen + `<Actions><Method Name="` + name + `" Id="3" ObjectPathId="1"><Parameters>` + params + `</Parameters></Method></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`
	}
	tests := []struct {
		name     string
		body     string
		code     float64
		typeName string
		msg      string
	}{
		{name: "empty body", body: "", code: -2147024809, typeName: csomTypeInvalidQuery},
		{name: "not XML", body: "hello", code: -2147024809, typeName: csomTypeInvalidQuery},
		{name: "unclosed element", body: reqOpen + "<Actions>", code: -2147024809, typeName: csomTypeInvalidQuery},
		{name: "wrong root", body: "<Foo/>", code: -2147024809, typeName: csomTypeInvalidQuery, msg: "root element"},
		{name: "unknown type id", body: reqOpen + `<Actions><ObjectPath Id="2" ObjectPathId="1" /></Actions><ObjectPaths><Constructor Id="1" TypeId="{00000000-0000-0000-0000-000000000001}" /></ObjectPaths></Request>`,
			code: -1, typeName: csomTypeServer, msg: "Cannot find stub for type"},
		{name: "unknown method", body: method("Frobnicate", ""), code: -1, typeName: csomTypeServer, msg: `"Frobnicate" does not exist`},
		{name: "unknown action", body: reqOpen + `<Actions><SetProperty Id="2" ObjectPathId="1" Name="X" /></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`,
			code: -1, msg: "SetProperty"},
		{name: "missing object path", body: reqOpen + `<Actions><ObjectPath Id="2" ObjectPathId="9" /></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`,
			code: -2147024809, msg: "does not exist"},
		{name: "object path cycle", body: reqOpen + `<Actions><ObjectPath Id="2" ObjectPathId="4" /></Actions><ObjectPaths><Method Id="4" ParentId="4" Name="GetImportProfilePropertyJobs" /></ObjectPaths></Request>`,
			code: -2147024809, msg: "refers to itself"},
		{name: "duplicate object path id", body: reqOpen + `<Actions /><ObjectPaths>` + tenantCtr + tenantCtr + `</ObjectPaths></Request>`,
			code: -2147024809, msg: "used twice"},
		{name: "identity path", body: reqOpen + `<Actions><ObjectPath Id="2" ObjectPathId="8" /></Actions><ObjectPaths><Identity Id="8" Name="abc" /></ObjectPaths></Request>`,
			code: -1, msg: "not supported"},
		{name: "method on a job", body: reqOpen + `<Actions><Method Name="QueueImportProfileProperties" Id="3" ObjectPathId="4" /></Actions><ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJobs" />` + tenantCtr + `</ObjectPaths></Request>`,
			code: -1, msg: "does not exist"},
		{name: "queue with 3 parameters", body: method("QueueImportProfileProperties", `<Parameter Type="Enum">1</Parameter><Parameter Type="String">IdName</Parameter><Parameter Type="Null" />`),
			code: -2147024809, msg: "4 parameters"},
		{name: "enum not a number", body: method("QueueImportProfileProperties", `<Parameter Type="Enum">x</Parameter><Parameter Type="String">IdName</Parameter><Parameter Type="Null" /><Parameter Type="String">u</Parameter>`),
			code: -2147024809, msg: "idType"},
		{name: "dictionary wrong type", body: method("QueueImportProfileProperties", `<Parameter Type="Enum">1</Parameter><Parameter Type="String">IdName</Parameter><Parameter Type="String">x</Parameter><Parameter Type="String">u</Parameter>`),
			code: -2147024809, msg: "Dictionary"},
		{name: "dictionary duplicate key", body: method("QueueImportProfileProperties", `<Parameter Type="Enum">1</Parameter><Parameter Type="String">IdName</Parameter><Parameter Type="Dictionary"><Property Name="A" Type="String">CostCenter</Property><Property Name="A" Type="String">CostCenter</Property></Parameter><Parameter Type="String">u</Parameter>`),
			code: -2147024809, msg: "twice"},
		{name: "bad guid", body: method("GetImportProfilePropertyJob", `<Parameter Type="Guid">nope</Parameter>`), code: -2147024809, msg: "jobId"},
		{name: "guid as number", body: method("DeleteImportProfilePropertiesJob", `<Parameter Type="Int32">1</Parameter>`), code: -2147024809, msg: "Guid"},
		{name: "delete without id", body: method("DeleteImportProfilePropertiesJob", ``), code: -2147024809, msg: "1 parameter"},
		{name: "jobs with parameter", body: method("GetImportProfilePropertyJobs", `<Parameter Type="Guid">`+guid+`</Parameter>`), code: -2147024809, msg: "no parameters"},
		{name: "action without id", body: reqOpen + `<Actions><ObjectPath ObjectPathId="1" /></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`,
			code: -2147024809, msg: "no Id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, manual)
			h, res, raw := csomCall(t, s, processQuery, tc.body)
			ei, _ := h["ErrorInfo"].(map[string]any)
			if ei == nil || len(res) != 0 {
				t.Fatalf("want only a header with ErrorInfo: %s", raw)
			}
			if ei["ErrorCode"] != tc.code {
				t.Errorf("ErrorCode %v, want %v (%s)", ei["ErrorCode"], tc.code, raw)
			}
			if tc.typeName != "" && ei["ErrorTypeName"] != tc.typeName {
				t.Errorf("ErrorTypeName %v, want %v", ei["ErrorTypeName"], tc.typeName)
			}
			if msg, _ := ei["ErrorMessage"].(string); !strings.Contains(msg, tc.msg) {
				t.Errorf("ErrorMessage %q, want %q in it", msg, tc.msg)
			}
		})
	}
}

func TestCSOMJobQueries(t *testing.T) {
	s := newTestServer(t, manual)
	seed(t, s)
	src := testBase + libPath + "/upa/a.json"
	id1 := queue(t, s, 1, [][2]string{{"CostCenter", "CostCenter"}}, src)
	id2 := queue(t, s, 2, nil, src)
	if err := s.AdvanceJob(id2); err != nil {
		t.Fatal(err)
	}

	t.Run("all jobs", func(t *testing.T) {
		body := reqOpen + `<Actions><ObjectPath Id="5" ObjectPathId="4" /><Query Id="6" ObjectPathId="4"><Query SelectAllProperties="true"><Properties /></Query><ChildItemQuery SelectAllProperties="true"><Properties /></ChildItemQuery></Query></Actions><ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJobs"><Parameters /></Method>` + tenantCtr + `</ObjectPaths></Request>`
		_, res, raw := csomCall(t, s, processQuery, body)
		if len(res) != 4 {
			t.Fatalf("response: %s", raw)
		}
		var coll struct {
			Type  string `json:"_ObjectType_"`
			Items []struct {
				JobID string
				State int
			} `json:"_Child_Items_"`
		}
		if err := json.Unmarshal(res[3], &coll); err != nil {
			t.Fatal(err)
		}
		if coll.Type != typeJobList || len(coll.Items) != 2 {
			t.Fatalf("collection: %s", res[3])
		}
		if coll.Items[0].JobID != "/Guid("+id1+")/" || coll.Items[0].State != stateSubmitted || coll.Items[1].State != stateProcessing {
			t.Errorf("items: %s", res[3])
		}
	})
	t.Run("selected properties", func(t *testing.T) {
		body := reqOpen + `<Actions><Query Id="6" ObjectPathId="4"><Query SelectAllProperties="false"><Properties><Property Name="State" ScalarProperty="true" /></Properties></Query></Query></Actions><ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJob"><Parameters><Parameter Type="Guid">` + id2 + `</Parameter></Parameters></Method>` + tenantCtr + `</ObjectPaths></Request>`
		_, res, raw := csomCall(t, s, processQuery, body)
		want := `{"_ObjectType_":"` + typeJobInfo + `","State":2}`
		if len(res) != 2 || string(res[1]) != want {
			t.Errorf("got %s, want %s", raw, want)
		}
	})
	t.Run("delete", func(t *testing.T) {
		del := func(id string) string {
			body := reqOpen + `<Actions><Method Name="DeleteImportProfilePropertiesJob" Id="3" ObjectPathId="1"><Parameters><Parameter Type="Guid">{` + id + `}</Parameter></Parameters></Method></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`
			_, res, raw := csomCall(t, s, processQuery, body)
			if len(res) != 2 {
				t.Fatalf("delete: %s", raw)
			}
			return string(res[1])
		}
		if got := del(id2); got != "false" {
			t.Errorf("deleting a started job = %s, want false", got)
		}
		if got := del(id1); got != "true" {
			t.Errorf("deleting a submitted job = %s, want true", got)
		}
		if got := del(id1); got != "false" {
			t.Errorf("deleting it again = %s, want false", got)
		}
		if _, ok := s.Job(id1); ok {
			t.Error("deleted job still listed")
		}
	})
	t.Run("tenant query", func(t *testing.T) {
		body := reqOpen + `<Actions><Query Id="2" ObjectPathId="1"><Query SelectAllProperties="true"><Properties /></Query></Query></Actions><ObjectPaths>` + tenantCtr + `</ObjectPaths></Request>`
		_, res, raw := csomCall(t, s, processQuery, body)
		if len(res) != 2 || string(res[1]) != `{"_ObjectType_":"`+typeTenant+`"}` {
			t.Errorf("tenant: %s", raw)
		}
	})
}

func TestCSOMTransport(t *testing.T) {
	s := newTestServer(t, manual)
	tests := []struct {
		name, method, target string
		status               int
	}{
		{"GET ProcessQuery", http.MethodGet, processQuery, http.StatusMethodNotAllowed},
		{"unknown site", http.MethodPost, "/sites/none" + processQuery, http.StatusNotFound},
		{"other root path", http.MethodPost, "/_vti_bin/other.svc", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if rec := do(t, s, tc.method, tc.target, "<Request/>"); rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
		})
	}
	t.Run("body too large", func(t *testing.T) {
		rec := do(t, s, http.MethodPost, processQuery, strings.Repeat(" ", maxCSOMBytes+1))
		if rec.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d", rec.Code)
		}
	})
}
