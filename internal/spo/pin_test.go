package spo

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

func TestNewRefusesHTTPOffLoopback(t *testing.T) {
	cred := &fakeCred{}
	for site, ok := range map[string]bool{
		"http://contoso.sharepoint.com/sites/hr": false,
		"http://10.1.2.3:8080/sites/hr":          false,
		"http://127.0.0.1:8371/sites/hr":         true,
		"http://localhost:8371/sites/hr":         true,
		"http://[::1]:8371/sites/hr":             true,
		"https://contoso.sharepoint.com":         true,
	} {
		_, err := New(Options{SiteURL: site, Credential: cred})
		if (err == nil) != ok {
			t.Errorf("New(%q) = %v, want ok %v", site, err, ok)
		}
		if !ok && err != nil && !strings.Contains(err.Error(), "https") {
			t.Errorf("New(%q): the error does not say https is needed: %v", site, err)
		}
	}
}

func TestResolvePinsTheOrigin(t *testing.T) {
	c, _, _ := testClient(t, "https://contoso.sharepoint.com", nil)
	for in, want := range map[string]string{
		"https://contoso.sharepoint.com:443/sites/hr/x.json": "/sites/hr/x.json",
		"https://contoso.sharepoint.com/sites/hr/100%.json":  "/sites/hr/100%.json",
		"http://contoso.sharepoint.com/sites/hr/x.json":      "",
		"https://contoso.sharepoint.com:8443/sites/hr/x":     "",
		"https://u@contoso.sharepoint.com/sites/hr/x":        "",
		"https://contoso.sharepoint.com@evil.example/x":      "",
		`https://evil.example\@contoso.sharepoint.com/x`:     "",
		"https://contoso.sharepoint.com?x=/sites/hr":         "",
		"https://evil.example/sites/hr/x":                    "",
	} {
		got, err := c.resolve(in)
		if want != "" {
			if err != nil || got != want {
				t.Errorf("resolve(%q) = %q, %v; want %q", in, got, err, want)
			}
			continue
		}
		if err == nil {
			t.Errorf("resolve(%q) = %q, want an error", in, got)
		}
	}
	_, err := c.resolve("https://evil.example:8443/sites/hr/Shared Documents/x.json")
	if !errors.Is(err, profile.ErrForeignOrigin) || !strings.Contains(err.Error(), "https://evil.example:8443") ||
		!strings.Contains(err.Error(), "https://contoso.sharepoint.com") {
		t.Errorf("the refusal wraps ErrForeignOrigin and names both origins: %v", err)
	}
}

// TestForeignURLsSendNothing: a LogFolderUri, a file URL or a delete on
// another origin fails before any request, to either origin.
func TestForeignURLsSendNothing(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { w.WriteHeader(200) })
	c, cred, _ := testClient(t, srv.URL, nil)
	other, hits := testenv.Elsewhere(t)
	logFolder := other + "/sites/hr/Shared Documents/Profile Imports/" + jobGUID
	ctx := context.Background()
	if _, err := c.ListFolder(ctx, logFolder); !errors.Is(err, profile.ErrForeignOrigin) {
		t.Errorf("ListFolder: %v", err)
	}
	if err := c.Download(ctx, logFolder+"/a.log", &bytes.Buffer{}); !errors.Is(err, profile.ErrForeignOrigin) {
		t.Errorf("Download: %v", err)
	}
	if err := c.Delete(ctx, logFolder); !errors.Is(err, profile.ErrForeignOrigin) {
		t.Errorf("Delete: %v", err)
	}
	if n := len(srv.requests()); n != 0 || hits.Load() != 0 || len(cred.scopes) != 0 {
		t.Errorf("%d requests to the site, %d elsewhere, %d tokens asked for; want none", n, hits.Load(), len(cred.scopes))
	}
}

// TestRedirectElsewhereIsRefused: a Location on another origin fails the
// request without following it (and without retrying); one on the site's
// origin is followed.
func TestRedirectElsewhereIsRefused(t *testing.T) {
	other, hits := testenv.Elsewhere(t)
	srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
		switch {
		case strings.Contains(r.Path, "moved-here"):
			w.Header().Set("Location", strings.Replace(r.URI, "moved-here", "here", 1))
			w.WriteHeader(http.StatusFound)
		case strings.Contains(r.Path, "moved"):
			w.Header().Set("Location", other+r.URI)
			w.WriteHeader(http.StatusTemporaryRedirect)
		default:
			reply(w, 200, "application/octet-stream", []byte("log line\n"))
		}
	})
	c, _, sl := testClient(t, srv.URL, nil)
	var buf bytes.Buffer
	err := c.Download(context.Background(), "/sites/hr/Shared Documents/moved.log", &buf)
	if !errors.Is(err, profile.ErrForeignOrigin) || !strings.Contains(err.Error(), other) {
		t.Fatalf("err = %v, want a refusal naming %s", err, other)
	}
	if IsRetryable(err) || len(sl.got()) != 0 || len(srv.requests()) != 1 {
		t.Errorf("a refused redirect was retried: %d requests, sleeps %v", len(srv.requests()), sl.got())
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the other origin", hits.Load())
	}
	if err := c.Download(context.Background(), "/sites/hr/Shared Documents/moved-here.log", &buf); err != nil || buf.String() != "log line\n" {
		t.Errorf("a redirect on the site's origin: %v, %q", err, buf.String())
	}
}

