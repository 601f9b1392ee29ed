package syncer

// The fingerprint store: which values each user's SharePoint profile last
// received from us, so that a run sends only users whose mapped values
// changed (issue 13). See README "Sending only what changed" and
// docs/ARCHITECTURE.md for the blob layout.
//
// A fingerprint is three 8-byte hashes: of the user's key (the Entra object
// id, lower-cased), of the exact record the import file holds for the user
// without the properties drawn from the manager (the IdName value and every
// other property name and value, in the mapping's order) and of those drawn
// from the manager, each with the mapping's hash in front, so that a
// changed mapping never matches. The manager's part is apart because a
// delta round says who a user's manager is only when it changed: such a
// record leaves the manager's properties out (SharePoint keeps theirs), so
// its own part is compared alone, and the merge keeps the manager's part
// stored before. All are the first 8 bytes of SHA-256: two different
// users, or two different records of one user, share one with a
// probability of about n²/2⁶⁵ (7·10⁻⁹ at 500,000 users).
//
// Life of a fingerprint:
//
//  1. A run computes every row's fingerprint as it writes the row (the
//     newest sighting wins, as for the rows themselves: importfile carries
//     it as the row's Note) and skips a user whose fingerprint is the one
//     stored (Run.Unchanged): the row is dropped like a skipped user's, so
//     an earlier sighting's row of that user goes too.
//  2. Before each file is queued, the fingerprints of its rows go to
//     fingerprints/pending/<file name>.bin (sorted; written again
//     unchanged by a retry).
//  3. When the poller records the job, the fingerprints of the users
//     SharePoint imported (every user of a Succeeded job; those without an
//     error line of an ImportCompleteWithError job whose log was read
//     whole) are merged into the store, and those of the others are
//     removed from it: a failed import is never remembered, so its users
//     are sent again. The merge is a compare-and-swap on the manifest's
//     ETag, and the manifest lists the jobs merged last, so a merge
//     repeated by a redelivered message changes nothing.
//  4. A run removes the users it sees deleted, disabled, out of scope or
//     without an id, and a full run removes every stored user it did not
//     see at all: a user created again, or restored, is sent again.
//
// A user whose file's job is still followed (polls/) is never skipped: its
// values may reach SharePoint after the run, whatever the store says.
//
// Memory: a run holds the store (24 bytes a user: 12 MB at 500,000) and
// two bits a stored user; the fingerprints of the rows it writes are
// spilled to disk with the import files (importfile.Note). A merge holds
// the old and the new store and one file's fingerprints (32 bytes a row).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
)

// Blob names of the fingerprint store.
const (
	// FingerprintsManifest names the current store blob (fpManifest).
	FingerprintsManifest = "fingerprints/manifest.json"
	// FingerprintsStorePrefix: fingerprints/store-<time>-<random>.bin, one
	// generation of the store; the manifest names the current one.
	FingerprintsStorePrefix = "fingerprints/store-"
	// FingerprintsPendingPrefix: fingerprints/pending/<import file>.bin,
	// the fingerprints of one import file's rows, merged when its job ends.
	FingerprintsPendingPrefix = "fingerprints/pending/"
)

// ErrFingerprintsCorrupt: a fingerprint blob cannot be read. A run then
// sends every user it reads; the next merge starts the store afresh.
var ErrFingerprintsCorrupt = errors.New("fingerprint store unreadable")

// errUnchanged is returned by a sink's record for a user whose values are
// those SharePoint already has.
var errUnchanged = errors.New("unchanged")

// skipUnchanged is the skip reason (importfile.Latest tag) of an unchanged
// user; runs count it in Run.Unchanged, not in Run.Skipped.
const skipUnchanged mapping.SkipReason = "unchanged"

// maxMergedJobs bounds the job ids the manifest remembers as merged.
const maxMergedJobs = 500

// Blob formats: a 32-byte header (8-byte magic, entry count as a big-endian
// uint64, the first 16 bytes of the SHA-256 of the entries), then the
// entries, big-endian, sorted by key.
const (
	storeMagic   = "PSFPST01" // entries: key, own values, manager's values (24 bytes)
	sidecarMagic = "PSFPSC01" // entries: key, own values, manager's values, IdName key (32 bytes)
	headerSize   = 32
	storeEntry   = 24
	sidecarEntry = 32
)

