package directory

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// onPremAttrs is the name of the complex property that always carries all
// fifteen extensionAttributeN keys.
const onPremAttrs = "onPremisesExtensionAttributes"

// onPremKeys lists extensionAttribute1..15 in Graph's order.
var onPremKeys = func() []string {
	keys := make([]string, 15)
	for i := range keys {
		keys[i] = "extensionAttribute" + strconv.Itoa(i+1)
	}
	return keys
}()

// encodeProp returns the canonical JSON text of a property value. The
// encoding escapes only what JSON requires (no HTML escaping), so the bytes
// match what Graph sends and can be copied into responses verbatim.
func encodeProp(name string, v any) (string, error) {
	if name == onPremAttrs {
		if m, ok := v.(map[string]any); ok {
			return encodeOnPrem(m)
		}
	}
	b, err := appendJSON(make([]byte, 0, 48), v, 0)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// encodeOnPrem encodes onPremisesExtensionAttributes with all fifteen keys
// present in order, absent ones as null. Unknown keys are an error.
func encodeOnPrem(m map[string]any) (string, error) {
	for k := range m {
		if !slices.Contains(onPremKeys, k) {
			return "", fmt.Errorf("unknown key %q in %s", k, onPremAttrs)
		}
	}
	b := make([]byte, 1, 512)
	b[0] = '{'
	for i, k := range onPremKeys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		v := m[k]
		if v != nil {
			if _, ok := v.(string); !ok {
				return "", fmt.Errorf("%s.%s must be a string or null", onPremAttrs, k)
			}
		}
		var err error
		if b, err = appendJSON(b, v, 1); err != nil {
			return "", err
		}
	}
	return string(append(b, '}')), nil
}

// appendJSON appends the JSON encoding of a JSON-shaped value: nil, bool,
// string, numbers, []any, []string and map[string]any (keys sorted).
func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > 16 {
		return nil, fmt.Errorf("value nested too deeply")
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendString(b, x), nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("unsupported number %v", x)
		}
		return strconv.AppendFloat(b, x, 'g', -1, 64), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case json.Number:
		if _, err := strconv.ParseFloat(string(x), 64); err != nil {
			return nil, fmt.Errorf("invalid number %q", x)
		}
		return append(b, x...), nil
	case []string:
		b = append(b, '[')
		for i, s := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']'), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendString appends s to b as a JSON string literal, escaping only what
// JSON requires. It is exported so HTTP layers can write the same bytes.
func AppendString(b []byte, s string) []byte { return appendString(b, s) }

// decodeProp turns canonical JSON back into a JSON-shaped value.
func decodeProp(raw string) any {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		// Canonical values are produced by encodeProp and always decode.
		panic(fmt.Sprintf("directory: corrupt property value %q: %v", raw, err))
	}
	return v
}
