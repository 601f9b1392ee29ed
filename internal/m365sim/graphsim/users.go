package graphsim

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

// listToken is the state carried by a /users $skiptoken. A read whose
// filter the UPN index answers (upnPlan) goes in (folded UPN, id) order and
// resumes after Pos; any other read goes in id order and resumes after
// After. Either way a position is a value, not an offset, so a user present
// and unchanged during the whole read is on exactly one page.
type listToken struct {
	After  string            `json:"a"`
	Pos    *directory.UPNPos `json:"p,omitempty"`
	Select string            `json:"s,omitempty"`
	Filter string            `json:"f,omitempty"`
	Top    int               `json:"t,omitempty"`
	Expand string            `json:"x,omitempty"`
}

// maxExpandPage caps /users pages that carry $expand. Microsoft's Graph
// known-issues list: "$expand on directory objects: Returns a maximum of
// 100 objects" (known issue 13635, quoted in techcommunity.microsoft.com
// threads 3885391 (2023: "$select=…&$expand=manager&$top=999 … still only
// get 100 users exactly. If remove expand … I will get all my 285 users")
// and 4203190 (2024, groups with owners)). Graph's own page-size rule is in
// learn.microsoft.com/graph/api/user-list ("The default and maximum page
// sizes are 100 and 999 user objects"). That the cap also holds on pages
// reached through a nextLink is [inferred]: the token carries $expand.
const maxExpandPage = 100

// expansion is a parsed $expand (only manager is supported).
type expansion struct {
	manager bool
	sel     selection
}

func (s *Server) parseExpand(raw string) (expansion, *apiError) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return expansion{}, nil
	}
	name, opts, hasOpts := strings.Cut(raw, "(")
	if !strings.EqualFold(strings.TrimSpace(name), "manager") {
		return expansion{}, badRequest("Request_BadRequest",
			fmt.Sprintf("Could not find a navigation property named '%s' on type 'microsoft.graph.user'.", strings.TrimSpace(name)))
	}
	selRaw := ""
	if hasOpts {
		inner, ok := strings.CutSuffix(strings.TrimSpace(opts), ")")
		key, val, isSel := strings.Cut(inner, "=")
		if !ok || (inner != "" && (!isSel || !strings.EqualFold(strings.TrimSpace(key), "$select"))) {
			return expansion{}, badRequest("BadRequest", fmt.Sprintf("Invalid $expand clause '%s'.", raw))
		}
		selRaw = val
	}
	sel, err := s.parseSelect(selRaw, false)
	if err != nil {
		return expansion{}, err
	}
	return expansion{manager: true, sel: sel}, nil
}

// appendManager appends ,"manager":{...} when the user has a manager.
func appendManager(b []byte, v directory.View, ex expansion) []byte {
	if !ex.manager {
		return b
	}
	m, ok := v.Manager()
	if !ok || m.State() != directory.Active {
		return b
	}
	b = append(b, `,"manager":{"@odata.type":"#microsoft.graph.user","id":`...)
	b = directory.AppendString(b, m.ID())
	b = appendProps(b, m, ex.sel.cols)
	return append(b, '}')
}

func parseTop(raw string) (int, *apiError) {
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, badRequest("BadRequest", fmt.Sprintf("Invalid value '%s' for $top query option found.", raw))
	}
	if n < 1 || n > 999 {
		return 0, badRequest("Request_BadRequest", fmt.Sprintf("Invalid page size specified: '%d'. Must be between 1 and 999 inclusive.", n))
	}
	return n, nil
}

// unsupported rejects options the simulator does not implement.
func unsupported(q query) *apiError {
	for _, o := range []string{"$orderby", "$search", "$skip"} {
		if _, ok := q[o]; ok {
			return badRequest("Request_UnsupportedQuery", fmt.Sprintf("The query option '%s' is not supported by this simulator.", o))
		}
	}
	return nil
}