// mgrUnknown is the manager's part of a record that left the manager's
// properties out (a delta round that did not say who the manager is).
const mgrUnknown = 0

// fpManifest is fingerprints/manifest.json.
type fpManifest struct {
	Format  int       `json:"format"`
	Store   string    `json:"store,omitempty"` // the current store blob; "" = empty
	Users   int       `json:"users"`
	Updated time.Time `json:"updated"`
	// Merged are the jobs merged last (at most maxMergedJobs): a job
	// merged again (a redelivered status message) changes nothing.
	Merged []string `json:"mergedJobs,omitempty"`
}

// fpEntry is one user's fingerprint: key, own values (val), the manager's
// values (mgr, or mgrUnknown), and the hash of its IdName value (idn,
// sidecars only), by which SharePoint's log lines name the user.
type fpEntry struct{ key, val, mgr, idn uint64 }

// fpKey hashes a user key or an IdName value (case does not matter).
func fpKey(s string) uint64 {
	var buf [128]byte
	b := append(append(buf[:0], "profilesync/key\x00"...), strings.ToLower(s)...)
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:])
}

// sidecarName names the fingerprints of the import file at fileURL (a job's
// sourceUri, or an import file's name).
func sidecarName(fileURL string) string {
	base := path.Base(fileURL)
	if fileURL == "" || base == "." || base == "/" {
		return ""
	}
	return FingerprintsPendingPrefix + base + ".bin"
}

// fpStore is a loaded store: sorted entries, read in place.
type fpStore struct {
	blob string // the store blob ("" when empty)
	body []byte // n entries of storeEntry bytes
	n    int
}

func (s *fpStore) key(i int) uint64 { return binary.BigEndian.Uint64(s.body[i*storeEntry:]) }
func (s *fpStore) val(i int) uint64 { return binary.BigEndian.Uint64(s.body[i*storeEntry+8:]) }
func (s *fpStore) mgr(i int) uint64 { return binary.BigEndian.Uint64(s.body[i*storeEntry+16:]) }

// find returns the index of key, if stored.
func (s *fpStore) find(key uint64) (int, bool) {
	lo, hi := 0, s.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.key(m) < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < s.n && s.key(lo) == key
}

func checksum(body []byte) []byte {
	sum := sha256.Sum256(body)
	return sum[:16]
}

// encodeBlob frames entries (already encoded) with a header.
func encodeBlob(magic string, n int, body []byte) []byte {
	out := make([]byte, headerSize, headerSize+len(body))
	copy(out, magic)
	binary.BigEndian.PutUint64(out[8:], uint64(n))
	copy(out[16:], checksum(body))
	return append(out, body...)
}

// decodeBlob checks a blob's header and returns its entries.
func decodeBlob(name, magic string, size int, data []byte) ([]byte, int, error) {
	bad := func(why string, a ...any) ([]byte, int, error) {
		return nil, 0, fmt.Errorf("%w: %s: %s", ErrFingerprintsCorrupt, name, fmt.Sprintf(why, a...))
	}
	if len(data) < headerSize || string(data[:8]) != magic {
		return bad("not a fingerprint blob of this version (%d bytes)", len(data))
	}
	n := binary.BigEndian.Uint64(data[8:])
	body := data[headerSize:]
	if n > uint64(len(body)/size) || uint64(len(body)) != n*uint64(size) {
		return bad("%d bytes of entries for %d entries of %d bytes", len(body), n, size)
	}
	if !bytes.Equal(data[16:32], checksum(body)) {
		return bad("checksum mismatch")
	}
	for i := 1; i < int(n); i++ {
		if binary.BigEndian.Uint64(body[(i-1)*size:]) > binary.BigEndian.Uint64(body[i*size:]) {
			return bad("entries out of order at %d", i)
		}
	}
	return body, int(n), nil
}

