// Package graphsim simulates the Microsoft Graph v1.0 user endpoints
// profilesync reads: GET /users (select, filter, top, count, expand manager,
// skip tokens), GET /users/{id|upn}, GET /users/{id}/manager, the users
// delta query in all its spellings, and POST /$batch. Answers carry Graph's
// shapes: absolute @odata.nextLink/@odata.deltaLink URLs with opaque
// tokens, @odata.context, and Graph's error bodies.
//
// userPrincipalName ge/le/startsWith ranges are answered from the store's
// UPN index (directory.ScanUPNRange), so range pages and range counts cost
// the range, not the tenant. Stats counts requests, pages, user items and
// busy time, for GET /_sim/stats.
//
// The server does not check tokens; the composition puts authentication in
// front of it.
package graphsim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/simauth"
)

// ContentType is the content type of Graph's JSON answers.
const ContentType = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

// Options configure a Server.
type Options struct {
	BaseURL       string           // Graph origin, e.g. "http://127.0.0.1:8370" (no trailing slash)
	Store         *directory.Store // the tenant
	PageSize      int              // GET /users page size without $top; default 100
	DeltaPageSize int              // users per delta page; default 200 ($top caps it)
	DeltaValidity time.Duration    // delta token lifetime; default 7 days
	Now           func() time.Time // default time.Now

	// DeltaRepeatEvery, when > 0, makes delta rounds (initial and
	// incremental) send some users twice: every DeltaRepeatEvery-th user
	// item of a round appears again later in the round (see
	// SetDeltaRepeatEvery). 0, the default, sends each user once.
	DeltaRepeatEvery int

	// PageDelay, when set, is called before every page of /users and
	// /users/delta ($deltatoken=latest and nextLinks included): the
	// per-page latency. Not before /users/$count, single users, managers,
	// or anything inside $batch. An error abandons the request. Stats keep
	// the wait out of the busy time.
	PageDelay func(ctx context.Context) error
	// WrapBatchItem, when set, wraps the handler each $batch item is sent
	// to, so that faults apply to items individually.
	WrapBatchItem func(http.Handler) http.Handler
	Logger        *slog.Logger
}

// Server serves /v1.0/... for one tenant.
type Server struct {
	opts  Options
	store *directory.Store
	base  string // BaseURL + "/v1.0"
	log   *slog.Logger
	now   func() time.Time

	epoch  atomic.Int64 // delta tokens minted in an older epoch are expired
	reset  atomic.Bool  // the next delta-link request answers 410
	repeat atomic.Int64 // DeltaRepeatEvery, changeable at run time

	item  http.Handler // target of $batch items
	stats counters
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("graphsim: Store is required")
	}
	if _, err := url.Parse(opts.BaseURL); err != nil || opts.BaseURL == "" {
		return nil, fmt.Errorf("graphsim: invalid BaseURL %q", opts.BaseURL)
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	if opts.DeltaPageSize <= 0 {
		opts.DeltaPageSize = 200
	}
	opts.PageSize = min(opts.PageSize, 999)
	opts.DeltaPageSize = min(opts.DeltaPageSize, 999)
	if opts.DeltaValidity <= 0 {
		opts.DeltaValidity = 7 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, store: opts.Store, base: opts.BaseURL + "/v1.0", log: opts.Logger, now: opts.Now}
	s.SetDeltaRepeatEvery(opts.DeltaRepeatEvery)
	s.stats.since = time.Now()
	// The time a $batch item spends in serveAPI is busy time; what the
	// wrapper around it adds (fault delays) is not: see runItem.
	s.item = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := meterOf(r)
		if m == nil {
			s.serveAPI(w, r)
			return
		}
		s.stats.enter()
		start := time.Now()
		s.serveAPI(w, r)
		m.itemInner += time.Since(start)
		s.stats.leave()
	})
	if opts.WrapBatchItem != nil {
		s.item = opts.WrapBatchItem(s.item)
	}
	return s, nil
}

