package graphsim

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

// Token kinds.
const (
	kindInitial = "i" // a nextLink page of an initial round (cursor: id)
	kindChanges = "c" // a nextLink page of an incremental round (cursor: log position)
	kindDelta   = "d" // a deltaLink
)

// deltaToken is the state carried by $skiptoken/$deltatoken of /users/delta.
type deltaToken struct {
	Kind   string   `json:"k"`
	Select []string `json:"s,omitempty"` // canonical names; nil = default set
	IDs    []string `json:"i,omitempty"` // $filter=id eq ... ids
	Top    int      `json:"t,omitempty"`
	Since  int64    `json:"v,omitempty"` // changes after this version
	Upto   int64    `json:"u,omitempty"` // snapshot version of the round
	After  string   `json:"a,omitempty"` // initial round cursor
	Pos    int      `json:"p,omitempty"` // change round cursor
	Minted int64    `json:"m,omitempty"` // unix seconds (deltaLink)
	Epoch  int64    `json:"e,omitempty"`
	Seq    int      `json:"q,omitempty"` // user items sent so far in the round (repeats)
	Rep    []string `json:"r,omitempty"` // users to send again at the start of the next page
}

// repeatGap is how many user items after a repeated user its repeat comes
// (when the page has that many left); see Server.SetDeltaRepeatEvery.
const repeatGap = 2

const syncStateMsg = "The sync state generation is not found. The delta token is expired and data must be synchronized again."