func decodeStore(name string, data []byte) (*fpStore, error) {
	body, n, err := decodeBlob(name, storeMagic, storeEntry, data)
	if err != nil {
		return nil, err
	}
	for i := 1; i < n; i++ {
		if binary.BigEndian.Uint64(body[(i-1)*storeEntry:]) == binary.BigEndian.Uint64(body[i*storeEntry:]) {
			return nil, fmt.Errorf("%w: %s: key repeated at %d", ErrFingerprintsCorrupt, name, i)
		}
	}
	return &fpStore{blob: name, body: body, n: n}, nil
}

// encodeSidecar sorts entries by key and encodes them.
func encodeSidecar(entries []fpEntry) []byte {
	slices.SortFunc(entries, func(a, b fpEntry) int {
		switch {
		case a.key != b.key:
			return cmpU64(a.key, b.key)
		case a.val != b.val:
			return cmpU64(a.val, b.val)
		case a.mgr != b.mgr:
			return cmpU64(a.mgr, b.mgr)
		}
		return cmpU64(a.idn, b.idn)
	})
	body := make([]byte, 0, len(entries)*sidecarEntry)
	for _, e := range entries {
		body = binary.BigEndian.AppendUint64(body, e.key)
		body = binary.BigEndian.AppendUint64(body, e.val)
		body = binary.BigEndian.AppendUint64(body, e.mgr)
		body = binary.BigEndian.AppendUint64(body, e.idn)
	}
	return encodeBlob(sidecarMagic, len(entries), body)
}

func decodeSidecar(name string, data []byte) ([]fpEntry, error) {
	body, n, err := decodeBlob(name, sidecarMagic, sidecarEntry, data)
	if err != nil {
		return nil, err
	}
	out := make([]fpEntry, n)
	for i := range out {
		b := body[i*sidecarEntry:]
		out[i] = fpEntry{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:])}
	}
	return out, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readManifest reads the manifest; a missing one is an empty store (etag "").
func readManifest(ctx context.Context, b Blobs) (fpManifest, string, error) {
	var man fpManifest
	data, etag, err := b.Get(ctx, FingerprintsManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return man, "", nil
	}
	if err != nil {
		return man, "", fmt.Errorf("reading %s: %w", FingerprintsManifest, err)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		return man, etag, fmt.Errorf("%w: %s: %v", ErrFingerprintsCorrupt, FingerprintsManifest, err)
	}
	if man.Store != "" && !strings.HasPrefix(man.Store, FingerprintsStorePrefix) {
		return man, etag, fmt.Errorf("%w: %s names %q, not a store blob", ErrFingerprintsCorrupt, FingerprintsManifest, man.Store)
	}
	return man, etag, nil
}

// loadFingerprints reads the current store. Errors wrapping
// ErrFingerprintsCorrupt name the blob that cannot be read.
func loadFingerprints(ctx context.Context, b Blobs) (*fpStore, error) {
	for range 4 {
		man, _, err := readManifest(ctx, b)
		if err != nil {
			return nil, err
		}
		if man.Store == "" {
			return &fpStore{}, nil
		}
		data, _, err := b.Get(ctx, man.Store)
		if errors.Is(err, fs.ErrNotExist) {
			continue // replaced by a merge since the manifest was read: read it again
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", man.Store, err)
		}
		return decodeStore(man.Store, data)
	}
	return nil, fmt.Errorf("%w: %s names a store blob that does not exist", ErrFingerprintsCorrupt, FingerprintsManifest)
}

// LoadFingerprints reads the fingerprint store and returns how many users
// it holds (for benchmarks and tools).
func LoadFingerprints(ctx context.Context, b Blobs) (int, error) {
	s, err := loadFingerprints(ctx, b)
	if err != nil {
		return 0, err
	}
	return s.n, nil
}

