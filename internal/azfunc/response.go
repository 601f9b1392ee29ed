package azfunc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
)

// Response is the envelope a handler returns to the host:
//
//	{"Outputs":{…},"Logs":[…],"ReturnValue":…}
//
// Outputs are keyed by output binding name. Each Logs line becomes an
// Information log of the invocation (only on 2xx; the host drops them on
// failure). ReturnValue goes to a "$return" binding if there is one.
//
// Base64 hazard (reference §2.2): for every output binding other than http,
// and for ReturnValue, the host tries to base64-decode a string value and, if
// that succeeds, binds the decoded bytes. "test" or a job id like "abcd1234"
// is silently turned into garbage. Put JSON objects or arrays (or strings
// starting with '{' or '[') in Outputs, never bare tokens. No helper in this
// package produces such strings, and Handler logs a warning when a function
// returns one.
type Response struct {
	Outputs     map[string]any
	Logs        []string
	ReturnValue any
}

// Log appends a formatted line to the response's Logs.
func (r *Response) Log(format string, args ...any) {
	r.Logs = append(r.Logs, fmt.Sprintf(format, args...))
}

// MarshalJSON writes the envelope with empty Outputs and Logs as {} and []
// rather than null.
func (r Response) MarshalJSON() ([]byte, error) {
	env := struct {
		Outputs     map[string]any `json:"Outputs"`
		Logs        []string       `json:"Logs"`
		ReturnValue any            `json:"ReturnValue"`
	}{r.Outputs, r.Logs, r.ReturnValue}
	if env.Outputs == nil {
		env.Outputs = map[string]any{}
	}
	if env.Logs == nil {
		env.Logs = []string{}
	}
	return json.Marshal(env)
}

// HTTPOutput is the value of an http output binding in payload mode (an HTTP
// function that is not forwarded because it has other bindings too). The host
// reads statusCode as a number or numeric string, stringifies each header
// value and writes a string body as it is.
type HTTPOutput struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       string            `json:"body"`
}

// HTTPResponse builds an http output binding value. A non-empty contentType
// is sent as the Content-Type header (the host would otherwise pick
// text/plain). The body must be text: invalid UTF-8 does not survive JSON.
// The http binding is exempt from the host's base64 decoding, so any body is
// safe. Put the result in Response.Outputs under the binding's name ("res")
// and answer the host 2xx: the desired status travels in StatusCode, because a
// non-2xx answer to the host fails the invocation and the caller gets a 500.
func HTTPResponse(status int, contentType string, body []byte) HTTPOutput {
	out := HTTPOutput{StatusCode: status, Body: string(body)}
	if contentType != "" {
		out.Headers = map[string]string{"Content-Type": contentType}
	}
	return out
}

// maxPayload bounds the invocation payload read from the host. Queue messages
// are at most 64 KB and timer payloads tiny; payload-mode HTTP bodies are the
// only large ones.
const maxPayload = 32 << 20

// Handler adapts fn to the custom-handler protocol, for a function the host
// calls as POST /<FunctionName> with a {Data, Metadata} payload.
//
//   - A payload that cannot be decoded is answered 500 (the reason is logged):
//     any non-2xx fails the invocation, and a 4xx would not be treated
//     differently by the host.
//   - fn's context carries a logger (see Logger) tagged with the function
//     name and the invocation id.
//   - On success the envelope is written with status 200; a nil *Response is
//     an empty envelope. The body is always a JSON object: an empty 2xx body
//     would leave the invocation hanging until functionTimeout.
//   - An error wrapping ErrDrop is answered 200 with a log line, so the host
//     deletes the message instead of retrying it into the poison queue.
//   - Any other error (or a panic) is answered 500 with the error text in
//     Logs: the host marks the invocation failed and, for queue triggers,
//     makes the message visible again after host.json's visibilityTimeout
//     until maxDequeueCount sends it to the poison queue.
//
// The response Content-Type is always application/json.
func Handler(log *slog.Logger, fn func(ctx context.Context, req *Request) (*Response, error)) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := log.With("function", strings.TrimPrefix(r.URL.Path, "/"), "invocation", InvocationID(r))
		req, err := readRequest(w, r)
		if err != nil {
			err = fmt.Errorf("decoding invocation payload: %w", err)
			l.Error("invocation payload rejected", "err", err)
			writeEnvelope(w, l, http.StatusInternalServerError, Response{Logs: []string{err.Error()}})
			return
		}
		got, err := invoke(WithLogger(r.Context(), l), l, fn, req)
		resp := &Response{}
		if got != nil {
			*resp = *got // Log lines added below must not change fn's value.
		}
		switch {
		case err == nil:
			warnBase64(l, resp)
			writeEnvelope(w, l, http.StatusOK, *resp)
		case errors.Is(err, ErrDrop):
			l.Warn("invocation dropped, not retried", "err", err)
			resp.Log("dropped, not retried: %v", err)
			writeEnvelope(w, l, http.StatusOK, *resp)
		default:
			l.Error("invocation failed", "err", err)
			resp.Log("failed: %v", err)
			writeEnvelope(w, l, http.StatusInternalServerError, *resp)
		}
	})
}

// readRequest decodes the host's payload; it must be a JSON object.
func readRequest(w http.ResponseWriter, r *http.Request) (*Request, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, errors.New("body is not a JSON object")
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	return &req, nil
}

// invoke calls fn, turning a panic into an error so the host gets a proper
// failure answer rather than a dropped connection.
func invoke(ctx context.Context, l *slog.Logger, fn func(context.Context, *Request) (*Response, error), req *Request) (resp *Response, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			l.Error("invocation panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return fn(ctx, req)
}

// writeEnvelope writes resp with status. If resp cannot be encoded the
// invocation fails: its outputs could not be delivered.
func writeEnvelope(w http.ResponseWriter, l *slog.Logger, status int, resp Response) {
	body, err := json.Marshal(resp)
	if err != nil {
		err = fmt.Errorf("encoding response envelope: %w", err)
		l.Error("invocation failed", "err", err)
		status = http.StatusInternalServerError
		body, _ = json.Marshal(Response{Logs: []string{err.Error()}}) // Strings always encode.
	}
	writeJSON(w, status, body)
}

// warnBase64 logs every top-level string output (or return value) that the
// host would base64-decode into bytes (see Response). The http binding is
// exempt on the host side but cannot be told apart here, so HTTPOutput
// values, which are objects, never trigger the warning.
func warnBase64(l *slog.Logger, resp *Response) {
	names := make([]string, 0, len(resp.Outputs))
	for name := range resp.Outputs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if s, ok := resp.Outputs[name].(string); ok && looksBase64(s) {
			l.Warn("output string is valid base64; the host will bind the decoded bytes", "output", name)
		}
	}
	if s, ok := resp.ReturnValue.(string); ok && looksBase64(s) {
		l.Warn("return value is valid base64; the host will bind the decoded bytes")
	}
}

// looksBase64 reports whether the host's Convert.FromBase64String would accept s.
func looksBase64(s string) bool {
	if s == "" || len(s)%4 != 0 {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil
}