// TestDeleteOnlyBelowTheFolder: Delete removes only what lies strictly
// below the upload folder, or a log folder (named by a GUID) directly in
// its library; anything else is refused before any request.
func TestDeleteOnlyBelowTheFolder(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { w.WriteHeader(200) })
	c, _, _ := testClient(t, srv.URL, nil) // /sites/hr, "Shared Documents/Profile Imports"
	ctx := context.Background()
	for _, tc := range []struct {
		target string
		kind   string // the first request Delete sends; "" = refused
	}{
		{"/sites/hr/Shared Documents/Profile Imports/a.json", "GetFileByServerRelativePath"},
		{srv.URL + "/sites/hr/Shared Documents/Profile Imports/a b.json", "GetFileByServerRelativePath"},
		{srv.URL + "/SITES/HR/shared documents/PROFILE IMPORTS/" + jobGUID + "/", "GetFileByServerRelativePath"},
		{"/sites/hr/Shared Documents/Profile Imports/sub/x.log", "GetFileByServerRelativePath"},
		// SharePoint's own log folder: in the library, named by the job.
		{srv.URL + "/sites/hr/Shared Documents/" + jobGUID, "GetFolderByServerRelativePath"},
		{srv.URL + "/sites/hr/Shared Documents/" + strings.ToUpper(jobGUID), "GetFolderByServerRelativePath"},

		{"/sites/hr/Shared Documents/Profile Imports", ""},
		{"/sites/hr/Shared Documents/Profile Imports/", ""},
		{srv.URL + "/sites/hr/Shared Documents", ""},
		{"/sites/hr", ""},
		{"/sites/other/Shared Documents/Profile Imports/a.json", ""},
		{"/sites/hr/Shared Documents/Profile Imports x/a.json", ""},
		{"/sites/hr/Shared Documents/Profile Imports/../../Other/a.json", ""},
		{"/sites/hr/Shared Documents/Profile Imports/./a.json", ""},
		{"/sites/hr/Shared Documents/Profile Imports//a.json", ""},
		{"/sites/hr/Shared Documents/Profile Imports/..", ""},
		{"/sites/hr/Shared Documents/Profile Imports/a%2F..%2F..%2Fb", ""},
		{"/sites/hr/Shared Documents/Profile Imports/a%5cb", ""},
		{`/sites/hr/Shared Documents/Profile Imports/a\..\..\b`, ""},
		{"/sites/hr/Shared Documents/not-a-guid", ""},
		{"/sites/hr/Shared Documents/" + strings.ReplaceAll(jobGUID, "-", ""), ""},
		{"/sites/hr/Shared Documents/" + jobGUID + "/a.log", ""},
		{"/sites/hr/Other Library/" + jobGUID, ""},
		{"/sites/hr/" + jobGUID, ""},
	} {
		before := len(srv.requests())
		err := c.Delete(ctx, tc.target)
		reqs := srv.requests()[before:]
		if tc.kind == "" {
			if !errors.Is(err, profile.ErrOutsideFolder) || len(reqs) != 0 {
				t.Errorf("Delete(%q) = %v with %d requests; want ErrOutsideFolder and none", tc.target, err, len(reqs))
			}
			continue
		}
		if err != nil || len(reqs) != 1 || !strings.Contains(reqs[0].Path, tc.kind+"(") {
			t.Errorf("Delete(%q) = %v, requests %v; want one %s", tc.target, err, reqs, tc.kind)
		}
	}
	// A library as the upload folder: everything in it, never itself.
	root, _, _ := testClient(t, srv.URL, func(o *Options) { o.SiteURL, o.Folder = srv.URL, "Shared Documents" })
	if err := root.Delete(ctx, "/Shared Documents/a.json"); err != nil {
		t.Errorf("a file in the library: %v", err)
	}
	for _, p := range []string{"/Shared Documents", "/Shared Documents/", "/Other/a.json"} {
		if err := root.Delete(ctx, p); !errors.Is(err, profile.ErrOutsideFolder) {
			t.Errorf("Delete(%q) on the root site = %v, want ErrOutsideFolder", p, err)
		}
	}
}