// mergeBody merges the entries of old with sets (sorted by key) and
// without removes (sorted): a key in both sets and removes is removed. A
// set whose manager's part is unknown keeps the part stored before (its
// record left the manager's properties as SharePoint had them).
func mergeBody(old *fpStore, sets []fpEntry, removes []uint64) ([]byte, int) {
	out := make([]byte, 0, (old.n+len(sets))*storeEntry)
	n := 0
	i, j, k := 0, 0, 0
	removed := func(key uint64) bool {
		for k < len(removes) && removes[k] < key {
			k++
		}
		return k < len(removes) && removes[k] == key
	}
	emit := func(key, val, mgr uint64) {
		if removed(key) {
			return
		}
		if n > 0 && binary.BigEndian.Uint64(out[(n-1)*storeEntry:]) == key { // the later wins
			binary.BigEndian.PutUint64(out[(n-1)*storeEntry+8:], val)
			if mgr != mgrUnknown {
				binary.BigEndian.PutUint64(out[(n-1)*storeEntry+16:], mgr)
			}
			return
		}
		out = binary.BigEndian.AppendUint64(out, key)
		out = binary.BigEndian.AppendUint64(out, val)
		out = binary.BigEndian.AppendUint64(out, mgr)
		n++
	}
	for i < old.n || j < len(sets) {
		switch {
		case j >= len(sets) || (i < old.n && old.key(i) < sets[j].key):
			emit(old.key(i), old.val(i), old.mgr(i))
			i++
		case i >= old.n || sets[j].key < old.key(i):
			emit(sets[j].key, sets[j].val, sets[j].mgr)
			j++
		default: // the same user: the new fingerprint replaces the old
			mgr := sets[j].mgr
			if mgr == mgrUnknown {
				mgr = old.mgr(i)
			}
			emit(sets[j].key, sets[j].val, mgr)
			i++
			j++
		}
	}
	return out, n
}

// mergeFingerprints sets and removes fingerprints with a compare-and-swap
// on the manifest: a new store blob, then the manifest naming it (If-Match),
// then the old blob deleted. jobID, when set, is recorded in the manifest;
// a job already recorded there is not merged again. A store blob that
// cannot be read is replaced by one holding only these sets (its users are
// sent again once): the store repairs itself.
func mergeFingerprints(ctx context.Context, b Blobs, log *slog.Logger, now time.Time, jobID string, sets []fpEntry, removes []uint64) error {
	slices.SortStableFunc(sets, func(a, b fpEntry) int { return cmpU64(a.key, b.key) })
	slices.Sort(removes)
	removes = slices.Compact(removes)
	for range 10 {
		man, etag, err := readManifest(ctx, b)
		if errors.Is(err, ErrFingerprintsCorrupt) {
			log.Error("the fingerprint store is unreadable; starting it afresh (its users are sent again once)", "err", err)
			man = fpManifest{}
		} else if err != nil {
			return err
		}
		if jobID != "" && slices.Contains(man.Merged, jobID) {
			return nil
		}
		old := &fpStore{}
		if man.Store != "" {
			data, _, err := b.Get(ctx, man.Store)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if _, tag, err := b.Get(ctx, FingerprintsManifest); err == nil && tag != etag {
					continue // another merge replaced it meanwhile
				}
				log.Error("the fingerprint store blob is missing; starting it afresh (its users are sent again once)", "blob", man.Store)
			case err != nil:
				return fmt.Errorf("reading %s: %w", man.Store, err)
			default:
				if old, err = decodeStore(man.Store, data); err != nil {
					log.Error("the fingerprint store is unreadable; starting it afresh (its users are sent again once)", "err", err)
					old = &fpStore{}
				}
			}
		}
		body, n := mergeBody(old, sets, removes)
		same := old.blob != "" && bytes.Equal(body, old.body)
		if jobID == "" && (same || (old.n == 0 && n == 0)) {
			return nil // nothing to change
		}
		name := old.blob // unchanged: only the manifest's list of jobs changes
		if !same {
			name = FingerprintsStorePrefix + NewRunID(now) + ".bin"
			if _, err := b.Create(ctx, name, encodeBlob(storeMagic, n, body)); err != nil {
				return fmt.Errorf("writing %s: %w", name, err)
			}
		}
		next := fpManifest{Format: 1, Store: name, Users: n, Updated: now, Merged: man.Merged}
		if jobID != "" {
			next.Merged = append(next.Merged[max(0, len(next.Merged)-maxMergedJobs+1):len(next.Merged):len(next.Merged)], jobID)
		}
		data, _ := json.MarshalIndent(next, "", "  ")
		if etag == "" {
			_, err = b.Create(ctx, FingerprintsManifest, data)
		} else {
			_, err = b.Put(ctx, FingerprintsManifest, data, etag)
		}
		if err != nil {
			if !same {
				deleteBlob(ctx, b, name)
			}
			if errors.Is(err, profile.ErrStale) {
				continue // another merge came first: merge into its store
			}
			return fmt.Errorf("writing %s: %w", FingerprintsManifest, err)
		}
		if man.Store != "" && !same {
			deleteBlob(ctx, b, man.Store)
		}
		sweepStores(ctx, b, log, name, now)
		return nil
	}
	return fmt.Errorf("writing %s: it kept changing", FingerprintsManifest)
}