// countOption validates $count: true needs ConsistencyLevel: eventual.
func countOption(r *http.Request, q query) (bool, *apiError) {
	raw, ok := q["$count"]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(raw) {
	case "false":
		return false, nil
	case "true":
		if !eventual(r) {
			return false, badRequest("Request_BadRequest", "$count is not currently supported.")
		}
		return true, nil
	}
	return false, badRequest("BadRequest", fmt.Sprintf("Invalid value '%s' for $count query option found.", raw))
}

func (s *Server) compileFilter(raw string) (filterExpr, *apiError) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	f, err := s.parseFilter(raw)
	if err != nil {
		var fe *filterError
		if errors.As(err, &fe) && fe.unknown {
			return nil, badRequest("Request_BadRequest", fe.msg)
		}
		return nil, badRequest("BadRequest", err.Error())
	}
	return f, nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, q query) {
	tok := listToken{Select: q["$select"], Filter: q["$filter"], Expand: q["$expand"]}
	count := false
	if st, ok := q["$skiptoken"]; ok {
		if err := decodeToken(st, &tok); err != nil {
			badRequest("Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.").write(w, r)
			return
		}
	} else {
		if e := unsupported(q); e != nil {
			e.write(w, r)
			return
		}
		if raw, ok := q["$top"]; ok {
			n, e := parseTop(raw)
			if e != nil {
				e.write(w, r)
				return
			}
			tok.Top = n
		}
		var e *apiError
		if count, e = countOption(r, q); e != nil {
			e.write(w, r)
			return
		}
		// Advanced queries (ConsistencyLevel: eventual, $count) do not take
		// $expand: learn.microsoft.com/graph/aad-advanced-queries ("$expand
		// is not currently supported with advanced queries"); reported as an
		// error with $expand=manager in microsoftgraph/msgraph-sdk-dotnet#2068
		// and Microsoft Q&A 1134278 ("Query parameter COUNT is not supported
		// along with EXPAND"). The code is [inferred].
		if tok.Expand != "" && (count || eventual(r)) {
			badRequest("Request_UnsupportedQuery", "Query parameter COUNT is not supported along with EXPAND: $expand is not supported with advanced queries (ConsistencyLevel: eventual).").write(w, r)
			return
		}
	}
	sel, e := s.parseSelect(tok.Select, true)
	if e != nil {
		e.write(w, r)
		return
	}
	if sel.manager {
		// manager is a navigation property: it is returned through $expand only.
		sel.names = removeName(sel.names, "manager")
	}
	filter, e := s.compileFilter(tok.Filter)
	if e != nil {
		e.write(w, r)
		return
	}
	ex, e := s.parseExpand(tok.Expand)
	if e != nil {
		e.write(w, r)
		return
	}
	limit := s.opts.PageSize
	if tok.Top > 0 {
		limit = tok.Top
	}
	if tok.Expand != "" {
		limit = min(limit, maxExpandPage)
	}
	upn, rest, indexed := upnPlan(filter)
	if err := s.pageDelay(r); err != nil {
		return
	}
	vb := getBuf()
	defer putBuf(vb)
	body := append((*vb)[:0], `{"@odata.context":`...)
	body = directory.AppendString(body, s.context("users", sel.names, ""))
	if count {
		body = append(body, `,"@odata.count":`...)
		body = strconv.AppendInt(body, int64(s.countMatching(filter)), 10)
	}
	body = append(body, `,"value":[`...)
	n := 0
	emit := func(v directory.View) bool {
		if n > 0 {
			body = append(body, ',')
		}
		n++
		body = appendUser(body, v, sel.cols)
		if ex.manager {
			body = appendManager(body[:len(body)-1], v, ex)
			body = append(body, '}')
		}
		return true
	}
	var more bool
	if indexed {
		var from directory.UPNPos
		if tok.Pos != nil {
			from = *tok.Pos
		}
		var last directory.UPNPos
		last, more = s.store.ScanUPNRange(upn, from, limit, func(v directory.View) bool {
			return v.State() == directory.Active && (rest == nil || rest.eval(v, s)) && emit(v)
		})
		tok.Pos = &last
	} else {
		tok.After, more = s.store.Scan(tok.After, limit, func(v directory.View) bool {
			return v.State() == directory.Active && (filter == nil || filter.eval(v, s)) && emit(v)
		})
	}
	served(r, n, true)
	body = append(body, ']')
	if more {
		body = append(body, `,"@odata.nextLink":`...)
		body = directory.AppendString(body, s.base+"/users?$skiptoken="+encodeToken(tok))
	}
	body = append(body, '}')
	*vb = body
	writeJSON(w, http.StatusOK, body)
}

