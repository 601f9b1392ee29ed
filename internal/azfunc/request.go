package azfunc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Request is the host's invocation payload {"Data":{…},"Metadata":{…}}, sent
// in default mode: for every trigger that is not a forwarded HTTP request.
//
// Data holds the trigger value (and any other input binding) keyed by binding
// name; Metadata holds the trigger's binding data (DequeueCount, Id, sys, …).
// The host encodes most scalar values twice (a JSON string whose content is
// a JSON literal, e.g. "\"HelloWorld\"" or "4"), so read values through the
// methods below rather than the maps.
type Request struct {
	Data     map[string]json.RawMessage
	Metadata map[string]json.RawMessage
}

// maxUnwrap bounds how many string layers Bind peels off a value. The host
// adds one layer (JsonConvert.SerializeObject) on top of a message body that
// may itself be a JSON string, so three is generous.
const maxUnwrap = 3

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// Bind decodes Data[name] into v, which must be a non-nil pointer. It
// tolerates both encodings the host uses: a JSON value, or a JSON string whose
// content is JSON (decoded twice). For a string target, a double-encoded
// string is unwrapped once more. For *any and *json.RawMessage targets, string
// layers whose content is valid JSON are peeled off before decoding.
//
// A missing or null value returns an error wrapping ErrMissing. Keys are
// matched exactly first, then case-insensitively.
func (r *Request) Bind(name string, v any) error {
	raw, err := lookup(r.Data, "data", name)
	if err != nil {
		return err
	}
	if err := decode(raw, v); err != nil {
		return fmt.Errorf("decoding data %q: %w", name, err)
	}
	return nil
}

// DataString returns Data[name] as a plain string, unwrapping double encoding.
// Numbers, booleans, objects and arrays are returned as their JSON text.
func (r *Request) DataString(name string) (string, error) {
	return lookupString(r.Data, "data", name)
}

// MetaString returns Metadata[name] as a plain string, unwrapping double
// encoding. Numbers, booleans, objects and arrays are returned as their JSON
// text.
func (r *Request) MetaString(name string) (string, error) {
	return lookupString(r.Metadata, "metadata", name)
}

// MetaInt returns Metadata[name] as an integer. The host sends numbers as
// numeric strings ("4"); the docs show plain numbers (4); a string that was
// serialized twice ("\"4\"") is accepted too.
func (r *Request) MetaInt(name string) (int64, error) {
	raw, err := lookup(r.Metadata, "metadata", name)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := decode(raw, &n); err != nil {
		return 0, fmt.Errorf("decoding metadata %q as integer: %w", name, err)
	}
	return n, nil
}

// MetaTime returns Metadata[name] as a time. It accepts ISO 8601 with or
// without an offset and with any number of fractional digits; see ParseTime.
func (r *Request) MetaTime(name string) (time.Time, error) {
	s, err := lookupString(r.Metadata, "metadata", name)
	if err != nil {
		return time.Time{}, err
	}
	t, err := ParseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("decoding metadata %q as time: %w", name, err)
	}
	return t, nil
}

// ParseTime parses a time as the host serializes .NET DateTime and
// DateTimeOffset values: ISO 8601 with an offset ("2024-05-01T10:15:00+00:00",
// "…Z") or without one ("2019-10-01T00:00:00"), with or without fractional
// seconds (.NET writes up to seven digits).
//
// A time without an offset is taken as UTC: the host formats a DateTime in
// its machine's local zone, which is UTC on Azure. .NET's DateTime.MinValue
// ("0001-01-01T00:00:00" in any offset), which the timer uses for "never ran",
// is returned as the zero time.Time so that IsZero reports it; any other
// time before 0001-01-01T00:00:00Z is an error.
//
// Text longer than 40 bytes is refused unread: the longest time the host
// writes, with .NET's seven fractional digits (the round-trip "o" format,
// https://learn.microsoft.com/dotnet/standard/base-types/standard-date-and-time-format-strings)
// and an offset ("0001-01-01T00:00:00.1234567+00:00"), is 33. An error
// quotes the text, cut at 40 bytes.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	const longest = 40
	bad := func() (time.Time, error) {
		text := strconv.Quote(s)
		if len(s) > longest {
			text = strconv.Quote(strings.ToValidUTF8(s[:longest], "")) + fmt.Sprintf("… (%d bytes)", len(s))
		}
		return time.Time{}, fmt.Errorf("parsing time %s: want ISO 8601 such as 2006-01-02T15:04:05+00:00", text)
	}
	if len(s) > longest {
		return bad()
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Go accepts fractional seconds after the seconds field when parsing
		// even if the layout has none.
		var err2 error
		t, err2 = time.Parse("2006-01-02T15:04:05", s)
		if err2 != nil {
			return bad()
		}
	}
	if t.Year() == 1 && t.YearDay() == 1 && t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
		return time.Time{}, nil
	}
	if t.UTC().Year() < 1 {
		// .NET has no earlier time (DateTime.MinValue, above, aside).
		return time.Time{}, fmt.Errorf("parsing time %q: before 0001-01-01T00:00:00Z, the earliest time .NET writes", s)
	}
	return t, nil
}

