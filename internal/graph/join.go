package graph

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/profilesync/profilesync/internal/profile"
)

// joinBucket is about how many managers one bucket of the join holds in
// memory at a time (a variable so tests can force many buckets).
var joinBucket = 8192

// splitBuffers is the memory the write buffers of the bucket files share
// while the spill files are split (fewer, larger writes).
const splitBuffers = 4 << 20

// joiner gives the users of an initial round their manager's properties
// without holding the tenant in memory. In an initial round every manager is
// also one of the users, so instead of looking managers up, the round is
// spilled to disk: users waiting for a manager, and every user's properties
// as a possible manager. Both are then split into buckets by manager id, few
// enough managers per bucket to fit in memory, and joined bucket by bucket.
// Memory stays at one bucket however many users there are; the disk holds
// the round once (about what the import file takes).
//
// Spill files hold length-prefixed binary records (see spillFile): a user
// waiting for its manager is the manager's id, then the user (ID, Removed,
// Seq, Props); a candidate is the user's id, then the selected properties'
// values. Splitting a file into buckets reads only each record's leading
// id and copies the record as it is.
type joiner struct {
	dir            string
	sel            []string
	users, cands   *spillFile
	nUsers, nCands int
	enc            []byte        // the record being written
	rd             *bufio.Reader // reads every spill file back in turn
	sr             spillReader
}

func newJoiner(dir string, sel []string) (*joiner, error) {
	j := &joiner{dir: dir, sel: sel}
	var err error
	if j.users, err = newSpill(dir, "profilesync-users-*.spill", 64*1024); err != nil {
		return nil, err
	}
	if j.cands, err = newSpill(dir, "profilesync-managers-*.spill", 64*1024); err != nil {
		j.users.remove()
		return nil, err
	}
	return j, nil
}

// candidate records a user's properties as a possible manager.
func (j *joiner) candidate(u profile.User) error {
	b := appendString(j.enc[:0], u.ID)
	for _, k := range j.sel {
		v, ok := u.Props[k]
		if !ok {
			b = append(b, vAbsent)
			continue
		}
		var err error
		if b, err = appendValue(b, v, 0); err != nil {
			return fmt.Errorf("spilling %q of user %s: %w", k, u.ID, err)
		}
	}
	j.enc = b
	j.nCands++
	return j.cands.write(b)
}

// wait parks a user until its manager is known.
func (j *joiner) wait(u profile.User, managerID string) error {
	b := appendString(j.enc[:0], managerID)
	b = appendString(b, u.ID)
	flags := byte(0)
	if u.Removed {
		flags = 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, u.Seq)
	var props any = u.Props // a nil map stays nil
	b, err := appendValue(b, props, 0)
	if err != nil {
		return fmt.Errorf("spilling user %s: %w", u.ID, err)
	}
	j.enc = b
	j.nUsers++
	return j.users.write(b)
}

// bucketOf hashes an id (FNV-1a) into one of n buckets.
func bucketOf(id []byte, n int) int {
	h := uint32(2166136261)
	for _, c := range id {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % uint32(n))
}

// split copies each record of from into the bucket its leading id falls in.
func (j *joiner) split(from *spillFile, parts []*spillFile) error {
	return from.each(j.reader(), func(rec []byte) error {
		j.sr.reset(rec)
		id, err := j.sr.bytes()
		if err != nil {
			return err
		}
		return parts[bucketOf(id, len(parts))].write(rec)
	})
}

func (j *joiner) reader() *bufio.Reader {
	if j.rd == nil {
		j.rd = bufio.NewReaderSize(nil, 64*1024)
	}
	return j.rd
}

