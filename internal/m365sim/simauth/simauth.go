// Package simauth is the simulator's identity provider: it mints JWT-shaped
// access tokens signed with a per-process HMAC key, serves the App Service
// managed identity endpoint, and guards resource endpoints with bearer
// checks that fail with the real services' 401 shapes.
package simauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Well-known application ids of the resources.
const (
	GraphAppID = "00000003-0000-0000-c000-000000000000"
	SPOAppID   = "00000003-0000-0ff1-ce00-000000000000"
)

// Claims are the token claims the simulator uses.
type Claims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	AppID    string   `json:"appid"`
	OID      string   `json:"oid"`
	TID      string   `json:"tid"`
	Roles    []string `json:"roles,omitempty"`
	AppIDACR string   `json:"appidacr"`
	IAT      int64    `json:"iat"`
	NBF      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
}

// Errors returned by Parse (wrapped).
var (
	ErrMalformed = errors.New("malformed token")
	ErrSignature = errors.New("invalid token signature")
	ErrExpired   = errors.New("token expired")
)

// Minter mints and verifies tokens. The zero value is not usable; use New.
type Minter struct {
	key      []byte
	now      func() time.Time
	TenantID string // tid claim and realm
	// ManagedIdentityID is the appid/oid of the system-assigned identity.
	ManagedIdentityID string
}

// New returns a Minter with a fresh random signing key. now defaults to
// time.Now.
func New(now func() time.Time) *Minter {
	if now == nil {
		now = time.Now
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &Minter{
		key:               key,
		now:               now,
		TenantID:          "7a3c5e1f-2b4d-4c6e-8f0a-1b2c3d4e5f60",
		ManagedIdentityID: "5d2a8c4e-6f1b-4a3c-9e7d-0f1a2b3c4d5e",
	}
}

var header = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256","kid":"m365sim"}`))

// Mint returns a signed token carrying c. Missing iat/nbf default to now,
// a missing exp to now+24h, a missing issuer to the tenant's sts issuer.
func (m *Minter) Mint(c Claims) string {
	now := m.now().Unix()
	if c.IAT == 0 {
		c.IAT = now
	}
	if c.NBF == 0 {
		c.NBF = now
	}
	if c.Exp == 0 {
		c.Exp = now + 24*3600
	}
	if c.TID == "" {
		c.TID = m.TenantID
	}
	if c.Iss == "" {
		c.Iss = "https://sts.windows.net/" + m.TenantID + "/"
	}
	payload, _ := json.Marshal(c) // Claims always marshals
	signing := header + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signing + "." + m.sign(signing)
}

func (m *Minter) sign(s string) string {
	h := hmac.New(sha256.New, m.key)
	h.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Parse verifies a token's signature and lifetime and returns its claims.
func (m *Minter) Parse(token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, ErrMalformed
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if !hmac.Equal([]byte(parts[2]), []byte(m.sign(parts[0]+"."+parts[1]))) {
		return Claims{}, ErrSignature
	}
	if m.now().Unix() >= c.Exp {
		return Claims{}, ErrExpired
	}
	return c, nil
}

// NormalizeAudience strips a "/.default" scope suffix and trailing slashes,
// so "http://h:1/.default", "http://h:1/" and "http://h:1" compare equal.
func NormalizeAudience(a string) string {
	a = strings.TrimSuffix(a, "/.default")
	return strings.ToLower(strings.TrimRight(a, "/"))
}

// randomID returns 16 random hex bytes formatted as a uuid-like string.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
