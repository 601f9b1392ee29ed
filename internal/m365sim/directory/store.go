// Package directory is the simulated Entra ID tenant: users whose properties
// are kept as Graph's JSON carries them, managers, soft and hard deletes, and
// a change log that lets an incremental delta round be answered in time
// proportional to the number of changes rather than the number of users.
//
// Every mutation takes the next value of one monotonic version counter. Each
// user remembers the version at which each property (and its manager) was
// last set, so a delta reader can tell which properties changed since a
// token's version.
package directory

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// Errors returned by Store methods (wrapped).
var (
	ErrNotFound = errors.New("user not found")
	ErrExists   = errors.New("user already exists")
	ErrInvalid  = errors.New("invalid user")
)

// State is a user's lifecycle state.
type State int

// User states. A hard-deleted user is a tombstone: only its id remains.
const (
	Active State = iota
	SoftDeleted
	HardDeleted
)

// User is one directory user as the admin API and tenant files carry it.
//
// Props holds Graph properties keyed by their camelCase Graph names with
// JSON-shaped values: strings, bools, float64, []any, map[string]any and nil
// (JSON null, a property that was set and cleared). A property never set is
// absent. ManagerID is the object id of the user's manager ("" for none).
type User struct {
	ID        string         `json:"id"`
	ManagerID string         `json:"managerId,omitempty"`
	Props     map[string]any `json:"props"`
	Deleted   bool           `json:"deleted,omitempty"`
}

// Patch changes some of a user's properties. A nil value in Props sets the
// property to null. ManagerID nil leaves the manager alone; "" removes it.
type Patch struct {
	Props     map[string]any `json:"props,omitempty"`
	ManagerID *string        `json:"managerId,omitempty"`
}

// Field is a small handle for a property name, valid for one Store.
type Field int

type entry struct {
	id    string // lowercase uuid
	state State
	vals  []string // canonical JSON per Field; "" = never set
	vers  []int64  // version at which each Field was last set

	manager     string // manager id or ""
	mgr         *entry // byID[manager] (entries are never dropped), nil for none: saves a map lookup per expanded manager
	prevManager string // manager before the last manager change
	managerVer  int64

	created, restored, deleted int64 // versions of those events (0 = never)
	lastLog                    int   // index of this user's newest log record, -1 none
	upn, mail                  string

	// The UPN index (upnindex.go): ranked is set while the user is in
	// Store.upnIdx, at folded userPrincipalName upnKey.
	upnKey string
	ranked bool
}

type logRec struct {
	ver  int64
	e    *entry
	next int // index of the same user's next record, -1 none
}

// Store is a concurrency-safe tenant directory.
type Store struct {
	mu       sync.RWMutex
	ver      int64
	fields   []string         // canonical names by Field
	fieldIdx map[string]Field // lowercase name -> Field
	byID     map[string]*entry
	sorted   []*entry // every entry ever added (tombstones included), by id
	byUPN    map[string]*entry
	byMail   map[string]*entry
	log      []logRec

	upnIdx []*entry // active users with a string UPN, by (upnKey, id): upnindex.go
	bulk   bool     // Load under way: upnIdx is rebuilt at its end
}

// NewStore returns an empty directory.
func NewStore() *Store {
	return &Store{
		fieldIdx: map[string]Field{},
		byID:     map[string]*entry{},
		byUPN:    map[string]*entry{},
		byMail:   map[string]*entry{},
	}
}

// validName reports whether k is a letter followed by up to 119 letters,
// digits or underscores (ASCII).
func validName(k string) bool {
	if len(k) == 0 || len(k) > 120 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_')) {
			return false
		}
	}
	return true
}

// isReserved reports whether k names what cannot be stored as a property
// (id, manager, directReports), in any case; without allocating, as Load
// checks every property of every user.
func isReserved(k string) bool {
	return strings.EqualFold(k, "id") || strings.EqualFold(k, "manager") || strings.EqualFold(k, "directReports")
}

// field returns the handle for name, creating it when create is set.
// Callers hold s.mu (write lock when create is set).
func (s *Store) field(name string, create bool) (Field, bool) {
	key := strings.ToLower(name)
	if f, ok := s.fieldIdx[key]; ok {
		return f, true
	}
	if !create {
		return 0, false
	}
	f := Field(len(s.fields))
	s.fields = append(s.fields, name)
	s.fieldIdx[key] = f
	return f, true
}

