package graphsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const maxBatch = 20

type batchRequest struct {
	ID        string            `json:"id"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      json.RawMessage   `json:"body,omitempty"`
	DependsOn []string          `json:"dependsOn,omitempty"`
}

type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// batch serves POST /v1.0/$batch: up to 20 requests, run in order, each
// answered with its own status, headers and body.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Requests []batchRequest `json:"requests"`
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	if err != nil || json.Unmarshal(data, &in) != nil {
		badRequest("BadRequest", "Invalid batch payload format.").write(w, r)
		return
	}
	if len(in.Requests) == 0 {
		badRequest("BadRequest", "Invalid batch payload format: no requests.").write(w, r)
		return
	}
	if len(in.Requests) > maxBatch {
		badRequest("BadRequest", fmt.Sprintf("The number of requests in the batch (%d) exceeds the limit of %d.", len(in.Requests), maxBatch)).write(w, r)
		return
	}
	seen := map[string]bool{}
	for i := range in.Requests {
		// msgraph-sdk-go sends "body": null on GET items; null is no body.
		if string(bytes.TrimSpace(in.Requests[i].Body)) == "null" {
			in.Requests[i].Body = nil
		}
	}
	for _, br := range in.Requests {
		switch {
		case br.ID == "" || br.Method == "" || br.URL == "":
			badRequest("BadRequest", "Invalid batch payload format: each request needs id, method and url.").write(w, r)
			return
		case seen[br.ID]:
			badRequest("BadRequest", fmt.Sprintf("Batch request contains duplicate request id '%s'.", br.ID)).write(w, r)
			return
		case len(br.Body) > 0 && contentType(br.Headers) == "":
			badRequest("BadRequest", fmt.Sprintf("Request '%s': a request with a body must have a Content-Type header.", br.ID)).write(w, r)
			return
		}
		seen[br.ID] = true
	}
	out := make([]batchResponse, 0, len(in.Requests))
	for _, br := range in.Requests {
		out = append(out, s.runItem(r, br))
	}
	b, err := json.Marshal(map[string]any{"responses": out})
	if err != nil {
		graphError(w, r, http.StatusInternalServerError, "generalException", "Could not encode the batch response.")
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func contentType(h map[string]string) string {
	for k, v := range h {
		if strings.EqualFold(k, "Content-Type") {
			return v
		}
	}
	return ""
}

// itemPath turns an item url ("/users/x", "users/x" or an absolute Graph
// URL) into a request URI under /v1.0.
func itemPath(raw string) (string, bool) {
	if strings.HasPrefix(raw, "http://") || strings.HasPrefix(raw, "https://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", false
		}
		raw = strings.TrimPrefix(u.RequestURI(), "/v1.0")
	}
	if !strings.HasPrefix(raw, "/") {
		raw = "/" + raw
	}
	if strings.HasPrefix(strings.ToLower(raw), "/$batch") {
		return "", false
	}
	return "/v1.0" + raw, true
}

func (s *Server) runItem(outer *http.Request, br batchRequest) batchResponse {
	path, ok := itemPath(br.URL)
	if !ok {
		return itemError(br.ID, http.StatusBadRequest, "BadRequest", "Invalid request URL in batch: '"+br.URL+"'.")
	}
	ctx := context.WithValue(outer.Context(), batchItemKey{}, true)
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(br.Method), path, bytes.NewReader(br.Body))
	if err != nil {
		return itemError(br.ID, http.StatusBadRequest, "BadRequest", "Invalid request URL in batch: '"+br.URL+"'.")
	}
	req.RemoteAddr = outer.RemoteAddr
	req.Host = outer.Host
	for k, v := range br.Headers {
		req.Header.Set(k, v)
	}
	rec := &recorder{header: http.Header{}}
	// Time the item spends outside serveAPI goes to its wrapper (faults:
	// delays, injected errors) and is neither busy nor active time.
	m := meterOf(outer)
	start := time.Now()
	if m != nil {
		m.itemInner = 0
		s.stats.leave()
	}
	s.item.ServeHTTP(rec, req)
	if m != nil {
		s.stats.enter()
		m.batchItems++
		m.excluded += max(time.Since(start)-m.itemInner, 0)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	resp := batchResponse{ID: br.ID, Status: rec.status, Headers: map[string]string{}}
	for _, k := range []string{"Content-Type", "Retry-After", "Location", "Preference-Applied"} {
		if v := rec.header.Get(k); v != "" {
			resp.Headers[k] = v
		}
	}
	body := bytes.TrimSpace(rec.body.Bytes())
	switch {
	case len(body) == 0:
	case json.Valid(body):
		resp.Body = body
	default:
		resp.Body, _ = json.Marshal(string(body)) // strings always marshal
	}
	return resp
}

func itemError(id string, status int, code, msg string) batchResponse {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg}})
	return batchResponse{ID: id, Status: status, Headers: map[string]string{"Content-Type": "application/json"}, Body: body}
}

// recorder captures one batch item's answer. It cannot be hijacked, so a
// "drop connection" fault aborts the whole batch, as the real connection
// would be lost.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
