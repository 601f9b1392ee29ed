package syncer

// The fingerprint store's blobs, read and merged by streaming (issue 13):
// a merge reads the current store and the job's sidecar entry by entry,
// both sorted by key, and writes the new store to a temporary file, which
// is then uploaded as it is read. It holds a few buffers, never a store.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// BlobStreams reads and writes blobs too large to hold whole (the store:
// 24 bytes a user). Open wraps fs.ErrNotExist for a missing blob;
// CreateFrom writes the first size bytes of r only if the blob does not
// exist yet, and wraps profile.ErrStale if it does.
type BlobStreams interface {
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	CreateFrom(ctx context.Context, name string, r io.ReaderAt, size int64) (etag string, err error)
}

func streamsOf(b Blobs) (BlobStreams, error) {
	s, ok := b.(BlobStreams)
	if !ok {
		return nil, errors.New("the blob store cannot stream blobs (it has no Open and CreateFrom)")
	}
	return s, nil
}

// Blob formats: a 32-byte header (8-byte magic, entry count as a big-endian
// uint64, the first 16 bytes of the SHA-256 of the entries), then the
// entries, big-endian, sorted by key.
const (
	storeMagic   = "PSFPST01" // entries: key, own values, manager's values (24 bytes)
	sidecarMagic = "PSFPSC01" // entries: key, own values, manager's values, IdName key (32 bytes)
	headerSize   = 32
	storeEntry   = 24
	sidecarEntry = 32
	// maxPrealloc bounds what a header's entry count can make a reader
	// allocate before the entries arrive (a corrupt count must not).
	maxPrealloc = 16 << 20
)

// mgrUnknown is the manager's part of a record that left the manager's
// properties out (a delta round that did not say who the manager is).
const mgrUnknown = 0

// maxMergedJobs bounds the job ids the manifest remembers as merged.
const maxMergedJobs = 500

// maxManifest bounds the manifest read (about 20 KB with maxMergedJobs ids).
const maxManifest = 1 << 20

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

// encodeBlob frames entries (already encoded) with a header.
func encodeBlob(magic string, n int, body []byte) []byte {
	out := make([]byte, headerSize, headerSize+len(body))
	putHeader(out, magic, uint64(n), sha256.Sum256(body))
	return append(out, body...)
}

func putHeader(h []byte, magic string, n uint64, sum [sha256.Size]byte) {
	copy(h, magic)
	binary.BigEndian.PutUint64(h[8:], n)
	copy(h[16:headerSize], sum[:])
}

// entryReader reads a fingerprint blob entry by entry, checking its
// header, its order and, at its end, its length and checksum. Its errors
// for a blob that is not what it claims wrap ErrFingerprintsCorrupt and
// name the blob; what was read before such an error must be thrown away.
type entryReader struct {
	name   string
	size   int  // bytes an entry
	strict bool // keys strictly increasing (the store); sidecars may repeat one
	r      *bufio.Reader
	n, i   uint64
	want   [16]byte
	sum    hash.Hash
	last   uint64
	buf    [sidecarEntry]byte
	done   bool
}

func (e *entryReader) corrupt(why string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrFingerprintsCorrupt, e.name, fmt.Sprintf(why, a...))
}

// newEntryReader reads the header of blob name from r.
func newEntryReader(name, magic string, size int, r io.Reader) (*entryReader, error) {
	e := &entryReader{name: name, size: size, strict: size == storeEntry, r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	var h [headerSize]byte
	if n, err := io.ReadFull(e.r, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, e.corrupt("not a fingerprint blob of this version (%d bytes)", n)
		}
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if string(h[:8]) != magic {
		return nil, e.corrupt("not a fingerprint blob of this version (it begins %q)", h[:8])
	}
	e.n = binary.BigEndian.Uint64(h[8:])
	copy(e.want[:], h[16:])
	return e, nil
}

// next returns the next entry; ok is false at the end of a sound blob.
func (e *entryReader) next() (en fpEntry, ok bool, err error) {
	if e.done {
		return en, false, nil
	}
	if e.i == e.n {
		if _, err := e.r.ReadByte(); err == nil {
			return en, false, e.corrupt("more bytes than its %d entries of %d bytes", e.n, e.size)
		} else if err != io.EOF {
			return en, false, fmt.Errorf("reading %s: %w", e.name, err)
		}
		if !bytes.Equal(e.sum.Sum(nil)[:16], e.want[:]) {
			return en, false, e.corrupt("checksum mismatch")
		}
		e.done = true
		return en, false, nil
	}
	b := e.buf[:e.size]
	if _, err := io.ReadFull(e.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return en, false, e.corrupt("%d entries of %d bytes announced, the blob ends at entry %d", e.n, e.size, e.i)
		}
		return en, false, fmt.Errorf("reading %s: %w", e.name, err)
	}
	e.sum.Write(b)
	en = fpEntry{key: binary.BigEndian.Uint64(b), val: binary.BigEndian.Uint64(b[8:]), mgr: binary.BigEndian.Uint64(b[16:])}
	if e.size == sidecarEntry {
		en.idn = binary.BigEndian.Uint64(b[24:])
	}
	if e.i > 0 {
		switch {
		case en.key < e.last:
			return en, false, e.corrupt("entries out of order at %d", e.i)
		case en.key == e.last && e.strict:
			return en, false, e.corrupt("key repeated at %d", e.i)
		}
	}
	e.last = en.key
	e.i++
	return en, true, nil
}

