package simauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRequire(t *testing.T) {
	clk := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := New(clk.now)
	other := New(clk.now)
	const graphOrigin, spoOrigin = "http://127.0.0.1:8370", "http://127.0.0.1:8371"
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	graph := m.Require(Graph, graphOrigin, "https://graph.microsoft.com", GraphAppID)(ok)
	spo := m.Require(SharePoint, spoOrigin, SPOAppID)(ok)
	expired := m.Mint(Claims{Aud: graphOrigin, Exp: clk.t.Add(-time.Minute).Unix()})
	secret := m.Mint(Claims{Aud: spoOrigin, AppIDACR: "1"})
	tests := []struct {
		name    string
		h       http.Handler
		auth    string
		status  int
		message string // Graph error.message or SPO error_description
	}{
		{"graph missing", graph, "", 401, "Access token is empty."},
		{"graph not bearer", graph, "Basic abc", 401, "Access token is empty."},
		{"graph malformed", graph, "Bearer abc", 401, "CompactToken parsing failed with error code: 80049217"},
		{"graph foreign key", graph, "Bearer " + other.TokenFor(graphOrigin), 401, "Access token validation failure."},
		{"graph expired", graph, "Bearer " + expired, 401, "Lifetime validation failed, the token is expired."},
		{"graph spo token", graph, "Bearer " + m.TokenFor(spoOrigin), 401, "Access token validation failure. Invalid audience."},
		{"graph ok origin scope", graph, "Bearer " + m.TokenFor(graphOrigin+"/"), 418, ""},
		{"graph ok public", graph, "bearer " + m.TokenFor("https://graph.microsoft.com"), 418, ""},
		{"graph ok app id", graph, "Bearer " + m.TokenFor(GraphAppID), 418, ""},
		{"spo missing", spo, "", 401, "Invalid issuer or signature."},
		{"spo graph token", spo, "Bearer " + m.TokenFor(graphOrigin), 401, "Invalid issuer or signature."},
		{"spo secret token", spo, "Bearer " + secret, 401, "Unsupported app only token."},
		{"spo ok", spo, "Bearer " + m.TokenFor(spoOrigin), 418, ""},
		{"spo ok app id", spo, "Bearer " + m.TokenFor(SPOAppID), 418, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1.0/users", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			r.Header.Set("client-request-id", "cid-1")
			w := httptest.NewRecorder()
			tc.h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.status != 401 {
				return
			}
			if !strings.Contains(w.Header().Get("WWW-Authenticate"), "client_id=") {
				t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
			}
			var body struct {
				Error *struct {
					Code       string
					Message    string
					InnerError map[string]string
				}
				ErrorDescription string `json:"error_description"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			got := body.ErrorDescription
			if body.Error != nil {
				got = body.Error.Message
				if body.Error.Code != "InvalidAuthenticationToken" || body.Error.InnerError["client-request-id"] != "cid-1" ||
					body.Error.InnerError["request-id"] == "" || body.Error.InnerError["date"] == "" {
					t.Errorf("graph error = %+v", body.Error)
				}
			}
			if got != tc.message {
				t.Errorf("message = %q, want %q", got, tc.message)
			}
		})
	}
}

func TestMSIHandler(t *testing.T) {
	clk := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := New(clk.now)
	h := m.MSIHandler("s3cret")
	tests := []struct {
		name   string
		method string
		query  string
		header string // header name
		value  string
		status int
	}{
		{"ok", "GET", "api-version=2019-08-01&resource=http://127.0.0.1:1", "X-IDENTITY-HEADER", "s3cret", 200},
		{"lowercase header", "GET", "api-version=2019-08-01&resource=r&client_id=abc", "x-identity-header", "s3cret", 200},
		{"missing header", "GET", "api-version=2019-08-01&resource=r", "", "", 401},
		{"wrong header", "GET", "api-version=2019-08-01&resource=r", "X-IDENTITY-HEADER", "nope", 401},
		{"no resource", "GET", "api-version=2019-08-01", "X-IDENTITY-HEADER", "s3cret", 400},
		{"no api version", "GET", "resource=r", "X-IDENTITY-HEADER", "s3cret", 400},
		{"post", "POST", "api-version=2019-08-01&resource=r", "X-IDENTITY-HEADER", "s3cret", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/msi/token?"+tc.query, nil)
			if tc.header != "" {
				r.Header[tc.header] = []string{tc.value} // as sent, not canonicalised
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				return
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			q := r.URL.Query()
			if body["resource"] != q.Get("resource") || body["token_type"] != "Bearer" || body["client_id"] != q.Get("client_id") {
				t.Errorf("body = %v", body)
			}
			if want := "1735776000"; body["expires_on"] != want {
				t.Errorf("expires_on = %s, want %s", body["expires_on"], want)
			}
			c, err := m.Parse(body["access_token"])
			if err != nil {
				t.Fatal(err)
			}
			if c.Aud != q.Get("resource") || c.AppIDACR != "2" || len(c.Roles) == 0 {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}

func TestManagedIdentityCredential(t *testing.T) {
	m := New(nil)
	srv := httptest.NewServer(m.MSIHandler("hdr-value"))
	defer srv.Close()
	t.Setenv("IDENTITY_ENDPOINT", srv.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "hdr-value")
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const origin = "http://127.0.0.1:8370"
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{origin + "/.default"}})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	c, err := m.Parse(tok.Token)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if NormalizeAudience(c.Aud) != origin {
		t.Errorf("aud = %q, want %q", c.Aud, origin)
	}
	if d := time.Until(tok.ExpiresOn); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("expires in %v", d)
	}
}
