package testenv

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Elsewhere starts an HTTP listener on 127.0.0.1, an origin no client under
// test is configured for, that must receive nothing: each request fails the
// test, naming the request and the Authorization header it carried. It
// returns the listener's origin (http://127.0.0.1:PORT) and the count of
// requests received, and closes the listener when the test ends.
func Elsewhere(tb testing.TB) (origin string, hits *atomic.Int64) {
	tb.Helper()
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		tb.Errorf("the other origin received %s %s (Authorization %q)", r.Method, r.URL, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusTeapot)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL, hits
}