// readStore reads a whole store blob for a run's lookups (24 bytes a user,
// allocated once).
func readStore(name string, r io.Reader) (*fpStore, error) {
	e, err := newEntryReader(name, storeMagic, storeEntry, r)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 0, min(e.n*storeEntry, maxPrealloc))
	for {
		en, ok, err := e.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		body = appendStoreEntry(body, en)
	}
	return &fpStore{blob: name, body: body, n: int(e.n)}, nil
}

func appendStoreEntry(b []byte, en fpEntry) []byte {
	b = binary.BigEndian.AppendUint64(b, en.key)
	b = binary.BigEndian.AppendUint64(b, en.val)
	return binary.BigEndian.AppendUint64(b, en.mgr)
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

// openBlob streams blob name: a missing blob wraps fs.ErrNotExist.
func openBlob(ctx context.Context, b Blobs, name string) (io.ReadCloser, error) {
	s, err := streamsOf(b)
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, name)
}

// eachSidecarEntry streams the entries of sidecar blob name to fn; the
// blob's soundness is known only when it returns nil.
func eachSidecarEntry(ctx context.Context, b Blobs, name string, fn func(fpEntry)) error {
	rc, err := openBlob(ctx, b, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	e, err := newEntryReader(name, sidecarMagic, sidecarEntry, rc)
	if err != nil {
		return err
	}
	for {
		en, ok, err := e.next()
		if err != nil || !ok {
			return err
		}
		fn(en)
	}
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
	if len(data) > maxManifest {
		return man, etag, fmt.Errorf("%w: %s: %d bytes, more than a manifest's %d", ErrFingerprintsCorrupt, FingerprintsManifest, len(data), maxManifest)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		return man, etag, fmt.Errorf("%w: %s: %v", ErrFingerprintsCorrupt, FingerprintsManifest, err)
	}
	if man.Store != "" && (!strings.HasPrefix(man.Store, FingerprintsStorePrefix) || strings.Contains(strings.TrimPrefix(man.Store, FingerprintsStorePrefix), "/")) {
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
		rc, err := openBlob(ctx, b, man.Store)
		if errors.Is(err, fs.ErrNotExist) {
			continue // replaced by a merge since the manifest was read: read it again
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", man.Store, err)
		}
		s, err := readStore(man.Store, rc)
		rc.Close()
		return s, err
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

// fpOp is one change a merge makes: set a user's fingerprint, or remove it.
type fpOp struct {
	fpEntry
	remove bool
}

// opStream yields a merge's changes sorted by key (ok false at the end).
type opStream func() (op fpOp, ok bool, err error)

// mergeOps yields the changes of sets (sorted by key, the later of one key
// newer) and removes (sorted), in key order.
func mergeOps(sets []fpEntry, removes []uint64) opStream {
	i, j := 0, 0
	return func() (fpOp, bool, error) {
		switch {
		case i < len(sets) && (j >= len(removes) || sets[i].key <= removes[j]):
			i++
			return fpOp{fpEntry: sets[i-1]}, true, nil
		case j < len(removes):
			j++
			return fpOp{fpEntry: fpEntry{key: removes[j-1]}, remove: true}, true, nil
		}
		return fpOp{}, false, nil
	}
}

// storeWriter writes a new store blob to a temporary file, entry by entry;
// the header is written last, when the count and checksum are known.
type storeWriter struct {
	f   *os.File
	w   *bufio.Writer
	sum hash.Hash
	n   uint64
	buf []byte
}

func newStoreWriter(dir string) (*storeWriter, error) {
	f, err := os.CreateTemp(dir, "profilesync-fingerprints-*.bin")
	if err != nil {
		return nil, fmt.Errorf("merging fingerprints: %w", err)
	}
	w := &storeWriter{f: f, w: bufio.NewWriterSize(f, 64<<10), sum: sha256.New()}
	if _, err := w.w.Write(make([]byte, headerSize)); err != nil { // the header's place
		w.discard()
		return nil, fmt.Errorf("merging fingerprints: %w", err)
	}
	return w, nil
}

func (w *storeWriter) add(en fpEntry) error {
	w.buf = appendStoreEntry(w.buf[:0], en)
	w.sum.Write(w.buf)
	w.n++
	_, err := w.w.Write(w.buf)
	return err
}

// finish writes the header and returns the blob's size.
func (w *storeWriter) finish() (int64, error) {
	if err := w.w.Flush(); err != nil {
		return 0, err
	}
	var h [headerSize]byte
	putHeader(h[:], storeMagic, w.n, [sha256.Size]byte(w.sum.Sum(nil)))
	if _, err := w.f.WriteAt(h[:], 0); err != nil {
		return 0, err
	}
	return headerSize + int64(w.n)*storeEntry, nil
}

func (w *storeWriter) discard() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// errOps marks an error of a merge's changes (not of the store it merges
// into).
type errOps struct{ error }

func (e errOps) Unwrap() error { return e.error }

// mergeStream writes old's entries (nil: an empty store) changed by ops to
// w: of the changes of one key, a removal wins, else the last set does; a
// set whose manager's part is unknown keeps the part known before (its
// record left the manager's properties as SharePoint had them). It reports
// whether the result differs from old. Errors of ops come wrapped in
// errOps.
func mergeStream(old *entryReader, ops opStream, w *storeWriter) (changed bool, err error) {
	nextOld := func() (fpEntry, bool, error) {
		if old == nil {
			return fpEntry{}, false, nil
		}
		return old.next()
	}
	nextOp := func() (fpOp, bool, error) {
		op, ok, err := ops()
		if err != nil {
			return op, ok, errOps{err}
		}
		return op, ok, nil
	}
	e, eok, err := nextOld()
	if err != nil {
		return false, err
	}
	o, ook, err := nextOp()
	if err != nil {
		return false, err
	}
	for eok || ook {
		if !ook || (eok && e.key < o.key) {
			if err := w.add(e); err != nil {
				return false, err
			}
			if e, eok, err = nextOld(); err != nil {
				return false, err
			}
			continue
		}
		key := o.key
		var set fpEntry
		removed, hasSet := false, false
		for ook && o.key == key {
			switch {
			case o.remove:
				removed = true
			case hasSet && o.mgr == mgrUnknown:
				set.val = o.val
			default:
				set, hasSet = o.fpEntry, true
			}
			if o, ook, err = nextOp(); err != nil {
				return false, err
			}
		}
		had := eok && e.key == key
		prev := e
		if had {
			if e, eok, err = nextOld(); err != nil {
				return false, err
			}
		}
		switch {
		case removed:
			changed = changed || had
		case hasSet:
			if set.mgr == mgrUnknown && had {
				set.mgr = prev.mgr
			}
			set.idn = 0
			changed = changed || !had || prev.val != set.val || prev.mgr != set.mgr
			if err := w.add(set); err != nil {
				return false, err
			}
		default:
			if had {
				if err := w.add(prev); err != nil {
					return false, err
				}
			}
		}
	}
	return changed, nil
}

// mergeFingerprints sets and removes fingerprints with a compare-and-swap
// on the manifest: a new store blob, then the manifest naming it (If-Match),
// then the old blob deleted. ops opens the changes (sorted by key) again
// for each attempt. jobID, when set, is recorded in the manifest; a job
// already recorded there is not merged again. A store blob that cannot be
// read is replaced by one holding only these changes' sets (its users are
// sent again once): the store repairs itself. The store and the changes
// are streamed; dir holds the new store while it is written.
func mergeFingerprints(ctx context.Context, b Blobs, log *slog.Logger, now time.Time, dir, jobID string, ops func() (opStream, func(), error)) error {
	streams, err := streamsOf(b)
	if err != nil {
		return err
	}
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
		name, changed, n, err := writeMerged(ctx, b, streams, log, now, dir, man, etag, ops)
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return err
		}
		if jobID == "" && !changed {
			return nil // nothing to change
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
			if changed {
				deleteBlob(ctx, b, name)
			}
			if errors.Is(err, profile.ErrStale) {
				continue // another merge came first: merge into its store
			}
			return fmt.Errorf("writing %s: %w", FingerprintsManifest, err)
		}
		if man.Store != "" && changed && name != man.Store {
			deleteBlob(ctx, b, man.Store)
		}
		sweepStores(ctx, b, log, name, now)
		return nil
	}
	return fmt.Errorf("writing %s: it kept changing", FingerprintsManifest)
}

// errRetry: the store named by the manifest was replaced meanwhile.
var errRetry = errors.New("the fingerprint store changed meanwhile")

// writeMerged merges ops into the store man names and, if that changes
// it, writes the result as a new store blob. It returns the blob the
// manifest is to name, whether it is new, and its users.
func writeMerged(ctx context.Context, b Blobs, streams BlobStreams, log *slog.Logger, now time.Time, dir string,
	man fpManifest, etag string, ops func() (opStream, func(), error)) (name string, changed bool, n int, err error) {
	fresh := man.Store == ""
	for range 2 {
		var old *entryReader
		var closeOld func()
		if !fresh {
			rc, err := streams.Open(ctx, man.Store)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if _, tag, err := b.Get(ctx, FingerprintsManifest); err == nil && tag != etag {
					return "", false, 0, errRetry // another merge replaced it meanwhile
				}
				log.Error("the fingerprint store blob is missing; starting it afresh (its users are sent again once)", "blob", man.Store)
				fresh = true
				continue
			case err != nil:
				return "", false, 0, fmt.Errorf("reading %s: %w", man.Store, err)
			}
			closeOld = func() { rc.Close() }
			if old, err = newEntryReader(man.Store, storeMagic, storeEntry, rc); err != nil {
				closeOld()
				if !errors.Is(err, ErrFingerprintsCorrupt) {
					return "", false, 0, err
				}
				log.Error("the fingerprint store is unreadable; starting it afresh (its users are sent again once)", "err", err)
				fresh = true
				continue
			}
		}
		stream, closeOps, err := ops()
		if err != nil {
			if closeOld != nil {
				closeOld()
			}
			return "", false, 0, err
		}
		w, err := newStoreWriter(dir)
		if err != nil {
			closeOps()
			if closeOld != nil {
				closeOld()
			}
			return "", false, 0, err
		}
		changed, err := mergeStream(old, stream, w)
		closeOps()
		if closeOld != nil {
			closeOld()
		}
		var opsErr errOps
		switch {
		case errors.As(err, &opsErr):
			w.discard()
			return "", false, 0, opsErr.error
		case errors.Is(err, ErrFingerprintsCorrupt):
			w.discard()
			log.Error("the fingerprint store is unreadable; starting it afresh (its users are sent again once)", "err", err)
			fresh = true
			continue
		case err != nil:
			w.discard()
			return "", false, 0, fmt.Errorf("merging fingerprints into %s: %w", man.Store, err)
		}
		changed = changed || (fresh && man.Store != "")
		if !changed {
			w.discard()
			return man.Store, false, man.Users, nil // only the manifest's list of jobs may change
		}
		size, err := w.finish()
		if err == nil {
			name = FingerprintsStorePrefix + NewRunID(now) + ".bin"
			_, err = streams.CreateFrom(ctx, name, w.f, size)
		}
		n = int(w.n)
		w.discard()
		if err != nil {
			return "", false, 0, fmt.Errorf("writing %s: %w", name, err)
		}
		return name, true, n, nil
	}
	return "", false, 0, fmt.Errorf("%w: %s cannot be read", ErrFingerprintsCorrupt, man.Store)
}

// mergeSlices merges sets and removes held in memory (a run's removals,
// and tests).
func mergeSlices(ctx context.Context, b Blobs, log *slog.Logger, now time.Time, dir, jobID string, sets []fpEntry, removes []uint64) error {
	slices.SortStableFunc(sets, func(a, b fpEntry) int { return cmpU64(a.key, b.key) })
	slices.Sort(removes)
	return mergeFingerprints(ctx, b, log, now, dir, jobID, func() (opStream, func(), error) {
		return mergeOps(sets, removes), func() {}, nil
	})
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