// Field looks up a property name case-insensitively and returns its handle
// and canonical spelling. ok is false when no user ever had the property.
func (s *Store) Field(name string) (f Field, canonical string, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok = s.field(name, false)
	if !ok {
		return 0, "", false
	}
	return f, s.fields[f], true
}

// Version returns the current change version.
func (s *Store) Version() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ver
}

// Len returns the number of active users.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, e := range s.sorted {
		if e.state == Active {
			n++
		}
	}
	return n
}

// newID returns a random lowercase uuid (version 4).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// prepared is a validated user ready to be inserted.
type prepared struct {
	id, manager string
	names       []string
	vals        []string
	deleted     bool
}

func prepare(u User) (prepared, error) {
	p := prepared{id: strings.ToLower(u.ID), manager: strings.ToLower(u.ManagerID), deleted: u.Deleted}
	if p.id == "" {
		p.id = newID()
	}
	if !uuidRE.MatchString(p.id) {
		return p, fmt.Errorf("%w: id %q is not a uuid", ErrInvalid, u.ID)
	}
	if p.manager != "" && !uuidRE.MatchString(p.manager) {
		return p, fmt.Errorf("%w: managerId %q is not a uuid", ErrInvalid, u.ManagerID)
	}
	upn, ok := u.Props["userPrincipalName"].(string)
	if !ok || upn == "" {
		return p, fmt.Errorf("%w: userPrincipalName must be a non-empty string", ErrInvalid)
	}
	names, err := propNames(u.Props)
	if err != nil {
		return p, err
	}
	for _, k := range names {
		raw, err := encodeProp(k, u.Props[k])
		if err != nil {
			return p, fmt.Errorf("%w: property %s: %v", ErrInvalid, k, err)
		}
		p.names = append(p.names, k)
		p.vals = append(p.vals, raw)
	}
	return p, nil
}

func checkName(k string) error {
	if !validName(k) || isReserved(k) {
		return fmt.Errorf("%w: %q cannot be a property name", ErrInvalid, k)
	}
	return nil
}

// propNames checks the property names of a user or patch and returns them
// sorted. Names are case-insensitive (Store.field), so one property named
// twice with different cases ("mail" and "Mail") is refused: otherwise the
// sort order of the spellings would pick the value, and a second spelling
// of userPrincipalName could slip past the UPN checks.
func propNames(props map[string]any) ([]string, error) {
	names := make([]string, 0, len(props))
	for k := range props {
		if err := checkName(k); err != nil {
			return nil, err
		}
		names = append(names, k)
	}
	slices.Sort(names)
	// Pairwise, without allocating: a user has a few dozen properties, and
	// Load checks every user of a large tenant.
	for i, a := range names {
		for _, b := range names[i+1:] {
			if len(a) == len(b) && strings.EqualFold(a, b) {
				return nil, fmt.Errorf("%w: property %q is given twice (names are case-insensitive)", ErrInvalid, b)
			}
		}
	}
	return names, nil
}

// upnInPatch returns the userPrincipalName a patch sets, under any spelling.
func upnInPatch(props map[string]any) (v any, ok bool) {
	for k, v := range props {
		if strings.EqualFold(k, "userPrincipalName") {
			return v, true
		}
	}
	return nil, false
}

// insert adds a prepared user at the next version. Callers hold the write
// lock and have checked for duplicates. sortNow keeps s.sorted ordered.
func (s *Store) insert(p prepared, sortNow bool) *entry {
	s.ver++
	e := &entry{id: p.id, state: Active, created: s.ver, lastLog: -1,
		vals: make([]string, len(s.fields)), vers: make([]int64, len(s.fields))}
	for i, name := range p.names {
		s.setRaw(e, name, p.vals[i])
	}
	s.byID[e.id] = e
	if sortNow {
		i, _ := slices.BinarySearchFunc(s.sorted, e.id, func(x *entry, id string) int { return strings.Compare(x.id, id) })
		s.sorted = slices.Insert(s.sorted, i, e)
	} else {
		s.sorted = append(s.sorted, e)
	}
	s.index(e)
	s.appendLog(e)
	return e
}

