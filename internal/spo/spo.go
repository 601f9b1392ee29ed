// Package spo is profilesync's SharePoint Online adapter. It uploads import
// files to a document library through SharePoint REST and drives the bulk user
// profile import API (Office365Tenant.QueueImportProfileProperties and
// friends) through raw CSOM requests to _vti_bin/client.svc/ProcessQuery.
//
// It speaks plain net/http; azcore supplies only the credential type. Every
// request carries a bearer token for the site's origin ("<origin>/.default"),
// is retried on 429/503/504 (honouring Retry-After) and is logged at Debug
// level without its token.
package spo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/profilesync/profilesync/internal/profile"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultFolder     = "Shared Documents"
	DefaultChunkSize  = 10 << 20 // 10 MiB, the slice size PnP uses
	DefaultMaxRetries = 5
)

// Options configures a Client.
type Options struct {
	// SiteURL is the absolute URL of the site that holds the library, for
	// example https://contoso.sharepoint.com/sites/hr. The CSOM import calls
	// are sent to the same site (Office365Tenant is callable from any site).
	SiteURL string
	// Folder is the library, optionally followed by sub-folders, relative to
	// the site (PnP's -Folder). A path starting with the site's own
	// server-relative URL is accepted too; `\` is read as `/`.
	// Default "Shared Documents".
	Folder string
	// Credential supplies bearer tokens; the scope requested is the site's
	// origin + "/.default".
	Credential azcore.TokenCredential
	// HTTPClient sends the requests. Nil means a client with connect, TLS
	// and response-header timeouts (no overall timeout, so big uploads work).
	HTTPClient *http.Client
	// ChunkSize is the largest file sent in one request; larger files are
	// uploaded in slices of this size. Default 10 MiB.
	ChunkSize int64
	// MaxRetries is how many times a throttled (429/503/504) request is
	// retried. 0 means DefaultMaxRetries; a negative value disables retries.
	MaxRetries int
	// Logger receives one Debug record per request. Nil discards.
	Logger *slog.Logger
	// UserAgent decorates requests as Microsoft asks of bulk callers.
	// Default "NONISV|profilesync|profilesync/<module version>".
	UserAgent string
	// Sleep waits between retries. Nil means a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client talks to one SharePoint site and one upload folder. It is safe for
// concurrent use.
type Client struct {
	origin     string   // scheme://host[:port]
	sitePath   string   // decoded server-relative site path, "" for the root site
	siteEsc    string   // sitePath percent-encoded
	folder     []string // decoded folder segments below the site, library first
	scope      string
	cred       azcore.TokenCredential
	hc         *http.Client
	chunkSize  int64
	maxRetries int
	log        *slog.Logger
	userAgent  string
	sleep      func(ctx context.Context, d time.Duration) error
	now        func() time.Time // for Retry-After dates
}

// New validates o and returns a Client. It makes no request.
func New(o Options) (*Client, error) {
	origin, sitePath, err := parseSiteURL(o.SiteURL)
	if err != nil {
		return nil, err
	}
	folder, err := parseFolder(o.Folder, sitePath)
	if err != nil {
		return nil, err
	}
	if o.Credential == nil {
		return nil, errors.New("spo: a credential is required")
	}
	if o.ChunkSize < 0 {
		return nil, fmt.Errorf("spo: chunk size %d is negative", o.ChunkSize)
	}
	c := &Client{
		origin:     origin,
		sitePath:   sitePath,
		siteEsc:    escapePath(sitePath),
		folder:     folder,
		scope:      origin + "/.default",
		cred:       o.Credential,
		hc:         o.HTTPClient,
		chunkSize:  o.ChunkSize,
		maxRetries: o.MaxRetries,
		log:        o.Logger,
		userAgent:  o.UserAgent,
		sleep:      o.Sleep,
		now:        time.Now,
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	c.hc = c.pinRedirects(c.hc)
	if c.chunkSize == 0 {
		c.chunkSize = DefaultChunkSize
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.userAgent == "" {
		c.userAgent = "NONISV|profilesync|profilesync/" + moduleVersion()
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	return c, nil
}

// FolderPath returns the decoded server-relative path of the upload folder,
// for example "/sites/hr/Shared Documents/Profile Imports".
func (c *Client) FolderPath() string {
	return c.sitePath + "/" + strings.Join(c.folder, "/")
}

// FileURL is the absolute URL a file of this name gets once uploaded, in
// the form Upload returns (origin + server-relative path, not encoded), so
// that a file can be named before its upload ends (and found after a crash).
func (c *Client) FileURL(name string) string {
	return c.origin + c.FolderPath() + "/" + name
}

// parseSiteURL checks that s is an absolute http(s) URL without query or
// fragment and splits it into origin and decoded site path.
func parseSiteURL(s string) (origin, sitePath string, err error) {
	if s == "" {
		return "", "", errors.New("spo: site URL is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("spo: site URL: %w", err)
	}
	// Plain http only on loopback (the simulator), as the settings say.
	if err := profile.CheckScheme(u); err != nil {
		return "", "", fmt.Errorf("spo: site URL: %w", err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("spo: site URL %q must be scheme://host/path without user, query or fragment", u.Redacted())
	}
	p := strings.TrimRight(u.Path, "/")
	if p != "" {
		if err := checkPath(p[1:]); err != nil {
			return "", "", fmt.Errorf("spo: site URL %q: %w", s, err)
		}
	}
	return profile.Origin(u), p, nil
}

// parseFolder turns the configured folder into segments below the site.
func parseFolder(f, sitePath string) ([]string, error) {
	f = strings.TrimSpace(strings.ReplaceAll(f, `\`, "/"))
	if f == "" {
		f = DefaultFolder
	}
	if strings.HasPrefix(f, "/") && sitePath != "" {
		// A server-relative path of this site: strip the site part. The
		// comparison ignores case, as SharePoint URLs do (and unlike PnP,
		// whose lower-case comparison prefixes mixed-case sites twice).
		if len(f) >= len(sitePath) && strings.EqualFold(f[:len(sitePath)], sitePath) &&
			(len(f) == len(sitePath) || f[len(sitePath)] == '/') {
			f = f[len(sitePath):]
		}
	}
	var segs []string
	for s := range strings.SplitSeq(f, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("spo: folder %q names no document library", f)
	}
	if err := checkPath(strings.Join(segs, "/")); err != nil {
		return nil, fmt.Errorf("spo: folder %q: %w", f, err)
	}
	return segs, nil
}

// checkPath rejects path segments SharePoint cannot store.
func checkPath(p string) error {
	for s := range strings.SplitSeq(p, "/") {
		if err := checkName(s); err != nil {
			return err
		}
	}
	return nil
}

// checkName rejects a file or folder name SharePoint cannot store.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty path segment")
	case s == "." || s == "..":
		return fmt.Errorf("path segment %q is not allowed", s)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("name %q has leading or trailing spaces", s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`"*:<>?|/\`, r) {
			return fmt.Errorf("name %q contains %q, which SharePoint does not allow", s, r)
		}
	}
	return nil
}

// pinRedirects returns a copy of hc that follows a redirect only on the
// site's origin. net/http follows a Location to any host (it only leaves
// Authorization off for another domain: pkg.go.dev/net/http#Client, "when
// forwarding sensitive headers like Authorization … to untrusted targets");
// a Location elsewhere fails the request instead, before anything is sent
// there. The caller's client is left as it was.
func (c *Client) pinRedirects(hc *http.Client) *http.Client {
	pinned := *hc
	next := hc.CheckRedirect
	pinned.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := profile.PinOrigin("SharePoint redirect to", req.URL.String(), c.origin); err != nil {
			return &redirectError{fmt.Errorf("spo: %w", err)}
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 { // net/http's own default
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &pinned
}

// redirectError is a refused redirect: not a network failure, never retried.
type redirectError struct{ err error }

func (e *redirectError) Error() string { return e.err.Error() }
func (e *redirectError) Unwrap() error { return e.err }

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 15 * time.Second
	// Counted from the end of the request body: SharePoint answers even a
	// 10 MiB chunk well inside this.
	t.ResponseHeaderTimeout = 3 * time.Minute
	return &http.Client{Transport: t}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}
