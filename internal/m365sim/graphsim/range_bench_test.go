package graphsim

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchSelect is the eight properties a full-sync range read selects.
const benchSelect = "id,userPrincipalName,mail,displayName,jobTitle,department,accountEnabled,userType"

// benchRange is one sixteenth-ish of a generated tenant: the generator's
// given names Megan and Miriam (2 of 16).
const benchRange = "userPrincipalName ge 'megan' and userPrincipalName le 'miriam~'"

var (
	bigOnce    sync.Once
	bigFixture *fixture
)

// big500k returns a shared 500,000-user fixture (built once per test binary).
func big500k(b *testing.B) *fixture {
	bigOnce.Do(func() {
		bigFixture = newFixture(b, 500_000, 999)
		bigFixture.users = nil
	})
	return bigFixture
}

// benchWriter is a ResponseWriter that keeps the last body, so benchmarks
// measure the simulator rather than httptest's recorder.
type benchWriter struct {
	h    http.Header
	code int
	body []byte
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(c int)   { w.code = c }
func (w *benchWriter) Write(b []byte) (int, error) {
	w.body = append(w.body, b...)
	return len(b), nil
}

// serve runs one request and returns the body (valid until the next call
// with the same writer).
func (f *fixture) serve(w *benchWriter, target string, hdr ...string) (int, []byte) {
	r := httptest.NewRequest("GET", strings.TrimPrefix(target, base), nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w.h, w.code, w.body = http.Header{}, 200, w.body[:0]
	f.srv.ServeHTTP(w, r)
	return w.code, w.body
}

var (
	idMark   = []byte(`{"id":`)
	nextMark = []byte(`"@odata.nextLink":"`)
)

// readAll follows nextLinks from target and returns pages and items.
func (f *fixture) readAll(b testing.TB, target string) (pages, items int) {
	w := &benchWriter{}
	next := target
	for next != "" {
		code, body := f.serve(w, next)
		if code != 200 {
			b.Fatalf("%s: %d %s", next, code, body)
		}
		pages++
		items += bytes.Count(body, idMark)
		next = ""
		if i := bytes.Index(body, nextMark); i >= 0 {
			rest := body[i+len(nextMark):]
			next = string(rest[:bytes.IndexByte(rest, '"')])
		}
	}
	return pages, items
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRangeCount500k: GET /users/$count?$filter=<UPN range> at 500,000
// users, as a balancing pass sends it.
func BenchmarkRangeCount500k(b *testing.B) {
	f := big500k(b)
	target := "/v1.0/users/$count?$filter=" + url.QueryEscape(benchRange)
	b.ResetTimer()
	var n string
	for b.Loop() {
		code, body := f.serve(&benchWriter{}, target, "ConsistencyLevel", "eventual")
		if code != 200 {
			b.Fatalf("%d %s", code, body)
		}
		n = string(body)
	}
	b.Logf("range holds %s users", n)
}

// BenchmarkRangeRead500k: every page of one UPN range at 500,000 users
// ($top=999, eight properties, no $expand).
func BenchmarkRangeRead500k(b *testing.B) {
	f := big500k(b)
	target := "/v1.0/users?$select=" + benchSelect + "&$top=999&$filter=" + url.QueryEscape(benchRange)
	b.ResetTimer()
	items := 0
	cpu := cpuTime()
	for b.Loop() {
		_, n := f.readAll(b, target)
		items += n
	}
	b.ReportMetric(float64(items)/float64(b.N), "users/range")
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(items), "cpu-ns/user")
}

// BenchmarkRangeReadExpand500k: the same range with
// $expand=manager($select=id,mail), so pages of 100.
func BenchmarkRangeReadExpand500k(b *testing.B) {
	f := big500k(b)
	target := "/v1.0/users?$select=" + benchSelect + "&$expand=" + url.QueryEscape("manager($select=id,mail)") +
		"&$top=999&$filter=" + url.QueryEscape(benchRange)
	b.ResetTimer()
	items, pages := 0, 0
	cpu := cpuTime()
	for b.Loop() {
		p, n := f.readAll(b, target)
		items += n
		pages += p
	}
	b.ReportMetric(float64(items)/float64(b.N), "users/range")
	b.ReportMetric(float64(items)/float64(pages), "users/page")
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(items), "cpu-ns/user")
}

// BenchmarkExpandPage: the CPU the simulator spends per user on an
// unfiltered GET /users?$select=<8>&$expand=manager($select=id,mail)&$top=999
// read (pages of 100), at 100,000 users.
func BenchmarkExpandPage(b *testing.B) {
	f := newFixture(b, 100_000, 999)
	f.users = nil
	target := "/v1.0/users?$select=" + benchSelect + "&$expand=" + url.QueryEscape("manager($select=id,mail)") + "&$top=999"
	b.ResetTimer()
	items, pages := 0, 0
	cpu := cpuTime()
	for b.Loop() {
		p, n := f.readAll(b, target)
		items += n
		pages += p
	}
	b.ReportMetric(float64(items)/float64(pages), "users/page")
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(items), "cpu-ns/user")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(items), "wall-ns/user")
}
