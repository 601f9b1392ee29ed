// Package apiparse reads what callers send to the administration API: the
// body of POST /api/sync, the query string of the listings and the ids in
// paths. It is the whole of the API's input parsing, kept apart from the
// handler (and from the Graph SDK the handler links) so that it can be
// fuzzed on its own.
//
// Every refusal is an *Error listing each problem, each naming the field it
// is about ("mode: …", "users[3]: …", "top: …", "body: …"); the handler
// answers it as a problem document (RFC 9457) with that list.
package apiparse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/mapping"
)

// MaxBody bounds request bodies of the API, in bytes: a sync request holds
// at most a mapping (itself at most mapping.MaxSize) and a thousand users.
// The handler reads no more than this from the connection (413 beyond);
// ParseSync refuses a longer body unread.
const MaxBody = 1 << 20

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Limits of a sync request.
const (
	MaxUsers = 1000 // users of one targeted run (PnP's -Users is for a handful)
	// MaxUserLen bounds one entry of users: an object id is 36 characters,
	// a userPrincipalName at most 113, an e-mail address at most 320.
	MaxUserLen = 320
	// MaxFilterLen bounds filter, which travels in a Graph URL.
	MaxFilterLen = 4096
	// MaxLimit bounds limit, the users a dry run lists in its answer.
	MaxLimit = 100_000
)

// Listing limits (?top=N).
const (
	DefaultTop = 50
	MaxTop     = 1000
)

// MaxIDLen bounds a run, job or request id in a path.
const MaxIDLen = 80

// Modes of a sync request; "" is the engine's default (delta when possible).
const (
	ModeDelta = "delta"
	ModeFull  = "full"
)

// Error is a refused input: every problem found, each naming its field.
type Error struct {
	// Syntax is true when the body is not JSON of the expected shape (as
	// opposed to well-formed JSON whose values are not acceptable).
	Syntax   bool
	Problems []string
}

func (e *Error) Error() string { return strings.Join(e.Problems, "; ") }

// Sync is the body of POST /api/sync; every field is optional. ParseSync
// returns it normalised: mode lower-case, users and filter trimmed, the
// mapping compacted and validated.
type Sync struct {
	Mode         string          `json:"mode,omitempty"` // "", "delta" or "full"
	WhatIf       bool            `json:"whatIf,omitempty"`
	DryRun       bool            `json:"dryRun,omitempty"`
	Users        []string        `json:"users,omitempty"`
	Filter       string          `json:"filter,omitempty"`
	Mapping      json.RawMessage `json:"mapping,omitempty"`
	AllowOverlap bool            `json:"allowOverlap,omitempty"`
	Limit        int             `json:"limit,omitempty"` // dry run: users listed in the plan (0: the engine's default)
	// Force sends every user read, also those whose values SharePoint
	// already has (the fingerprint store is not used to skip anyone).
	Force bool `json:"force,omitempty"`

	parsed *mapping.Mapping // Mapping, validated
}

// ParsedMapping is the request's mapping, validated; nil when the request
// carries none (the stored mapping is used).
func (s Sync) ParsedMapping() *mapping.Mapping { return s.parsed }