func deleteBlob(ctx context.Context, b Blobs, name string) {
	if d, ok := b.(Deleter); ok {
		_ = d.Delete(context.WithoutCancel(ctx), name)
	}
}

// sweepStores deletes store blobs an interrupted merge left behind: those
// not current and written over an hour ago (a younger one may be another
// merge's, about to be named by the manifest). Store names begin with their
// time, as run ids do.
func sweepStores(ctx context.Context, b Blobs, log *slog.Logger, current string, now time.Time) {
	l, ok := b.(Lister)
	if !ok {
		return
	}
	names, err := l.List(ctx, FingerprintsStorePrefix)
	if err != nil {
		return
	}
	cut := NewRunID(now.Add(-time.Hour))
	for _, n := range names {
		if n != current && strings.TrimPrefix(n, FingerprintsStorePrefix) < cut {
			deleteBlob(ctx, b, n)
			log.Info("deleted a fingerprint store blob an interrupted merge left", "blob", n)
		}
	}
}

// fpRun is a run's use of the store.
type fpRun struct {
	mapHash string
	mgrProp map[string]bool // the properties drawn from the manager
	buf     []byte
	mbuf    []byte
	store   *fpStore // nil: the store could not be read
	skip    bool     // skip unchanged users (not forced, store and unfinished jobs known)
	pending []uint64 // sorted keys of users in files whose jobs are unfinished
	kept    bitset   // stored users seen with a row (sent or unchanged)
	gone    bitset   // stored users seen deleted, disabled, …
}

type bitset []uint64

func (s bitset) set(i int)      { s[i>>6] |= 1 << (i & 63) }
func (s bitset) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }

// reset forgets what a read saw (a read started again).
func (f *fpRun) reset() {
	if f == nil || f.store == nil {
		return
	}
	clear(f.kept)
	clear(f.gone)
}

// values hashes the exact record a file holds for a user: its own part
// and the manager's (mgrUnknown when the record leaves the manager's
// properties out; never mgrUnknown otherwise).
func (f *fpRun) values(rec mapping.Record) (own, mgr uint64) {
	b := append(f.buf[:0], "profilesync/values/1\x00"...)
	b = append(append(b, f.mapHash...), 0)
	b = binary.AppendUvarint(b, uint64(len(rec.ID)))
	b = append(b, rec.ID...)
	mb := append(f.mbuf[:0], "profilesync/manager/1\x00"...)
	mb = append(append(mb, f.mapHash...), 0)
	mgrs := 0
	for _, kv := range rec.Values {
		p := &b
		if len(f.mgrProp) > 0 && f.mgrProp[kv.Name] {
			p, mgrs = &mb, mgrs+1
		}
		*p = binary.AppendUvarint(*p, uint64(len(kv.Name)))
		*p = append(*p, kv.Name...)
		*p = binary.AppendUvarint(*p, uint64(len(kv.Value)))
		*p = append(*p, kv.Value...)
	}
	f.buf, f.mbuf = b, mb
	sum := sha256.Sum256(b)
	own = binary.BigEndian.Uint64(sum[:])
	if len(f.mgrProp) > 0 && mgrs == 0 {
		return own, mgrUnknown
	}
	sum = sha256.Sum256(mb)
	if mgr = binary.BigEndian.Uint64(sum[:]); mgr == mgrUnknown {
		mgr = 1
	}
	return own, mgr
}

