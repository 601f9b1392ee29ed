package mapping

// Apply as it was before its per-user costs were cut (commit 2fd95bc), kept
// verbatim apart from its names as the oracle of TestApplyMatchesOracle and
// the baseline of BenchmarkApplyExampleOracle.

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// oldApply turns one user into an import record, or says why the user is
// skipped. Users are skipped, in this order of precedence, when deleted,
// when guests or disabled accounts are excluded, and when they have no value
// for the id attribute: a record is never sent with an empty id.
//
// Values become text as follows: strings as they are; collections joined
// with the property's separator (null items left out); booleans "true" or
// "false"; numbers in the shortest decimal form; known date-time properties
// in ISO 8601 UTC; null or absent values as "", which clears the SharePoint
// value as PnP does.
func oldApply(m *Mapping, u profile.User) (Record, SkipReason) {
	if u.Removed {
		return Record{}, SkipDeleted
	}
	if t, _ := u.Props["userType"].(string); !m.IncludeGuests && strings.EqualFold(t, "Guest") {
		return Record{}, SkipGuest
	}
	if on, ok := u.Props["accountEnabled"].(bool); ok && !on && !m.IncludeDisabled {
		return Record{}, SkipDisabled
	}
	id := oldID(m, u)
	if id == "" {
		return Record{}, SkipNoID
	}
	rec := Record{ID: id, Values: make([]KV, 0, len(m.Properties))}
	for _, p := range m.Properties {
		top, field, dotted := strings.Cut(p.Source, ".")
		var v any
		k := userProps[top]
		switch {
		case top == "manager":
			mgr, known := u.Props["manager"]
			if !known {
				continue
			}
			mm, _ := mgr.(map[string]any)
			v, k = mm[field], userProps[field]
		case dotted:
			obj, _ := u.Props[top].(map[string]any)
			v, k = obj[field], kindString
		default:
			v = u.Props[top]
		}
		sep := p.Separator
		if sep == "" { // unset in a hand-built Mapping; Parse never leaves it empty
			sep = DefaultSeparator
		}
		rec.Values = append(rec.Values, KV{Name: p.Target, Value: oldText(v, sep, k == kindDateTime)})
	}
	return rec, NotSkipped
}

// oldID returns the user's value for the mapping's id attribute, or "".
func oldID(m *Mapping, u profile.User) string {
	var key string
	switch m.IDType {
	case profile.CloudID:
		if s, _ := u.Props["id"].(string); s != "" {
			return s
		}
		return u.ID
	case profile.PrincipalName:
		key = "userPrincipalName"
	case profile.Email:
		key = "mail"
	default:
		return ""
	}
	s, _ := u.Props[key].(string)
	return s
}

// oldText converts one Graph value to the text the import file carries.
func oldText(v any, sep string, date bool) string {
	switch v := v.(type) {
	case []any:
		var b strings.Builder
		n := 0
		for _, item := range v {
			if item == nil {
				continue
			}
			if n > 0 {
				b.WriteString(sep)
			}
			b.WriteString(oldScalar(item, false))
			n++
		}
		return b.String()
	case []string:
		return strings.Join(v, sep)
	}
	return oldScalar(v, date)
}

// oldScalar converts a single value. Objects have no text form; validation
// keeps them out, and should one appear anyway it reads as empty.
func oldScalar(v any, date bool) string {
	switch v := v.(type) {
	case string:
		if date {
			return oldIsoDate(v)
		}
		return v
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case json.Number:
		return v.String()
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case time.Time:
		return v.UTC().Format(isoUTC)
	}
	return ""
}

// oldIsoDate normalises an RFC 3339 date-time or a plain date to ISO 8601 UTC
// with whole seconds. Text that is neither is returned unchanged.
func oldIsoDate(s string) string {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if len(s) == len(isoUTC) && s[len(s)-1] == 'Z' {
			return s // already canonical; spare the allocation
		}
		return t.UTC().Format(isoUTC)
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.Format(isoUTC)
	}
	return s
}
