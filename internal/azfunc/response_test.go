package azfunc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// envelope is the host's view of a response body.
type envelope struct {
	Outputs     map[string]any
	Logs        []string
	ReturnValue any
}

// invokeHandler posts payload to Handler(fn) as the host would and returns
// the recorded answer.
func invokeHandler(t testing.TB, log *slog.Logger, fn func(context.Context, *Request) (*Response, error), payload string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/ImportStatus", strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "5c7f3a10-0000-4000-8000-000000000001")
	rec := httptest.NewRecorder()
	Handler(log, fn).ServeHTTP(rec, req)
	return rec
}

// checkEnvelope asserts what the host requires of every answer: JSON
// Content-Type and a non-empty JSON object body with Outputs {} and Logs [].
func checkEnvelope(t *testing.T, rec *httptest.ResponseRecorder) envelope {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	body := rec.Body.Bytes()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	for _, k := range []string{"Outputs", "Logs", "ReturnValue"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("body %s lacks %q", body, k)
		}
	}
	if !bytes.HasPrefix(raw["Outputs"], []byte("{")) || !bytes.HasPrefix(raw["Logs"], []byte("[")) {
		t.Errorf("Outputs/Logs = %s/%s, want an object and an array", raw["Outputs"], raw["Logs"])
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

const queuePayload = `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"1"}}`

func TestHandler(t *testing.T) {
	errBoom := errors.New("spo unavailable")
	tests := []struct {
		name       string
		payload    string
		fn         func(context.Context, *Request) (*Response, error)
		wantStatus int
		wantLogs   []string // substrings, one per Logs line, in order
		wantOut    map[string]any
		wantReturn any
	}{
		{
			name:       "nil response",
			payload:    queuePayload,
			fn:         func(context.Context, *Request) (*Response, error) { return nil, nil },
			wantStatus: 200,
		},
		{
			name:    "outputs, logs and return value",
			payload: queuePayload,
			fn: func(_ context.Context, req *Request) (*Response, error) {
				var m jobMsg
				if err := req.Bind("msg", &m); err != nil {
					return nil, err
				}
				resp := &Response{Outputs: map[string]any{"next": map[string]any{"jobId": m.JobID}}, ReturnValue: map[string]any{"ok": true}}
				resp.Log("job %s attempt %d", m.JobID, m.Attempt)
				return resp, nil
			},
			wantStatus: 200,
			wantLogs:   []string{"job j-42 attempt 3"},
			wantOut:    map[string]any{"next": map[string]any{"jobId": "j-42"}},
			wantReturn: map[string]any{"ok": true},
		},
		{
			name:       "error is a failure",
			payload:    queuePayload,
			fn:         func(context.Context, *Request) (*Response, error) { return nil, fmt.Errorf("reading job: %w", errBoom) },
			wantStatus: 500,
			wantLogs:   []string{"reading job: spo unavailable"},
		},
		{
			name:    "error keeps earlier log lines",
			payload: queuePayload,
			fn: func(context.Context, *Request) (*Response, error) {
				return &Response{Logs: []string{"step 1 done"}}, errBoom
			},
			wantStatus: 500,
			wantLogs:   []string{"step 1 done", "spo unavailable"},
		},
		{
			name:    "ErrDrop is answered 200",
			payload: queuePayload,
			fn: func(context.Context, *Request) (*Response, error) {
				return nil, fmt.Errorf("job j-42 unknown to SharePoint: %w", ErrDrop)
			},
			wantStatus: 200,
			wantLogs:   []string{"dropped, not retried: job j-42 unknown to SharePoint: message dropped"},
		},
		{
			name:       "panic is a failure",
			payload:    queuePayload,
			fn:         func(context.Context, *Request) (*Response, error) { panic("nil map") },
			wantStatus: 500,
			wantLogs:   []string{"panic: nil map"},
		},
		{
			name:    "unencodable output is a failure",
			payload: queuePayload,
			fn: func(context.Context, *Request) (*Response, error) {
				return &Response{Outputs: map[string]any{"bad": func() {}}}, nil
			},
			wantStatus: 500,
			wantLogs:   []string{"encoding response envelope"},
		},
		{
			name:       "timer payload reaches fn",
			payload:    `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":true}},"Metadata":{}}`,
			wantStatus: 200,
			fn: func(_ context.Context, req *Request) (*Response, error) {
				var tm Timer
				if err := req.Bind("timer", &tm); err != nil {
					return nil, err
				}
				return &Response{Logs: []string{fmt.Sprintf("pastDue=%v", tm.IsPastDue)}}, nil
			},
			wantLogs: []string{"pastDue=true"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := invokeHandler(t, nil, tc.fn, tc.payload)
			if rec.Code != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", rec.Code, tc.wantStatus, rec.Body)
			}
			env := checkEnvelope(t, rec)
			if len(env.Logs) != len(tc.wantLogs) {
				t.Fatalf("Logs = %q, want %d lines containing %q", env.Logs, len(tc.wantLogs), tc.wantLogs)
			}
			for i, want := range tc.wantLogs {
				if !strings.Contains(env.Logs[i], want) {
					t.Errorf("Logs[%d] = %q, want it to contain %q", i, env.Logs[i], want)
				}
			}
			if tc.wantOut == nil {
				tc.wantOut = map[string]any{}
			}
			if tc.wantStatus == 200 && !reflect.DeepEqual(env.Outputs, tc.wantOut) {
				t.Errorf("Outputs = %v, want %v", env.Outputs, tc.wantOut)
			}
			if !reflect.DeepEqual(env.ReturnValue, tc.wantReturn) {
				t.Errorf("ReturnValue = %v, want %v", env.ReturnValue, tc.wantReturn)
			}
		})
	}
}

