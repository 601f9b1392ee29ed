package azfunc

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestListenAddr(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string // substring of the error
	}{
		{"custom handler port", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "40123"}, "127.0.0.1:40123", ""},
		{"legacy port", map[string]string{"FUNCTIONS_HTTPWORKER_PORT": "40124"}, "127.0.0.1:40124", ""},
		{"both, new name wins", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "FUNCTIONS_HTTPWORKER_PORT": "2"}, "127.0.0.1:1", ""},
		{"spaces trimmed", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": " 8080\n"}, "127.0.0.1:8080", ""},
		{"port 0 for tests", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "0"}, "127.0.0.1:0", ""},
		{"unset", nil, "", "FUNCTIONS_CUSTOMHANDLER_PORT is not set"},
		{"not a number", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "http"}, "", "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number"},
		{"too large", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "65536"}, "", "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number"},
		{"negative legacy", map[string]string{"FUNCTIONS_HTTPWORKER_PORT": "-1"}, "", "FUNCTIONS_HTTPWORKER_PORT must be a port number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ListenAddr(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ListenAddr error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ListenAddr = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPing(t *testing.T) {
	tests := []struct {
		method, path string
		wantStatus   int
		wantBody     string
	}{
		{http.MethodGet, "/", 200, "{}"},
		{http.MethodHead, "/", 200, ""},
		{http.MethodPost, "/", 405, `{"error":"method not allowed"}`},
		{http.MethodPost, "/NoSuchFunction", 404, `{"error":"no function at this path"}`},
		{http.MethodGet, "/favicon.ico", 404, `{"error":"no function at this path"}`},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			// A real server, so HEAD and Content-Length behave as on the wire.
			srv := httptest.NewServer(Ping())
			defer srv.Close()
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestInvocationID(t *testing.T) {
	tests := []struct {
		header, want string
	}{
		{"0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"},
		{"", ""},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodPost, "/SyncTimer", nil)
		if tc.header != "" {
			r.Header.Set("X-Azure-Functions-InvocationId", tc.header)
		}
		if got := InvocationID(r); got != tc.want {
			t.Errorf("InvocationID = %q, want %q", got, tc.want)
		}
	}
}