// finish joins the parked users with their managers and hands them to fn.
// Managers not among the round's users (rare) are looked up with r.
func (j *joiner) finish(ctx context.Context, r *managerResolver, fn func(profile.User) error) error {
	if j.nUsers == 0 {
		return nil
	}
	n := max(1, (j.nCands+joinBucket-1)/joinBucket)
	userParts, candParts := make([]*spillFile, n), make([]*spillFile, n)
	release := func(s *spillFile) {
		if s != j.users && s != j.cands { // those two go in close
			s.remove()
		}
	}
	defer func() {
		for i := range n {
			release(userParts[i])
			release(candParts[i])
		}
	}()
	if n == 1 {
		// One bucket: nothing to split.
		userParts[0], candParts[0] = j.users, j.cands
	} else {
		// There is a pair of files per bucket: their write buffers share
		// splitBuffers, within 4 KiB to 64 KiB each.
		bufSize := min(max(splitBuffers/(2*n), 4<<10), 64<<10)
		for i := range n {
			var err error
			if userParts[i], err = newSpill(j.dir, "profilesync-users-part-*.spill", bufSize); err != nil {
				return err
			}
			if candParts[i], err = newSpill(j.dir, "profilesync-managers-part-*.spill", bufSize); err != nil {
				return err
			}
		}
		if err := j.split(j.users, userParts); err != nil {
			return fmt.Errorf("splitting the spilled users: %w", err)
		}
		if err := j.split(j.cands, candParts); err != nil {
			return fmt.Errorf("splitting the spilled managers: %w", err)
		}
	}
	for i := range n {
		managers := make(map[string]map[string]any, min(j.nCands/n+16, 2*joinBucket))
		err := candParts[i].each(j.reader(), func(rec []byte) error {
			rd := &j.sr
			rd.resetSlab(rec)
			id, err := rd.string()
			if err != nil {
				return err
			}
			m := make(map[string]any, len(j.sel))
			for _, name := range j.sel {
				if rd.off < len(rd.b) && rd.b[rd.off] == vAbsent {
					rd.off++
					continue
				}
				v, err := rd.value(0)
				if err != nil {
					return err
				}
				m[name] = v
			}
			managers[id] = m
			return rd.end()
		})
		if err != nil {
			return fmt.Errorf("reading spilled managers: %w", err)
		}
		// Users whose manager is not among the round's users (rare) wait here
		// and are looked up together.
		var missing []profile.User
		flush := func() error {
			if err := r.resolve(ctx, missing); err != nil {
				return err
			}
			for _, u := range missing {
				if err := fn(u); err != nil {
					return err
				}
			}
			missing = missing[:0]
			return nil
		}
		err = userParts[i].each(j.reader(), func(rec []byte) error {
			manager, u, err := j.sr.user(rec)
			if err != nil {
				return fmt.Errorf("reading spilled users: %w", err)
			}
			if u.Props == nil {
				u.Props = map[string]any{}
			}
			if m, ok := managers[manager]; ok {
				u.Props["manager"] = m
				return fn(u)
			}
			u.Props["manager"] = managerRef(manager)
			if missing = append(missing, u); len(missing) >= batchSize*5 {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			return err
		}
		release(candParts[i])
		release(userParts[i])
		candParts[i], userParts[i] = nil, nil
	}
	return nil
}

func (j *joiner) close() {
	j.users.remove()
	j.cands.remove()
}

// spillFile is a temporary file of records, each a uvarint length and that
// many bytes.
type spillFile struct {
	f *os.File
	w *bufio.Writer
}

func newSpill(dir, pattern string, bufSize int) (*spillFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("creating a spill file: %w", err)
	}
	return &spillFile{f: f, w: bufio.NewWriterSize(f, bufSize)}, nil
}

func (s *spillFile) write(rec []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := s.w.Write(n[:binary.PutUvarint(n[:], uint64(len(rec)))]); err != nil {
		return err
	}
	_, err := s.w.Write(rec)
	return err
}

// maxSpillRecord bounds a record read back (a user is a few kilobytes; a
// page body, which holds many, is at most maxPageBytes).
const maxSpillRecord = maxPageBytes

// each reads the file back, record by record, through rd. The record
// handed to fn is valid only until fn returns.
func (s *spillFile) each(rd *bufio.Reader, fn func(rec []byte) error) error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	rd.Reset(s.f)
	defer rd.Reset(nil)
	var big []byte
	for {
		n, err := binary.ReadUvarint(rd)
		if err == io.EOF {
			return nil
		}
		if err != nil || n > maxSpillRecord {
			return fmt.Errorf("%s: a corrupt record (%v)", s.f.Name(), err)
		}
		var rec []byte
		if int(n) <= rd.Size() {
			// In place, in the reader's buffer.
			rec, err = rd.Peek(int(n))
		} else {
			if cap(big) < int(n) {
				big = make([]byte, n)
			}
			rec = big[:n]
			_, err = io.ReadFull(rd, rec)
		}
		if err != nil {
			return fmt.Errorf("%s: a truncated record: %w", s.f.Name(), err)
		}
		if err := fn(rec); err != nil {
			return err
		}
		if int(n) <= rd.Size() {
			if _, err := rd.Discard(int(n)); err != nil {
				return err
			}
		}
	}
}

