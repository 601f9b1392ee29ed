package spo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/profile"
)

const (
	csomPath = "_vti_bin/client.svc/ProcessQuery"
	// office365TenantTypeID is the CSOM type id of
	// Microsoft.Online.SharePoint.TenantManagement.Office365Tenant.
	office365TenantTypeID = "{e45fd516-a408-4ca4-b6dc-268e2f1f0f83}"
	csomRequestStart      = `<Request AddExpandoFieldTypeSuffix="true" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="profilesync" xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009">`
	tenantConstructor     = `<Constructor Id="1" TypeId="` + office365TenantTypeID + `" />`
	emptyGUID             = "00000000-0000-0000-0000-000000000000"
)

// ErrNoJobID is wrapped by QueueImport when SharePoint answers the queue
// call with the empty GUID. PnP treats that as "probably started"
// (pnp/powershell#2125); profilesync cannot poll such a job, so it is an
// error. Retrying may queue the file a second time.
var ErrNoJobID = errors.New("sharepoint returned the empty job id")

// QueueImport queues a bulk profile import of the file at sourceURI
// (Office365Tenant.QueueImportProfileProperties) and returns the job id.
// propertyMap maps the file's property names to user profile property names.
func (c *Client) QueueImport(ctx context.Context, idType profile.IDType, idProperty string, propertyMap map[string]string, sourceURI string) (string, error) {
	body, err := queueXML(idType, idProperty, propertyMap, sourceURI)
	if err != nil {
		return "", fmt.Errorf("queueing profile import: %w", err)
	}
	res, err := c.processQuery(ctx, body, false)
	if err != nil {
		return "", fmt.Errorf("queueing profile import of %s: %w", sourceURI, err)
	}
	var s string
	if err := res.get(3, &s); err != nil {
		return "", fmt.Errorf("queueing profile import of %s: %w", sourceURI, err)
	}
	id, err := parseGUID(s)
	if err != nil {
		return "", fmt.Errorf("queueing profile import of %s: %w", sourceURI, err)
	}
	if id == emptyGUID {
		return "", fmt.Errorf("queueing profile import of %s: %w", sourceURI, ErrNoJobID)
	}
	return id, nil
}

// Job reports one import job (Office365Tenant.GetImportProfilePropertyJob).
// An unknown job gives an error matching fs.ErrNotExist.
func (c *Client) Job(ctx context.Context, jobID string) (profile.Job, error) {
	g, err := bracedGUID(jobID)
	if err != nil {
		return profile.Job{}, err
	}
	res, err := c.processQuery(ctx, jobXML(g), true)
	if err != nil {
		return profile.Job{}, fmt.Errorf("reading import job %s: %w", jobID, err)
	}
	var path struct {
		IsNull bool `json:"IsNull"`
	}
	if raw, ok := res[5]; ok && json.Unmarshal(raw, &path) == nil && path.IsNull {
		return profile.Job{}, fmt.Errorf("reading import job %s: %w", jobID, fs.ErrNotExist)
	}
	var info jobInfo
	if err := res.get(6, &info); err != nil {
		return profile.Job{}, fmt.Errorf("reading import job %s: %w", jobID, err)
	}
	j, err := info.job()
	if err != nil {
		return profile.Job{}, fmt.Errorf("reading import job %s: %w", jobID, err)
	}
	// Nothing public shows how SharePoint answers for a job id it does not
	// know [inferred]: a null object (IsNull, above), an empty or Guid.Empty
	// JobId, or an info it cannot fill (State 0 and no SourceUri, which the
	// simulator sends, echoing the id). A job SharePoint does know always
	// has the SourceUri it was queued with, so all three mean "unknown".
	if j.ID == "" || j.ID == emptyGUID || (j.State == profile.Unknown && j.SourceURI == "") {
		return profile.Job{}, fmt.Errorf("reading import job %s: %w", jobID, fs.ErrNotExist)
	}
	return j, nil
}

