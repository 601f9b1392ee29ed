// Package mapping reads the mapping document (blob mapping.json) that says
// which Microsoft Graph user property feeds which SharePoint user profile
// property, validates it before anything is read or uploaded, and applies it
// to one user at a time to produce a record of the bulk import file.
//
// The document mirrors PnP's -UserProfilePropertyMapping, with PnP's gaps
// closed: every problem is reported at once and names its culprit, Graph
// property names are checked against a table of the properties Graph can
// return for a list of users, dotted paths reach into complex properties and
// the manager, and values are converted to text by explicit rules.
package mapping

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/profile"
)

// DefaultSeparator joins the items of a string collection, as PnP does.
const DefaultSeparator = ","

// MaxNameLength is the longest SharePoint property name accepted. SharePoint
// user profile property internal names are limited to 50 characters.
const MaxNameLength = 50

// Mapping is a validated mapping document.
type Mapping struct {
	// IDType says which user attribute identifies the profile.
	IDType profile.IDType
	// Properties are sorted by Target.
	Properties []Property
	// IncludeGuests and IncludeDisabled widen the set of users sent;
	// by default guests and disabled accounts are skipped.
	IncludeGuests, IncludeDisabled bool
}

// Property maps one SharePoint user profile property to a Graph property.
type Property struct {
	// Target is the SharePoint property's internal name; the import file
	// uses it as the key.
	Target string
	// Source is the Graph path: a user property ("mobilePhone"), a field of
	// a complex property ("employeeOrgData.division") or a property of the
	// manager ("manager.mail"). Parse normalises each segment to Graph's
	// spelling, so "BusinessPhones" becomes "businessPhones".
	Source string
	// Separator joins the items of a collection. Parse sets it to
	// DefaultSeparator unless the document says otherwise; Apply reads ""
	// as DefaultSeparator too.
	Separator string
}

// Problem is one thing wrong with a mapping document.
type Problem struct {
	// Path is the JSON path of the culprit, e.g. "properties.HomePhone";
	// it is empty for problems with the document as a whole.
	Path string
	// Message says what is wrong, and where possible how to fix it.
	Message string
}