// Encode writes s as a body ParseSync accepts, giving back s.
func (s Sync) Encode() []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a Sync always encodes: strings, bools, an int and a compacted RawMessage
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// ParseSync reads the body of POST /api/sync. An empty body (or only white
// space) is {}: a sync with the defaults. Unknown fields, trailing data and
// values of the wrong type are refused, and so is every combination the
// engine cannot honour; the error lists every problem.
func ParseSync(body []byte) (Sync, error) {
	if len(body) > MaxBody {
		return Sync{}, &Error{Syntax: true, Problems: []string{fmt.Sprintf("body: %d bytes; a request body is at most %d bytes (1 MiB)", len(body), MaxBody)}}
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	var s Sync
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Sync{}, &Error{Syntax: true, Problems: []string{jsonProblem(err, body)}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return Sync{}, &Error{Syntax: true, Problems: []string{fmt.Sprintf("body: unexpected data after the JSON object, at byte %d", dec.InputOffset())}}
	}
	return Check(s)
}

// Check normalises s and validates it as ParseSync does a body: the
// command line builds its Sync from flags and a mapping file.
func Check(s Sync) (Sync, error) {
	s.Users = append([]string(nil), s.Users...) // normalised in place: not the caller's
	if problems := s.normalize(); len(problems) > 0 {
		return Sync{}, &Error{Problems: problems}
	}
	return s, nil
}

// normalize puts s in its canonical form and returns what is wrong with it.
func (s *Sync) normalize() []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	switch m := strings.ToLower(strings.TrimSpace(s.Mode)); m {
	case "", ModeDelta, ModeFull:
		s.Mode = m
	default:
		add("mode: %s is not delta or full", quote(s.Mode))
	}
	if s.WhatIf && s.DryRun {
		add("whatIf and dryRun: choose one (what-if uploads the file, dry run changes nothing)")
	}
	s.Filter = strings.TrimSpace(s.Filter)
	if n := len(s.Filter); n > MaxFilterLen {
		add("filter: %d bytes; at most %d", n, MaxFilterLen)
	}
	if len(s.Users) > 0 && s.Filter != "" {
		add("users and filter: choose one")
	}
	if len(s.Users) > MaxUsers {
		add("users: at most %d per run, got %d", MaxUsers, len(s.Users))
	} else {
		for i, u := range s.Users {
			u = strings.TrimSpace(u)
			switch {
			case u == "":
				add("users[%d]: empty", i)
			case len(u) > MaxUserLen:
				add("users[%d]: %d bytes; a user principal name, object id or e-mail address is at most %d", i, len(u), MaxUserLen)
			}
			s.Users[i] = u
		}
	}
	if len(s.Users) == 0 {
		s.Users = nil
	}
	if s.Limit < 0 || s.Limit > MaxLimit {
		add("limit: must be from 0 to %d, got %d", MaxLimit, s.Limit)
	}
	// A mapping file may start with a byte order mark (mapping.Parse
	// ignores it); a body cannot.
	raw := bytes.TrimSpace(bytes.TrimPrefix(s.Mapping, utf8BOM))
	if len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			add("mapping: not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		} else {
			s.Mapping = b.Bytes()
			m, err := mapping.Parse(s.Mapping)
			for _, p := range mapping.Problems(err) {
				add("mapping: %s", p.Error())
			}
			if err != nil && len(mapping.Problems(err)) == 0 {
				add("mapping: %v", err)
			}
			s.parsed = m
		}
	} else {
		s.Mapping = nil
	}
	return problems
}

// jsonProblem names what the decoder refused: the field for a value of the
// wrong type or an unknown field, the byte offset for broken JSON.
func jsonProblem(err error, body []byte) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Sprintf("body: a JSON object is expected, got %s", typeErr.Value)
		}
		return fmt.Sprintf("%s: %s is not %s", typeErr.Field, typeErr.Value, kind(typeErr.Type.String()))
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("body: not valid JSON at byte %d: %s", syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Sprintf("body: not valid JSON: it ends after %d bytes, inside a value", len(body))
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return fmt.Sprintf("%s: unknown field (the fields are mode, force, whatIf, dryRun, users, filter, mapping, allowOverlap and limit)", strings.Trim(name, `"`))
	}
	return "body: " + msg
}

// kind names a Go type as the JSON it decodes from.
func kind(goType string) string {
	switch goType {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int":
		return "a whole number"
	case "[]string":
		return "an array of strings"
	}
	return "of the expected type"
}

// quote quotes s for a message, shortened to 100 bytes.
func quote(s string) string {
	if len(s) > 100 {
		cut := 100
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// List is the query of a listing (GET /api/runs, GET /api/jobs).
type List struct {
	Top int // the newest Top records, 1 to MaxTop
}

// Encode writes l as a query string ParseList accepts, giving back l.
func (l List) Encode() string { return "top=" + strconv.Itoa(l.Top) }

// ParseList reads the query string of a listing. Parameters other than top
// are ignored: the Functions host adds its own (code, the function key).
func ParseList(rawQuery string) (List, error) {
	l := List{Top: DefaultTop}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return List{}, &Error{Problems: []string{fmt.Sprintf("query: not a valid query string (%v)", err)}}
	}
	switch v := q["top"]; len(v) {
	case 0:
	case 1:
		n, err := strconv.Atoi(strings.TrimSpace(v[0]))
		if err != nil || n < 1 || n > MaxTop {
			return List{}, &Error{Problems: []string{fmt.Sprintf("top: must be a whole number from 1 to %d, got %s", MaxTop, quote(v[0]))}}
		}
		l.Top = n
	default:
		return List{}, &Error{Problems: []string{fmt.Sprintf("top: given %d times; give it once", len(v))}}
	}
	return l, nil
}

// ValidID reports whether s can be a run, job or request id: letters,
// digits, '-', '.', braces (SharePoint writes job ids in braces), at most
// MaxIDLen bytes, and no "..". Such an id names exactly one blob below its
// folder (runs/<id>.json) and one path segment.
func ValidID(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '.' || c == '{' || c == '}' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')) {
			return false
		}
	}
	return !strings.Contains(s, "..")
}
