package m365sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

func start(t *testing.T) *Sim {
	t.Helper()
	s, err := Start(Options{Users: 50, Seed: 1, FileDir: t.TempDir(), IdentityHeader: "hdr"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

var client = &http.Client{Timeout: 30 * time.Second}

type call struct {
	method, url, token, body string
	hdr                      map[string]string
}

func do(t *testing.T, c call) (int, http.Header, map[string]any) {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, c.url, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, resp.Header, m
}

func TestEnvAndManagedIdentity(t *testing.T) {
	s := start(t)
	env := strings.Join(s.Env(), "\n")
	for _, want := range []string{"GRAPH_ENDPOINT=" + s.GraphURL, "SPO_SITE_URL=" + s.SPOURL + "/sites/profilesync",
		"IDENTITY_ENDPOINT=" + s.GraphURL + "/msi/token", "IDENTITY_HEADER=hdr"} {
		if !strings.Contains(env, want) {
			t.Errorf("Env lacks %s:\n%s", want, env)
		}
	}
	for _, origin := range []string{s.GraphURL, s.SPOURL} {
		if st, _, m := do(t, call{method: "GET", url: origin + "/_sim/env"}); st != 200 || m["IDENTITY_HEADER"] != "hdr" {
			t.Errorf("%s /_sim/env: %d %v", origin, st, m)
		}
		if st, _, m := do(t, call{method: "GET", url: origin + "/_sim/health"}); st != 200 || m["users"] != float64(50) {
			t.Errorf("%s /_sim/health: %d %v", origin, st, m)
		}
	}

	t.Setenv("IDENTITY_ENDPOINT", s.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", s.IdentityHeader)
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	graphTok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{s.GraphURL + "/.default"}})
	if err != nil {
		t.Fatalf("graph token: %v", err)
	}
	spoTok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{s.SPOURL + "/.default"}})
	if err != nil {
		t.Fatalf("spo token: %v", err)
	}
	tests := []struct {
		name   string
		c      call
		status int
		check  func(m map[string]any, h http.Header) bool
	}{
		{"graph ok", call{method: "GET", url: s.GraphURL + "/v1.0/users?$top=5", token: graphTok.Token}, 200,
			func(m map[string]any, _ http.Header) bool { return len(m["value"].([]any)) == 5 }},
		{"graph no token", call{method: "GET", url: s.GraphURL + "/v1.0/users"}, 401,
			func(m map[string]any, _ http.Header) bool { return errMsg(m) == "Access token is empty." }},
		{"graph with spo token", call{method: "GET", url: s.GraphURL + "/v1.0/users", token: spoTok.Token}, 401,
			func(m map[string]any, _ http.Header) bool {
				return errMsg(m) == "Access token validation failure. Invalid audience."
			}},
		{"spo with graph token", call{method: "GET", url: s.SiteURL + "/_api/web", token: graphTok.Token}, 401,
			func(m map[string]any, h http.Header) bool {
				return m["error_description"] == "Invalid issuer or signature." && strings.Contains(h.Get("WWW-Authenticate"), "00000003-0000-0ff1-ce00-000000000000")
			}},
		{"spo ok", call{method: "POST", url: s.SiteURL + "/_api/contextinfo", token: spoTok.Token}, 200, nil},
		{"msi wrong header", call{method: "GET", url: s.IdentityEndpoint + "?api-version=2019-08-01&resource=x", hdr: map[string]string{"X-IDENTITY-HEADER": "no"}}, 401, nil},
		{"request ids", call{method: "GET", url: s.GraphURL + "/v1.0/nothing", token: graphTok.Token, hdr: map[string]string{"client-request-id": "abc"}}, 400,
			func(m map[string]any, h http.Header) bool {
				inner := m["error"].(map[string]any)["innerError"].(map[string]any)
				return h.Get("client-request-id") == "abc" && inner["client-request-id"] == "abc" && inner["request-id"] == h.Get("request-id")
			}},
		{"sposim admin routed", call{method: "GET", url: s.SPOURL + "/_sim/jobs"}, 200, nil},
		{"graph unknown admin", call{method: "GET", url: s.GraphURL + "/_sim/jobs"}, 404, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, h, m := do(t, tc.c)
			if st != tc.status {
				t.Fatalf("status = %d, want %d (%v)", st, tc.status, m)
			}
			if tc.check != nil && !tc.check(m, h) {
				t.Errorf("unexpected answer: %v %v", m, h)
			}
		})
	}
}