// Jobs lists the tenant's import jobs (GetImportProfilePropertyJobs).
func (c *Client) Jobs(ctx context.Context) ([]profile.Job, error) {
	res, err := c.processQuery(ctx, jobsXML(), true)
	if err != nil {
		return nil, fmt.Errorf("listing import jobs: %w", err)
	}
	var coll struct {
		Items []jobInfo `json:"_Child_Items_"`
	}
	if err := res.get(6, &coll); err != nil {
		return nil, fmt.Errorf("listing import jobs: %w", err)
	}
	jobs := make([]profile.Job, 0, len(coll.Items))
	for i, info := range coll.Items {
		j, err := info.job()
		if err != nil {
			return nil, fmt.Errorf("listing import jobs: item %d: %w", i, err)
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// DeleteJob removes a queued job that has not started
// (DeleteImportProfilePropertiesJob) and reports whether SharePoint did.
func (c *Client) DeleteJob(ctx context.Context, jobID string) (bool, error) {
	g, err := bracedGUID(jobID)
	if err != nil {
		return false, err
	}
	res, err := c.processQuery(ctx, deleteJobXML(g), true)
	if err != nil {
		return false, fmt.Errorf("deleting import job %s: %w", jobID, err)
	}
	var ok bool
	if err := res.get(3, &ok); err != nil {
		return false, fmt.Errorf("deleting import job %s: %w", jobID, err)
	}
	return ok, nil
}

// csomResults maps action ids to their results.
type csomResults map[int]json.RawMessage

func (r csomResults) get(id int, v any) error {
	raw, ok := r[id]
	if !ok {
		return fmt.Errorf("csom response has no result for action %d", id)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decoding csom result %d: %w", id, shortError(err))
	}
	return nil
}

// processQuery posts one CSOM request and splits the answer
// [header, id, result, id, result, …].
func (c *Client) processQuery(ctx context.Context, body string, idempotent bool) (csomResults, error) {
	resp, err := c.do(ctx, &request{
		method:      http.MethodPost,
		path:        csomPath,
		contentType: "text/xml; charset=utf-8",
		accept:      "*/*",
		body:        []byte(body),
		idempotent:  idempotent,
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON))
	if err != nil {
		return nil, &netError{fmt.Errorf("reading csom response: %w", err)}
	}
	return parseCSOM(b)
}

// maxCSOMResults bounds the results read from one answer: profilesync's
// requests have two or three actions, each answered by one id/result pair
// (decoding a long array of tiny values would cost ~50 bytes per byte).
const maxCSOMResults = 16

// parseCSOM decodes a ProcessQuery answer.
func parseCSOM(b []byte) (csomResults, error) {
	arr, err := csomArray(b)
	if err != nil {
		return nil, fmt.Errorf("decoding csom response: %w", shortError(err))
	}
	if len(arr) == 0 {
		return nil, errors.New("decoding csom response: empty array")
	}
	var hdr struct {
		ErrorInfo *struct {
			ErrorMessage       string `json:"ErrorMessage"`
			ErrorCode          int64  `json:"ErrorCode"`
			ErrorTypeName      string `json:"ErrorTypeName"`
			TraceCorrelationID string `json:"TraceCorrelationId"`
		} `json:"ErrorInfo"`
		TraceCorrelationID string `json:"TraceCorrelationId"`
	}
	if err := json.Unmarshal(arr[0], &hdr); err != nil {
		return nil, fmt.Errorf("decoding csom response header: %w", shortError(err))
	}
	if e := hdr.ErrorInfo; e != nil {
		return nil, &CSOMError{
			Message:       e.ErrorMessage,
			TypeName:      e.ErrorTypeName,
			Code:          e.ErrorCode,
			CorrelationID: cmp.Or(e.TraceCorrelationID, hdr.TraceCorrelationID),
		}
	}
	res := make(csomResults, (len(arr)-1)/2)
	for i := 1; i+1 < len(arr); i += 2 {
		id, err := strconv.Atoi(string(arr[i]))
		if err != nil {
			return nil, fmt.Errorf("decoding csom response: action id %s at index %d", clip(arr[i], 100), i)
		}
		res[id] = arr[i+1]
	}
	return res, nil
}

// csomArray splits the JSON array of an answer into its elements, the
// header and at most maxCSOMResults id/result pairs.
func csomArray(b []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(trimBOM(b)))
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	case tok != json.Delim('['):
		return nil, errors.New("the answer is not a JSON array")
	}
	var arr []json.RawMessage
	for dec.More() {
		if len(arr) == 1+2*maxCSOMResults {
			return nil, fmt.Errorf("more than %d results", maxCSOMResults)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the answer's array")
	}
	return arr, nil
}

// jobInfo is ImportProfilePropertiesJobInfo as CSOM serializes it.
type jobInfo struct {
	Error        json.RawMessage `json:"Error"`
	ErrorMessage *string         `json:"ErrorMessage"`
	JobID        string          `json:"JobId"`
	LogFolderURI *string         `json:"LogFolderUri"`
	SourceURI    *string         `json:"SourceUri"`
	State        json.RawMessage `json:"State"`
}

func (ji jobInfo) job() (profile.Job, error) {
	j := profile.Job{
		ErrorMessage: deref(ji.ErrorMessage),
		LogFolderURI: deref(ji.LogFolderURI),
		SourceURI:    deref(ji.SourceURI),
	}
	if ji.JobID != "" {
		id, err := parseGUID(ji.JobID)
		if err != nil {
			return profile.Job{}, err
		}
		j.ID = id
	}
	st, err := enumValue(ji.State, func(s string) (int, error) {
		v, err := profile.ParseJobState(s)
		return int(v), err
	})
	if err != nil {
		return profile.Job{}, fmt.Errorf("job state: %w", err)
	}
	j.State = profile.JobState(st)
	je, err := enumValue(ji.Error, parseJobError)
	if err != nil {
		return profile.Job{}, fmt.Errorf("job error: %w", err)
	}
	j.Error = profile.JobError(je)
	return j, nil
}

// enumValue reads a CSOM enum: a number (what SharePoint sends) or a name.
func enumValue(raw json.RawMessage, byName func(string) (int, error)) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if n, err := strconv.Atoi(string(raw)); err == nil { // a JSON integer
		return n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("unexpected value %s", clip(raw, 100))
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	if len(s) > 100 {
		return 0, fmt.Errorf("unexpected value %q", clip(s, 100))
	}
	return byName(s)
}

var jobErrors = []profile.JobError{
	profile.NoError, profile.InternalError, profile.DataFileNotExist, profile.DataFileNotInTenant,
	profile.DataFileTooBig, profile.InvalidDataFile, profile.ImportCompleteWithError,
}

func parseJobError(s string) (int, error) {
	i := slices.IndexFunc(jobErrors, func(e profile.JobError) bool { return strings.EqualFold(e.String(), s) })
	if i < 0 {
		return 0, fmt.Errorf("unknown job error %q", s)
	}
	return int(jobErrors[i]), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// parseGUID reads a CSOM Guid ("/Guid(…)/" once JSON has unescaped "\/")
// or a bare one, and returns it lower-case with dashes.
func parseGUID(s string) (string, error) {
	in := s
	if strings.HasPrefix(s, "/Guid(") && strings.HasSuffix(s, ")/") {
		s = s[len("/Guid(") : len(s)-len(")/")]
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", fmt.Errorf("csom guid %q: %w", clip(in, 100), err)
	}
	return u.String(), nil
}

// bracedGUID validates a job id and formats it as CSOM wants ("B" format).
func bracedGUID(id string) (string, error) {
	u, err := uuid.Parse(strings.TrimSpace(id))
	if err != nil {
		return "", fmt.Errorf("job id %q is not a GUID: %w", id, err)
	}
	return "{" + u.String() + "}", nil
}

// xmlText escapes s for XML character data and attribute values.
func xmlText(b *strings.Builder, s string) {
	_ = xml.EscapeText(b, []byte(s))
}

// queueXML builds the QueueImportProfileProperties request. The dictionary
// entries are sorted so the same input gives the same bytes.
func queueXML(idType profile.IDType, idProperty string, propertyMap map[string]string, sourceURI string) (string, error) {
	switch idType {
	case profile.Email, profile.CloudID, profile.PrincipalName:
	default:
		return "", fmt.Errorf("unsupported id type %v", idType)
	}
	if idProperty == "" {
		return "", errors.New("id property name is empty")
	}
	if len(propertyMap) == 0 {
		return "", errors.New("property map is empty")
	}
	if u, err := url.Parse(sourceURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("source URI %q is not an absolute http(s) URL", sourceURI)
	}
	var b strings.Builder
	b.WriteString(csomRequestStart)
	b.WriteString(`<Actions><ObjectPath Id="2" ObjectPathId="1" /><Method Name="QueueImportProfileProperties" Id="3" ObjectPathId="1"><Parameters>`)
	fmt.Fprintf(&b, `<Parameter Type="Enum">%d</Parameter>`, int(idType))
	b.WriteString(`<Parameter Type="String">`)
	xmlText(&b, idProperty)
	b.WriteString(`</Parameter><Parameter Type="Dictionary">`)
	for _, k := range slices.Sorted(maps.Keys(propertyMap)) {
		if k == "" || propertyMap[k] == "" {
			return "", fmt.Errorf("property map entry %q: %q has an empty name", k, propertyMap[k])
		}
		b.WriteString(`<Property Name="`)
		xmlText(&b, k)
		b.WriteString(`" Type="String">`)
		xmlText(&b, propertyMap[k])
		b.WriteString(`</Property>`)
	}
	b.WriteString(`</Parameter><Parameter Type="String">`)
	xmlText(&b, sourceURI)
	b.WriteString(`</Parameter></Parameters></Method></Actions><ObjectPaths>` + tenantConstructor + `</ObjectPaths></Request>`)
	return b.String(), nil
}

// jobXML builds GetImportProfilePropertyJob with a full property query.
func jobXML(bracedID string) string {
	return csomRequestStart +
		`<Actions><ObjectPath Id="5" ObjectPathId="4" /><Query Id="6" ObjectPathId="4"><Query SelectAllProperties="true"><Properties /></Query></Query></Actions>` +
		`<ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJob"><Parameters><Parameter Type="Guid">` + bracedID +
		`</Parameter></Parameters></Method>` + tenantConstructor + `</ObjectPaths></Request>`
}

// jobsXML builds GetImportProfilePropertyJobs, loading every item.
func jobsXML() string {
	return csomRequestStart +
		`<Actions><ObjectPath Id="5" ObjectPathId="4" /><Query Id="6" ObjectPathId="4"><Query SelectAllProperties="true"><Properties /></Query><ChildItemQuery SelectAllProperties="true"><Properties /></ChildItemQuery></Query></Actions>` +
		`<ObjectPaths><Method Id="4" ParentId="1" Name="GetImportProfilePropertyJobs"><Parameters /></Method>` + tenantConstructor + `</ObjectPaths></Request>`
}

// deleteJobXML builds DeleteImportProfilePropertiesJob.
func deleteJobXML(bracedID string) string {
	return csomRequestStart +
		`<Actions><ObjectPath Id="2" ObjectPathId="1" /><Method Name="DeleteImportProfilePropertiesJob" Id="3" ObjectPathId="1"><Parameters><Parameter Type="Guid">` + bracedID +
		`</Parameter></Parameters></Method></Actions><ObjectPaths>` + tenantConstructor + `</ObjectPaths></Request>`
}
