package faults

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMiddleware(t *testing.T) {
	tests := []struct {
		name       string
		rule       Rule
		origin     string
		method     string
		target     string
		wantStatus []int // statuses of three successive requests
		wantBody   string
		wantSlept  time.Duration
	}{
		{"graph 429 twice", Rule{Origin: Graph, Path: "^/v1.0/users", Status: 429, RetryAfter: 3, Count: 2},
			Graph, "GET", "/v1.0/users", []int{429, 429, 200}, `"code":"TooManyRequests"`, 0},
		{"other origin untouched", Rule{Origin: SPO, Status: 503}, Graph, "GET", "/v1.0/users", []int{200, 200, 200}, "", 0},
		{"method mismatch", Rule{Method: "POST", Status: 503}, Graph, "GET", "/v1.0/users", []int{200, 200, 200}, "", 0},
		{"path mismatch", Rule{Path: "^/_api/", Status: 503}, SPO, "GET", "/sites/x", []int{200, 200, 200}, "", 0},
		{"query match", Rule{Query: `\$deltatoken=`, Status: 504, Count: 1}, Graph, "GET", "/v1.0/users/delta?%24deltatoken=abc",
			[]int{504, 200, 200}, `"code":"gatewayTimeout"`, 0},
		{"spo 503 shape", Rule{Origin: SPO, Status: 503, RetryAfter: 1}, SPO, "POST", "/_vti_bin/client.svc/ProcessQuery",
			[]int{503, 503, 503}, `"odata.error"`, 0},
		{"custom code", Rule{Status: 400, Code: "Directory_ExpiredPageToken", Message: "expired", Count: 1}, Graph, "GET", "/v1.0/users",
			[]int{400, 200, 200}, `"code":"Directory_ExpiredPageToken"`, 0},
		{"slow answer", Rule{Delay: Duration(2 * time.Second), Count: 1}, Graph, "GET", "/v1.0/users", []int{200, 200, 200}, "", 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSet()
			var slept time.Duration
			s.Sleep = func(_ context.Context, d time.Duration) error { slept += d; return nil }
			if err := s.Add(tc.rule); err != nil {
				t.Fatal(err)
			}
			h := s.Middleware(tc.origin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			for i, want := range tc.wantStatus {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.target, nil))
				if w.Code != want {
					t.Fatalf("request %d: status %d, want %d", i, w.Code, want)
				}
				if i == 0 && tc.wantBody != "" && !strings.Contains(w.Body.String(), tc.wantBody) {
					t.Errorf("body %s lacks %s", w.Body, tc.wantBody)
				}
				if i == 0 && tc.rule.RetryAfter > 0 && w.Header().Get("Retry-After") != "3" && w.Header().Get("Retry-After") != "1" {
					t.Errorf("Retry-After = %q", w.Header().Get("Retry-After"))
				}
				if i == 0 && w.Code >= 400 && !json.Valid(w.Body.Bytes()) {
					t.Errorf("error body is not JSON: %s", w.Body)
				}
			}
			if slept != tc.wantSlept {
				t.Errorf("slept %v, want %v", slept, tc.wantSlept)
			}
			if rs := s.Rules(); rs[0].Count > 0 && rs[0].Hits != rs[0].Count && tc.wantStatus[0] != 200 {
				t.Errorf("hits = %d", rs[0].Hits)
			}
		})
	}
}

