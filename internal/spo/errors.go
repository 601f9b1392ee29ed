package spo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

// ResponseError is a non-2xx answer from SharePoint. A 404 matches
// fs.ErrNotExist under errors.Is.
type ResponseError struct {
	Method     string
	Path       string // decoded URL path
	StatusCode int
	// Code is SharePoint's error code, e.g.
	// "-2147024894, System.IO.FileNotFoundException"; often empty.
	Code string
	// Message is the odata.error message, the token error_description or
	// the start of a non-JSON body.
	Message string
	// Hint explains a well-known failure in operator terms; often empty.
	Hint string
}

// Error implements error.
func (e *ResponseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sharepoint %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Retryable reports whether SharePoint asked the caller to come back later.
func (e *ResponseError) Retryable() bool { return retryableStatus(e.StatusCode) }

// Is makes a 404 match fs.ErrNotExist.
func (e *ResponseError) Is(target error) bool {
	return target == fs.ErrNotExist && e.StatusCode == http.StatusNotFound
}

func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable ||
		code == http.StatusGatewayTimeout
}

// CSOMError is a failure reported inside a successful (HTTP 200) CSOM
// response: the ErrorInfo of the response header.
type CSOMError struct {
	Message       string
	TypeName      string // ErrorTypeName, e.g. "Microsoft.SharePoint.Client.ServerException"
	Code          int64  // ErrorCode, e.g. -2147024891 (access denied)
	CorrelationID string // TraceCorrelationId, for Microsoft support
}

// csomAccessDenied is E_ACCESSDENIED as CSOM reports it.
const csomAccessDenied = -2147024891

// Error implements error.
func (e *CSOMError) Error() string {
	s := fmt.Sprintf("sharepoint csom: %s (%s %d, correlation %s)", e.Message, e.TypeName, e.Code, e.CorrelationID)
	if e.Code == csomAccessDenied {
		s += " (hint: the bulk import API needs the SharePoint application permissions Sites.FullControl.All and User.ReadWrite.All)"
	}
	return s
}

// netError is a request that failed without an HTTP answer.
type netError struct{ err error }

func (e *netError) Error() string   { return e.err.Error() }
func (e *netError) Unwrap() error   { return e.err }
func (e *netError) Retryable() bool { return true }

// IsRetryable reports whether err is worth retrying later: SharePoint
// throttled (429/503/504) beyond the client's own retries, or the network
// failed before an answer arrived. For QueueImport a network failure is
// ambiguous (the job may have been queued); retrying then queues the same
// file twice, which imports the same values twice and is harmless.
func IsRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

// responseError builds a ResponseError from a non-2xx answer's body.
func responseError(method, path string, status int, body []byte) *ResponseError {
	e := &ResponseError{Method: method, Path: path, StatusCode: status}
	body = trimBOM(body)
	var doc struct {
		ODataError *odataError `json:"odata.error"`
		// "error" is an object in OData verbose and OData v4 answers and a
		// string in OAuth-style ones.
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
	}
	if json.Unmarshal(body, &doc) == nil {
		var oe *odataError
		switch {
		case doc.ODataError != nil:
			oe = doc.ODataError
		case len(doc.Error) > 0 && doc.Error[0] == '{':
			oe = new(odataError)
			if json.Unmarshal(doc.Error, oe) != nil {
				oe = nil
			}
		case len(doc.Error) > 0 && doc.Error[0] == '"':
			_ = json.Unmarshal(doc.Error, &e.Code)
		}
		if oe != nil {
			e.Code = oe.Code
			e.Message = oe.message()
		}
		if doc.ErrorDescription != "" {
			e.Message = doc.ErrorDescription
		}
	}
	if e.Message == "" && e.Code == "" {
		e.Message = snippet(body)
	}
	// SharePoint's are a line; what else answers may send a book.
	e.Code, e.Message = clip(e.Code, 200), clip(e.Message, 500)
	if status == http.StatusUnauthorized {
		switch m := strings.ToLower(e.Message); {
		case strings.Contains(m, "unsupported app only token"):
			e.Hint = "SharePoint needs a certificate or managed identity token, not a client secret"
		case strings.Contains(m, "invalid issuer or signature"):
			e.Hint = "the token was issued by another tenant or for another audience than this site"
		}
	}
	return e
}

type odataError struct {
	Code    string          `json:"code"`
	Message json.RawMessage `json:"message"` // {"lang":…,"value":…} (v3) or a string (v4)
}

func (o *odataError) message() string {
	var s string
	if json.Unmarshal(o.Message, &s) == nil {
		return s
	}
	var m struct {
		Value string `json:"value"`
	}
	_ = json.Unmarshal(o.Message, &m)
	return m.Value
}

// snippet returns the start of a non-JSON error body, on one line, in
// valid UTF-8 (it goes to logs and JSON records).
func snippet(b []byte) string {
	return clip(strings.ToValidUTF8(strings.Join(strings.Fields(string(b)), " "), "\uFFFD"), 200)
}

// clip shortens s to at most max bytes (the last ones an ellipsis) for an
// error message: a value in an answer can be megabytes long.
func clip[T ~string | ~[]byte](s T, max int) string {
	const more = "…"
	if len(s) <= max {
		return string(s)
	}
	return strings.ToValidUTF8(string(s[:max-len(more)]), "") + more
}

// shortError bounds the text of a decoding error: encoding/json quotes a
// mistyped number whole ("cannot unmarshal number 777… into …").
func shortError(err error) error {
	const max = 300
	if err == nil || len(err.Error()) <= max {
		return err
	}
	return &clippedError{msg: clip(err.Error(), max), err: err}
}

type clippedError struct {
	msg string
	err error
}

func (e *clippedError) Error() string { return e.msg }
func (e *clippedError) Unwrap() error { return e.err }