// delta serves /users/delta, /users/delta() and /users/microsoft.graph.delta().
func (s *Server) delta(w http.ResponseWriter, r *http.Request, q query) {
	var tok deltaToken
	first := false // first page of an initial round
	switch {
	case q["$skiptoken"] != "":
		if err := decodeToken(q["$skiptoken"], &tok); err != nil || (tok.Kind != kindInitial && tok.Kind != kindChanges) {
			badRequest("Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.").write(w, r)
			return
		}
	case q["$deltatoken"] != "" && !strings.EqualFold(q["$deltatoken"], "latest"):
		if s.reset.CompareAndSwap(true, false) {
			w.Header().Set("Location", s.base+"/users/delta?$deltatoken=")
			graphError(w, r, http.StatusGone, "resyncRequired", "The delta token is no longer valid, and the app must reset the sync state.")
			return
		}
		if err := decodeToken(q["$deltatoken"], &tok); err != nil || tok.Kind != kindDelta {
			badRequest("Request_BadRequest", "The delta token is invalid.").write(w, r)
			return
		}
		age := s.now().Unix() - tok.Minted
		if tok.Epoch != s.epoch.Load() || age > int64(s.opts.DeltaValidity.Seconds()) {
			badRequest("syncStateNotFound", syncStateMsg).write(w, r)
			return
		}
		tok = deltaToken{Kind: kindChanges, Select: tok.Select, IDs: tok.IDs, Top: tok.Top, Since: tok.Since, Upto: s.store.Version()}
	default:
		// An initial round, "$deltatoken=latest", or the empty $deltatoken
		// of a 410's Location (which restarts a full round).
		if e := unsupported(q); e != nil {
			e.write(w, r)
			return
		}
		// $expand is ignored on delta, not refused: "The $expand operator
		// has always been ignored with /delta. It is the $select=manager
		// operator that will include changes to manager"
		// (microsoftgraph/microsoft-graph-docs#6194, a Microsoft answer).
		sel, e := s.parseSelect(q["$select"], true)
		if e != nil {
			e.write(w, r)
			return
		}
		if strings.TrimSpace(q["$select"]) != "" {
			tok.Select = sel.names
		}
		if raw := q["$filter"]; strings.TrimSpace(raw) != "" {
			f, e := s.compileFilter(raw)
			if e != nil {
				e.write(w, r)
				return
			}
			ids, ok := deltaFilterIDs(f)
			if !ok {
				badRequest("Request_UnsupportedQuery", "Unsupported query: delta $filter supports only 'id eq' clauses combined with 'or', at most 50.").write(w, r)
				return
			}
			tok.IDs = ids
		}
		if raw, ok := q["$top"]; ok {
			n, err := strconv.Atoi(strings.TrimSpace(raw))
			if err != nil || n < 1 {
				badRequest("BadRequest", "Invalid value '"+raw+"' for $top query option found.").write(w, r)
				return
			}
			tok.Top = n
		}
		if strings.EqualFold(q["$deltatoken"], "latest") {
			// An answer without items, but a /users/delta page all the same:
			// it waits the page latency like the others, then takes the
			// version it hands out.
			if err := s.pageDelay(r); err != nil {
				return
			}
			served(r, 0, true)
			s.writeDeltaPage(w, r, tok, nil, s.store.Version(), false)
			return
		}
		v := s.store.Version()
		tok.Kind, tok.Upto = kindInitial, v
		first = true
	}
	sel, e := s.resolveSelect(tok.selectNames(), false)
	if e != nil {
		e.write(w, r)
		return
	}
	minimal := tok.Kind == kindChanges && preferMinimal(r)
	if preferMinimal(r) {
		w.Header().Set("Preference-Applied", "return=minimal")
	}
	limit := s.opts.DeltaPageSize
	if tok.Top > 0 {
		limit = min(limit, tok.Top)
	}
	if err := s.pageDelay(r); err != nil {
		return
	}
	vb := getBuf()
	defer putBuf(vb)
	items := (*vb)[:0]
	var ids map[string]bool
	if len(tok.IDs) > 0 {
		ids = make(map[string]bool, len(tok.IDs))
		for _, id := range tok.IDs {
			ids[id] = true
		}
	}
	n := 0
	add := func(b []byte) {
		if n > 0 {
			items = append(items, ',')
		}
		items = append(items, b...)
		n++
	}
	// render writes v as this round reports it.
	render := func(b []byte, v directory.View) []byte {
		if tok.Kind == kindInitial {
			return s.appendDeltaItem(b, v, sel, 0, false, true)
		}
		return s.appendDeltaItem(b, v, sel, tok.Since, minimal, false)
	}
	var scratch []byte
	// Repeated users (SetDeltaRepeatEvery). Those carried over from the
	// previous page come first, with their values as they are now.
	every := s.DeltaRepeatEvery()
	again := func(id string) {
		s.store.View(id, func(v directory.View) {
			if b := render(scratch[:0], v); b != nil {
				scratch = b
				add(b)
			}
		})
	}
	for _, id := range tok.Rep {
		again(id)
	}
	tok.Rep = nil
	type pending struct {
		id   string
		due  int    // user items on this page after which the repeat goes
		item []byte // as sent; the store cannot change while the page is read
	}
	var queue []pending
	users := 0
	emit := func(v directory.View, b []byte) {
		add(b)
		if every <= 0 || v.State() != directory.Active {
			return
		}
		users++
		tok.Seq++
		for len(queue) > 0 && queue[0].due <= users {
			add(queue[0].item)
			queue = queue[1:]
		}
		if tok.Seq%every == 0 {
			queue = append(queue, pending{id: v.ID(), due: users + repeatGap, item: slices.Clone(b)})
		}
	}
	more := false
	if tok.Kind == kindInitial {
		tok.After, more = s.store.Scan(tok.After, limit, func(v directory.View) bool {
			if ids != nil && !ids[v.ID()] {
				return false
			}
			scratch = render(scratch[:0], v)
			emit(v, scratch)
			return true
		})
	} else {
		tok.Pos, more = s.store.Changes(tok.Since, tok.Upto, tok.Pos, limit, func(v directory.View) bool {
			if ids != nil && !ids[v.ID()] {
				return false
			}
			scratch = render(scratch[:0], v)
			if scratch == nil {
				return false
			}
			emit(v, scratch)
			return true
		})
	}
	// Repeats not yet due go to the next page, or end the round's last one.
	for _, p := range queue {
		if more {
			tok.Rep = append(tok.Rep, p.id)
		} else {
			again(p.id)
		}
	}
	*vb = items
	served(r, n, true)
	var names []string
	if first {
		names = tok.Select
	}
	if more {
		s.writeDeltaPage(w, r, tok, items, 0, true, names...)
		return
	}
	s.writeDeltaPage(w, r, tok, items, tok.Upto, false, names...)
}

