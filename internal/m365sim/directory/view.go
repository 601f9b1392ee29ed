package directory

import (
	"slices"
	"strings"
)

// View is a read-only look at one user. It is valid only inside the
// callback that received it (the store is read-locked meanwhile).
type View struct {
	e *entry
	s *Store
}

// ID returns the user's object id.
func (v View) ID() string { return v.e.id }

// State returns the user's lifecycle state.
func (v View) State() State { return v.e.state }

// Raw returns the canonical JSON of a property; ok is false when the
// property was never set on this user.
func (v View) Raw(f Field) (raw string, ok bool) {
	if int(f) >= len(v.e.vals) || v.e.vals[f] == "" {
		return "", false
	}
	return v.e.vals[f], true
}

// Version returns the version at which the property was last set (0 = never).
func (v View) Version(f Field) int64 {
	if int(f) >= len(v.e.vers) {
		return 0
	}
	return v.e.vers[f]
}

// Manager returns a view of the user's manager, if the user has one that
// is not hard-deleted.
func (v View) Manager() (View, bool) {
	m := v.e.mgr
	if m == nil || m.state == HardDeleted {
		return View{}, false
	}
	return View{m, v.s}, true
}

// ManagerID returns the manager's object id, "" for none.
func (v View) ManagerID() string { return v.e.manager }

// PreviousManagerID returns the manager before the last manager change.
func (v View) PreviousManagerID() string { return v.e.prevManager }

// ManagerVersion returns the version of the last manager change (0 = never set).
func (v View) ManagerVersion() int64 { return v.e.managerVer }

// Created returns the version at which the user was added.
func (v View) Created() int64 { return v.e.created }

// Restored returns the version of the user's last restore (0 = never).
func (v View) Restored() int64 { return v.e.restored }

// Deleted returns the version of the user's last deletion (0 = never).
func (v View) Deleted() int64 { return v.e.deleted }

// Scan calls fn for users ordered by object id, starting after the id
// after, tombstones and soft-deleted users included. fn returns whether it
// used the user; Scan stops once limit users were used. It returns the id
// of the last user looked at and whether any user follows it.
func (s *Store) Scan(after string, limit int, fn func(View) bool) (last string, more bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	after = strings.ToLower(after)
	i, found := slices.BinarySearchFunc(s.sorted, after, func(x *entry, id string) int { return strings.Compare(x.id, id) })
	if found {
		i++
	}
	last = after
	used := 0
	for ; i < len(s.sorted) && used < limit; i++ {
		e := s.sorted[i]
		last = e.id
		if fn(View{e, s}) {
			used++
		}
	}
	return last, i < len(s.sorted)
}

// Changes calls fn once for each user changed at a version in (since,
// upto], in change order, starting at log position from (0 = the first
// change after since). A user changed several times in the range is visited
// at its last change in the range. fn returns whether it used the user;
// Changes stops once limit users were used. It returns the position to resume
// at and whether unvisited changes remain in the range.
func (s *Store) Changes(since, upto int64, from, limit int, fn func(View) bool) (next int, more bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := from
	if i <= 0 {
		i, _ = slices.BinarySearchFunc(s.log, since+1, func(r logRec, v int64) int {
			switch {
			case r.ver < v:
				return -1
			case r.ver > v:
				return 1
			}
			return 0
		})
	}
	used := 0
	for ; i < len(s.log) && s.log[i].ver <= upto; i++ {
		r := s.log[i]
		if r.ver <= since || (r.next >= 0 && s.log[r.next].ver <= upto) {
			continue
		}
		if used == limit {
			return i, true
		}
		if fn(View{r.e, s}) {
			used++
		}
	}
	return i, false
}

// View calls fn with the user that has the given object id or UPN and is
// not hard-deleted; it reports whether such a user exists.
func (s *Store) View(key string, fn func(View)) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.lookup(key)
	if e == nil {
		return false
	}
	fn(View{e, s})
	return true
}

// Fields returns the canonical names of every property any user ever had.
func (s *Store) Fields() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.fields)
}
