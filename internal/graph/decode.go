package graph

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// This file decodes the JSON body of a page of users straight into a page,
// without kiota's generic parse tree (which took more than half of a full
// sync's CPU) and without encoding/json's reflection.
//
// Each user item is decoded in two passes. The first validates the item
// and records it on a tape (one token per value, object key or container,
// containers knowing their size and where they end) while unescaping every
// string value into one scratch buffer. The second builds the item's Props
// from the tape: maps and slices get their exact sizes, all string values
// of the item share one allocation (a string copied once from the scratch
// buffer, never aliasing the body, which the caller reuses), and object
// keys come from a table of keys seen before (the ~20 property names of a
// page repeat on every item), so a user costs about one allocation per
// value (the interface box) plus its maps.
//
// The result equals what encoding/json would decode into map[string]any
// under the rules of decodePage (see decode_test.go's reference decoder,
// which the fuzz target holds it to): numbers are float64, strings are
// unescaped with invalid UTF-8 and lone surrogates replaced by U+FFFD the
// way encoding/json does it, duplicate keys keep the last value.

// maxDecodeDepth bounds the nesting of arrays and objects in a page, the
// page object itself counting as 1 and a user item as 3.
const maxDecodeDepth = 64

// maxInternedKeys bounds a decoder's table of object keys (a page's keys
// are a few dozen property names; the bound only matters for odd input).
const maxInternedKeys = 4096

// Bounds on what a page may make the decoder allocate, whatever it holds.
// Only the items to build are recorded on the tape, each at most
// maxItemTokens values and keys (a user has a few hundred; the tape is 16
// bytes a token). The users built from a page may take at most
// decodeBudget times the page's size plus decodeBudgetFloor, as estimated
// from each item's tape before it is built: tokenCost per value or key
// (its slot in a map or slice, a box), objectCost per object and
// groupCost more when it has members (a Go map's first group of 8 slots),
// arrayCost per array, userCost per user (its sighting; p.users growing
// keeps ~5 copies) and the string bytes. A page of 999 real users comes to
// 4-5× (TestDecodePageBudget); the floor covers pages of tiny users, as no
// page of users holds more than 999 ("Invalid page size specified: '1000'.
// Must be between 1 and 999 inclusive.", learn.microsoft.com/answers/
// questions/1129204; "the highest $top supported is 999",
// learn.microsoft.com/answers/questions/120381). Tiny values or containers
// packed densely (`[{"x":[{"x":…` takes 40× its size once built) are
// refused before they are built. Both refusals wrap errPageLimit.
const (
	maxItemTokens     = 1 << 16
	decodeBudget      = 16
	decodeBudgetFloor = 1 << 20
	tokenCost         = 24
	objectCost        = 48
	groupCost         = 264
	arrayCost         = 24
	userCost          = 384
)

// errPageLimit is wrapped by the errors of a page refused for what it would
// cost to decode, not for its syntax.
var errPageLimit = errors.New("beyond the decoder's limits for a page of users")

// Token kinds of the tape.
const (
	tNull uint8 = iota
	tFalse
	tTrue
	tNum // x: math.Float64bits of the number
	tStr // x: offset<<32 | length in decoder.vs
	tKey // x: index into decoder.keys; the member's value follows
	tArr // n: elements; x: tape index just past the array's last token
	tObj // n: members; x: tape index just past the object's last token
)

type token struct {
	kind uint8
	n    uint32
	x    uint64
}

// decoder holds the scratch state of decodePage, kept in a pool so its
// buffers and its key table outlive one page.
type decoder struct {
	buf   []byte
	pos   int
	tape  []token
	vs    []byte   // the current item's string values, unescaped
	ks    []byte   // an unescaped key that needed unescaping
	keys  []string // the current item's keys, interned
	prev  []string // the keys of the item before
	known map[string]string
	item  int  // index of the item being decoded, -1 outside "value"
	rec   bool // record the value being read on the tape (an item to build)
	cost  int  // estimated bytes the users built so far take
}

var decoderPool = sync.Pool{New: func() any {
	return &decoder{known: make(map[string]string, 64)}
}}

