package graphsim

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are a Server's counters since New or the last ResetStats: what a
// benchmark needs to tell the simulator's serving rate from the client's.
type Stats struct {
	Since      time.Time `json:"since"`
	Requests   int64     `json:"requests"`   // HTTP requests answered by Graph (/v1.0/...; a $batch counts once)
	Errors     int64     `json:"errors"`     // of which answered with a status >= 400
	BatchItems int64     `json:"batchItems"` // requests run inside $batch
	Pages      int64     `json:"pages"`      // GET /users and /users/delta pages answered 200 ($deltatoken=latest included)
	UserItems  int64     `json:"userItems"`  // user objects in answers: list and delta items (repeats and @removed included), single users, managers; not expanded managers

	// Busy is the wall time spent inside Graph's handlers, summed over
	// requests, minus the injected waits: the page latency and whatever the
	// fault middleware around $batch items spent (delays, injected errors).
	// It includes writing the answer to the connection and, when more
	// requests run than there are CPUs, waiting for one; the process CPU
	// time (GET /_sim/stats) is the cost measure that excludes both.
	Busy time.Duration `json:"busy"`
	// Active is the wall time during which at least one Graph request was
	// being worked on (the union of the intervals Busy sums): how long the
	// simulator was not idle. Injected waits do not make it active.
	Active time.Duration `json:"active"`
	// PageLatency is the injected page latency waited, summed over requests.
	PageLatency time.Duration `json:"pageLatency"`
}

type counters struct {
	mu                                         sync.Mutex // guards since and the active-time fields
	since                                      time.Time
	requests, errors, batchItems, pages, items atomic.Int64
	busy, latency                              atomic.Int64 // nanoseconds

	working     int           // requests being worked on now
	activeSince time.Time     // when working last went from 0 to 1
	active      time.Duration // closed active intervals since the reset
}

// enter and leave bracket work on a request (not its injected waits).
func (c *counters) enter() {
	c.mu.Lock()
	if c.working == 0 {
		c.activeSince = time.Now()
	}
	c.working++
	c.mu.Unlock()
}

func (c *counters) leave() {
	c.mu.Lock()
	c.working--
	if c.working == 0 {
		c.active += time.Since(c.activeSince)
	}
	c.mu.Unlock()
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	c.mu.Lock()
	since, active := c.since, c.active
	if c.working > 0 {
		active += time.Since(c.activeSince) // ResetStats moves activeSince up to since
	}
	c.mu.Unlock()
	return Stats{
		Since: since, Requests: c.requests.Load(), Errors: c.errors.Load(), BatchItems: c.batchItems.Load(),
		Pages: c.pages.Load(), UserItems: c.items.Load(),
		Busy: time.Duration(c.busy.Load()), Active: active, PageLatency: time.Duration(c.latency.Load()),
	}
}

// ResetStats zeroes the counters. Requests under way at the time count in
// full after the reset.
func (s *Server) ResetStats() {
	c := &s.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	c.since = time.Now()
	c.active = 0
	if c.working > 0 {
		c.activeSince = c.since
	}
	for _, v := range []*atomic.Int64{&c.requests, &c.errors, &c.batchItems, &c.pages, &c.items, &c.busy, &c.latency} {
		v.Store(0)
	}
}

// meter collects one HTTP request's share of the counters. The request's
// goroutine owns it: $batch items run one after another on it.
type meter struct {
	excluded   time.Duration // injected waits
	latency    time.Duration // of which page latency
	itemInner  time.Duration // time the current $batch item spent in serveAPI
	items      int64
	pages      int64
	batchItems int64
}

type meterKey struct{}

// batchItemKey marks the context of a request run inside $batch.
type batchItemKey struct{}

func meterOf(r *http.Request) *meter {
	m, _ := r.Context().Value(meterKey{}).(*meter)
	return m
}

func inBatch(r *http.Request) bool { return r.Context().Value(batchItemKey{}) != nil }

// served counts n user items, and a page when page is set.
func served(r *http.Request, n int, page bool) {
	if m := meterOf(r); m != nil {
		m.items += int64(n)
		if page {
			m.pages++
		}
	}
}

// metered serves r with next and adds the request to the counters.
func (s *Server) metered(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request)) {
	c := &s.stats
	c.enter()
	start := time.Now()
	m := &meter{}
	sw := &statusWriter{ResponseWriter: w}
	next(sw, r.WithContext(context.WithValue(r.Context(), meterKey{}, m)))
	busy := time.Since(start) - m.excluded
	c.leave()
	c.requests.Add(1)
	if sw.status >= 400 {
		c.errors.Add(1)
	}
	c.batchItems.Add(m.batchItems)
	c.pages.Add(m.pages)
	c.items.Add(m.items)
	c.busy.Add(int64(max(busy, 0)))
	c.latency.Add(int64(m.latency))
}

// statusWriter remembers the status; Unwrap keeps the underlying writer's
// optional interfaces reachable through http.ResponseController.
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

// pageDelay waits the per-page latency before a /users or /users/delta
// page, and keeps the wait out of the busy time. Pages asked for inside
// $batch do not wait (the per-item latency is not modelled); neither do
// $count, single users, managers and managed-identity tokens, which never
// call it.
func (s *Server) pageDelay(r *http.Request) error {
	if s.opts.PageDelay == nil || inBatch(r) {
		return nil
	}
	m := meterOf(r)
	if m == nil {
		return s.opts.PageDelay(r.Context())
	}
	s.stats.leave()
	start := time.Now()
	err := s.opts.PageDelay(r.Context())
	s.stats.enter()
	d := time.Since(start)
	m.excluded += d
	m.latency += d
	return err
}
