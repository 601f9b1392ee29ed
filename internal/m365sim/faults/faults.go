// Package faults injects failures into the simulator's HTTP origins: error
// statuses with Retry-After (in the origin's error shape), slow answers,
// dropped connections, cut answers, redirects to another origin and paging
// links moved to another origin, each matched by origin, method and path,
// optionally a limited number of times, plus a latency applied to every
// Graph page.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/simauth"
)

// Origins a rule can be limited to.
const (
	Graph = "graph"
	SPO   = "spo"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "250ms".
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("parsing duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Rule is one fault. Empty match fields match everything. The action is
// applied in order: Delay, then Drop (close the connection without an
// answer) or Status (an error answer); with neither, the request proceeds
// normally after the delay (a slow answer).
type Rule struct {
	Origin string `json:"origin,omitempty"` // Graph, SPO or "" for both
	Method string `json:"method,omitempty"` // e.g. GET; "" for any
	Path   string `json:"path,omitempty"`   // regexp matched against the URL path
	Query  string `json:"query,omitempty"`  // regexp matched against the decoded query string

	Status     int      `json:"status,omitempty"`     // e.g. 429, 503, 504
	RetryAfter int      `json:"retryAfter,omitempty"` // seconds, sent as Retry-After when > 0
	Code       string   `json:"code,omitempty"`       // error code; "" = the usual one for Status
	Message    string   `json:"message,omitempty"`    // error message; "" = the usual one
	Delay      Duration `json:"delay,omitempty"`
	Drop       bool     `json:"drop,omitempty"`
	// Truncate answers as the origin would, but cuts the body in half and
	// closes the connection: a page dropped mid-way (truncated JSON).
	Truncate bool `json:"truncate,omitempty"`
	// Redirect answers 307 Temporary Redirect with a Location on this origin
	// (scheme://host:port) and the request's own path and query: a redirect
	// to another host, which a client must not follow.
	Redirect string `json:"redirect,omitempty"`
	// LinkOrigin answers as the origin would, with the origin of every
	// @odata.nextLink and @odata.deltaLink of the body replaced by this one
	// (scheme://host:port): a Graph page whose next link points elsewhere.
	LinkOrigin string `json:"linkOrigin,omitempty"`

	Count int `json:"count,omitempty"` // apply this many times, then stop; 0 = always
	Hits  int `json:"hits"`            // times applied so far (read-only)
}

type rule struct {
	Rule
	path, query *regexp.Regexp
}

// Set is a concurrency-safe rule list plus the per-page Graph latency.
type Set struct {
	mu          sync.Mutex
	rules       []*rule
	pageLatency time.Duration

	// Sleep waits d or until ctx is done; tests replace it to avoid real
	// waiting. It defaults to a timer-based wait.
	Sleep func(ctx context.Context, d time.Duration) error
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{Sleep: sleep} }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func compile(r Rule) (*rule, error) {
	var errs []error
	c := &rule{Rule: r}
	if r.Origin != "" && r.Origin != Graph && r.Origin != SPO {
		errs = append(errs, fmt.Errorf("origin %q must be %q, %q or empty", r.Origin, Graph, SPO))
	}
	if r.Status != 0 && (r.Status < 400 || r.Status > 599) {
		errs = append(errs, fmt.Errorf("status %d must be 4xx or 5xx", r.Status))
	}
	if r.Count < 0 || r.RetryAfter < 0 || r.Delay < 0 {
		errs = append(errs, errors.New("count, retryAfter and delay must not be negative"))
	}
	actions := 0
	for _, set := range []bool{r.Drop, r.Truncate, r.Status != 0, r.Redirect != "", r.LinkOrigin != ""} {
		if set {
			actions++
		}
	}
	if actions > 1 {
		errs = append(errs, errors.New("drop, truncate, status, redirect and linkOrigin are exclusive"))
	}
	for _, o := range []string{r.Redirect, r.LinkOrigin} {
		if u, err := url.Parse(o); o != "" && (err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "") {
			errs = append(errs, fmt.Errorf("%q is not an origin (scheme://host:port)", o))
		}
	}
	var err error
	if c.path, err = regexp.Compile(r.Path); err != nil {
		errs = append(errs, fmt.Errorf("path: %w", err))
	}
	if c.query, err = regexp.Compile(r.Query); err != nil {
		errs = append(errs, fmt.Errorf("query: %w", err))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid fault rule: %w", errors.Join(errs...))
	}
	c.Hits = 0
	return c, nil
}

// Add appends a rule.
func (s *Set) Add(r Rule) error {
	c, err := compile(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = append(s.rules, c)
	return nil
}

// Replace swaps the whole rule list; nothing changes when a rule is invalid.
func (s *Set) Replace(rules []Rule) error {
	cs := make([]*rule, 0, len(rules))
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
		cs = append(cs, c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = cs
	return nil
}

// Clear removes every rule and the page latency.
func (s *Set) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = nil
	s.pageLatency = 0
}

// Rules returns a copy of the rules with their hit counts.
func (s *Set) Rules() []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = r.Rule
	}
	return out
}

// SetPageLatency sets the delay added before every Graph page.
func (s *Set) SetPageLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageLatency = d
}

// PageLatency returns the delay added before every Graph page.
func (s *Set) PageLatency() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pageLatency
}

