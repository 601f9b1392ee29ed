package m365sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/m365sim/simauth"
)

// adminError is the body of a failed admin request (the same shape sposim uses).
type adminError struct {
	Error string `json:"error"`
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func adminFail(w http.ResponseWriter, status int, format string, a ...any) {
	writeAdmin(w, status, adminError{Error: fmt.Sprintf(format, a...)})
}

// faultConfig is the body of GET/PUT /_sim/faults.
type faultConfig struct {
	Rules       []faults.Rule   `json:"rules"`
	PageLatency faults.Duration `json:"pageLatency"`
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding request body: %w", err)
	}
	return nil
}

func dirStatus(err error) int {
	switch {
	case errors.Is(err, directory.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, directory.ErrExists):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// serveAdmin serves the composition's /_sim/ routes and reports whether the
// path was one of them (otherwise the SPO origin hands it to sposim).
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/_sim"), "/"), "/")
	allow := func(methods ...string) bool {
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		adminFail(w, http.StatusMethodNotAllowed, "use %s for %s", strings.Join(methods, " or "), r.URL.Path)
		return false
	}
	switch {
	case len(parts) == 1 && parts[0] == "health":
		if allow(http.MethodGet) {
			writeAdmin(w, http.StatusOK, map[string]any{"status": "ok", "users": s.Directory.Len(), "version": s.Directory.Version()})
		}
	case len(parts) == 1 && parts[0] == "env":
		if allow(http.MethodGet) {
			env := map[string]string{}
			for _, kv := range s.Env() {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			writeAdmin(w, http.StatusOK, env)
		}
	case parts[0] == "users":
		s.adminUsers(w, r, parts[1:], allow)
	case len(parts) == 2 && parts[0] == "delta" && (parts[1] == "expire" || parts[1] == "reset"):
		if allow(http.MethodPost) {
			if parts[1] == "expire" {
				s.Graph.ExpireDeltaTokens()
			} else {
				s.Graph.ResetDelta()
			}
			w.WriteHeader(http.StatusNoContent)
		}
	case len(parts) == 2 && parts[0] == "delta" && parts[1] == "repeat":
		// GET or PUT {"every":n}: graphsim.Server.SetDeltaRepeatEvery.
		if !allow(http.MethodGet, http.MethodPut) {
			return true
		}
		if r.Method == http.MethodPut {
			var in struct {
				Every *int `json:"every"`
			}
			if err := decode(r, &in); err != nil || in.Every == nil || *in.Every < 0 {
				adminFail(w, http.StatusBadRequest, "want {\"every\":n} with n >= 0 (0 = off)")
				return true
			}
			s.Graph.SetDeltaRepeatEvery(*in.Every)
		}
		writeAdmin(w, http.StatusOK, map[string]int{"every": s.Graph.DeltaRepeatEvery()})
	case len(parts) == 1 && parts[0] == "stats":
		// The simulator's own serving rate (stats.go): GET reads it, POST
		// /_sim/stats/reset starts it again. Unauthenticated like every
		// /_sim/ route; the origins listen on loopback only.
		if allow(http.MethodGet) {
			writeAdmin(w, http.StatusOK, s.Stats())
		}
	case len(parts) == 2 && parts[0] == "stats" && parts[1] == "reset":
		if allow(http.MethodPost) {
			s.ResetStats()
			w.WriteHeader(http.StatusNoContent)
		}
	case len(parts) == 1 && parts[0] == "faults":
		s.adminFaults(w, r, allow)
	case len(parts) == 1 && parts[0] == "requests":
		if !allow(http.MethodGet, http.MethodDelete) {
			return true
		}
		if r.Method == http.MethodDelete {
			s.Requests.Reset()
			w.WriteHeader(http.StatusNoContent)
			return true
		}
		writeAdmin(w, http.StatusOK, map[string]any{"requests": s.Requests.All()})
	case len(parts) == 1 && parts[0] == "token":
		if !allow(http.MethodPost) {
			return true
		}
		var in struct {
			Aud      string `json:"aud"`
			AppIDACR string `json:"appidacr"`
			TTL      string `json:"ttl"`
		}
		if err := decode(r, &in); err != nil || in.Aud == "" {
			adminFail(w, http.StatusBadRequest, "want {\"aud\":\"...\",\"appidacr\":\"2\",\"ttl\":\"1h\"}")
			return true
		}
		c := simauth.Claims{Aud: in.Aud, AppID: s.Auth.ManagedIdentityID, OID: s.Auth.ManagedIdentityID,
			Roles: simauth.DefaultRoles, AppIDACR: in.AppIDACR}
		if c.AppIDACR == "" {
			c.AppIDACR = "2"
		}
		if in.TTL != "" {
			d, err := time.ParseDuration(in.TTL)
			if err != nil {
				adminFail(w, http.StatusBadRequest, "ttl: %v", err)
				return true
			}
			c.Exp = time.Now().Add(d).Unix()
			c.IAT, c.NBF = min(c.Exp, time.Now().Unix()), min(c.Exp, time.Now().Unix())
		}
		writeAdmin(w, http.StatusOK, map[string]string{"access_token": s.Auth.Mint(c)})
	default:
		return false
	}
	return true
}

func (s *Sim) adminUsers(w http.ResponseWriter, r *http.Request, rest []string, allow func(...string) bool) {
	switch {
	case len(rest) == 0:
		if !allow(http.MethodGet, http.MethodPost) {
			return
		}
		if r.Method == http.MethodPost {
			var u directory.User
			if err := decode(r, &u); err != nil {
				adminFail(w, http.StatusBadRequest, "%v", err)
				return
			}
			added, err := s.Directory.Add(u)
			if err != nil {
				adminFail(w, dirStatus(err), "%v", err)
				return
			}
			writeAdmin(w, http.StatusCreated, added)
			return
		}
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				adminFail(w, http.StatusBadRequest, "limit must be 1..1000")
				return
			}
			limit = n
		}
		users := s.Directory.List(r.URL.Query().Get("after"), limit)
		out := map[string]any{"users": users}
		if len(users) == limit {
			out["next"] = users[len(users)-1].ID
		}
		writeAdmin(w, http.StatusOK, out)
	case len(rest) == 1:
		if !allow(http.MethodGet, http.MethodPatch, http.MethodDelete) {
			return
		}
		key := rest[0]
		switch r.Method {
		case http.MethodGet:
			u, ok := s.Directory.Get(key)
			if !ok {
				adminFail(w, http.StatusNotFound, "no user %s", key)
				return
			}
			writeAdmin(w, http.StatusOK, u)
		case http.MethodPatch:
			var p directory.Patch
			if err := decode(r, &p); err != nil {
				adminFail(w, http.StatusBadRequest, "%v", err)
				return
			}
			u, err := s.Directory.Update(key, p)
			if err != nil {
				adminFail(w, dirStatus(err), "%v", err)
				return
			}
			writeAdmin(w, http.StatusOK, u)
		case http.MethodDelete:
			hard := r.URL.Query().Get("hard") == "true"
			if err := s.Directory.Delete(key, hard); err != nil {
				adminFail(w, dirStatus(err), "%v", err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	case len(rest) == 2 && rest[1] == "restore":
		if !allow(http.MethodPost) {
			return
		}
		u, err := s.Directory.Restore(rest[0])
		if err != nil {
			adminFail(w, dirStatus(err), "%v", err)
			return
		}
		writeAdmin(w, http.StatusOK, u)
	default:
		adminFail(w, http.StatusNotFound, "unknown simulator route %s", r.URL.Path)
	}
}

func (s *Sim) adminFaults(w http.ResponseWriter, r *http.Request, allow func(...string) bool) {
	if !allow(http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete) {
		return
	}
	switch r.Method {
	case http.MethodPut:
		var c faultConfig
		if err := decode(r, &c); err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if err := s.Faults.Replace(c.Rules); err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
		s.Faults.SetPageLatency(time.Duration(c.PageLatency))
	case http.MethodPost:
		var rule faults.Rule
		if err := decode(r, &rule); err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if err := s.Faults.Add(rule); err != nil {
			adminFail(w, http.StatusBadRequest, "%v", err)
			return
		}
	case http.MethodDelete:
		s.Faults.Clear()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeAdmin(w, http.StatusOK, faultConfig{Rules: s.Faults.Rules(), PageLatency: faults.Duration(s.Faults.PageLatency())})
}