func errMsg(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func TestAdminUsersDeltaAndFaults(t *testing.T) {
	s := start(t)
	tok := s.Auth.TokenFor(s.GraphURL)
	g := func(path string, hdr ...string) (int, http.Header, map[string]any) {
		c := call{method: "GET", url: path, token: tok, hdr: map[string]string{}}
		if !strings.HasPrefix(path, "http") {
			c.url = s.GraphURL + path
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			c.hdr[hdr[i]] = hdr[i+1]
		}
		return do(t, c)
	}
	round := func(start string) (items []any, deltaLink string) {
		next := start
		for range 100 {
			st, _, m := g(next)
			if st != 200 {
				t.Fatalf("delta page: %d %v", st, m)
			}
			items = append(items, m["value"].([]any)...)
			if dl, ok := m["@odata.deltaLink"].(string); ok {
				return items, dl
			}
			next = m["@odata.nextLink"].(string)
		}
		t.Fatal("round did not end")
		return nil, ""
	}
	items, dl := round("/v1.0/users/delta?$select=id,jobTitle")
	if len(items) != 50 {
		t.Fatalf("initial round: %d users", len(items))
	}
	users := s.Directory.List("", 3)
	admin := []struct {
		name   string
		c      call
		status int
	}{
		{"patch", call{method: "PATCH", url: "/_sim/users/" + users[0].ID, body: `{"props":{"jobTitle":"Changed"}}`}, 200},
		{"patch bad json", call{method: "PATCH", url: "/_sim/users/" + users[0].ID, body: `{"props":`}, 400},
		{"patch unknown field", call{method: "PATCH", url: "/_sim/users/" + users[0].ID, body: `{"nope":1}`}, 400},
		{"patch missing", call{method: "PATCH", url: "/_sim/users/00000000-0000-4000-8000-000000000000", body: `{}`}, 404},
		{"soft delete", call{method: "DELETE", url: "/_sim/users/" + users[1].ID}, 204},
		{"hard delete", call{method: "DELETE", url: "/_sim/users/" + users[2].ID + "?hard=true"}, 204},
		{"restore hard-deleted", call{method: "POST", url: "/_sim/users/" + users[2].ID + "/restore"}, 404},
		{"add", call{method: "POST", url: "/_sim/users", body: `{"props":{"userPrincipalName":"new@contoso.onmicrosoft.com","jobTitle":"New"}}`}, 201},
		{"add duplicate", call{method: "POST", url: "/_sim/users", body: `{"props":{"userPrincipalName":"NEW@contoso.onmicrosoft.com"}}`}, 409},
		{"get", call{method: "GET", url: "/_sim/users/new@contoso.onmicrosoft.com"}, 200},
		{"list", call{method: "GET", url: "/_sim/users?limit=10"}, 200},
		{"list bad limit", call{method: "GET", url: "/_sim/users?limit=0"}, 400},
		{"wrong method", call{method: "PUT", url: "/_sim/users"}, 405},
	}
	for _, tc := range admin {
		tc.c.url = s.SPOURL + tc.c.url // the admin API answers on both origins
		if st, _, m := do(t, tc.c); st != tc.status {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, st, tc.status, m)
		}
	}
	items, dl = round(dl)
	got := map[string]map[string]any{}
	for _, it := range items {
		m := it.(map[string]any)
		got[m["id"].(string)] = m
	}
	if got[users[0].ID]["jobTitle"] != "Changed" || got[users[1].ID]["@removed"] == nil || got[users[2].ID]["@removed"] == nil || len(got) < 4 {
		t.Errorf("second round = %v", got)
	}

	// Faults through the admin API: one 429, then normal answers.
	rule := `{"rules":[{"origin":"graph","path":"^/v1.0/users$","status":429,"retryAfter":7,"count":1}],"pageLatency":"0s"}`
	if st, _, m := do(t, call{method: "PUT", url: s.GraphURL + "/_sim/faults", body: rule}); st != 200 || len(m["rules"].([]any)) != 1 {
		t.Fatalf("PUT faults: %d %v", st, m)
	}
	if st, _, _ := do(t, call{method: "PUT", url: s.GraphURL + "/_sim/faults", body: `{"rules":[{"status":200}]}`}); st != 400 {
		t.Errorf("invalid rule accepted: %d", st)
	}
	st, h, m := g("/v1.0/users")
	if st != 429 || h.Get("Retry-After") != "7" || m["error"].(map[string]any)["code"] != "TooManyRequests" {
		t.Errorf("fault: %d %v %v", st, h, m)
	}
	if st, _, _ := g("/v1.0/users"); st != 200 {
		t.Errorf("after count exhausted: %d", st)
	}
	// Drop the connection once, through the whole middleware stack.
	if st, _, _ := do(t, call{method: "POST", url: s.GraphURL + "/_sim/faults", body: `{"path":"^/v1.0/users$","drop":true,"count":1}`}); st != 200 {
		t.Fatalf("POST fault: %d", st)
	}
	req, _ := http.NewRequest("GET", s.GraphURL+"/v1.0/users", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped request answered %d", resp.StatusCode)
	}
	if st, _, _ := do(t, call{method: "DELETE", url: s.GraphURL + "/_sim/faults"}); st != 204 {
		t.Errorf("DELETE faults: %d", st)
	}

	// Delta expiry and reset through the admin API.
	if st, _, _ := do(t, call{method: "POST", url: s.GraphURL + "/_sim/delta/expire"}); st != 204 {
		t.Fatal("expire failed")
	}
	if st, _, m := g(dl); st != 400 || m["error"].(map[string]any)["code"] != "syncStateNotFound" {
		t.Errorf("expired: %d %v", st, m)
	}
	_, dl = round("/v1.0/users/delta?$select=id")
	do(t, call{method: "POST", url: s.SPOURL + "/_sim/delta/reset"})
	if st, h, _ := g(dl); st != 410 || !strings.HasSuffix(h.Get("Location"), "/v1.0/users/delta?$deltatoken=") {
		t.Errorf("reset: %d %v", st, h.Get("Location"))
	}

	// The request log saw the 429 and the 410.
	_, _, m = do(t, call{method: "GET", url: s.GraphURL + "/_sim/requests"})
	seen := map[float64]bool{}
	for _, r := range m["requests"].([]any) {
		seen[r.(map[string]any)["status"].(float64)] = true
	}
	if !seen[429] || !seen[410] || !seen[0] {
		t.Errorf("request log statuses = %v", seen)
	}
}

