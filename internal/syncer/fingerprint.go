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
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
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

// row returns the fingerprint of a user's row, whether the user is
// unchanged (its row need not be sent), and its number in the store (1..n,
// or 0: importfile.Appearance.At), by which the run's writer keeps its
// newest sighting compactly (users without an object id get none).
func (f *fpRun) row(u profile.User, rec mapping.Record) (importfile.Note, bool, int) {
	if f == nil {
		return importfile.Note{}, false, 0
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
	at := 0
	if f.store != nil {
		if i, ok := f.store.find(k); ok {
			f.kept.set(i)
			if u.ID != "" {
				at = i + 1
			}
			// A record without the manager's properties leaves SharePoint's
			// as they are: its own part decides.
			if f.skip && f.store.val(i) == v && (mgr == mgrUnknown || f.store.mgr(i) == mgr) && !f.isPending(k) {
				return importfile.Note{}, true, at
			}
		}
	}
	return importfile.Note{k, v, mgr, idn}, false, at
}

func (f *fpRun) isPending(k uint64) bool {
	_, ok := slices.BinarySearch(f.pending, k)
	return ok
}

// drop notes a user that is not sent (deleted, disabled, guest, no id)
// and returns its number in the store (as row does).
func (f *fpRun) drop(u profile.User) int {
	if f == nil || f.store == nil || u.ID == "" {
		return 0
	}
	if i, ok := f.store.find(fpKey(u.ID)); ok {
		f.gone.set(i)
		return i + 1
	}
	return 0
}

// users is how many users the store numbers (importfile.Writer.Dense).
func (f *fpRun) users() int {
	if f == nil || f.store == nil {
		return 0
	}
	return f.store.n
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
		ps, err := DecodePollState(data)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", n, err)
		}
		if _, _, err := e.Blobs.Get(ctx, JobsPrefix+ps.JobID+".json"); err == nil {
			continue // recorded (and merged); only its poll document is left
		}
		name := sidecarName(ps.SourceURI)
		if name == "" {
			return nil, fmt.Errorf("job %s is unfinished and its import file is unknown", ps.JobID)
		}
		err = eachSidecarEntry(ctx, e.Blobs, name, func(en fpEntry) { keys = append(keys, en.key) })
		if errors.Is(err, ErrFingerprintsCorrupt) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("job %s is unfinished and the fingerprints of its file cannot be read: %w", ps.JobID, err)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// putSidecar stores the fingerprints of an import file's rows, read from
// its notes, before the file is queued: sorted, in one buffer of 32 bytes a
// row that is also the blob's body (a file of 455,000 rows: 14.6 MB, once).
func (e *Engine) putSidecar(ctx context.Context, fileName string, f importfile.File) error {
	if f.Notes == "" {
		return nil
	}
	info, err := os.Stat(f.Notes)
	if err != nil {
		return fmt.Errorf("reading the fingerprints of %s: %w", fileName, err)
	}
	buf := make([]byte, headerSize, headerSize+info.Size())
	err = importfile.EachNote(f.Notes, func(n importfile.Note) {
		if n != (importfile.Note{}) {
			buf = appendStoreEntry(buf, fpEntry{key: n[0], val: n[1], mgr: n[2]})
			buf = binary.BigEndian.AppendUint64(buf, n[3])
		}
	})
	if err != nil {
		return fmt.Errorf("reading the fingerprints of %s: %w", fileName, err)
	}
	body := buf[headerSize:]
	sort.Sort(sidecarRows(body)) // big-endian: byte order is (key, val, mgr, idn) order
	putHeader(buf, sidecarMagic, uint64(len(body)/sidecarEntry), sha256.Sum256(body))
	name := sidecarName(fileName)
	if _, err := e.Blobs.Put(ctx, name, buf, ""); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// sidecarRows sorts a sidecar's entries in place.
type sidecarRows []byte

func (r sidecarRows) Len() int { return len(r) / sidecarEntry }
func (r sidecarRows) Less(i, j int) bool {
	return bytes.Compare(r[i*sidecarEntry:(i+1)*sidecarEntry], r[j*sidecarEntry:(j+1)*sidecarEntry]) < 0
}
func (r sidecarRows) Swap(i, j int) {
	a, b := r[i*sidecarEntry:(i+1)*sidecarEntry], r[j*sidecarEntry:(j+1)*sidecarEntry]
	var t [sidecarEntry]byte
	copy(t[:], a)
	copy(a, b)
	copy(b, t[:])
}

// forgetUsers removes from the store the users a run saw deleted, disabled,
// out of scope or without an id, and, after a full read, those it did not
// see at all, so that such a user is sent again when it comes back.
func (e *Engine) forgetUsers(ctx context.Context, log *slog.Logger, run *Run, f *fpRun) error {
	gone := f.removals(run.Mode == ModeFull)
	if len(gone) == 0 {
		return nil
	}
	if err := mergeSlices(ctx, e.Blobs, log, e.now(), e.TempDir, "", nil, gone); err != nil {
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
	failed := map[uint64]bool{}
	partial := rec.State == profile.Error.String() && profile.JobError(rec.ErrorCode) == profile.ImportCompleteWithError &&
		rec.LogError == "" && !rec.Truncated
	for _, r := range rec.Results {
		if r.Identity == "" {
			partial = false // a line naming nobody: who failed is unknown
		}
		failed[fpKey(r.Identity)] = true
	}
	// The sidecar is streamed into the merge (opened again by each
	// attempt); the users SharePoint imported are set, the others removed.
	var sets, removes int
	opened := false
	ops := func() (opStream, func(), error) {
		rc, err := openBlob(ctx, p.Blobs, name)
		if err != nil {
			return nil, nil, err
		}
		er, err := newEntryReader(name, sidecarMagic, sidecarEntry, rc)
		if err != nil {
			rc.Close()
			return nil, nil, err
		}
		opened, sets, removes = true, 0, 0
		return func() (fpOp, bool, error) {
			en, ok, err := er.next()
			if !ok || err != nil {
				return fpOp{}, false, err
			}
			if rec.State == profile.Succeeded.String() || (partial && !failed[en.idn]) {
				sets++
				return fpOp{fpEntry: en}, true, nil
			}
			removes++
			return fpOp{fpEntry: en, remove: true}, true, nil
		}, func() { rc.Close() }, nil
	}
	err := mergeFingerprints(ctx, p.Blobs, log, p.now(), p.TempDir, rec.JobID, ops)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no fingerprints for this job's file; its users are not remembered", "blob", name)
		return nil
	case errors.Is(err, ErrFingerprintsCorrupt):
		log.Error("the fingerprints of this job's file cannot be read; its users are not remembered", "err", err)
		rec.Fingerprints = "not remembered: " + err.Error()
		return nil
	case err != nil:
		return fmt.Errorf("merging the job's fingerprints: %w", err)
	case !opened:
		rec.Fingerprints = "merged before (the job's message came again)"
		return nil
	}
	rec.Fingerprints = fmt.Sprintf("%d user(s) remembered, %d forgotten", sets, removes)
	log.Info("fingerprints of the job's users merged", "remembered", sets, "forgotten", removes, "blob", name)
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