// row returns the fingerprint of a user's row, and whether the user is
// unchanged (its row need not be sent).
func (f *fpRun) row(u profile.User, rec mapping.Record) (importfile.Note, bool) {
	if f == nil {
		return importfile.Note{}, false
	}
	id := u.ID
	if id == "" {
		id = rec.ID
	}
	k := fpKey(id)
	idn := k
	if !strings.EqualFold(rec.ID, id) {
		idn = fpKey(rec.ID)
	}
	v, mgr := f.values(rec)
	if f.store != nil {
		if i, ok := f.store.find(k); ok {
			f.kept.set(i)
			// A record without the manager's properties leaves SharePoint's
			// as they are: its own part decides.
			if f.skip && f.store.val(i) == v && (mgr == mgrUnknown || f.store.mgr(i) == mgr) && !f.isPending(k) {
				return importfile.Note{}, true
			}
		}
	}
	return importfile.Note{k, v, mgr, idn}, false
}

func (f *fpRun) isPending(k uint64) bool {
	_, ok := slices.BinarySearch(f.pending, k)
	return ok
}

// drop notes a user that is not sent (deleted, disabled, guest, no id).
func (f *fpRun) drop(u profile.User) {
	if f == nil || f.store == nil || u.ID == "" {
		return
	}
	if i, ok := f.store.find(fpKey(u.ID)); ok {
		f.gone.set(i)
	}
}

// removals are the stored users to forget after a read: those seen
// dropped, and, after a full read, those not seen at all.
func (f *fpRun) removals(full bool) []uint64 {
	if f == nil || f.store == nil {
		return nil
	}
	var out []uint64
	for i := range f.store.n {
		if f.gone.has(i) || (full && !f.kept.has(i)) {
			out = append(out, f.store.key(i))
		}
	}
	return out
}

// fingerprints prepares a run's use of the store. It never fails the run:
// a store that cannot be read makes the run send every user it reads
// (run.Fingerprints says why).
func (e *Engine) fingerprints(ctx context.Context, log *slog.Logger, run *Run, opts Options, m *mapping.Mapping) *fpRun {
	f := &fpRun{mapHash: run.MappingHash, mgrProp: map[string]bool{}}
	for _, p := range m.Properties {
		if strings.HasPrefix(p.Source, "manager.") {
			f.mgrProp[p.Target] = true
		}
	}
	start := time.Now()
	store, err := loadFingerprints(ctx, e.Blobs)
	if err != nil {
		run.Fingerprints = "not used, every user read is sent: " + err.Error()
		log.Error("the fingerprint store cannot be read; every user read is sent", "err", err)
		return f
	}
	f.store = store
	f.kept, f.gone = make(bitset, (store.n+63)/64), make(bitset, (store.n+63)/64)
	switch {
	case opts.Force:
		run.Fingerprints = "not used: forced, every user read is sent"
	default:
		pending, err := e.pendingFingerprints(ctx)
		if err != nil {
			run.Fingerprints = "not used, every user read is sent: " + err.Error()
			log.Warn("unchanged users cannot be told; every user read is sent", "err", err)
		} else {
			f.pending, f.skip = pending, true
		}
	}
	log.Info("fingerprint store loaded", "users", store.n, "blob", store.blob, "pendingUsers", len(f.pending),
		"skipUnchanged", f.skip, "ms", time.Since(start).Milliseconds())
	return f
}