func TestGzipBatchAndTenantFile(t *testing.T) {
	users := directory.Generate(5, 9)
	file := t.TempDir() + "/tenant.json"
	var buf bytes.Buffer
	if err := directory.WriteTenant(&buf, users); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(file, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{TenantFile: file, Users: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Directory.Len() != 5 {
		t.Fatalf("tenant file gave %d users", s.Directory.Len())
	}
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, `{"requests":[{"id":"1","method":"GET","url":"/users/`+users[1].ID+`/manager?$select=id"}]}`)
	zw.Close()
	tests := []struct {
		name   string
		body   []byte
		status int
	}{
		{"gzip batch", zb.Bytes(), 200},
		{"not gzip", []byte("plain"), 400},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("POST", s.GraphURL+"/v1.0/$batch", bytes.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+s.Auth.TokenFor("https://graph.microsoft.com"))
		req.Header.Set("Content-Encoding", "gzip")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, resp.StatusCode, tc.status, m)
			continue
		}
		if tc.status == 200 {
			item := m["responses"].([]any)[0].(map[string]any)
			if item["status"] != float64(200) || item["body"].(map[string]any)["id"] != users[0].ID {
				t.Errorf("%s: item = %v", tc.name, item)
			}
		}
	}
	if _, err := Start(Options{GraphAddr: "0.0.0.0:0"}); err == nil {
		t.Error("non-loopback address accepted")
	}
	if _, err := Start(Options{TenantFile: file + ".missing"}); err == nil {
		t.Error("missing tenant file accepted")
	}
}

func writeFile(name string, data []byte) error { return os.WriteFile(name, data, 0o600) }

// TestAdminDeltaRepeat sets graphsim's DeltaRepeatEvery through
// /_sim/delta/repeat and sees a delta round over HTTP repeat users.
func TestAdminDeltaRepeat(t *testing.T) {
	s := start(t)
	tok := s.Auth.TokenFor(s.GraphURL)
	countRound := func() (items int, ids map[string]int) {
		ids = map[string]int{}
		next := s.GraphURL + "/v1.0/users/delta?$select=id"
		for range 100 {
			st, _, m := do(t, call{method: "GET", url: next, token: tok})
			if st != 200 {
				t.Fatalf("delta page: %d %v", st, m)
			}
			for _, it := range m["value"].([]any) {
				ids[it.(map[string]any)["id"].(string)]++
				items++
			}
			if _, ok := m["@odata.deltaLink"]; ok {
				return items, ids
			}
			next = m["@odata.nextLink"].(string)
		}
		t.Fatal("round did not end")
		return 0, nil
	}
	if st, _, m := do(t, call{method: "GET", url: s.GraphURL + "/_sim/delta/repeat"}); st != 200 || m["every"] != float64(0) {
		t.Fatalf("default: %d %v", st, m)
	}
	if n, _ := countRound(); n != 50 {
		t.Errorf("without repeats: %d items", n)
	}
	if st, _, m := do(t, call{method: "PUT", url: s.SPOURL + "/_sim/delta/repeat", body: `{"every":5}`}); st != 200 || m["every"] != float64(5) {
		t.Fatalf("PUT: %d %v", st, m)
	}
	if s.Graph.DeltaRepeatEvery() != 5 {
		t.Errorf("Graph.DeltaRepeatEvery() = %d", s.Graph.DeltaRepeatEvery())
	}
	if n, ids := countRound(); n != 60 || len(ids) != 50 {
		t.Errorf("every 5th of 50 users twice: %d items, %d users", n, len(ids))
	}
	for _, c := range []struct {
		method, body string
		status       int
	}{
		{"PUT", `{"every":-1}`, 400},
		{"PUT", `{}`, 400},
		{"PUT", `{"every":"x"}`, 400},
		{"PUT", `{"every":1,"other":2}`, 400},
		{"POST", `{"every":1}`, 405},
	} {
		if st, _, m := do(t, call{method: c.method, url: s.GraphURL + "/_sim/delta/repeat", body: c.body}); st != c.status {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.body, st, m, c.status)
		}
	}
	if st, _, m := do(t, call{method: "PUT", url: s.GraphURL + "/_sim/delta/repeat", body: `{"every":0}`}); st != 200 || m["every"] != float64(0) {
		t.Errorf("turning off: %d %v", st, m)
	}
}
