package graph

import "github.com/profilesync/profilesync/internal/profile"

// page is one decoded page of a Graph user collection: GET /users (with or
// without $filter and $expand=manager) or GET /users/delta.
type page struct {
	users     []sighting
	nextLink  string // @odata.nextLink, "" on the last page
	deltaLink string // @odata.deltaLink, only on the last page of a delta round

	body []byte // the raw answer, reused from page to page
	slot bool   // holds a decode slot of its chain (see Client.chain)
}

// sighting is one user item of a page.
type sighting struct {
	// user holds the item as profile.User: ID from "id"; Removed when the
	// item carries "@removed"; Props every property the item carries, keyed
	// by its JSON name (strings, bools, float64, nil, []any, map[string]any),
	// with "id" included, and without annotations ("@odata.type",
	// "@odata.context", "@removed", "manager@delta", any key starting with
	// "@"). An expanded manager ("manager": {…}) is kept under "manager" as
	// a map of its properties without annotations (nil for JSON null). Seq
	// is left 0: the reader numbers sightings.
	user profile.User
	// managerID and managerKnown come from a manager@delta annotation
	// (users/delta with $select=manager): known when the annotation is
	// present; the id is that of its last entry not marked @removed, ""
	// when there is none (the manager was removed).
	managerID    string
	managerKnown bool
}