func removeName(names []string, n string) []string {
	out := names[:0:0]
	for _, x := range names {
		if x != n {
			out = append(out, x)
		}
	}
	return out
}

func (s *Server) countUsers(w http.ResponseWriter, r *http.Request, q query) {
	if !eventual(r) {
		badRequest("Request_BadRequest", "$count is not currently supported.").write(w, r)
		return
	}
	filter, e := s.compileFilter(q["$filter"])
	if e != nil {
		e.write(w, r)
		return
	}
	n := s.countMatching(filter)
	w.Header().Set("Content-Type", "text/plain;charset=utf-8")
	_, _ = w.Write([]byte(strconv.Itoa(n)))
}

// countMatching counts the active users filter (nil: every user) accepts.
// A pure userPrincipalName range is counted from the UPN index in O(log n);
// a range plus other clauses looks at the range's users only; any other
// filter looks at every user.
func (s *Server) countMatching(filter filterExpr) int {
	n := 0
	if upn, rest, ok := upnPlan(filter); ok {
		if rest == nil {
			return s.store.CountUPNRange(upn)
		}
		s.store.ScanUPNRange(upn, directory.UPNPos{}, math.MaxInt, func(v directory.View) bool {
			if v.State() == directory.Active && rest.eval(v, s) {
				n++
			}
			return false
		})
		return n
	}
	s.store.Scan("", math.MaxInt, func(v directory.View) bool {
		if v.State() == directory.Active && (filter == nil || filter.eval(v, s)) {
			n++
		}
		return false
	})
	return n
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, q query, key string) {
	sel, e := s.parseSelect(q["$select"], false)
	if e != nil {
		e.write(w, r)
		return
	}
	sel.names = removeName(sel.names, "manager")
	ex, e := s.parseExpand(q["$expand"])
	if e != nil {
		e.write(w, r)
		return
	}
	var body []byte
	s.store.View(key, func(v directory.View) {
		if v.State() != directory.Active {
			return
		}
		body = append(body, `{"@odata.context":`...)
		body = directory.AppendString(body, s.context("users", sel.names, "/$entity"))
		body = append(body, `,"id":`...)
		body = directory.AppendString(body, v.ID())
		body = appendProps(body, v, sel.cols)
		body = appendManager(body, v, ex)
		body = append(body, '}')
	})
	if body == nil {
		notFound(w, r, key)
		return
	}
	served(r, 1, false)
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) getManager(w http.ResponseWriter, r *http.Request, q query, key string) {
	sel, e := s.parseSelect(q["$select"], false)
	if e != nil {
		e.write(w, r)
		return
	}
	sel.names = removeName(sel.names, "manager")
	found := false
	var body []byte
	s.store.View(key, func(v directory.View) {
		if v.State() != directory.Active {
			return
		}
		found = true
		m, ok := v.Manager()
		if !ok || m.State() != directory.Active {
			return
		}
		body = append(body, `{"@odata.context":`...)
		body = directory.AppendString(body, s.context("directoryObjects", sel.names, "/$entity"))
		body = append(body, `,"@odata.type":"#microsoft.graph.user","id":`...)
		body = directory.AppendString(body, m.ID())
		body = appendProps(body, m, sel.cols)
		body = append(body, '}')
	})
	switch {
	case !found:
		notFound(w, r, key)
	case body == nil:
		notFound(w, r, "manager")
	default:
		served(r, 1, false)
		writeJSON(w, http.StatusOK, body)
	}
}
