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
	if u.Removed {
		return Record{}, SkipDeleted
	}
	if t, _ := u.Props["userType"].(string); !m.IncludeGuests && strings.EqualFold(t, "Guest") {
		return Record{}, SkipGuest
	}
	if on, ok := u.Props["accountEnabled"].(bool); ok && !on && !m.IncludeDisabled {
		return Record{}, SkipDisabled
	}
	id := m.id(u)
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
		rec.Values = append(rec.Values, KV{Name: p.Target, Value: text(v, sep, k == kindDateTime)})
	}
	return rec, NotSkipped
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
			b.WriteString(scalar(item, false))
			n++
		}
		return b.String()
	case []string:
		return strings.Join(v, sep)
	}
	return scalar(v, date)
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