func TestDropClosesConnection(t *testing.T) {
	s := NewSet()
	if err := s.Add(Rule{Drop: true, Count: 1}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Middleware(Graph, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	if _, err := client.Get(srv.URL + "/v1.0/users"); err == nil {
		t.Fatal("first request succeeded, want a dropped connection")
	}
	resp, err := client.Get(srv.URL + "/v1.0/users")
	if err != nil {
		t.Fatalf("second request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("second status = %d", resp.StatusCode)
	}
}

func TestInvalidRules(t *testing.T) {
	tests := []Rule{
		{Origin: "exchange"},
		{Status: 200},
		{Path: "("},
		{Query: "["},
		{Drop: true, Status: 503},
		{Count: -1},
		{Redirect: "http://127.0.0.1:1", Status: 503},
		{Redirect: "http://127.0.0.1:1/path"},
		{LinkOrigin: "not a url"},
	}
	s := NewSet()
	for _, r := range tests {
		if err := s.Add(r); err == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
	if err := s.Replace([]Rule{{Status: 503}, {Status: 1}}); err == nil {
		t.Error("Replace accepted an invalid rule")
	}
	if len(s.Rules()) != 0 {
		t.Errorf("rules = %v", s.Rules())
	}
}

func TestPageDelayAndDurationJSON(t *testing.T) {
	s := NewSet()
	var slept time.Duration
	s.Sleep = func(_ context.Context, d time.Duration) error { slept += d; return nil }
	if err := s.PageDelay(context.Background()); err != nil || slept != 0 {
		t.Fatalf("no latency: slept %v, err %v", slept, err)
	}
	s.SetPageLatency(150 * time.Millisecond)
	_ = s.PageDelay(context.Background())
	if slept != 150*time.Millisecond {
		t.Errorf("slept %v", slept)
	}
	s.Sleep = sleep
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.SetPageLatency(time.Hour)
	if err := s.PageDelay(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait err = %v", err)
	}
	var r Rule
	if err := json.Unmarshal([]byte(`{"delay":"1.5s"}`), &r); err != nil || time.Duration(r.Delay) != 1500*time.Millisecond {
		t.Errorf("delay = %v, err %v", r.Delay, err)
	}
	if err := json.Unmarshal([]byte(`{"delay":5}`), &r); err == nil {
		t.Error("numeric delay accepted")
	}
	b, _ := json.Marshal(Rule{Delay: Duration(time.Second)})
	if !strings.Contains(string(b), `"delay":"1s"`) {
		t.Errorf("marshal = %s", b)
	}
}

func TestTruncateCutsTheBody(t *testing.T) {
	s := NewSet()
	if err := s.Add(Rule{Truncate: true, Count: 1}); err != nil {
		t.Fatal(err)
	}
	const page = `{"value":[{"id":"1"},{"id":"2"}],"@odata.deltaLink":"x"}`
	srv := httptest.NewServer(s.Middleware(Graph, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, page)
	})))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(srv.URL + "/v1.0/users/delta")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || resp.StatusCode != 200 || string(body) != page[:len(page)/2] {
		t.Errorf("truncated answer: %d %q %v; want 200, half the page and a read error", resp.StatusCode, body, err)
	}
	resp, err = client.Get(srv.URL + "/v1.0/users/delta")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != page {
		t.Errorf("second answer %q, want the whole page", body)
	}
	if err := s.Add(Rule{Truncate: true, Drop: true}); err == nil {
		t.Error("truncate with drop accepted")
	}
}

func TestRedirectAndLinkOrigin(t *testing.T) {
	s := NewSet()
	if err := s.Add(Rule{Origin: Graph, Path: "^/v1.0/users$", Redirect: "http://127.0.0.1:9", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(Rule{Origin: Graph, Path: "^/v1.0/users/delta$", LinkOrigin: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	page := `{"value":[],"@odata.nextLink":"http://127.0.0.1:8080/v1.0/users/delta?$skiptoken=a","@odata.deltaLink" : "https://graph.example/v1.0/x"}`
	h := s.Middleware(Graph, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, page)
	}))

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1.0/users?$top=5", nil))
	if w.Code != http.StatusTemporaryRedirect || w.Header().Get("Location") != "http://127.0.0.1:9/v1.0/users?$top=5" {
		t.Errorf("redirect: %d, Location %q", w.Code, w.Header().Get("Location"))
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1.0/users?$top=5", nil))
	if w.Code != 200 || w.Body.String() != page {
		t.Errorf("after its count the redirect rule still applies: %d %s", w.Code, w.Body)
	}

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1.0/users/delta", nil))
	want := `{"value":[],"@odata.nextLink":"http://127.0.0.1:9/v1.0/users/delta?$skiptoken=a","@odata.deltaLink" : "http://127.0.0.1:9/v1.0/x"}`
	if w.Code != 200 || w.Body.String() != want || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("moved links: %d %q\n got %s\nwant %s", w.Code, w.Header().Get("Content-Type"), w.Body, want)
	}
}