func (s *spillFile) remove() {
	if s != nil {
		s.f.Close()
		os.Remove(s.f.Name())
	}
}

// The tags of spilled values. Props values are JSON-shaped (see
// profile.User); anything else is spilled as JSON and comes back as
// encoding/json decodes it.
const (
	vNil      byte = iota
	vFalse         // false
	vTrue          // true
	vInt           // a float64 holding an integer: zigzag varint
	vFloat         // any other float64: 8 bytes, little-endian IEEE 754
	vString        // uvarint length, bytes
	vArray         // []any: uvarint count, values
	vMap           // map[string]any: uvarint count, then key (as vString's body) and value each
	vNilArray      // []any(nil)
	vNilMap        // map[string]any(nil)
	vJSON          // any other type: uvarint length, its JSON
	vAbsent        // a candidate's property the user does not have
)

// maxSpillDepth bounds the nesting of spilled values (pages allow 64).
const maxSpillDepth = 1000

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends v's tagged encoding to b.
func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxSpillDepth {
		return b, errors.New("value nested too deep")
	}
	switch x := v.(type) {
	case nil:
		return append(b, vNil), nil
	case string:
		return appendString(append(b, vString), x), nil
	case bool:
		if x {
			return append(b, vTrue), nil
		}
		return append(b, vFalse), nil
	case float64:
		if i := int64(x); float64(i) == x && i > -1<<53 && i < 1<<53 && (i != 0 || !math.Signbit(x)) {
			return binary.AppendVarint(append(b, vInt), i), nil
		}
		return binary.LittleEndian.AppendUint64(append(b, vFloat), math.Float64bits(x)), nil
	case []any:
		if x == nil {
			return append(b, vNilArray), nil
		}
		b = binary.AppendUvarint(append(b, vArray), uint64(len(x)))
		for _, e := range x {
			var err error
			if b, err = appendValue(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	case map[string]any:
		if x == nil {
			return append(b, vNilMap), nil
		}
		b = binary.AppendUvarint(append(b, vMap), uint64(len(x)))
		for k, e := range x {
			b = appendString(b, k)
			var err error
			if b, err = appendValue(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	b = binary.AppendUvarint(append(b, vJSON), uint64(len(j)))
	return append(b, j...), nil
}

// spillReader decodes one record. Strings it returns are substrings of
// one copy of the record (the slab), except keys, which come from a table
// shared by all records.
type spillReader struct {
	b       []byte
	off     int
	slab    string
	hasSlab bool
	keys    map[string]string
}

var errCorruptSpill = errors.New("a corrupt spill record")

func (r *spillReader) reset(b []byte) { r.b, r.off, r.slab, r.hasSlab = b, 0, "", false }

// resetSlab is reset for a record whose strings are kept: they are cut
// from one copy of it.
func (r *spillReader) resetSlab(b []byte) {
	r.reset(b)
	r.slab, r.hasSlab = string(b), true
}

func (r *spillReader) end() error {
	if r.off != len(r.b) {
		return errCorruptSpill
	}
	return nil
}

func (r *spillReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		return 0, errCorruptSpill
	}
	r.off += n
	return v, nil
}

// bytes reads a length-prefixed string without copying it.
func (r *spillReader) bytes() ([]byte, error) {
	n, err := r.uvarint()
	if err != nil || n > uint64(len(r.b)-r.off) {
		return nil, errCorruptSpill
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

func (r *spillReader) string() (string, error) {
	b, err := r.bytes()
	if err != nil {
		return "", err
	}
	if r.hasSlab {
		return r.slab[r.off-len(b) : r.off], nil
	}
	return string(b), nil
}

func (r *spillReader) key() (string, error) {
	b, err := r.bytes()
	if err != nil {
		return "", err
	}
	if s, ok := r.keys[string(b)]; ok {
		return s, nil
	}
	s := string(b)
	if r.keys == nil {
		r.keys = make(map[string]string, 64)
	}
	if len(r.keys) < maxInternedKeys && len(s) <= 256 {
		r.keys[s] = s
	}
	return s, nil
}

// user reads a record of the users file: the manager id, then the user.
func (r *spillReader) user(rec []byte) (manager string, u profile.User, err error) {
	r.resetSlab(rec)
	if manager, err = r.string(); err != nil {
		return
	}
	if u.ID, err = r.string(); err != nil {
		return
	}
	if r.off >= len(r.b) {
		return "", u, errCorruptSpill
	}
	u.Removed = r.b[r.off]&1 != 0
	r.off++
	if u.Seq, err = r.uvarint(); err != nil {
		return
	}
	props, err := r.value(0)
	if err != nil {
		return
	}
	if props != nil {
		var ok bool
		if u.Props, ok = props.(map[string]any); !ok {
			return "", u, errCorruptSpill
		}
	}
	return manager, u, r.end()
}

// value reads one tagged value.
func (r *spillReader) value(depth int) (any, error) {
	if r.off >= len(r.b) || depth > maxSpillDepth {
		return nil, errCorruptSpill
	}
	tag := r.b[r.off]
	r.off++
	switch tag {
	case vNil:
		return nil, nil
	case vFalse:
		return false, nil
	case vTrue:
		return true, nil
	case vInt:
		i, n := binary.Varint(r.b[r.off:])
		if n <= 0 {
			return nil, errCorruptSpill
		}
		r.off += n
		return float64(i), nil
	case vFloat:
		if len(r.b)-r.off < 8 {
			return nil, errCorruptSpill
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(r.b[r.off:]))
		r.off += 8
		return f, nil
	case vString:
		return r.string()
	case vArray:
		n, err := r.uvarint()
		if err != nil || n > uint64(len(r.b)-r.off) { // every element takes a byte at least
			return nil, errCorruptSpill
		}
		a := make([]any, n)
		for i := range a {
			if a[i], err = r.value(depth + 1); err != nil {
				return nil, err
			}
		}
		return a, nil
	case vMap:
		n, err := r.uvarint()
		if err != nil || n > uint64(len(r.b)-r.off)/2 { // every member takes two bytes at least
			return nil, errCorruptSpill
		}
		m := make(map[string]any, n)
		for range n {
			k, err := r.key()
			if err != nil {
				return nil, err
			}
			if m[k], err = r.value(depth + 1); err != nil {
				return nil, err
			}
		}
		return m, nil
	case vNilArray:
		return []any(nil), nil
	case vNilMap:
		return map[string]any(nil), nil
	case vJSON:
		b, err := r.bytes()
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%w: %v", errCorruptSpill, err)
		}
		return v, nil
	}
	return nil, errCorruptSpill
}
