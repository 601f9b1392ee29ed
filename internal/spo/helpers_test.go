package spo

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testToken = "eyJ0eXAiOiJKV1QifQ.test-token-never-logged.sig"

// fakeCred hands out a static token and records the scopes asked for.
type fakeCred struct {
	mu     sync.Mutex
	scopes [][]string
	err    error
}

func (f *fakeCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scopes = append(f.scopes, o.Scopes)
	if f.err != nil {
		return azcore.AccessToken{}, f.err
	}
	return azcore.AccessToken{Token: testToken, ExpiresOn: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}, nil
}

// recorded is one request as the fake server saw it.
type recorded struct {
	Method string
	URI    string // escaped path as sent (RawPath when set)
	Path   string // decoded path
	Header http.Header
	Body   []byte
}

// fakeSPO is an httptest server that records requests and answers them
// with a test-supplied function.
type fakeSPO struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []recorded
	handle func(w http.ResponseWriter, rec recorded, n int) // n: index of this request
}

func newFake(t *testing.T, handle func(w http.ResponseWriter, rec recorded, n int)) *fakeSPO {
	t.Helper()
	f := &fakeSPO{handle: handle}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rec := recorded{Method: r.Method, URI: r.URL.EscapedPath(), Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		f.handle(w, rec, n)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSPO) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// sleeps records the waits a client asked for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return nil
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// testClient returns a client for srv's /sites/hr with a fake credential and
// recorded sleeps; edit adjusts the options.
func testClient(t *testing.T, srvURL string, edit func(*Options)) (*Client, *fakeCred, *sleeps) {
	t.Helper()
	cred := &fakeCred{}
	sl := &sleeps{}
	o := Options{
		SiteURL:    srvURL + "/sites/hr",
		Folder:     "Shared Documents/Profile Imports",
		Credential: cred,
		Sleep:      sl.sleep,
		Logger:     slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, cred, sl
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGolden compares got with testdata/name, rewriting it under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file\n got: %s\nwant: %s", name, got, want)
	}
}

// reply writes a canned body with a status.
func reply(w http.ResponseWriter, status int, contentType string, body []byte) {
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