func TestHandlerMalformedPayload(t *testing.T) {
	payloads := []string{
		``,
		`   `,
		`not json`,
		`null`,
		`[]`,
		`"{}"`,
		`{"Data":5}`,
		`{"Data":{"msg":"x"}`,
		`{"Data":{},"Metadata":[]}`,
		`{"Data":{}} trailing`,
	}
	for _, p := range payloads {
		t.Run(p, func(t *testing.T) {
			called := false
			fn := func(context.Context, *Request) (*Response, error) { called = true; return nil, nil }
			rec := invokeHandler(t, nil, fn, p)
			if rec.Code != http.StatusInternalServerError {
				t.Errorf("status = %d, want 500", rec.Code)
			}
			if called {
				t.Error("fn was called with a malformed payload")
			}
			env := checkEnvelope(t, rec)
			if len(env.Logs) != 1 || !strings.HasPrefix(env.Logs[0], "decoding invocation payload") {
				t.Errorf("Logs = %q, want the decoding reason", env.Logs)
			}
		})
	}
}

func TestHandlerLogger(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	fn := func(ctx context.Context, req *Request) (*Response, error) {
		Logger(ctx).Info("polling job")
		return nil, errors.New("boom")
	}
	invokeHandler(t, log, fn, queuePayload)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2 (fn's and the failure):\n%s", len(lines), buf.String())
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["invocation"] != "5c7f3a10-0000-4000-8000-000000000001" || rec["function"] != "ImportStatus" {
			t.Errorf("line %d = %s, want invocation id and function name attributes", i, line)
		}
	}
	if !strings.Contains(lines[1], `"level":"ERROR"`) || !strings.Contains(lines[1], `"err":"boom"`) {
		t.Errorf("failure line = %s, want an ERROR with err=boom", lines[1])
	}
}

func TestLoggerWithoutHandler(t *testing.T) {
	if Logger(context.Background()) == nil {
		t.Fatal("Logger returned nil for a bare context")
	}
	l := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	if got := Logger(WithLogger(context.Background(), l)); got != l {
		t.Error("Logger did not return the logger set by WithLogger")
	}
}