// decodePage decodes a page of a Graph user collection into p (see page
// and sighting for what it holds), reusing p.users' backing array. Strings
// in p never alias body. A page that would cost more than the decoder's
// bounds (maxItemTokens, decodeBudget) is refused with an error wrapping
// errPageLimit.
func decodePage(body []byte, p *page) error {
	d := decoderPool.Get().(*decoder)
	d.buf, d.pos, d.item, d.cost = body, 0, -1, 0
	p.users = p.users[:0]
	p.nextLink, p.deltaLink = "", ""
	err := d.page(p)
	d.buf = nil
	if cap(d.tape) > 1<<16 || cap(d.vs) > 1<<20 {
		// Don't let one odd page pin big buffers in the pool.
		d.tape, d.vs, d.keys, d.prev = nil, nil, nil, nil
	}
	if cap(d.ks) > 1<<16 {
		d.ks = nil
	}
	decoderPool.Put(d)
	if err != nil {
		p.users = p.users[:0]
		p.nextLink, p.deltaLink = "", ""
	}
	return err
}

// decodeError is malformed JSON (or a number float64 cannot hold) at byte
// offset Offset of the body.
type decodeError struct {
	Offset int
	Msg    string
	Item   int  // index in "value" of the item it is in, -1 if none
	Valid  bool // the JSON is valid; the number in it is not
}

func (e *decodeError) Error() string {
	what := "invalid JSON"
	if e.Valid {
		what = "unsupported value"
	}
	if e.Item >= 0 {
		return fmt.Sprintf("%s at byte %d (in value[%d]): %s", what, e.Offset, e.Item, e.Msg)
	}
	return fmt.Sprintf("%s at byte %d: %s", what, e.Offset, e.Msg)
}

func (d *decoder) syntax(off int, format string, args ...any) error {
	return &decodeError{Offset: off, Msg: fmt.Sprintf(format, args...), Item: d.item}
}

// unexpected describes the byte at off (or the end of the body) where
// something else was wanted.
func (d *decoder) unexpected(off int, context string) error {
	if off >= len(d.buf) {
		return d.syntax(len(d.buf), "unexpected end of JSON input %s", context)
	}
	return d.syntax(off, "invalid character %s %s", quoteChar(d.buf[off]), context)
}

