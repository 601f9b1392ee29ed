package simauth

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Flavor selects which service's 401 shape Require answers with.
type Flavor int

// The two resource services.
const (
	Graph Flavor = iota
	SharePoint
)

// DefaultRoles are the application roles every managed identity token carries.
var DefaultRoles = []string{"User.Read.All", "Sites.FullControl.All", "User.ReadWrite.All"}

// TokenFor mints a managed-identity token for the given audience.
func (m *Minter) TokenFor(aud string) string {
	return m.Mint(Claims{Aud: aud, AppID: m.ManagedIdentityID, OID: m.ManagedIdentityID, Roles: DefaultRoles, AppIDACR: "2"})
}

// MSIHandler serves the App Service managed identity endpoint
// (GET ?api-version=2019-08-01&resource=R[&client_id=C] with header
// X-IDENTITY-HEADER equal to secret). Token lifetime is 24 hours.
func (m *Minter) MSIHandler(secret string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			msiError(w, http.StatusMethodNotAllowed, "Only GET is supported.")
			return
		}
		got := headerFold(r.Header, "X-Identity-Header")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(secret)) != 1 {
			msiError(w, http.StatusUnauthorized, "The X-IDENTITY-HEADER header is missing or invalid.")
			return
		}
		q := r.URL.Query()
		resource := q.Get("resource")
		if resource == "" {
			msiError(w, http.StatusBadRequest, "The 'resource' query parameter is required.")
			return
		}
		if v := q.Get("api-version"); v == "" {
			msiError(w, http.StatusBadRequest, "The 'api-version' query parameter is required.")
			return
		}
		clientID := q.Get("client_id")
		appID := m.ManagedIdentityID
		if clientID != "" {
			appID = clientID
		}
		exp := m.now().Add(24 * time.Hour).Unix()
		tok := m.Mint(Claims{Aud: resource, AppID: appID, OID: appID, Roles: DefaultRoles, AppIDACR: "2", Exp: exp})
		body := map[string]string{
			"access_token": tok,
			"expires_on":   strconv.FormatInt(exp, 10),
			"resource":     resource,
			"token_type":   "Bearer",
		}
		if clientID != "" {
			body["client_id"] = clientID
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(body)
	})
}

// headerFold returns the first value of the header whose name equals name
// case-insensitively, even when the map key was not canonicalised.
func headerFold(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

func msiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg, "correlationId": randomID()})
}

// Require returns middleware that lets a request through only with a valid
// bearer token whose audience is one of audiences (compared after
// NormalizeAudience). Failures get the 401 shape of the flavor's service.
// SharePoint also refuses secret-based app tokens (appidacr "1").
func (m *Minter) Require(flavor Flavor, audiences ...string) func(http.Handler) http.Handler {
	allowed := make(map[string]bool, len(audiences))
	for _, a := range audiences {
		allowed[NormalizeAudience(a)] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if !ok {
				m.deny(w, r, flavor, "Access token is empty.", "Invalid issuer or signature.")
				return
			}
			c, err := m.Parse(tok)
			switch {
			case errors.Is(err, ErrExpired):
				m.deny(w, r, flavor, "Lifetime validation failed, the token is expired.", "Invalid JWT token. The token is expired.")
				return
			case errors.Is(err, ErrMalformed):
				m.deny(w, r, flavor, "CompactToken parsing failed with error code: 80049217", "Invalid issuer or signature.")
				return
			case err != nil:
				m.deny(w, r, flavor, "Access token validation failure.", "Invalid issuer or signature.")
				return
			}
			if !allowed[NormalizeAudience(c.Aud)] {
				m.deny(w, r, flavor, "Access token validation failure. Invalid audience.", "Invalid issuer or signature.")
				return
			}
			if flavor == SharePoint && c.AppIDACR == "1" {
				m.deny(w, r, flavor, "", "Unsupported app only token.")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func (m *Minter) deny(w http.ResponseWriter, r *http.Request, flavor Flavor, graphMsg, spoMsg string) {
	h := w.Header()
	if flavor == SharePoint {
		h.Set("WWW-Authenticate", `Bearer realm="`+m.TenantID+`",client_id="`+SPOAppID+`",trusted_issuers="00000001-0000-0000-c000-000000000000@*,https://sts.windows.net/*/,https://login.microsoftonline.com/*/v2.0",authorization_uri="https://login.windows.net/common/oauth2/authorize"`)
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error_description": spoMsg})
		return
	}
	h.Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="`+GraphAppID+`"`)
	WriteGraphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", graphMsg)
}

// WriteGraphError writes Graph's error body:
// {"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}.
// The request ids come from the response's request-id header when set,
// else from the request's client-request-id header, else a fresh id.
func WriteGraphError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	reqID := w.Header().Get("request-id")
	if reqID == "" {
		reqID = randomID()
		w.Header().Set("request-id", reqID)
	}
	clientID := r.Header.Get("client-request-id")
	if clientID == "" {
		clientID = reqID
	}
	body := map[string]any{"error": map[string]any{
		"code":    code,
		"message": msg,
		"innerError": map[string]string{
			"date":              time.Now().UTC().Format("2006-01-02T15:04:05"),
			"request-id":        reqID,
			"client-request-id": clientID,
		},
	}}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
