package profile

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Sentinel errors of the guards every adapter applies to what it reads from
// outside: URLs in answers and records, paths it is asked to delete, blobs
// it reads whole.
var (
	// ErrForeignOrigin: a URL the handler did not build (a Graph nextLink or
	// deltaLink, a job's SourceUri or LogFolderUri, a Location header) is
	// not on the configured Graph or SharePoint origin; nothing was sent.
	ErrForeignOrigin = errors.New("nothing was sent to another origin")
	// ErrOutsideFolder: a file or folder to delete is not strictly below the
	// configured upload folder; nothing was deleted.
	ErrOutsideFolder = errors.New("nothing outside the upload folder is deleted")
	// ErrTooLarge: a blob is larger than its kind may be; it was not read.
	ErrTooLarge = errors.New("too large to read")
)

// IsLoopback reports whether host (a URL's Hostname()) names this machine:
// "localhost" or a loopback address. Plain http is allowed only there.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckScheme accepts an absolute https URL, or an http one on loopback (the
// simulator and Azurite); what refuses names the URL.
func CheckScheme(u *url.URL) error {
	switch {
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return fmt.Errorf("%q is not an absolute http(s) URL", u.Redacted())
	case u.Scheme == "http" && !IsLoopback(u.Hostname()):
		return fmt.Errorf("%q must use https (http is only allowed on loopback)", u.Redacted())
	}
	return nil
}

// Origin is the origin of an absolute URL (RFC 6454): scheme and host in
// lower case, and the port only when it is not the scheme's default, so
// that https://Graph.Microsoft.com:443 and https://graph.microsoft.com are
// the same origin.
func Origin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// PinOrigin checks, before anything is sent, that rawURL is an absolute URL
// whose scheme, host and port are those of origin (an Origin). The error
// names what was refused (without its query, which may hold a token), the
// URL's origin and the expected one, and wraps ErrForeignOrigin.
func PinOrigin(what, rawURL, origin string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("refusing to follow %s %q: not an absolute URL on %s: %w", what, redactQuery(rawURL), origin, ErrForeignOrigin)
	}
	if u.User != nil {
		return fmt.Errorf("refusing to follow %s %q: it carries user information, which no URL on %s does: %w",
			what, redactQuery(u.Redacted()), origin, ErrForeignOrigin)
	}
	if got := Origin(u); got != origin {
		return fmt.Errorf("refusing to follow %s %q: its origin %s is not the configured origin %s: %w",
			what, redactQuery(rawURL), got, origin, ErrForeignOrigin)
	}
	return nil
}

// redactQuery drops a URL's query and fragment (skip and delta tokens are
// credentials of a sort) for messages, and keeps at most 200 bytes of it.
func redactQuery(s string) string {
	cut := false
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s, cut = s[:i], true
	}
	if len(s) > 200 {
		s, cut = strings.ToValidUTF8(s[:200], ""), true
	}
	if cut {
		s += "…"
	}
	return s
}