// setRaw stores one property at the current version; callers hold the lock.
func (s *Store) setRaw(e *entry, name, raw string) {
	f, _ := s.field(name, true)
	for int(f) >= len(e.vals) {
		e.vals = append(e.vals, "")
		e.vers = append(e.vers, 0)
	}
	e.vals[f] = raw
	e.vers[f] = s.ver
}

func (s *Store) rawString(e *entry, name string) string {
	f, ok := s.field(name, false)
	if !ok || int(f) >= len(e.vals) || e.vals[f] == "" {
		return ""
	}
	var v string
	if json.Unmarshal([]byte(e.vals[f]), &v) != nil {
		return ""
	}
	return v
}

// index updates the UPN and mail lookups and the UPN index for e.
func (s *Store) index(e *entry) {
	s.unindex(e)
	s.rerank(e)
	if e.state == HardDeleted {
		return
	}
	// The folded UPN when it is a string (always, for users that passed
	// validation), as before: strings.ToLower of the decoded value.
	e.upn = e.upnKey
	e.mail = strings.ToLower(s.rawString(e, "mail"))
	if e.upn != "" {
		s.byUPN[e.upn] = e
	}
	if e.mail != "" {
		if _, taken := s.byMail[e.mail]; !taken {
			s.byMail[e.mail] = e
		}
	}
}

func (s *Store) unindex(e *entry) {
	if e.upn != "" && s.byUPN[e.upn] == e {
		delete(s.byUPN, e.upn)
	}
	if e.mail != "" && s.byMail[e.mail] == e {
		delete(s.byMail, e.mail)
	}
	e.upn, e.mail = "", ""
}

func (s *Store) appendLog(e *entry) {
	idx := len(s.log)
	s.log = append(s.log, logRec{ver: s.ver, e: e, next: -1})
	if e.lastLog >= 0 {
		s.log[e.lastLog].next = idx
	}
	e.lastLog = idx
}

// lookup finds a non-tombstoned user by object id or UPN (case-insensitive).
func (s *Store) lookup(key string) *entry {
	k := strings.ToLower(key)
	if e, ok := s.byID[k]; ok && e.state != HardDeleted {
		return e
	}
	if e, ok := s.byUPN[k]; ok {
		return e
	}
	return nil
}

// checkManager verifies that id may become e's manager (exists, active, no cycle).
func (s *Store) checkManager(self, id string) error {
	if id == "" {
		return nil
	}
	m, ok := s.byID[id]
	if !ok || m.state != Active {
		return fmt.Errorf("%w: manager %s", ErrNotFound, id)
	}
	// Walk up the chain; it is bounded by the number of users.
	for cur, steps := m, 0; cur != nil && steps <= len(s.sorted); steps++ {
		if cur.id == self {
			return fmt.Errorf("%w: manager %s would create a cycle", ErrInvalid, id)
		}
		if cur.manager == "" {
			break
		}
		cur = s.byID[cur.manager]
	}
	return nil
}