// selectNames returns the token's selection, or the default set.
func (t deltaToken) selectNames() []string {
	if t.Select == nil {
		return defaultSelect
	}
	return t.Select
}

func preferMinimal(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.ReplaceAll(strings.TrimSpace(p), " ", ""), "return=minimal") {
				return true
			}
		}
	}
	return false
}

// writeDeltaPage writes one page: a nextLink page (next set) continuing
// tok, or the last page with a deltaLink for changes after version since.
func (s *Server) writeDeltaPage(w http.ResponseWriter, r *http.Request, tok deltaToken, items []byte, since int64, next bool, names ...string) {
	body := make([]byte, 0, len(items)+512)
	body = append(body, `{"@odata.context":`...)
	body = directory.AppendString(body, s.context("users", names, ""))
	if next {
		body = append(body, `,"@odata.nextLink":`...)
		body = directory.AppendString(body, s.base+"/users/delta?$skiptoken="+encodeToken(tok))
	} else {
		dt := deltaToken{Kind: kindDelta, Select: tok.Select, IDs: tok.IDs, Top: tok.Top, Since: since,
			Minted: s.now().Unix(), Epoch: s.epoch.Load()}
		body = append(body, `,"@odata.deltaLink":`...)
		body = directory.AppendString(body, s.base+"/users/delta?$deltatoken="+encodeToken(dt))
	}
	body = append(body, `,"value":[`...)
	body = append(body, items...)
	body = append(body, "]}"...)
	writeJSON(w, http.StatusOK, body)
}

// appendDeltaItem appends one delta item for v, or returns nil when v has
// nothing to report (no selected property changed since version since).
// initial marks a full round, where every user is reported in full.
func (s *Server) appendDeltaItem(b []byte, v directory.View, sel selection, since int64, minimal, initial bool) []byte {
	switch v.State() {
	case directory.SoftDeleted, directory.HardDeleted:
		reason := "changed"
		if v.State() == directory.HardDeleted {
			reason = "deleted"
		}
		b = append(b, `{"id":`...)
		b = directory.AppendString(b, v.ID())
		b = append(b, `,"@removed":{"reason":"`...)
		b = append(b, reason...)
		return append(b, `"}}`...)
	}
	full := initial || v.Created() > since || v.Restored() > since
	mgrChanged := sel.manager && v.ManagerVersion() > since
	cols := sel.cols
	if !full {
		changed := cols[:0:0]
		for _, c := range cols {
			if c.has && v.Version(c.field) > since {
				changed = append(changed, c)
			}
		}
		if len(changed) == 0 && !mgrChanged {
			return nil
		}
		if minimal {
			cols = changed
		}
	}
	b = append(b, `{"id":`...)
	b = directory.AppendString(b, v.ID())
	b = appendProps(b, v, cols)
	// manager@delta comes with a full item (initial round, new or restored
	// user) and otherwise only when the manager changed since the token,
	// whatever the Prefer header: a user whose other properties changed
	// comes without it. Reported in microsoftgraph/microsoft-graph-explorer-v4#4018
	// (with $select=...,manager a changed user "doesnt return manager when
	// something changes"); manager changes themselves do carry it
	// (microsoftgraph/microsoft-graph-docs#4500).
	if sel.manager && (mgrChanged || full) {
		switch {
		case v.ManagerID() != "":
			b = append(b, `,"manager@delta":[{"@odata.type":"#microsoft.graph.user","id":`...)
			b = directory.AppendString(b, v.ManagerID())
			b = append(b, "}]"...)
		case mgrChanged && !full && v.PreviousManagerID() != "":
			b = append(b, `,"manager@delta":[{"@odata.type":"#microsoft.graph.user","id":`...)
			b = directory.AppendString(b, v.PreviousManagerID())
			b = append(b, `,"@removed":{"reason":"deleted"}}]`...)
		}
	}
	return append(b, '}')
}
