// Package azfunc speaks the Azure Functions custom-handler wire protocol so
// that no other package has to: it decodes the host's invocation payload
// (timer and queue triggers, tolerant of the host's double-encoded strings),
// writes the response envelope the host expects, and maps errors onto the
// host's failure semantics (non-2xx fails the invocation, so queue messages
// are retried and eventually poisoned).
//
// It imports only the standard library. The wire format it follows is
// described in /work/shared/reference/functions-custom-handler.md.
package azfunc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// ErrDrop marks a message that can never succeed. A function error wrapping
// it is answered 200 with a log line, so the host deletes the queue message
// instead of retrying it into the poison queue.
var ErrDrop = errors.New("message dropped")

// ErrMissing is wrapped by the Request accessors when a Data or Metadata
// value is absent or null.
var ErrMissing = errors.New("value missing")

// Port settings the host gives the handler process; the second is the legacy
// name carrying the same value.
const (
	portSetting       = "FUNCTIONS_CUSTOMHANDLER_PORT"
	legacyPortSetting = "FUNCTIONS_HTTPWORKER_PORT"
)

// ListenAddr returns "127.0.0.1:<port>" from FUNCTIONS_CUSTOMHANDLER_PORT,
// falling back to FUNCTIONS_HTTPWORKER_PORT. The host always calls the
// handler on 127.0.0.1. Port 0 is accepted (the system picks a free port),
// which only makes sense in tests.
func ListenAddr(getenv func(string) string) (string, error) {
	name := portSetting
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		name = legacyPortSetting
		v = strings.TrimSpace(getenv(name))
	}
	if v == "" {
		return "", fmt.Errorf("%s is not set (nor %s): the Functions host sets it when it starts the handler", portSetting, legacyPortSetting)
	}
	port, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return "", fmt.Errorf("%s must be a port number (0-65535), got %q", name, v)
	}
	return net.JoinHostPort("127.0.0.1", strconv.FormatUint(port, 10)), nil
}

// InvocationID returns the X-Azure-Functions-InvocationId header of a host
// request, or "" if it is absent.
func InvocationID(r *http.Request) string {
	return r.Header.Get("X-Azure-Functions-InvocationId")
}

type loggerKey struct{}

// WithLogger returns a copy of ctx carrying l, for Logger to find.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger carried by ctx. Handler puts one there, tagged
// with the function name and invocation id. Without one it returns a logger
// that discards everything.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// Ping answers the host's readiness and health probes: GET (or HEAD) / gets
// 200 with the body {}. Any other path gets 404, so that mounting Ping as a
// mux's catch-all "/" never turns an invocation of an unknown function into a
// success (which would delete a queue message unprocessed); other methods on
// / get 405. The host only needs some HTTP answer to consider the handler up.
func Ping() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/":
			writeJSON(w, http.StatusNotFound, []byte(`{"error":"no function at this path"}`))
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, []byte(`{"error":"method not allowed"}`))
		default:
			writeJSON(w, http.StatusOK, []byte(`{}`))
		}
	})
}

// writeJSON writes body with the Content-Type the host requires: without it
// net/http would sniff text/plain and the host would fail the invocation.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // The client has gone; nothing left to tell it.
}