// Add inserts a new user. An empty ID gets a fresh uuid. The manager, if any,
// must already exist. UPNs are unique among users that are not hard-deleted.
func (s *Store) Add(u User) (User, error) {
	p, err := prepare(u)
	if err != nil {
		return User{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byID[p.id]; dup {
		return User{}, fmt.Errorf("%w: id %s", ErrExists, p.id)
	}
	upn := strings.ToLower(u.Props["userPrincipalName"].(string))
	if _, dup := s.byUPN[upn]; dup {
		return User{}, fmt.Errorf("%w: userPrincipalName %s", ErrExists, upn)
	}
	if err := s.checkManager(p.id, p.manager); err != nil {
		return User{}, err
	}
	e := s.insert(p, true)
	if p.manager != "" {
		e.manager, e.managerVer, e.mgr = p.manager, s.ver, s.byID[p.manager]
	}
	if p.deleted {
		s.ver++
		s.remove(e, false)
	}
	return s.export(e), nil
}

// Load adds many users at once (a tenant file or a generated tenant).
// Managers may refer to any user in the batch or already in the store.
// Nothing is added when any user is invalid.
func (s *Store) Load(users []User) error {
	ps := make([]prepared, len(users))
	errs := make([]error, len(users))
	// Encoding is pure and dominates start-up time: spread it over the CPUs.
	workers := min(runtime.GOMAXPROCS(0), 1+len(users)/1000)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(users); i += workers {
				ps[i], errs[i] = prepare(users[i])
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, len(users))
	upns := make(map[string]bool, len(users))
	for i, u := range users {
		p := ps[i]
		if err := errs[i]; err != nil {
			return fmt.Errorf("user %d: %w", i, err)
		}
		if seen[p.id] {
			return fmt.Errorf("user %d: %w: duplicate id %s", i, ErrExists, p.id)
		}
		upn := strings.ToLower(u.Props["userPrincipalName"].(string))
		if upns[upn] {
			return fmt.Errorf("user %d: %w: duplicate userPrincipalName %s", i, ErrExists, upn)
		}
		seen[p.id], upns[upn] = true, true
		ps[i] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range ps {
		if _, dup := s.byID[p.id]; dup {
			return fmt.Errorf("user %d: %w: id %s", i, ErrExists, p.id)
		}
		if _, dup := s.byUPN[strings.ToLower(users[i].Props["userPrincipalName"].(string))]; dup {
			return fmt.Errorf("user %d: %w: userPrincipalName", i, ErrExists)
		}
		if m := p.manager; m != "" && !seen[m] {
			if e, ok := s.byID[m]; !ok || e.state != Active {
				return fmt.Errorf("user %d: %w: manager %s", i, ErrNotFound, m)
			}
		}
	}
	// Many values repeat across a tenant ("Member", true, "[]", job
	// titles); sharing one copy of each keeps large tenants small.
	intern := make(map[string]string)
	entries := make([]*entry, len(ps))
	s.bulk = true
	defer func() { s.bulk = false; s.rebuildRanks() }()
	for i, p := range ps {
		for j, v := range p.vals {
			if len(v) <= 64 {
				if c, ok := intern[v]; ok {
					p.vals[j] = c
				} else {
					intern[v] = v
				}
			}
		}
		entries[i] = s.insert(p, false)
	}
	for i, p := range ps {
		if p.manager != "" {
			entries[i].manager, entries[i].managerVer, entries[i].mgr = p.manager, entries[i].created, s.byID[p.manager]
		}
	}
	slices.SortFunc(s.sorted, func(a, b *entry) int { return strings.Compare(a.id, b.id) })
	for i, p := range ps {
		if p.deleted {
			s.ver++
			s.remove(entries[i], false)
		}
	}
	return nil
}

// Get returns the user with the given object id or UPN, including a
// soft-deleted one (Deleted set). Hard-deleted users are not found.
func (s *Store) Get(key string) (User, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.lookup(key)
	if e == nil {
		return User{}, false
	}
	return s.export(e), true
}

// export converts an entry to a User; callers hold the lock.
func (s *Store) export(e *entry) User {
	u := User{ID: e.id, ManagerID: e.manager, Props: map[string]any{}, Deleted: e.state != Active}
	for f, raw := range e.vals {
		if raw != "" {
			u.Props[s.fields[f]] = decodeProp(raw)
		}
	}
	return u
}

// List returns up to limit users that are not hard-deleted, ordered by id,
// starting after the given id.
func (s *Store) List(after string, limit int) []User {
	s.mu.RLock()
	defer s.mu.RUnlock()
	after = strings.ToLower(after)
	i, _ := slices.BinarySearchFunc(s.sorted, after, func(x *entry, id string) int { return strings.Compare(x.id, id) })
	var out []User
	for ; i < len(s.sorted) && len(out) < limit; i++ {
		e := s.sorted[i]
		if e.id == after || e.state == HardDeleted {
			continue
		}
		out = append(out, s.export(e))
	}
	return out
}

// Users returns every user that is not hard-deleted, ordered by id.
func (s *Store) Users() []User {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]User, 0, len(s.sorted))
	for _, e := range s.sorted {
		if e.state != HardDeleted {
			out = append(out, s.export(e))
		}
	}
	return out
}

// Update applies a patch to an active user. Properties whose value does not
// change keep their version; a patch that changes nothing records no change.
func (s *Store) Update(key string, p Patch) (User, error) {
	names, err := propNames(p.Props)
	if err != nil {
		return User{}, err
	}
	vals := make([]string, len(names))
	for i, k := range names {
		raw, err := encodeProp(k, p.Props[k])
		if err != nil {
			return User{}, fmt.Errorf("%w: property %s: %v", ErrInvalid, k, err)
		}
		vals[i] = raw
	}
	newUPN, setsUPN := upnInPatch(p.Props)
	if setsUPN {
		if s, _ := newUPN.(string); s == "" {
			return User{}, fmt.Errorf("%w: userPrincipalName must be a non-empty string", ErrInvalid)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(key)
	if e == nil || e.state != Active {
		return User{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if v, ok := newUPN.(string); ok {
		if other, taken := s.byUPN[strings.ToLower(v)]; taken && other != e {
			return User{}, fmt.Errorf("%w: userPrincipalName %s", ErrExists, v)
		}
	}
	var newMgr string
	mgrChange := false
	if p.ManagerID != nil {
		newMgr = strings.ToLower(*p.ManagerID)
		if newMgr != e.manager {
			if err := s.checkManager(e.id, newMgr); err != nil {
				return User{}, err
			}
			mgrChange = true
		}
	}
	changed := mgrChange
	for i, k := range names {
		f, ok := s.field(k, false)
		if !ok || int(f) >= len(e.vals) || e.vals[f] != vals[i] {
			changed = true
		}
	}
	if !changed {
		return s.export(e), nil
	}
	s.ver++
	for i, k := range names {
		f, ok := s.field(k, false)
		if ok && int(f) < len(e.vals) && e.vals[f] == vals[i] {
			continue
		}
		s.setRaw(e, k, vals[i])
	}
	if mgrChange {
		s.setManager(e, newMgr)
	}
	s.index(e)
	s.appendLog(e)
	return s.export(e), nil
}

func (s *Store) setManager(e *entry, id string) {
	e.prevManager = e.manager
	e.manager, e.mgr = id, s.byID[id]
	e.managerVer = s.ver
}

// Delete removes a user: soft (restorable, reported by delta as
// reason "changed") or hard (a tombstone, reason "deleted"). Hard deletion
// also clears the manager of the user's direct reports.
func (s *Store) Delete(key string, hard bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(key)
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if e.state == SoftDeleted && !hard {
		return nil
	}
	s.ver++
	s.remove(e, hard)
	return nil
}

// remove marks e deleted at the current version; callers hold the lock.
func (s *Store) remove(e *entry, hard bool) {
	e.deleted = s.ver
	if !hard {
		e.state = SoftDeleted
		s.unindex(e)
		s.rerank(e)
		s.appendLog(e)
		return
	}
	e.state = HardDeleted
	s.unindex(e)
	s.rerank(e)
	e.vals, e.vers = nil, nil
	e.manager, e.prevManager, e.mgr = "", "", nil
	s.appendLog(e)
	for _, r := range s.sorted {
		if r.manager == e.id {
			s.ver++
			s.setManager(r, "")
			s.appendLog(r)
		}
	}
}

// Restore brings back a soft-deleted user.
func (s *Store) Restore(key string) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(key)
	if e == nil {
		return User{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if e.state == Active {
		return s.export(e), nil
	}
	if other, taken := s.byUPN[strings.ToLower(s.rawString(e, "userPrincipalName"))]; taken && other != e {
		return User{}, fmt.Errorf("%w: userPrincipalName is in use", ErrExists)
	}
	if e.manager != "" {
		if m, ok := s.byID[e.manager]; !ok || m.state == HardDeleted {
			e.manager, e.mgr = "", nil
		}
	}
	s.ver++
	e.state = Active
	e.restored = s.ver
	s.index(e)
	s.appendLog(e)
	return s.export(e), nil
}

// Resolve maps an identity to an active user's object id, the way
// SharePoint's bulk import does: idType 0 = Email (mail), 1 = CloudId
// (object id), 2 = PrincipalName (UPN). Matching is case-insensitive.
func (s *Store) Resolve(idType int, value string) (objectID string, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k := strings.ToLower(value)
	var e *entry
	switch idType {
	case 0:
		e = s.byMail[k]
	case 1:
		e = s.byID[k]
	case 2:
		e = s.byUPN[k]
	}
	if e == nil || e.state != Active {
		return "", false
	}
	return e.id, true
}