// TestEnvelopeMarshal checks the envelope shape against the host fixtures
// S1 and S3 (functions-custom-handler.md §6) and the empty case.
func TestEnvelopeMarshal(t *testing.T) {
	tests := []struct {
		name string
		resp Response
		want string
	}{
		{"empty", Response{}, `{"Outputs":{},"Logs":[],"ReturnValue":null}`},
		{
			"S1",
			Response{ReturnValue: "Hello return", Outputs: map[string]any{"output1": "output1Value", "output2": "output2Value"}, Logs: []string{"invocation log1", "invocation log2"}},
			`{"ReturnValue":"Hello return","Outputs":{"output1":"output1Value","output2":"output2Value"},"Logs":["invocation log1","invocation log2"]}`,
		},
		{
			"S3 via HTTPResponse",
			Response{Outputs: map[string]any{"res": HTTPResponse(201, "", []byte("my world"))}, Logs: []string{"invocation log1", "invocation log2"}},
			`{"ReturnValue":null,"Outputs":{"res":{"statusCode":201,"body":"my world"}},"Logs":["invocation log1","invocation log2"]}`,
		},
		{
			"HTTPResponse with content type",
			Response{Outputs: map[string]any{"res": HTTPResponse(404, "application/json", []byte(`{"error":"no such job"}`))}},
			`{"Outputs":{"res":{"statusCode":404,"headers":{"Content-Type":"application/json"},"body":"{\"error\":\"no such job\"}"}},"Logs":[],"ReturnValue":null}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []any{tc.resp, &tc.resp} {
				got, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				var g, w any
				if err := json.Unmarshal(got, &g); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(tc.want), &w); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("Marshal(%T) = %s, want %s", v, got, tc.want)
				}
			}
		})
	}
}

func TestLooksBase64(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"test", true},
		{"abcd1234", true},
		{"SGVsbG8=", true},
		{"", false},
		{"j-42", false},
		{"abc", false},
		{`{"jobId":"abcd1234"}`, false},
		{`[1,2]`, false},
	}
	for _, tc := range tests {
		if got := looksBase64(tc.s); got != tc.want {
			t.Errorf("looksBase64(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// TestHelpersAvoidBase64 guards the §2.2 hazard: the host base64-decodes any
// string output (other than http) that happens to be valid base64. No answer
// built by this package may contain such a string where the host would look.
func TestHelpersAvoidBase64(t *testing.T) {
	fns := map[string]func(context.Context, *Request) (*Response, error){
		"nil response": func(context.Context, *Request) (*Response, error) { return nil, nil },
		"drop":         func(context.Context, *Request) (*Response, error) { return nil, fmt.Errorf("test: %w", ErrDrop) },
		"http output": func(context.Context, *Request) (*Response, error) {
			return &Response{Outputs: map[string]any{"res": HTTPResponse(200, "text/plain", []byte("test"))}}, nil
		},
	}
	for name, fn := range fns {
		t.Run(name, func(t *testing.T) {
			env := checkEnvelope(t, invokeHandler(t, nil, fn, queuePayload))
			for k, v := range env.Outputs {
				if s, ok := v.(string); ok && looksBase64(s) {
					t.Errorf("Outputs[%q] = %q is valid base64", k, s)
				}
			}
			if s, ok := env.ReturnValue.(string); ok && looksBase64(s) {
				t.Errorf("ReturnValue = %q is valid base64", s)
			}
		})
	}
}

func TestHandlerWarnsOnBase64Output(t *testing.T) {
	tests := []struct {
		name string
		resp *Response
		want int // warnings
	}{
		{"job id as bare string", &Response{Outputs: map[string]any{"next": "abcd1234"}}, 1},
		{"return value", &Response{ReturnValue: "test"}, 1},
		{"JSON object string", &Response{Outputs: map[string]any{"next": `{"jobId":"abcd1234"}`}}, 0},
		{"object", &Response{Outputs: map[string]any{"next": map[string]string{"jobId": "abcd1234"}}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			rec := invokeHandler(t, log, func(context.Context, *Request) (*Response, error) { return tc.resp, nil }, queuePayload)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d", rec.Code)
			}
			if got := strings.Count(buf.String(), "level=WARN"); got != tc.want {
				t.Errorf("%d warnings, want %d:\n%s", got, tc.want, buf.String())
			}
		})
	}
}

func BenchmarkHandlerQueue(b *testing.B) {
	fn := func(_ context.Context, req *Request) (*Response, error) {
		m, err := req.Queue("msg")
		if err != nil {
			return nil, err
		}
		var j jobMsg
		if err := json.Unmarshal(m.Body, &j); err != nil {
			return nil, err
		}
		return &Response{Logs: []string{j.JobID}}, nil
	}
	h := Handler(nil, fn)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/ImportStatus", strings.NewReader(queuePayload))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