// lookup returns m[name], or, failing an exact match, the value of the
// alphabetically first key equal to name under case folding (the host's own
// JSON reader is case-insensitive). Missing and null values are ErrMissing.
func lookup(m map[string]json.RawMessage, kind, name string) (json.RawMessage, error) {
	raw, ok := m[name]
	if !ok {
		var keys []string
		for k := range m {
			if strings.EqualFold(k, name) {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			sort.Strings(keys)
			raw, ok = m[keys[0]], true
		}
	}
	raw = bytes.TrimSpace(raw)
	if !ok || len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("%s %q: %w", kind, name, ErrMissing)
	}
	return raw, nil
}

func lookupString(m map[string]json.RawMessage, kind, name string) (string, error) {
	raw, err := lookup(m, kind, name)
	if err != nil {
		return "", err
	}
	s, err := decodeString(raw)
	if err != nil {
		return "", fmt.Errorf("decoding %s %q: %w", kind, name, err)
	}
	return s, nil
}

// decode implements Bind's tolerant decoding of raw into v.
func decode(raw json.RawMessage, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("target must be a non-nil pointer, got %T", v)
	}
	switch t := rv.Elem().Type(); {
	case t == rawMessageType || t.Kind() == reflect.Interface:
		return json.Unmarshal(unwrapJSON(raw), v)
	case t.Kind() == reflect.String:
		s, err := decodeString(raw)
		if err != nil {
			return err
		}
		// Re-encoding lets named string types with their own
		// UnmarshalJSON or UnmarshalText methods decode themselves.
		b, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("re-encoding string: %w", err)
		}
		return json.Unmarshal(b, v)
	}
	// Try the value as it is; while it is a JSON string, retry with its
	// content. A failed attempt on a string never modifies v.
	cur := raw
	for i := 0; ; i++ {
		err := json.Unmarshal(cur, v)
		if err == nil || i == maxUnwrap {
			return err
		}
		s, ok := jsonString(cur)
		if !ok {
			return err
		}
		cur = json.RawMessage(s)
	}
}

// decodeString returns raw as a plain string: the content of a JSON string,
// unwrapped once more if that content is itself a JSON string literal (the
// host's double encoding). Non-string JSON values are returned as their text.
//
// A single-encoded string whose content happens to be a quoted JSON string
// cannot be told apart from a double-encoded one and is unwrapped too.
func decodeString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	s, ok := jsonString(raw)
	if !ok {
		if len(raw) == 0 || raw[0] == '"' || !json.Valid(raw) {
			return "", errors.New("invalid JSON value")
		}
		return string(raw), nil
	}
	if inner, ok := jsonString([]byte(s)); ok {
		return inner, nil
	}
	return s, nil
}

// unwrapJSON peels string layers off raw while their content is valid JSON.
func unwrapJSON(raw json.RawMessage) json.RawMessage {
	for range maxUnwrap {
		s, ok := jsonString(raw)
		if !ok || !json.Valid([]byte(s)) {
			break
		}
		raw = json.RawMessage(s)
	}
	return raw
}

// jsonString reports whether b is a JSON string literal and returns its content.
func jsonString(b []byte) (string, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", false
	}
	return s, true
}
