// Package m365sim composes the Microsoft 365 simulator: a Graph origin
// (managed identity at /msi/token, Graph at /v1.0/...) and a SharePoint
// origin (sites, CSOM), both on loopback, sharing one tenant directory, one
// token minter and one fault set, with an admin API under /_sim/ on both.
package m365sim

import (
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/m365sim/graphsim"
	"github.com/profilesync/profilesync/internal/m365sim/simauth"
	"github.com/profilesync/profilesync/internal/m365sim/sposim"
)

// Options configure Start. Zero values pick the defaults noted.
type Options struct {
	Users      int    // users to generate (ignored when TenantFile is set)
	Seed       int64  // generator seed
	TenantFile string // JSON tenant file (see directory.Tenant)

	GraphAddr string // default "127.0.0.1:0"; must be a loopback address
	SPOAddr   string // default "127.0.0.1:0"; must be a loopback address

	PageSize       int           // users per /users/delta page (default 200); GET /users pages follow $top (100 without; at most 100 with $expand)
	PageLatency    time.Duration // delay before every /users and /users/delta page; not $count, single users, $batch items, tokens
	JobStep        time.Duration // sposim job step (0 = done while queued, <0 = manual)
	IdentityHeader string        // MSI secret; default random
	FileDir        string        // uploaded files ("" = temp dir owned by sposim)
	Now            func() time.Time
	Logger         *slog.Logger

	// DeltaRepeatEvery > 0 makes Graph delta rounds send every n-th user
	// again later in the round (graphsim.Server.SetDeltaRepeatEvery); 0 = off.
	// Changeable at run time with PUT /_sim/delta/repeat {"every":n}.
	DeltaRepeatEvery int
}

// Sim is a running simulator.
type Sim struct {
	GraphURL         string // Graph origin, e.g. http://127.0.0.1:8370
	SPOURL           string // SharePoint origin
	SiteURL          string // SPOURL + "/sites/profilesync"
	IdentityEndpoint string // GraphURL + "/msi/token"
	IdentityHeader   string

	Directory *directory.Store
	Graph     *graphsim.Server
	SPO       *sposim.Server
	Faults    *faults.Set
	Auth      *simauth.Minter
	Requests  *RequestLog

	log       *slog.Logger
	stats     statsBase
	servers   []*http.Server
	closeOnce sync.Once
	closeErr  error
}

// Start builds the tenant and serves both origins until Close.
func Start(opts Options) (*Sim, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdentityHeader == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		opts.IdentityHeader = hex.EncodeToString(b[:])
	}
	store, err := loadTenant(opts)
	if err != nil {
		return nil, err
	}
	gl, err := listen(opts.GraphAddr)
	if err != nil {
		return nil, fmt.Errorf("graph listener: %w", err)
	}
	sl, err := listen(opts.SPOAddr)
	if err != nil {
		gl.Close()
		return nil, fmt.Errorf("sharepoint listener: %w", err)
	}
	s := &Sim{
		GraphURL:       "http://" + gl.Addr().String(),
		SPOURL:         "http://" + sl.Addr().String(),
		IdentityHeader: opts.IdentityHeader,
		Directory:      store,
		Faults:         faults.NewSet(),
		Auth:           simauth.New(opts.Now),
		Requests:       newRequestLog(1000),
		log:            opts.Logger,
	}
	s.SiteURL = s.SPOURL + "/sites/" + sposim.DefaultSite
	s.IdentityEndpoint = s.GraphURL + "/msi/token"
	s.Faults.SetPageLatency(opts.PageLatency)
	s.Graph, err = graphsim.New(graphsim.Options{
		BaseURL:          s.GraphURL,
		Store:            store,
		DeltaPageSize:    opts.PageSize,
		DeltaRepeatEvery: opts.DeltaRepeatEvery,
		Now:              opts.Now,
		PageDelay:        s.Faults.PageDelay,
		WrapBatchItem:    func(h http.Handler) http.Handler { return s.Faults.Middleware(faults.Graph, h) },
		Logger:           opts.Logger.With("origin", "graph"),
	})
	if err == nil {
		s.SPO, err = sposim.New(sposim.Options{
			BaseURL:  s.SPOURL,
			Resolver: store,
			JobStep:  opts.JobStep,
			Now:      opts.Now,
			FileDir:  opts.FileDir,
			Logger:   opts.Logger.With("origin", "spo"),
		})
	}
	if err != nil {
		gl.Close()
		sl.Close()
		return nil, fmt.Errorf("starting simulator: %w", err)
	}
	s.ResetStats() // the stats start now, not with the tenant's generation
	s.serve(gl, s.graphHandler())
	s.serve(sl, s.spoHandler())
	opts.Logger.Info("m365sim started", "graph", s.GraphURL, "spo", s.SPOURL, "users", store.Len())
	return s, nil
}

func loadTenant(opts Options) (*directory.Store, error) {
	store := directory.NewStore()
	var users []directory.User
	if opts.TenantFile != "" {
		f, err := os.Open(opts.TenantFile)
		if err != nil {
			return nil, fmt.Errorf("opening tenant file: %w", err)
		}
		defer f.Close()
		if users, err = directory.ReadTenant(f); err != nil {
			return nil, fmt.Errorf("tenant file %s: %w", opts.TenantFile, err)
		}
	} else if opts.Users > 0 {
		users = directory.Generate(opts.Users, opts.Seed)
	}
	if err := store.Load(users); err != nil {
		return nil, fmt.Errorf("loading tenant: %w", err)
	}
	return store, nil
}