// PageDelay waits the page latency (if any); it returns ctx's error when
// the request goes away first.
func (s *Set) PageDelay(ctx context.Context) error {
	d := s.PageLatency()
	if d <= 0 {
		return nil
	}
	return s.Sleep(ctx, d)
}

// match finds the first live rule for r and counts the hit.
func (s *Set) match(origin string, r *http.Request) (Rule, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.rules {
		if c.Count > 0 && c.Hits >= c.Count {
			continue
		}
		if c.Origin != "" && c.Origin != origin {
			continue
		}
		if c.Method != "" && c.Method != r.Method {
			continue
		}
		if !c.path.MatchString(r.URL.Path) {
			continue
		}
		if c.Query != "" {
			q, err := url.QueryUnescape(r.URL.RawQuery)
			if err != nil || !c.query.MatchString(q) {
				continue
			}
		}
		c.Hits++
		return c.Rule, true
	}
	return Rule{}, false
}

// Middleware applies the set's rules to requests of one origin (Graph or SPO).
func (s *Set) Middleware(origin string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rule, ok := s.match(origin, r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if rule.Delay > 0 {
			if err := s.Sleep(r.Context(), time.Duration(rule.Delay)); err != nil {
				return
			}
		}
		switch {
		case rule.Drop:
			drop(w)
		case rule.Truncate:
			truncate(w, r, next)
		case rule.Status != 0:
			writeFault(w, r, origin, rule)
		case rule.Redirect != "":
			w.Header().Set("Location", rule.Redirect+r.URL.RequestURI())
			w.WriteHeader(http.StatusTemporaryRedirect)
		case rule.LinkOrigin != "":
			moveLinks(w, r, next, rule.LinkOrigin)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// drop closes the connection without writing a response. Where the writer
// cannot be hijacked (HTTP/2, an in-process batch), the handler aborts,
// which net/http turns into a reset stream or closed connection.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// truncate lets next answer into a buffer, sends its status, headers and
// the first half of its body (with the full Content-Length), then closes
// the connection: the client reads a cut JSON document.
func truncate(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	body := rec.body.Bytes()
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.status)
	w.Write(body[:len(body)/2])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	drop(w)
}

// odataLink matches the start of an @odata.nextLink or @odata.deltaLink
// value up to the end of its origin.
var odataLink = regexp.MustCompile(`("@odata\.(?:next|delta)Link"\s*:\s*")https?://[^/"\\]+`)

// moveLinks lets next answer into a buffer and sends the answer with the
// origin of its paging links replaced by origin.
func moveLinks(w http.ResponseWriter, r *http.Request, next http.Handler, origin string) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	body := odataLink.ReplaceAll(rec.body.Bytes(), []byte("${1}"+origin))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.status)
	w.Write(body)
}

// recorder buffers an answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

var graphCodes = map[int][2]string{
	400: {"BadRequest", "The request is invalid."},
	401: {"InvalidAuthenticationToken", "Access token validation failure."},
	403: {"Authorization_RequestDenied", "Insufficient privileges to complete the operation."},
	404: {"Request_ResourceNotFound", "The requested resource does not exist."},
	429: {"TooManyRequests", "Too many requests from Identifier:m365sim under category:throttle.aad.ags.simulated. Please try again later."},
	500: {"generalException", "An internal server error occurred."},
	502: {"badGateway", "The gateway received an invalid response."},
	503: {"serviceNotAvailable", "The service is temporarily unavailable. Please try again later."},
	504: {"gatewayTimeout", "The gateway timed out waiting for the service."},
}

var spoCodes = map[int][2]string{
	429: {"-2147024860, Microsoft.SharePoint.SPRequestThrottledException", "The request has been throttled. Please try again later."},
	503: {"-2147024864, Microsoft.SharePoint.SPServerTooBusyException", "Server Too Busy"},
	504: {"-2146233083, System.TimeoutException", "The operation has timed out."},
}

func writeFault(w http.ResponseWriter, r *http.Request, origin string, rule Rule) {
	if rule.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(rule.RetryAfter))
	}
	codes := graphCodes
	if origin == SPO {
		codes = spoCodes
	}
	def, ok := codes[rule.Status]
	if !ok {
		def = [2]string{"generalException", http.StatusText(rule.Status)}
		if origin == SPO {
			def[0] = "-2146233088, Microsoft.SharePoint.Client.ServerException"
		}
	}
	code, msg := def[0], def[1]
	if rule.Code != "" {
		code = rule.Code
	}
	if rule.Message != "" {
		msg = rule.Message
	}
	if origin == SPO {
		if rule.Status == 429 && rule.RetryAfter > 0 {
			w.Header().Set("RateLimit-Reset", strconv.Itoa(rule.RetryAfter))
			w.Header().Set("RateLimit-Remaining", "0")
		}
		w.Header().Set("Content-Type", "application/json;odata=nometadata;streaming=true;charset=utf-8")
		w.WriteHeader(rule.Status)
		_ = json.NewEncoder(w).Encode(map[string]any{"odata.error": map[string]any{
			"code":    code,
			"message": map[string]string{"lang": "en-US", "value": msg},
		}})
		return
	}
	if rule.Status == 429 {
		w.Header().Set("x-ms-throttle-information", "ResourceUnitLimitExceeded")
		w.Header().Set("x-ms-throttle-scope", "Tenant_Application/ReadWrite/m365sim")
	}
	simauth.WriteGraphError(w, r, rule.Status, code, msg)
}