// ExpireDeltaTokens makes every delta token issued so far expired
// (400 syncStateNotFound).
func (s *Server) ExpireDeltaTokens() { s.epoch.Add(1) }

// ResetDelta makes the next request of a delta link answer 410 Gone with a
// Location header naming a fresh initial delta URL.
func (s *Server) ResetDelta() { s.reset.Store(true) }

// SetDeltaRepeatEvery sets how delta rounds repeat users: with n > 0 every
// n-th user item of a round (counted from the round's first item, across
// pages; @removed items are not counted) is sent again two user items later
// on the same page, or at the start of the next page when its page ends
// first, or at the end of the round's last page. The repeat carries the
// user's values at the time it is sent: the same, or newer when the user
// changed meanwhile. n <= 0 turns repeating off. Rounds already under way
// pick the setting up on their next page.
//
// Source: learn.microsoft.com/graph/delta-query-overview, "A single entity
// can be contained multiple times in the response" (also reported in
// microsoftgraph/microsoft-graph-docs#5363: the same user on several pages
// of one round). [inferred] The pattern itself (which users, how far apart)
// is the simulator's own, chosen to be deterministic; Graph's is not
// documented.
func (s *Server) SetDeltaRepeatEvery(n int) { s.repeat.Store(int64(max(n, 0))) }

// DeltaRepeatEvery returns the setting SetDeltaRepeatEvery made.
func (s *Server) DeltaRepeatEvery() int { return int(s.repeat.Load()) }

// ServeHTTP serves /v1.0/... paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.metered(w, r, s.route)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if seg := segments(r.URL.Path); len(seg) == 2 && seg[0] == "v1.0" && strings.EqualFold(seg[1], "$batch") {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r)
			return
		}
		s.batch(w, r)
		return
	}
	s.serveAPI(w, r)
}

func segments(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// serveAPI routes everything except $batch.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	seg := segments(r.URL.Path)
	if len(seg) < 2 || seg[0] != "v1.0" {
		last := "v1.0"
		if len(seg) > 0 {
			last = seg[len(seg)-1]
		}
		graphError(w, r, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Resource not found for the segment '%s'.", last))
		return
	}
	if !strings.EqualFold(seg[1], "users") {
		graphError(w, r, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Resource not found for the segment '%s'.", seg[1]))
		return
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r)
		return
	}
	q, qerr := parseQuery(r.URL.RawQuery)
	if qerr != nil {
		qerr.write(w, r)
		return
	}
	rest := seg[2:]
	switch {
	case len(rest) == 0:
		s.listUsers(w, r, q)
	case len(rest) == 1 && rest[0] == "$count":
		s.countUsers(w, r, q)
	case len(rest) == 1 && isDelta(rest[0]):
		s.delta(w, r, q)
	case len(rest) == 1:
		s.getUser(w, r, q, rest[0])
	case len(rest) == 2 && strings.EqualFold(rest[1], "manager"):
		s.getManager(w, r, q, rest[0])
	default:
		graphError(w, r, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Resource not found for the segment '%s'.", rest[len(rest)-1]))
	}
}

func isDelta(seg string) bool {
	switch strings.ToLower(seg) {
	case "delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()":
		return true
	}
	return false
}

// query holds the OData options of one request, keyed by lowercase name
// with the "$" (whether it came as "$" or "%24").
type query map[string]string

var knownOptions = map[string]bool{
	"$select": true, "$filter": true, "$top": true, "$count": true, "$expand": true,
	"$skiptoken": true, "$deltatoken": true, "$orderby": true, "$search": true, "$skip": true,
}

func parseQuery(raw string) (query, *apiError) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badRequest("BadRequest", "The query specified in the URI is not valid.")
	}
	q := query{}
	for k, v := range vals {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "$") {
			continue // non-OData parameters are ignored, as Graph does
		}
		if !knownOptions[lk] {
			return nil, badRequest("BadRequest", fmt.Sprintf("Query option '%s' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.", k))
		}
		if _, dup := q[lk]; dup || len(v) > 1 {
			return nil, badRequest("BadRequest", fmt.Sprintf("Query option '%s' was specified more than once, but it must be specified at most once.", k))
		}
		q[lk] = v[0]
	}
	return q, nil
}

