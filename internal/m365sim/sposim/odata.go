package sposim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Error codes as SharePoint's OData errors spell them.
const (
	codeFileNotFound  = "-2147024894, System.IO.FileNotFoundException"
	codeArgument      = "-2147024809, System.ArgumentException"
	codeFileExists    = "-2130575257, Microsoft.SharePoint.SPException"
	codeInvalidQuery  = "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
	codeNotFoundRes   = "-1, Microsoft.SharePoint.Client.ResourceNotFoundException"
	codeMethod        = "-1, Microsoft.SharePoint.Client.ClientServiceException"
	codeTooBig        = "-2147024882, Microsoft.SharePoint.SPException"
	codeServerBusy    = "-2147024860, Microsoft.SharePoint.SPException"
	codeUploadSession = "-2130575339, Microsoft.SharePoint.SPException"
	codeInternal      = "-2146232832, Microsoft.SharePoint.SPException"
)

// spError is an error SharePoint REST reports as odata.error.
type spError struct {
	status int
	code   string
	msg    string
}

func (e *spError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

func errFileNotFound() *spError {
	return &spError{status: http.StatusNotFound, code: codeFileNotFound, msg: "File Not Found."}
}

func errArgument(msg string) *spError {
	return &spError{status: http.StatusBadRequest, code: codeArgument, msg: msg}
}

func errBadName(name string) *spError {
	return errArgument(fmt.Sprintf("The file or folder name '%s' contains characters that are not permitted.", name))
}

func errExists(path string) *spError {
	return &spError{status: http.StatusBadRequest, code: codeFileExists, msg: fmt.Sprintf("A file with the name %s already exists.", strings.TrimPrefix(path, "/"))}
}

func errInvalidQuery(msg string) *spError {
	return &spError{status: http.StatusBadRequest, code: codeInvalidQuery, msg: msg}
}

func errNoResource(name string) *spError {
	return &spError{status: http.StatusNotFound, code: codeNotFoundRes, msg: fmt.Sprintf("Cannot find resource for the request %s.", name)}
}

func errMethod(method, resource string) *spError {
	return &spError{status: http.StatusMethodNotAllowed, code: codeMethod, msg: fmt.Sprintf(
		"The HTTP method '%s' cannot be used to access the resource '%s'. Please use correct HTTP method to invoke the resource.", method, resource)}
}

func errBodyTooBig(limit int64) *spError {
	return &spError{status: http.StatusRequestEntityTooLarge, code: codeTooBig, msg: fmt.Sprintf(
		"The request message is too big. The server does not allow messages larger than %d bytes.", limit)}
}

// format is the OData flavour a client asked for in its Accept header.
type format int

const (
	fmtMinimal format = iota // JSON light, odata=minimalmetadata (the default)
	fmtNoMetadata
	fmtVerbose
)

func formatOf(r *http.Request) format {
	a := key(r.Header.Get("Accept"))
	switch {
	case strings.Contains(a, "odata=verbose"):
		return fmtVerbose
	case strings.Contains(a, "odata=nometadata"):
		return fmtNoMetadata
	}
	return fmtMinimal
}

func (f format) contentType() string {
	switch f {
	case fmtVerbose:
		return "application/json;odata=verbose;charset=utf-8"
	case fmtNoMetadata:
		return "application/json;odata=nometadata;streaming=true;charset=utf-8"
	}
	return "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
}

// writeODataError writes e in the shape the request's Accept header selects.
func writeODataError(w http.ResponseWriter, r *http.Request, e *spError) {
	body := map[string]any{"code": e.code, "message": map[string]string{"lang": "en-US", "value": e.msg}}
	f := formatOf(r)
	var doc map[string]any
	if f == fmtVerbose {
		doc = map[string]any{"error": body}
	} else {
		doc = map[string]any{"odata.error": body}
	}
	writeJSON(w, e.status, f.contentType(), doc)
}

// writeAnyError writes err as an odata.error; errors that are not
// SharePoint errors become 500.
func writeAnyError(w http.ResponseWriter, r *http.Request, err error) {
	var se *spError
	if !errors.As(err, &se) {
		se = &spError{status: http.StatusInternalServerError, code: codeInternal, msg: err.Error()}
	}
	writeODataError(w, r, se)
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// entity is one OData entity before the format's decoration.
type entity struct {
	typ    string // e.g. "SP.File"
	id     string // absolute URI of the entity
	fields map[string]any
}

func (e entity) decorated(f format) map[string]any {
	m := make(map[string]any, len(e.fields)+3)
	for k, v := range e.fields {
		m[k] = v
	}
	switch f {
	case fmtVerbose:
		m["__metadata"] = map[string]string{"id": e.id, "uri": e.id, "type": e.typ}
	case fmtMinimal:
		m["odata.type"] = e.typ
		m["odata.id"] = e.id
		m["odata.editLink"] = e.id
	}
	return m
}

func writeEntity(w http.ResponseWriter, r *http.Request, status int, e entity) {
	f := formatOf(r)
	var doc any = e.decorated(f)
	if f == fmtVerbose {
		doc = map[string]any{"d": doc}
	}
	writeJSON(w, status, f.contentType(), doc)
}

func writeList(w http.ResponseWriter, r *http.Request, items []entity) {
	f := formatOf(r)
	list := make([]map[string]any, 0, len(items))
	for _, e := range items {
		list = append(list, e.decorated(f))
	}
	var doc any = map[string]any{"value": list}
	if f == fmtVerbose {
		doc = map[string]any{"d": map[string]any{"results": list}}
	}
	writeJSON(w, http.StatusOK, f.contentType(), doc)
}

// writeScalar writes the result of a function or property: {"value":v} in
// JSON light, {"d":{name:v}} in verbose.
func writeScalar(w http.ResponseWriter, r *http.Request, name string, v any) {
	f := formatOf(r)
	var doc any
	switch {
	case f == fmtVerbose:
		doc = map[string]any{"d": map[string]any{name: v}}
	case v == nil:
		doc = map[string]any{"odata.null": true}
	default:
		doc = map[string]any{"value": v}
	}
	writeJSON(w, http.StatusOK, f.contentType(), doc)
}

// literal kinds in OData URLs.
const (
	litString = iota
	litGUID
	litNumber
	litBool
	litNull
)

type literal struct {
	kind int
	text string
}

// arg is one argument of a function segment; name is "" for positional.
type arg struct {
	name string
	lit  literal
}

// segment is one step of an OData path: web, GetFolderByServerRelativeUrl(...).
type segment struct {
	name   string
	parens bool
	args   []arg
}

// parseODataPath splits a decoded REST path below /_api/ into segments.
// Quoted literals may hold '/', '(' and ')' and double their single quotes.
// Parameter aliases (@a1) are looked up in aliases.
func parseODataPath(p string, aliases url.Values) ([]segment, error) {
	var segs []segment
	i := 0
	for i < len(p) {
		start := i
		for i < len(p) && p[i] != '(' && p[i] != '/' {
			i++
		}
		seg := segment{name: p[start:i]}
		if seg.name == "" {
			return nil, fmt.Errorf("empty segment at position %d", start)
		}
		if i < len(p) && p[i] == '(' {
			seg.parens = true
			args, next, err := parseArgs(p, i+1, aliases)
			if err != nil {
				return nil, err
			}
			seg.args, i = args, next
		}
		segs = append(segs, seg)
		if i < len(p) {
			if p[i] != '/' {
				return nil, fmt.Errorf("unexpected %q after %s", p[i], seg.name)
			}
			i++
		}
	}
	return segs, nil
}

// parseArgs parses "a='x',b=1)" starting after "(", returning the index
// after ")".
func parseArgs(p string, i int, aliases url.Values) ([]arg, int, error) {
	var args []arg
	i = skipSpaces(p, i)
	if i < len(p) && p[i] == ')' {
		return nil, i + 1, nil
	}
	for n := 0; n <= len(p); n++ { // each round consumes input; bounded by len(p)
		i = skipSpaces(p, i)
		var a arg
		j := i
		for j < len(p) && (isIdentByte(p[j])) {
			j++
		}
		if j < len(p) && p[j] == '=' && j > i {
			a.name = p[i:j]
			i = j + 1
		}
		lit, next, err := parseLiteral(p, skipSpaces(p, i), aliases, true)
		if err != nil {
			return nil, 0, err
		}
		a.lit = lit
		args = append(args, a)
		i = skipSpaces(p, next)
		if i >= len(p) {
			return nil, 0, errors.New("missing ')'")
		}
		switch p[i] {
		case ',':
			i++
		case ')':
			return args, i + 1, nil
		default:
			return nil, 0, fmt.Errorf("unexpected %q in argument list", p[i])
		}
	}
	return nil, 0, errors.New("argument list too long")
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func skipSpaces(p string, i int) int {
	for i < len(p) && p[i] == ' ' {
		i++
	}
	return i
}

// parseLiteral parses one literal at p[i:]: 'text', guid'…', a number,
// true, false, null or (if allowAlias) @alias.
func parseLiteral(p string, i int, aliases url.Values, allowAlias bool) (literal, int, error) {
	if i >= len(p) {
		return literal{}, i, errors.New("missing value")
	}
	if p[i] == '@' && allowAlias {
		j := i + 1
		for j < len(p) && isIdentByte(p[j]) {
			j++
		}
		name := p[i:j]
		v, ok := aliases[name]
		if !ok || len(v) == 0 {
			return literal{}, j, fmt.Errorf("parameter alias %s has no value", name)
		}
		lit, end, err := parseLiteral(v[0], 0, nil, false)
		if err != nil {
			return literal{}, j, fmt.Errorf("parameter alias %s: %w", name, err)
		}
		if end != len(v[0]) {
			return literal{}, j, fmt.Errorf("parameter alias %s: trailing characters", name)
		}
		return lit, j, nil
	}
	kind := litString
	if len(p)-i > 5 && key(p[i:i+5]) == "guid'" {
		kind = litGUID
		i += 4
	}
	if p[i] == '\'' {
		var b strings.Builder
		for j := i + 1; j < len(p); j++ {
			if p[j] != '\'' {
				b.WriteByte(p[j])
				continue
			}
			if j+1 < len(p) && p[j+1] == '\'' {
				b.WriteByte('\'')
				j++
				continue
			}
			return literal{kind: kind, text: b.String()}, j + 1, nil
		}
		return literal{}, len(p), errors.New("unterminated string literal")
	}
	if kind == litGUID {
		return literal{}, i, errors.New("malformed guid literal")
	}
	j := i
	for j < len(p) && p[j] != ',' && p[j] != ')' && p[j] != ' ' {
		j++
	}
	tok := p[i:j]
	switch key(tok) {
	case "true", "false":
		return literal{kind: litBool, text: key(tok)}, j, nil
	case "null":
		return literal{kind: litNull}, j, nil
	}
	if _, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSuffix(tok, "L"), "l"), 10, 64); err == nil {
		return literal{kind: litNumber, text: strings.TrimRight(tok, "Ll")}, j, nil
	}
	return literal{}, j, fmt.Errorf("unrecognized literal %q", tok)
}