func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	if c >= utf8.RuneSelf {
		return fmt.Sprintf("0x%02x", c)
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// kindAt names the kind of the JSON value starting at off, for errors.
func (d *decoder) kindAt(off int) string {
	switch d.buf[off] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func kindName(k uint8) string {
	switch k {
	case tNull:
		return "null"
	case tFalse, tTrue:
		return "a boolean"
	case tNum:
		return "a number"
	case tStr:
		return "a string"
	case tArr:
		return "an array"
	}
	return "an object"
}

func (d *decoder) skipSpace() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// page decodes the top-level object. Malformed JSON ends it at once; a
// key whose value is not what a page holds ends it only after the whole
// body is read, and only if it is the key's last occurrence (a repeated
// key's last value counts, as with encoding/json).
func (d *decoder) page(p *page) error {
	d.skipSpace()
	if d.pos >= len(d.buf) {
		return d.unexpected(d.pos, "looking for beginning of value")
	}
	if d.buf[d.pos] != '{' {
		start := d.pos
		if err := d.skipValue(1, false); err != nil {
			return err
		}
		return fmt.Errorf("the page is %s, want an object", d.kindAt(start))
	}
	var valueErr, nextErr, deltaErr error
	d.pos++
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == '}' {
		d.pos++
	} else {
		for {
			if d.pos >= len(d.buf) || d.buf[d.pos] != '"' {
				return d.unexpected(d.pos, "looking for beginning of object key string")
			}
			key, err := d.key()
			if err != nil {
				return err
			}
			d.skipSpace()
			if d.pos >= len(d.buf) || d.buf[d.pos] != ':' {
				return d.unexpected(d.pos, "after object key")
			}
			d.pos++
			d.skipSpace()
			if d.pos >= len(d.buf) {
				return d.unexpected(d.pos, "looking for beginning of value")
			}
			switch string(key) {
			case "value":
				valueErr, err = d.values(p)
			case "@odata.nextLink":
				p.nextLink, nextErr, err = d.link("@odata.nextLink")
			case "@odata.deltaLink":
				p.deltaLink, deltaErr, err = d.link("@odata.deltaLink")
			default:
				err = d.skipValue(2, false)
			}
			if err != nil {
				return err
			}
			more, err := d.separator('}', "after object key:value pair")
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	d.skipSpace()
	if d.pos < len(d.buf) {
		return d.unexpected(d.pos, "after top-level value")
	}
	return errors.Join(valueErr, nextErr, deltaErr)
}

// key reads an object key at d.pos (the opening quote) and returns it
// unescaped: a slice of the body or of d.ks, valid until the next key.
func (d *decoder) key() ([]byte, error) {
	start := d.pos + 1
	end, clean, err := d.scanString()
	if err != nil {
		return nil, err
	}
	if clean {
		return d.buf[start:end], nil
	}
	d.ks = unescape(d.ks[:0], d.buf[start:end])
	return d.ks, nil
}

// link reads @odata.nextLink or @odata.deltaLink: a string, or null.
// shape reports any other value, err malformed JSON.
func (d *decoder) link(name string) (link string, shape, err error) {
	switch d.buf[d.pos] {
	case '"':
		start := d.pos + 1
		end, clean, err := d.scanString()
		if err != nil {
			return "", nil, err
		}
		if clean {
			return string(d.buf[start:end]), nil, nil
		}
		d.ks = unescape(d.ks[:0], d.buf[start:end])
		return string(d.ks), nil, nil
	case 'n':
		return "", nil, d.literal("null")
	}
	start := d.pos
	if err := d.skipValue(2, false); err != nil {
		return "", nil, err
	}
	return "", fmt.Errorf("%s is %s, want a string", name, d.kindAt(start)), nil
}

// skipValue validates the value at d.pos and moves past it; record keeps
// it on the tape (the tape, d.vs and d.keys hold only that value).
func (d *decoder) skipValue(depth int, record bool) error {
	d.tape, d.vs, d.keys, d.rec = d.tape[:0], d.vs[:0], d.keys[:0], record
	return d.value(depth)
}

// values decodes the "value" array into p.users. shape reports a value
// that is not an array of users, err malformed JSON.
func (d *decoder) values(p *page) (shape, err error) {
	p.users = p.users[:0] // a repeated "value" key replaces the earlier one
	switch d.buf[d.pos] {
	case 'n':
		return nil, d.literal("null")
	case '[':
	default:
		start := d.pos
		if err := d.skipValue(2, false); err != nil {
			return nil, err
		}
		return fmt.Errorf("value is %s, want an array of users", d.kindAt(start)), nil
	}
	d.pos++
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
		d.pos++
		return nil, nil
	}
	defer func() { d.item = -1 }()
	for i := 0; ; i++ {
		d.item = i
		d.skipSpace()
		if d.pos >= len(d.buf) {
			return nil, d.unexpected(d.pos, "looking for beginning of value")
		}
		start := d.pos
		if err := d.skipValue(3, shape == nil && d.buf[start] == '{'); err != nil {
			return nil, err
		}
		switch {
		case shape != nil:
			// Only check that the rest is JSON.
		case d.buf[start] != '{':
			shape = fmt.Errorf("value[%d] is %s, want an object", i, d.kindAt(start))
		default:
			if err := d.charge(i); err != nil {
				return nil, err
			}
			p.users = append(p.users, sighting{})
			if err := d.sighting(&p.users[len(p.users)-1]); err != nil {
				shape = fmt.Errorf("value[%d].%w", i, err)
			}
			d.prev, d.keys = d.keys, d.prev
		}
		d.skipSpace()
		if d.pos < len(d.buf) && d.buf[d.pos] == ',' {
			d.pos++
			continue
		}
		if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
			d.pos++
			if shape != nil {
				p.users = p.users[:0]
			}
			return shape, nil
		}
		return nil, d.unexpected(d.pos, "after array element")
	}
}

// charge adds the estimated cost of building the item on the tape (item
// i) to the page's, and refuses the page once it passes its budget.
func (d *decoder) charge(i int) error {
	cost := len(d.vs) + userCost + tokenCost*len(d.tape)
	for _, tk := range d.tape {
		switch {
		case tk.kind == tArr:
			cost += arrayCost
		case tk.kind == tObj && tk.n > 0:
			cost += objectCost + groupCost
		case tk.kind == tObj:
			cost += objectCost
		}
	}
	d.cost += cost
	if budget := decodeBudget*len(d.buf) + decodeBudgetFloor; d.cost > budget {
		return fmt.Errorf("value[%d]: the users would take more than %d MiB in memory, %d times the page's size (too many tiny values or containers): %w",
			i, budget>>20, decodeBudget, errPageLimit)
	}
	return nil
}

// value records the value at d.pos on the tape. depth is the nesting
// level a container starting here would have.
func (d *decoder) value(depth int) error {
	if d.pos >= len(d.buf) {
		return d.unexpected(d.pos, "looking for beginning of value")
	}
	if d.rec && len(d.tape) >= maxItemTokens {
		return fmt.Errorf("value[%d] holds more than %d values and keys: %w", d.item, maxItemTokens, errPageLimit)
	}
	switch c := d.buf[d.pos]; c {
	case '"':
		start := d.pos + 1
		end, clean, err := d.scanString()
		if err != nil || !d.rec {
			return err
		}
		off := len(d.vs)
		if clean {
			d.vs = append(d.vs, d.buf[start:end]...)
		} else {
			d.vs = unescape(d.vs, d.buf[start:end])
		}
		d.tape = append(d.tape, token{kind: tStr, x: uint64(off)<<32 | uint64(len(d.vs)-off)})
		return nil
	case '{':
		return d.object(depth)
	case '[':
		return d.array(depth)
	case 't':
		d.record(tTrue)
		return d.literal("true")
	case 'f':
		d.record(tFalse)
		return d.literal("false")
	case 'n':
		d.record(tNull)
		return d.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return d.number()
		}
		return d.unexpected(d.pos, "looking for beginning of value")
	}
}

// record appends a token of kind k when the value is being recorded.
func (d *decoder) record(k uint8) {
	if d.rec {
		d.tape = append(d.tape, token{kind: k})
	}
}

func (d *decoder) literal(lit string) error {
	for i := 0; i < len(lit); i++ {
		if d.pos >= len(d.buf) {
			return d.unexpected(d.pos, "in literal "+lit+" (expecting "+quoteChar(lit[i])+")")
		}
		if d.buf[d.pos] != lit[i] {
			return d.unexpected(d.pos, "in literal "+lit+" (expecting "+quoteChar(lit[i])+")")
		}
		d.pos++
	}
	return nil
}

func (d *decoder) object(depth int) error {
	if depth > maxDecodeDepth {
		return d.syntax(d.pos, "nesting deeper than %d levels", maxDecodeDepth)
	}
	at := len(d.tape)
	d.record(tObj)
	d.pos++
	d.skipSpace()
	n := uint32(0)
	if d.pos < len(d.buf) && d.buf[d.pos] == '}' {
		d.pos++
	} else {
		for {
			if d.pos >= len(d.buf) || d.buf[d.pos] != '"' {
				return d.unexpected(d.pos, "looking for beginning of object key string")
			}
			k, err := d.key()
			if err != nil {
				return err
			}
			if d.rec {
				i := len(d.keys)
				d.tape = append(d.tape, token{kind: tKey, x: uint64(i)})
				// The items of a page mostly have the same keys in the same
				// order: try the previous item's key at this place first.
				if i < len(d.prev) && string(k) == d.prev[i] {
					d.keys = append(d.keys, d.prev[i])
				} else {
					d.keys = append(d.keys, d.intern(k))
				}
			}
			d.skipSpace()
			if d.pos >= len(d.buf) || d.buf[d.pos] != ':' {
				return d.unexpected(d.pos, "after object key")
			}
			d.pos++
			d.skipSpace()
			if err := d.value(depth + 1); err != nil {
				return err
			}
			n++
			more, err := d.separator('}', "after object key:value pair")
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	if d.rec {
		d.tape[at].n, d.tape[at].x = n, uint64(len(d.tape))
	}
	return nil
}

func (d *decoder) array(depth int) error {
	if depth > maxDecodeDepth {
		return d.syntax(d.pos, "nesting deeper than %d levels", maxDecodeDepth)
	}
	at := len(d.tape)
	d.record(tArr)
	d.pos++
	d.skipSpace()
	n := uint32(0)
	if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
		d.pos++
	} else {
		for {
			if err := d.value(depth + 1); err != nil {
				return err
			}
			n++
			more, err := d.separator(']', "after array element")
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	if d.rec {
		d.tape[at].n, d.tape[at].x = n, uint64(len(d.tape))
	}
	return nil
}

// separator moves past what follows a member or an element: a ',' (more
// is true, spaces after it skipped too) or the container's closer.
func (d *decoder) separator(closer byte, context string) (more bool, err error) {
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == ',' {
		d.pos++
		d.skipSpace()
		return true, nil
	}
	if d.pos < len(d.buf) && d.buf[d.pos] == closer {
		d.pos++
		return false, nil
	}
	return false, d.unexpected(d.pos, context)
}

// intern returns k as a string, shared with earlier keys of the same text.
func (d *decoder) intern(k []byte) string {
	if s, ok := d.known[string(k)]; ok {
		return s
	}
	s := string(k)
	if len(d.known) < maxInternedKeys && len(s) <= 256 {
		d.known[s] = s
	}
	return s
}

// number records the number at d.pos, checking JSON's number grammar.
func (d *decoder) number() error {
	b := d.buf
	start, i := d.pos, d.pos
	neg := false
	if b[i] == '-' {
		neg = true
		i++
	}
	intStart := i
	var mant uint64
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			mant = mant*10 + uint64(b[i]-'0') // only used for up to 15 digits
			i++
		}
	default:
		return d.unexpected(i, "in numeric literal")
	}
	simple := i-intStart <= 15
	if i < len(b) && b[i] == '.' {
		simple = false
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return d.unexpected(i, "after decimal point in numeric literal")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		simple = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return d.unexpected(i, "in exponent of numeric literal")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	d.pos = i
	var f float64
	if simple {
		f = float64(mant) // exact: below 10^15 < 2^53
		if neg {
			f = -f
		}
	} else {
		var err error
		f, err = strconv.ParseFloat(string(b[start:i]), 64)
		if err != nil {
			return &decodeError{Offset: start, Msg: fmt.Sprintf("number %s is out of the range of float64", b[start:i]), Item: d.item, Valid: true}
		}
	}
	if d.rec {
		d.tape = append(d.tape, token{kind: tNum, x: math.Float64bits(f)})
	}
	return nil
}

// strSafe marks the bytes a string's fast path copies as they are.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString checks the string at d.pos (its opening quote) and moves past
// it. end is the offset of the closing quote; clean means the bytes between
// the quotes are the string itself (no escapes, valid UTF-8).
func (d *decoder) scanString() (end int, clean bool, err error) {
	b := d.buf
	i := d.pos + 1
	start := i
	// Fast path: printable ASCII up to the closing quote, eight bytes at a
	// time while none of them is special.
	for i+8 <= len(b) && !swarSpecial(binary.LittleEndian.Uint64(b[i:])) {
		i += 8
	}
	for i < len(b) && strSafe[b[i]] {
		i++
	}
	if i < len(b) && b[i] == '"' {
		d.pos = i + 1
		return i, true, nil
	}
	clean = true
	highBytes := false
	for {
		if i >= len(b) {
			return 0, false, d.syntax(len(b), "unexpected end of JSON input in string literal")
		}
		c := b[i]
		switch {
		case strSafe[c]:
			i++
		case c == '"':
			d.pos = i + 1
			if clean && highBytes && !utf8.Valid(b[start:i]) {
				clean = false
			}
			return i, clean, nil
		case c == '\\':
			clean = false
			if i+1 >= len(b) {
				return 0, false, d.syntax(len(b), "unexpected end of JSON input in string escape code")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k >= len(b) {
						return 0, false, d.syntax(len(b), "unexpected end of JSON input in \\u hexadecimal character escape")
					}
					if !isHex(b[i+k]) {
						return 0, false, d.unexpected(i+k, "in \\u hexadecimal character escape")
					}
				}
				i += 6
			default:
				return 0, false, d.unexpected(i+1, "in string escape code")
			}
		case c < 0x20:
			return 0, false, d.unexpected(i, "in string literal")
		default: // c >= 0x80
			highBytes = true
			i++
		}
	}
}

// swarSpecial reports whether one of the eight bytes of x may be a quote,
// a backslash, a control character or not ASCII (false positives are
// fine: the caller then goes byte by byte).
func swarSpecial(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	bs := x ^ (lo * '\\')
	return ((x-lo*0x20)|(q-lo)|(bs-lo)|x)&hi != 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	}
	return rune(c - 'A' + 10)
}

// u4 reads \uXXXX at s[0:], -1 if s does not start with one.
func u4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' || !isHex(s[2]) || !isHex(s[3]) || !isHex(s[4]) || !isHex(s[5]) {
		return -1
	}
	return hexVal(s[2])<<12 | hexVal(s[3])<<8 | hexVal(s[4])<<4 | hexVal(s[5])
}