// column is one selected property, resolved against the store.
type column struct {
	name  string
	field directory.Field
	has   bool // some user has the property
}

// selection is a parsed $select.
type selection struct {
	names   []string // canonical names as requested (for @odata.context and tokens)
	cols    []column // without id and manager
	manager bool     // "manager" was selected (delta: manager@delta)
}

// parseSelect parses a comma-separated $select. forCollection enables the
// 501 for properties Graph cannot return in collections.
func (s *Server) parseSelect(raw string, forCollection bool) (selection, *apiError) {
	if strings.TrimSpace(raw) == "" {
		sel, err := s.resolveSelect(defaultSelect, forCollection)
		sel.names = nil // the default set is not spelled out in @odata.context
		return sel, err
	}
	var names []string
	for _, n := range strings.Split(raw, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return s.resolveSelect(names, forCollection)
}

func (s *Server) resolveSelect(names []string, forCollection bool) (selection, *apiError) {
	var sel selection
	seen := map[string]bool{}
	for _, n := range names {
		if strings.EqualFold(n, "manager") {
			if !sel.manager {
				sel.names = append(sel.names, "manager")
			}
			sel.manager = true
			continue
		}
		c, ok := s.canonicalProp(n)
		if !ok {
			return sel, &apiError{http.StatusBadRequest, "Request_BadRequest",
				fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.user'.", n)}
		}
		if forCollection && notInCollections[c] {
			return sel, &apiError{http.StatusNotImplemented, "NotImplemented", "This operation target is not yet supported."}
		}
		if seen[strings.ToLower(c)] {
			continue
		}
		seen[strings.ToLower(c)] = true
		sel.names = append(sel.names, c)
		if c == "id" {
			continue
		}
		col := column{name: c}
		col.field, _, col.has = s.store.Field(c)
		sel.cols = append(sel.cols, col)
	}
	return sel, nil
}

// apiError is an error answer in Graph's shape.
type apiError struct {
	status  int
	code    string
	message string
}

func badRequest(code, msg string) *apiError { return &apiError{http.StatusBadRequest, code, msg} }

func (e *apiError) write(w http.ResponseWriter, r *http.Request) {
	graphError(w, r, e.status, e.code, e.message)
}

func graphError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	simauth.WriteGraphError(w, r, status, code, msg)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	graphError(w, r, http.StatusMethodNotAllowed, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
}

func notFound(w http.ResponseWriter, r *http.Request, what string) {
	graphError(w, r, http.StatusNotFound, "Request_ResourceNotFound",
		fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", what))
}

// appendProps appends ,"name":value for each selected property the user has.
func appendProps(b []byte, v directory.View, cols []column) []byte {
	for _, c := range cols {
		if !c.has {
			continue
		}
		raw, ok := v.Raw(c.field)
		if !ok {
			continue
		}
		b = append(b, ',', '"')
		b = append(b, c.name...)
		b = append(b, '"', ':')
		b = append(b, raw...)
	}
	return b
}

// appendUser appends a user object with the selected properties.
func appendUser(b []byte, v directory.View, cols []column) []byte {
	b = append(b, `{"id":`...)
	b = directory.AppendString(b, v.ID())
	b = appendProps(b, v, cols)
	return append(b, '}')
}

func (s *Server) context(set string, names []string, suffix string) string {
	c := s.base + "/$metadata#" + set
	if len(names) > 0 {
		c += "(" + strings.Join(names, ",") + ")"
	}
	return c + suffix
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 8<<20 {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// writeJSON sends a finished JSON body with Graph's content type.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// encodeToken makes an opaque, URL-safe token from v.
func encodeToken(v any) string {
	b, _ := json.Marshal(v) // token structs always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(tok, "="))
	if err != nil {
		return fmt.Errorf("decoding token: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding token: %w", err)
	}
	return nil
}

func eventual(r *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(r.Header.Get("ConsistencyLevel")), "eventual")
}