// Error returns Path and Message separated by a colon, or only Message for
// problems with the whole document.
func (p *Problem) Error() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems returns the problems a Parse error consists of, in the order
// Parse found them. It returns nil for nil and for errors that hold none.
func Problems(err error) []Problem {
	var out []Problem
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *Problem:
			out = append(out, *e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

var (
	utf8BOM = []byte{0xEF, 0xBB, 0xBF}
	nameRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
	plainRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)
)

// MaxSize is the largest mapping document accepted, in bytes. A mapping
// with every Graph property mapped is a few kilobytes.
const MaxSize = 1 << 20

// MaxProblems bounds the problems one Parse reports; a document with more
// gets a last problem saying that the list stops there.
const MaxProblems = 100

// Parse decodes and validates a mapping document. On failure the error is
// an errors.Join of *Problem values, one per problem found, each naming the
// culprit by its JSON path; Problems lists them (at most MaxProblems, and
// one more saying the list is cut). A leading UTF-8 byte order mark is
// ignored. A document larger than MaxSize is refused unread.
func Parse(data []byte) (*Mapping, error) {
	var p parser
	var m *Mapping
	if len(data) > MaxSize {
		p.addf("", "the document is %d bytes; a mapping document is at most %d bytes (1 MiB)", len(data), MaxSize)
	} else {
		m = p.parse(bytes.TrimPrefix(data, utf8BOM))
	}
	if p.cut {
		p.problems = append(p.problems, Problem{Message: fmt.Sprintf("only the first %d problems are listed: fix them and check again", MaxProblems)})
	}
	if len(p.problems) > 0 {
		errs := make([]error, len(p.problems))
		for i := range p.problems {
			errs[i] = &p.problems[i]
		}
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// parser collects the problems of one document.
type parser struct {
	problems []Problem
	cut      bool // a problem went unlisted: MaxProblems were listed already
}

func (p *parser) addf(path, format string, args ...any) {
	if p.full() {
		p.cut = true
		return
	}
	p.problems = append(p.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// full reports whether MaxProblems are listed: what is left of the
// document is not examined.
func (p *parser) full() bool { return len(p.problems) >= MaxProblems }

// member is one name/value pair of a JSON object, in document order.
type member struct {
	name  string
	value json.RawMessage
}

// members splits a JSON object into its members, keeping their order and
// any duplicate names; the values are slices of raw, without the space
// around them. ok is false when raw is not an object. raw must be valid
// JSON (parse checks the whole document first), so a plain scan finds
// where each value ends.
func members(raw []byte) (ms []member, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	i = skipSpace(raw, i+1)
	for i < len(raw) && raw[i] == '"' {
		end := valueEnd(raw, i)
		name, _ := unquote(raw[i:end])
		i = skipSpace(raw, skipSpace(raw, end)+1) // past the ':'
		if i >= len(raw) {
			return nil, false // not valid JSON after all
		}
		end = valueEnd(raw, i)
		ms = append(ms, member{name: name, value: raw[i:end]})
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ',' {
			break // the closing '}'
		}
		i = skipSpace(raw, i+1)
	}
	return ms, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value that starts at b[i]
// (valid JSON).
func valueEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return min(i+1, len(b))
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ':', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// unquote returns the content of a JSON string literal; ok is false when s
// is not one.
func unquote(s []byte) (string, bool) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return string(s[1 : len(s)-1]), true
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil || len(s) == 0 || s[0] != '"' {
		return "", false
	}
	return out, true
}

// keyPath renders an object key as a JSON path step.
func keyPath(name string) string {
	if plainRE.MatchString(name) {
		return "." + name
	}
	return fmt.Sprintf("[%q]", name)
}

// unknownField reports a member the document format does not have.
func (p *parser) unknownField(path, name string, known []string) {
	if s := suggest(name, known); s != "" {
		p.addf(path, "unknown field (did you mean %q?)", s)
		return
	}
	p.addf(path, "unknown field (known fields: %s)", strings.Join(known, ", "))
}

func (p *parser) parse(data []byte) *Mapping {
	if !json.Valid(data) {
		// Unmarshal checks the whole input before it decodes anything, so
		// this only finds the syntax error.
		p.syntaxProblem(data, json.Unmarshal(data, new(struct{})))
		return nil
	}
	top, ok := members(data)
	if !ok {
		p.addf("", "a mapping document must be a JSON object")
		return nil
	}
	m := &Mapping{IDType: profile.CloudID}
	seen := map[string]bool{}
	sawProperties := false
	for _, mb := range top {
		if p.full() {
			p.cut = true
			break
		}
		path := strings.TrimPrefix(keyPath(mb.name), ".")
		if seen[mb.name] {
			p.addf(path, "duplicate key")
			continue
		}
		seen[mb.name] = true
		switch mb.name {
		case "idType":
			p.idType(m, mb.value)
		case "properties":
			sawProperties = true
			p.properties(m, mb.value)
		case "users":
			p.users(m, mb.value)
		default:
			p.unknownField(path, mb.name, []string{"idType", "properties", "users"})
		}
	}
	if !sawProperties {
		p.addf("properties", "missing: map at least one SharePoint property to a Graph property")
	}
	slices.SortFunc(m.Properties, func(a, b Property) int { return strings.Compare(a.Target, b.Target) })
	return m
}

// syntaxProblem reports a document that is not JSON, with the position of
// the first offending byte.
func (p *parser) syntaxProblem(data []byte, err error) {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		p.addf("", "not JSON: %v", err)
		return
	}
	off := int(se.Offset)
	if off > 0 && off <= len(data) && se.Error() != "unexpected end of JSON input" {
		off-- // Offset counts the offending byte itself.
	}
	off = min(off, len(data))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	p.addf("", "not JSON: %v (line %d, column %d)", se, line, col)
}

func (p *parser) idType(m *Mapping, raw json.RawMessage) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.addf("idType", "must be a string: CloudId, PrincipalName or Email")
		return
	}
	t, err := profile.ParseIDType(s)
	if err != nil {
		p.addf("idType", "%q is not an idType (want CloudId, PrincipalName or Email)", s)
		return
	}
	m.IDType = t
}

func (p *parser) users(m *Mapping, raw json.RawMessage) {
	if string(raw) == "null" {
		return
	}
	ms, ok := members(raw)
	if !ok {
		p.addf("users", `must be an object such as {"includeGuests": false, "includeDisabled": false}`)
		return
	}
	seen := map[string]bool{}
	for _, mb := range ms {
		if p.full() {
			p.cut = true
			break
		}
		path := "users" + keyPath(mb.name)
		if seen[mb.name] {
			p.addf(path, "duplicate key")
			continue
		}
		seen[mb.name] = true
		var dst *bool
		switch mb.name {
		case "includeGuests":
			dst = &m.IncludeGuests
		case "includeDisabled":
			dst = &m.IncludeDisabled
		default:
			p.unknownField(path, mb.name, []string{"includeGuests", "includeDisabled"})
			continue
		}
		if string(mb.value) == "null" || json.Unmarshal(mb.value, dst) != nil {
			p.addf(path, "must be true or false")
		}
	}
}

func (p *parser) properties(m *Mapping, raw json.RawMessage) {
	ms, ok := members(raw)
	if !ok {
		p.addf("properties", "must be an object mapping SharePoint property names to Graph property names")
		return
	}
	if len(ms) == 0 {
		p.addf("properties", "empty: map at least one SharePoint property to a Graph property")
		return
	}
	byFold := map[string]string{} // lower-case name -> first spelling
	for _, mb := range ms {
		if p.full() {
			p.cut = true
			break
		}
		path := "properties" + keyPath(mb.name)
		if p.target(path, mb.name, byFold) {
			continue
		}
		if prop, ok := p.property(path, mb.name, mb.value); ok {
			m.Properties = append(m.Properties, prop)
		}
	}
}

// target validates a SharePoint property name and reports whether it is a
// duplicate, in which case its value is not examined further.
func (p *parser) target(path, name string, byFold map[string]string) (dup bool) {
	switch {
	case name == "":
		p.addf(path, "empty SharePoint property name")
	case strings.EqualFold(name, profile.IDProperty):
		p.addf(path, "%q is reserved for the user's id in the import file", name)
	case len(name) > MaxNameLength || !nameRE.MatchString(name):
		p.addf(path, "%q is not a SharePoint user profile property name "+
			"(letters, digits, \"_\" and \"-\", starting with a letter, at most %d characters)", name, MaxNameLength)
	}
	lower := strings.ToLower(name)
	first, seen := byFold[lower]
	switch {
	case seen && first == name:
		p.addf(path, "duplicate key")
		return true
	case seen:
		p.addf(path, "same property as %q (SharePoint property names are not case-sensitive)", first)
		return true
	}
	byFold[lower] = name
	return false
}

// property validates the value of one properties member: a Graph path, or
// an object with "source" and an optional "separator".
func (p *parser) property(path, name string, raw json.RawMessage) (Property, bool) {
	prop := Property{Target: name, Separator: DefaultSeparator}
	var source string
	sourcePath := path
	sepPath := ""
	switch raw[0] {
	case '"':
		var ok bool
		if source, ok = unquote(raw); !ok {
			p.addf(path, "not a valid JSON string")
			return prop, false
		}
	case '{':
		ms, _ := members(raw)
		sourcePath = path + ".source"
		haveSource, good := false, true
		seen := map[string]bool{}
		for _, mb := range ms {
			mpath := path + keyPath(mb.name)
			if seen[mb.name] {
				p.addf(mpath, "duplicate key")
				good = false
				continue
			}
			seen[mb.name] = true
			switch mb.name {
			case "source":
				haveSource = true
				if json.Unmarshal(mb.value, &source) != nil || string(mb.value) == "null" {
					p.addf(mpath, "must be a string naming a Graph property")
					good = false
				}
			case "separator":
				sepPath = mpath
				if json.Unmarshal(mb.value, &prop.Separator) != nil || string(mb.value) == "null" {
					p.addf(mpath, "must be a string")
					good = false
				} else if prop.Separator == "" {
					p.addf(mpath, "must not be empty")
					good = false
				}
			default:
				p.unknownField(mpath, mb.name, []string{"source", "separator"})
				good = false
			}
		}
		if !haveSource {
			p.addf(sourcePath, "missing: name the Graph property that feeds %q", name)
			return prop, false
		}
		if !good {
			return prop, false
		}
	default:
		p.addf(path, `must be a Graph property name or an object {"source": "...", "separator": "..."}`)
		return prop, false
	}
	norm, k, msg := checkSource(source)
	if msg != "" {
		p.addf(sourcePath, "%s", msg)
		return prop, false
	}
	if sepPath != "" && k != kindCollection && k != kindExtension {
		p.addf(sepPath, "only applies to collections, and %q is a single value", norm)
		return prop, false
	}
	prop.Source = norm
	return prop, true
}

// checkSource validates a Graph path and returns it in Graph's spelling with
// the kind of value it yields, or a message saying what is wrong.
func checkSource(s string) (norm string, k kind, msg string) {
	if s == "" {
		return "", 0, "empty Graph property name"
	}
	segs := strings.Split(s, ".")
	for _, seg := range segs {
		if seg == "" || strings.TrimSpace(seg) != seg {
			return "", 0, fmt.Sprintf("%q is not a Graph property path (names separated by single dots, no spaces)", s)
		}
	}
	if len(segs) > 2 {
		return "", 0, fmt.Sprintf("%q nests too deeply: one level is supported, "+
			`as in "employeeOrgData.division" or "manager.mail"`, s)
	}
	top, k, msg := checkName(segs[0], "")
	if msg != "" {
		return "", 0, msg
	}
	if len(segs) == 1 {
		switch k {
		case kindComplex:
			return "", 0, fmt.Sprintf("%q is an object: address one of its fields, as in %q",
				top, top+"."+complexFields[top][0])
		case kindManager:
			return "", 0, fmt.Sprintf(`%q is the manager object: address one of the manager's properties, as in "manager.mail"`, top)
		}
		return top, k, ""
	}
	field := segs[1]
	switch k {
	case kindComplex:
		f, ok := lookupFold(complexFields[top], field)
		if !ok {
			fields := complexFields[top]
			list := strings.Join(fields, ", ")
			if len(fields) > 3 {
				list = fields[0] + " … " + fields[len(fields)-1]
			}
			return "", 0, fmt.Sprintf("%q has no field %q (fields: %s)", top, field, list)
		}
		return top + "." + f, kindString, ""
	case kindManager:
		f, fk, msg := checkName(field, top+".")
		switch {
		case msg != "":
			return "", 0, msg
		case fk == kindManager:
			return "", 0, fmt.Sprintf("%q is not supported: only the user's own manager is read", s)
		case fk == kindComplex:
			return "", 0, fmt.Sprintf("%q is an object, and its fields would nest too deeply: one level is supported, "+
				`as in "employeeOrgData.division" or "manager.mail"`, top+"."+f)
		}
		return top + "." + f, fk, ""
	}
	return "", 0, fmt.Sprintf("%q is a single value, not an object: it has no field %q", top, field)
}

// checkName validates one top-level user property name. prefix is prepended
// to names in messages ("manager." for properties of the manager).
func checkName(name, prefix string) (string, kind, string) {
	if extensionRE.MatchString(name) {
		return name, kindExtension, ""
	}
	if strings.HasPrefix(strings.ToLower(name), "extension_") {
		return "", 0, fmt.Sprintf("%q is not a directory extension name "+
			"(want extension_<application id, 32 hex digits>_<attribute name>)", prefix+name)
	}
	if n, ok := lookupFold(notOnCollections, name); ok {
		return "", 0, fmt.Sprintf("%q cannot be read for a list of users "+
			"(Graph answers 501 Not Implemented when it is selected on /users)", prefix+n)
	}
	if n, ok := lookupFold(unsupportedComplex, name); ok {
		return "", 0, fmt.Sprintf("%q has no text form that fits a user profile property", prefix+n)
	}
	n, k, ok := lookupProp(name)
	if !ok {
		msg := fmt.Sprintf("%q is not a Microsoft Graph user property", prefix+name)
		if s := suggest(name, propNames()); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", prefix+s)
		}
		return "", 0, msg
	}
	return n, k, ""
}

// alwaysSelected are the user properties every sync needs whatever the
// mapping says: the three possible ids and the two scoping switches.
var alwaysSelected = []string{"id", "userPrincipalName", "mail", "userType", "accountEnabled"}

// Select returns the top-level Graph properties to $select: the ones every
// sync needs plus the first segment of every source ("manager" when a
// source reads the manager), sorted and without duplicates.
func (m *Mapping) Select() []string {
	out := slices.Clone(alwaysSelected)
	for _, p := range m.Properties {
		top, _, _ := strings.Cut(p.Source, ".")
		out = append(out, top)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ManagerSelect returns the manager's properties the mapping reads, plus
// "id", sorted; nil when no source reads the manager.
func (m *Mapping) ManagerSelect() []string {
	var out []string
	for _, p := range m.Properties {
		if top, field, ok := strings.Cut(p.Source, "."); ok && top == "manager" {
			out = append(out, field)
		}
	}
	if out == nil {
		return nil
	}
	out = append(out, "id")
	slices.Sort(out)
	return slices.Compact(out)
}

// PropertyMap returns the propertyMap for SharePoint's import call: every
// SharePoint property name mapped to itself, because the import file
// already uses SharePoint names as keys, as PnP's does.
func (m *Mapping) PropertyMap() map[string]string {
	pm := make(map[string]string, len(m.Properties))
	for _, p := range m.Properties {
		pm[p.Target] = p.Target
	}
	return pm
}

// MarshalJSON returns the canonical form of the document: compact, fields
// in a fixed order, properties sorted by name, a property written as a plain
// string unless its separator differs from the default. The result parses
// back to an equal Mapping.
func (m *Mapping) MarshalJSON() ([]byte, error) {
	props := slices.Clone(m.Properties)
	slices.SortFunc(props, func(a, b Property) int { return strings.Compare(a.Target, b.Target) })
	var b bytes.Buffer
	b.WriteString(`{"idType":`)
	writeString(&b, m.IDType.String())
	b.WriteString(`,"properties":{`)
	for i, p := range props {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(&b, p.Target)
		b.WriteByte(':')
		if p.Separator == DefaultSeparator || p.Separator == "" {
			writeString(&b, p.Source)
			continue
		}
		b.WriteString(`{"source":`)
		writeString(&b, p.Source)
		b.WriteString(`,"separator":`)
		writeString(&b, p.Separator)
		b.WriteByte('}')
	}
	fmt.Fprintf(&b, `},"users":{"includeGuests":%t,"includeDisabled":%t}}`, m.IncludeGuests, m.IncludeDisabled)
	return b.Bytes(), nil
}

// writeString writes s as a JSON string without HTML escaping.
func writeString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}

// Hash returns the hex SHA-256 of the canonical form. Key order and
// whitespace in the document do not change it; any change in meaning does,
// which is how the engine knows a full resync is due.
func (m *Mapping) Hash() string {
	data, _ := m.MarshalJSON() // never fails
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