// pendingFingerprints returns the sorted keys of the users in the files of
// jobs still followed (polls/): SharePoint may import them after this run
// reads the store, so none of them counts as unchanged.
func (e *Engine) pendingFingerprints(ctx context.Context) ([]uint64, error) {
	if e.Pending == nil {
		return nil, errors.New("this engine cannot list unfinished jobs (no Pending)")
	}
	names, err := e.Pending.List(ctx, PollsPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing unfinished jobs: %w", err)
	}
	var keys []uint64
	for _, n := range names {
		data, _, err := e.Blobs.Get(ctx, n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", n, err)
		}
		var ps PollState
		if err := json.Unmarshal(data, &ps); err != nil {
			return nil, fmt.Errorf("reading %s: %w", n, err)
		}
		if _, _, err := e.Blobs.Get(ctx, JobsPrefix+ps.JobID+".json"); err == nil {
			continue // recorded (and merged); only its poll document is left
		}
		name := sidecarName(ps.SourceURI)
		if name == "" {
			return nil, fmt.Errorf("job %s is unfinished and its import file is unknown", ps.JobID)
		}
		data, _, err = e.Blobs.Get(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("job %s is unfinished and the fingerprints of its file cannot be read: %w", ps.JobID, err)
		}
		entries, err := decodeSidecar(name, data)
		if err != nil {
			return nil, err
		}
		for _, en := range entries {
			keys = append(keys, en.key)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// putSidecar stores the fingerprints of an import file's rows, read from
// its notes, before the file is queued.
func (e *Engine) putSidecar(ctx context.Context, fileName string, f importfile.File) error {
	if f.Notes == "" {
		return nil
	}
	notes, err := importfile.ReadNotes(f.Notes)
	if err != nil {
		return fmt.Errorf("reading the fingerprints of %s: %w", fileName, err)
	}
	entries := make([]fpEntry, 0, len(notes))
	for _, n := range notes {
		if n != (importfile.Note{}) {
			entries = append(entries, fpEntry{n[0], n[1], n[2], n[3]})
		}
	}
	name := sidecarName(fileName)
	if _, err := e.Blobs.Put(ctx, name, encodeSidecar(entries), ""); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// forgetUsers removes from the store the users a run saw deleted, disabled,
// out of scope or without an id, and, after a full read, those it did not
// see at all, so that such a user is sent again when it comes back.
func (e *Engine) forgetUsers(ctx context.Context, log *slog.Logger, run *Run, f *fpRun) error {
	gone := f.removals(run.Mode == ModeFull)
	if len(gone) == 0 {
		return nil
	}
	if err := mergeFingerprints(ctx, e.Blobs, log, e.now(), "", nil, gone); err != nil {
		return fmt.Errorf("removing users gone from the fingerprint store: %w", err)
	}
	log.Info("users gone from the directory (or no longer sent) removed from the fingerprint store", "users", len(gone))
	return nil
}

// rememberFingerprints merges the fingerprints of the users a finished job
// imported into the store and removes those of the users it did not: every
// user of a Succeeded job is remembered; of an ImportCompleteWithError job
// whose log was read whole, those without an error line; of any other
// outcome, nobody. It runs before the job record is written, so a crash
// leaves the message to merge again, which changes nothing.
func (p *Poller) rememberFingerprints(ctx context.Context, log *slog.Logger, rec *JobRecord, ps PollState) error {
	name := sidecarName(ps.SourceURI)
	if name == "" {
		return nil
	}
	data, _, err := p.Blobs.Get(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		log.Info("no fingerprints for this job's file; its users are not remembered", "blob", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	entries, err := decodeSidecar(name, data)
	if err != nil {
		log.Error("the fingerprints of this job's file cannot be read; its users are not remembered", "err", err)
		rec.Fingerprints = "not remembered: " + err.Error()
		return nil
	}
	var sets []fpEntry
	var removes []uint64
	failed := map[uint64]bool{}
	partial := rec.State == profile.Error.String() && profile.JobError(rec.ErrorCode) == profile.ImportCompleteWithError &&
		rec.LogError == "" && !rec.Truncated
	for _, r := range rec.Results {
		if r.Identity == "" {
			partial = false // a line naming nobody: who failed is unknown
		}
		failed[fpKey(r.Identity)] = true
	}
	for _, en := range entries {
		switch {
		case rec.State == profile.Succeeded.String(), partial && !failed[en.idn]:
			sets = append(sets, en)
		default:
			removes = append(removes, en.key)
		}
	}
	if err := mergeFingerprints(ctx, p.Blobs, log, p.now(), rec.JobID, sets, removes); err != nil {
		return fmt.Errorf("merging the job's fingerprints: %w", err)
	}
	rec.Fingerprints = fmt.Sprintf("%d user(s) remembered, %d forgotten", len(sets), len(removes))
	log.Info("fingerprints of the job's users merged", "remembered", len(sets), "forgotten", len(removes), "blob", name)
	return nil
}

// forgetSidecar deletes a file's fingerprints once its job's outcome is
// final (not queued again).
func (p *Poller) forgetSidecar(ctx context.Context, rec *JobRecord, ps PollState) {
	if rec.RequeuedAs != "" {
		return
	}
	if name := sidecarName(ps.SourceURI); name != "" {
		deleteBlob(ctx, p.Blobs, name)
	}
}