// unescape appends the string whose (scanned, valid) body is s to dst,
// unescaped and with invalid UTF-8 and lone surrogates replaced by U+FFFD
// exactly as encoding/json does.
func unescape(dst, s []byte) []byte {
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := u4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, u4(s[r:])); dec != utf8.RuneError {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						continue
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst
}

// sighting builds the item on the tape into s.
func (d *decoder) sighting(s *sighting) error {
	t := d.tape
	slab := string(d.vs) // every string value of the item, one allocation
	root := t[0]
	props := make(map[string]any, root.n)
	idAt, deltaAt := -1, -1
	for j, k := 1, uint32(0); k < root.n; k++ {
		key := d.keys[t[j].x]
		j++
		switch {
		case key == "manager@delta":
			deltaAt = j
			j = skipTok(t, j)
		case len(key) > 0 && key[0] == '@':
			if key == "@removed" {
				s.user.Removed = true
			}
			j = skipTok(t, j)
		default:
			if key == "id" {
				idAt = j
			}
			var v any
			v, j = d.build(slab, j)
			props[key] = v
		}
	}
	s.user.Props = props
	if idAt >= 0 {
		if t[idAt].kind != tStr {
			return fmt.Errorf("id is %s, want a string", kindName(t[idAt].kind))
		}
		s.user.ID = slabString(slab, t[idAt].x)
	}
	if deltaAt >= 0 {
		s.managerKnown = true
		switch t[deltaAt].kind {
		case tNull:
		case tArr:
			for j, e := deltaAt+1, uint32(0); e < t[deltaAt].n; e++ {
				if t[j].kind != tObj {
					return fmt.Errorf("manager@delta[%d] is %s, want an object", e, kindName(t[j].kind))
				}
				removed, id := false, -1
				end := int(t[j].x)
				for m, k := j+1, uint32(0); k < t[j].n; k++ {
					switch d.keys[t[m].x] {
					case "@removed":
						removed = true
					case "id":
						id = m + 1
					}
					m = skipTok(t, m+1)
				}
				if !removed && id >= 0 && t[id].kind == tStr {
					s.managerID = slabString(slab, t[id].x)
				}
				j = end
			}
		default:
			return fmt.Errorf("manager@delta is %s, want an array", kindName(t[deltaAt].kind))
		}
	}
	return nil
}

// skipTok returns the tape index just past the value at j.
func skipTok(t []token, j int) int {
	if k := t[j].kind; k == tArr || k == tObj {
		return int(t[j].x)
	}
	return j + 1
}

func slabString(slab string, x uint64) string {
	off, n := x>>32, x&(1<<32-1)
	return slab[off : off+n]
}

// build returns the value at tape index j and the index past it.
func (d *decoder) build(slab string, j int) (any, int) {
	t := d.tape
	switch tk := t[j]; tk.kind {
	case tStr:
		return slabString(slab, tk.x), j + 1
	case tNum:
		return math.Float64frombits(tk.x), j + 1
	case tTrue:
		return true, j + 1
	case tFalse:
		return false, j + 1
	case tObj:
		m := make(map[string]any, tk.n)
		j++
		for k := uint32(0); k < tk.n; k++ {
			key := d.keys[t[j].x]
			if len(key) > 0 && key[0] == '@' {
				j = skipTok(t, j+1)
				continue
			}
			var v any
			v, j = d.build(slab, j+1)
			m[key] = v
		}
		return m, j
	case tArr:
		a := make([]any, tk.n)
		j++
		for k := range a {
			a[k], j = d.build(slab, j)
		}
		return a, j
	}
	return nil, j + 1
}
