package mapping

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// Record is one user's entry in the import file.
type Record struct {
	// ID is the value of the IdName key: object id, UPN or mail, per IDType.
	ID string
	// Values are in Properties order. A property drawn from the manager is
	// left out when the source did not say whether the user has a manager.
	Values []KV
}

// KV is one SharePoint property and its text value.
type KV struct {
	Name, Value string
}

// SkipReason says why a user produces no record; "" means it does.
type SkipReason string

// The reasons Apply skips a user.
const (
	NotSkipped   SkipReason = ""
	SkipDeleted  SkipReason = "deleted"  // Graph reported the user @removed
	SkipGuest    SkipReason = "guest"    // userType Guest, and guests are excluded
	SkipDisabled SkipReason = "disabled" // accountEnabled false, and disabled accounts are excluded
	SkipNoID     SkipReason = "no-id"    // the attribute IDType names is empty
)

// isoUTC is the layout dates are written in.
const isoUTC = "2006-01-02T15:04:05Z"

// Apply turns one user into an import record, or says why the user is
// skipped. Users are skipped, in this order of precedence, when deleted,
// when guests or disabled accounts are excluded, and when they have no value
// for the id attribute: a record is never sent with an empty id.
//
// Values become text as follows: strings as they are; collections joined
// with the property's separator (null items left out); booleans "true" or
// "false"; numbers in the shortest decimal form; known date-time properties
// in ISO 8601 UTC; null or absent values as "", which clears the SharePoint
// value as PnP does.
func (m *Mapping) Apply(u profile.User) (Record, SkipReason) {
	id, skip := m.admit(u)
	if skip != NotSkipped {
		return Record{}, skip
	}
	return Record{ID: id, Values: m.appendValues(make([]KV, 0, len(m.Properties)), u)}, NotSkipped
}

// ApplyInto is Apply writing into rec, whose Values storage it reuses: a
// caller that is done with each record before it asks for the next one
// spares an allocation per user. It sets rec.ID and rec.Values as Apply
// would return them, except that a skipped user leaves rec.Values empty
// rather than nil.
func (m *Mapping) ApplyInto(rec *Record, u profile.User) SkipReason {
	id, skip := m.admit(u)
	rec.ID, rec.Values = id, rec.Values[:0]
	if skip != NotSkipped {
		return skip
	}
	rec.Values = m.appendValues(rec.Values, u)
	return NotSkipped
}

// admit returns the user's id, or "" and why the user is skipped.
func (m *Mapping) admit(u profile.User) (string, SkipReason) {
	if u.Removed {
		return "", SkipDeleted
	}
	if t, _ := u.Props["userType"].(string); !m.IncludeGuests && strings.EqualFold(t, "Guest") {
		return "", SkipGuest
	}
	if on, ok := u.Props["accountEnabled"].(bool); ok && !on && !m.IncludeDisabled {
		return "", SkipDisabled
	}
	id := m.id(u)
	if id == "" {
		return "", SkipNoID
	}
	return id, NotSkipped
}

// appendValues appends the user's values, in Properties order, to dst.
func (m *Mapping) appendValues(dst []KV, u profile.User) []KV {
	for _, p := range m.Properties {
		var v any
		date := false
		top, field, dotted := p.Source, "", false
		if i := strings.IndexByte(top, '.'); i >= 0 {
			top, field, dotted = top[:i], top[i+1:], true
		}
		switch {
		case top == "manager":
			mgr, known := u.Props["manager"]
			if !known {
				continue
			}
			mm, _ := mgr.(map[string]any)
			v, date = mm[field], isDateTime(field)
		case dotted:
			obj, _ := u.Props[top].(map[string]any)
			v = obj[field]
		default:
			v, date = u.Props[top], isDateTime(top)
		}
		sep := p.Separator
		if sep == "" { // unset in a hand-built Mapping; Parse never leaves it empty
			sep = DefaultSeparator
		}
		dst = append(dst, KV{Name: p.Target, Value: text(v, sep, date)})
	}
	return dst
}

// isDateTime reports whether name is a date-time user property, whose
// values are normalised to ISO 8601 UTC. All of them end in "Date" or
// "DateTime", which spares other names the table lookup.
func isDateTime(name string) bool {
	return (strings.HasSuffix(name, "Date") || strings.HasSuffix(name, "DateTime")) && userProps[name] == kindDateTime
}

// id returns the user's value for the mapping's id attribute, or "".
func (m *Mapping) id(u profile.User) string {
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

// text converts one Graph value to the text the import file carries.
func text(v any, sep string, date bool) string {
	switch v := v.(type) {
	case string: // the common case, first
		if date {
			return isoDate(v)
		}
		return v
	case []any:
		return join(v, sep)
	case []string:
		return strings.Join(v, sep)
	}
	return scalar(v, date)
}

// join joins the items of a collection with sep, leaving out null items.
// A collection of strings, the only kind Graph has for users, takes one
// allocation, or none when it holds a single string.
func join(items []any, sep string) string {
	n, count, first := 0, 0, ""
	for _, item := range items {
		switch s := item.(type) {
		case nil:
			continue
		case string:
			if count == 0 {
				first = s
			}
			n += len(s)
			count++
			continue
		}
		return joinAny(items, sep)
	}
	switch count {
	case 0:
		return ""
	case 1:
		return first
	}
	var b strings.Builder
	b.Grow(n + (count-1)*len(sep))
	count = 0
	for _, item := range items {
		if s, ok := item.(string); ok {
			if count > 0 {
				b.WriteString(sep)
			}
			b.WriteString(s)
			count++
		}
	}
	return b.String()
}

// joinAny is join for collections of any scalars.
func joinAny(items []any, sep string) string {
	var b strings.Builder
	n := 0
	for _, item := range items {
		if item == nil {
			continue
		}
		if n > 0 {
			b.WriteString(sep)
		}
		b.WriteString(scalar(item, false))
		n++
	}
	return b.String()
}

// scalar converts a single value. Objects have no text form; validation
// keeps them out, and should one appear anyway it reads as empty.
func scalar(v any, date bool) string {
	switch v := v.(type) {
	case string:
		if date {
			return isoDate(v)
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

// isoDate normalises an RFC 3339 date-time or a plain date to ISO 8601 UTC
// with whole seconds. Text that is neither is returned unchanged.
func isoDate(s string) string {
	if len(s) == len(isoUTC) && s[len(s)-1] == 'Z' {
		// Canonical if it parses at all (20 bytes and a Z leave no room
		// for a fraction or an offset); if it does not, it is no plain
		// date either (too long). Unchanged either way.
		return s
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC().Format(isoUTC)
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.Format(isoUTC)
	}
	return s
}