// listen opens a TCP listener, refusing non-loopback addresses.
func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("address %q is not a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return l, nil
}

func (s *Sim) serve(l net.Listener, h http.Handler) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serving", "addr", l.Addr().String(), "err", err)
		}
	}()
}

// Env returns the settings a handler needs, as KEY=value lines.
func (s *Sim) Env() []string {
	return []string{
		"GRAPH_ENDPOINT=" + s.GraphURL,
		"SPO_SITE_URL=" + s.SiteURL,
		"IDENTITY_ENDPOINT=" + s.IdentityEndpoint,
		"IDENTITY_HEADER=" + s.IdentityHeader,
	}
}

// Close stops both origins and removes sposim's files.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, srv := range s.servers {
			if err := srv.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := s.SPO.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing sharepoint: %w", err))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// graphHandler: /_sim/ admin, then faults, then /msi/token or bearer + Graph.
func (s *Sim) graphHandler() http.Handler {
	requireGraph := s.Auth.Require(simauth.Graph, s.GraphURL, "https://graph.microsoft.com", simauth.GraphAppID)
	api := s.Faults.Middleware(faults.Graph, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/msi/token" {
			s.Auth.MSIHandler(s.IdentityHeader).ServeHTTP(w, r)
			return
		}
		requireGraph(s.Graph).ServeHTTP(w, r)
	}))
	return s.common(faults.Graph, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAdmin(r.URL.Path) {
			if !s.serveAdmin(w, r) {
				adminFail(w, http.StatusNotFound, "unknown simulator route %s", r.URL.Path)
			}
			return
		}
		api.ServeHTTP(w, r)
	}))
}

// spoHandler: /_sim/ (ours, else sposim's), then faults, bearer and sposim.
func (s *Sim) spoHandler() http.Handler {
	api := s.Faults.Middleware(faults.SPO, s.Auth.Require(simauth.SharePoint, s.SPOURL, simauth.SPOAppID)(s.SPO))
	return s.common(faults.SPO, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAdmin(r.URL.Path) {
			if !s.serveAdmin(w, r) {
				s.SPO.ServeHTTP(w, r)
			}
			return
		}
		api.ServeHTTP(w, r)
	}))
}

func isAdmin(p string) bool { return p == "/_sim" || strings.HasPrefix(p, "/_sim/") }

// common records requests, sets request ids and decompresses gzip bodies.
func (s *Sim) common(origin string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			s.Requests.add(RequestRecord{
				Time: start.UTC(), Origin: origin, Method: r.Method, Path: r.URL.RequestURI(), Status: sw.status,
			})
		}()
		id := newRequestID()
		sw.Header().Set("request-id", id)
		cid := r.Header.Get("client-request-id")
		if cid == "" {
			cid = id
		}
		sw.Header().Set("client-request-id", cid)
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				badBody(sw, r, origin)
				return
			}
			r.Body = struct {
				io.Reader
				io.Closer
			}{zr, r.Body}
			r.Header.Del("Content-Encoding")
			r.Header.Del("Content-Length")
			r.ContentLength = -1
		}
		next.ServeHTTP(sw, r)
	})
}

func badBody(w http.ResponseWriter, r *http.Request, origin string) {
	if origin == faults.Graph {
		simauth.WriteGraphError(w, r, http.StatusBadRequest, "BadRequest", "The request body is not valid gzip.")
		return
	}
	w.Header().Set("Content-Type", "application/json;odata=nometadata;charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, `{"odata.error":{"code":"-1, Microsoft.SharePoint.Client.InvalidClientQueryException","message":{"lang":"en-US","value":"The request body is not valid gzip."}}}`)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// statusWriter remembers the status; Unwrap keeps Hijack and Flush
// reachable through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RequestRecord is one request as the request log keeps it.
type RequestRecord struct {
	Time   time.Time `json:"time"`
	Origin string    `json:"origin"` // "graph" or "spo"
	Method string    `json:"method"`
	Path   string    `json:"path"`   // path and query
	Status int       `json:"status"` // 0 when the connection was dropped
}

// RequestLog is a bounded ring of recent requests.
type RequestLog struct {
	mu   sync.Mutex
	buf  []RequestRecord
	next int
	full bool
}

func newRequestLog(n int) *RequestLog { return &RequestLog{buf: make([]RequestRecord, n)} }

func (l *RequestLog) add(r RequestRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf[l.next] = r
	l.next = (l.next + 1) % len(l.buf)
	if l.next == 0 {
		l.full = true
	}
}

// All returns the recorded requests, oldest first.
func (l *RequestLog) All() []RequestRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]RequestRecord(nil), l.buf[:l.next]...)
	}
	return append(append([]RequestRecord(nil), l.buf[l.next:]...), l.buf[:l.next]...)
}

// Reset forgets every recorded request.
func (l *RequestLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next, l.full = 0, false
}
