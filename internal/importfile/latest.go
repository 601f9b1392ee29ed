package importfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"os"
)

// Latest decides, sighting by sighting, which sighting of each user a run
// keeps: the newest one. Graph may hand the same user over more than once in
// one round ("a single entity can be contained multiple times in the
// response", learn.microsoft.com/graph/delta-query-overview), a user renamed
// while a full sync reads may turn up in two ranges, and SharePoint's bulk
// import refuses a file that holds two rows of one user ("GenericError …
// SqlException: Input data contains multiple instances of the same
// single-value property for RecordId"). A sighting is either a row (the
// user is sent) or a drop (the user is skipped: deleted, disabled, guest);
// the newest sighting decides.
//
// Memory: one 16-byte map slot per user (an 8-byte hash of its key and an
// 8-byte slot), about 14 to 19 MB for 500,000 users in a Go map, never the
// records; a caller that numbers the users it expects (Dense: the engine
// numbers the users of its fingerprint store) has their sightings kept in
// an array of 8 bytes per number instead (4 MB for 500,000), and only the
// others in the map.
// Keys are hashed with a seed chosen per Latest; two different users share a
// hash with a probability of about n²/2⁶⁵ per run (7·10⁻⁹ at 500,000 users),
// and the seed changes every run, so such a collision cannot repeat.
//
// The zero value is not usable; call NewLatest. Not safe for concurrent use.
type Latest struct {
	seed    maphash.Seed
	seen    map[uint64]slot
	dense   []slot // sightings of users numbered 1..len(dense) (slot.seq 0: none yet)
	last    uint32
	rows    int // users whose newest sighting is a row
	repeats int
	dropped map[uint8]int // users whose newest sighting is a drop, by tag
}

// slot is the newest sighting of one user: its sequence number and either
// the row it wrote or dropFlag|tag.
type slot struct {
	seq uint32
	row uint32
}

const dropFlag = 1 << 31

// NewLatest returns an empty Latest.
func NewLatest() *Latest {
	return &Latest{seed: maphash.MakeSeed(), seen: make(map[uint64]slot), dropped: map[uint8]int{}}
}

// Dense has the sightings of users numbered 1..n (the number passed as
// Row's and Drop's at) kept in an array of 8 bytes per user. Call it before
// the first sighting; a user must be given the same number, or none, at
// every sighting.
func (l *Latest) Dense(n int) {
	l.dense = make([]slot, n)
}

// outcome of a sighting.
type sighting struct {
	newest   bool   // this sighting is the newest so far: keep it
	replaced bool   // it replaces a row written before
	oldRow   uint32 // that row
}

// see records a sighting of key with sequence seq (0: newer than every
// sighting so far; higher is newer) that is row (or dropFlag|tag).
func (l *Latest) see(key string, at int, seq uint64, row uint32) sighting {
	s := l.seq(seq)
	var h uint64
	var old slot
	var ok bool
	if at > 0 && at <= len(l.dense) {
		old = l.dense[at-1]
		ok = old.seq != 0 // l.seq never returns 0
	} else {
		at = 0
		h = maphash.String(l.seed, key)
		old, ok = l.seen[h]
	}
	var out sighting
	if ok {
		l.repeats++
		if s < old.seq {
			return out // an older sighting: the newer one stands
		}
		if old.row&dropFlag != 0 {
			l.dropped[uint8(old.row)]--
		} else {
			l.rows--
			out.replaced, out.oldRow = true, old.row
		}
	}
	out.newest = true
	if at > 0 {
		l.dense[at-1] = slot{seq: s, row: row}
	} else {
		l.seen[h] = slot{seq: s, row: row}
	}
	if row&dropFlag != 0 {
		l.dropped[uint8(row)]++
	} else {
		l.rows++
	}
	return out
}

func (l *Latest) seq(seq uint64) uint32 {
	switch {
	case seq == 0:
		if l.last < math.MaxUint32 {
			l.last++
		}
		return l.last
	case seq > math.MaxUint32:
		seq = math.MaxUint32
	}
	if uint32(seq) > l.last {
		l.last = uint32(seq)
	}
	return uint32(seq)
}

// Row records a sighting that would be sent. It reports whether it is the
// user's newest sighting so far, and, if it replaces an earlier row, which.
func (l *Latest) Row(key string, seq uint64, row uint32) (newest bool, replaced bool, oldRow uint32) {
	return l.RowAt(key, 0, seq, row)
}

// RowAt is Row for a user numbered at (Dense; 0: not numbered).
func (l *Latest) RowAt(key string, at int, seq uint64, row uint32) (newest bool, replaced bool, oldRow uint32) {
	s := l.see(key, at, seq, row&^dropFlag)
	return s.newest, s.replaced, s.oldRow
}

// Drop records a sighting that is not sent, with a caller-chosen tag (the
// reason). It reports whether it is the newest sighting so far and, if it
// replaces an earlier row, which.
func (l *Latest) Drop(key string, seq uint64, tag uint8) (newest bool, replaced bool, oldRow uint32) {
	return l.DropAt(key, 0, seq, tag)
}

// DropAt is Drop for a user numbered at (Dense; 0: not numbered).
func (l *Latest) DropAt(key string, at int, seq uint64, tag uint8) (newest bool, replaced bool, oldRow uint32) {
	s := l.see(key, at, seq, dropFlag|uint32(tag))
	return s.newest, s.replaced, s.oldRow
}

// Stats counts users by their newest sighting.
type Stats struct {
	Rows    int           // users sent: one row each
	Repeats int           // sightings of a user already seen in this run
	Dropped map[uint8]int // users not sent, by tag
}

// Stats returns the counts so far.
func (l *Latest) Stats() Stats {
	d := make(map[uint8]int, len(l.dropped))
	for k, v := range l.dropped {
		if v > 0 {
			d[k] = v
		}
	}
	return Stats{Rows: l.rows, Repeats: l.repeats, Dropped: d}
}

// Appearance is one sighting of a user that would be sent.
type Appearance struct {
	// Key identifies the user across sightings: its Entra object id (not
	// the IdName value, which may be a UPN that changes within a round).
	Key string
	// Seq orders the sightings of a run: of two sightings of one user, the
	// higher Seq is the newer. 0 means newer than every sighting so far.
	Seq    uint64
	ID     string // the IdName value
	Values []KV
	// Note goes with the row, if it is written, into File.Notes.
	Note Note
	// At numbers the user (1..n of Writer.Dense), or is 0.
	At int
}

// Put adds a user's row unless a newer sighting of the same user was
// already recorded; a row written earlier for the same user is removed when
// the Writer closes. Any error ends the Writer (call Abort).
func (w *Writer) Put(a Appearance) error {
	if w.err != nil {
		return w.err
	}
	key := a.Key
	if key == "" {
		key = a.ID
	}
	newest, replaced, old := w.latest.RowAt(key, a.At, a.Seq, w.rows)
	if !newest {
		return nil
	}
	if replaced {
		w.superseded.add(old)
	}
	w.next = a.Note
	err := w.Write(a.ID, a.Values)
	w.next = Note{}
	if err != nil {
		w.err = err
		return err
	}
	return nil
}

// Drop records a sighting of a user that is not sent (tag says why), so
// that a row written for an older sighting of the same user is removed.
func (w *Writer) Drop(key string, seq uint64, tag uint8) { w.DropAt(key, 0, seq, tag) }

// DropAt is Drop for a user numbered at (Dense; 0: not numbered).
func (w *Writer) DropAt(key string, at int, seq uint64, tag uint8) {
	if _, replaced, old := w.latest.DropAt(key, at, seq, tag); replaced {
		w.superseded.add(old)
	}
}

// Dense has the Writer keep the newest sightings of users numbered 1..n
// (Appearance.At, DropAt) in 8 bytes each rather than in its hash table
// (Latest.Dense). Call it before the first Put or Drop.
func (w *Writer) Dense(n int) { w.latest.Dense(n) }

// Stats counts the users of the run by their newest sighting (Put and Drop
// only; rows added with Write are not counted).
func (w *Writer) Stats() Stats { return w.latest.Stats() }

// compact rewrites the files that hold superseded rows without them. Each
// record sits on its own line, so rows are found by counting lines; files
// left without rows are removed.
func (w *Writer) compact() error {
	var row uint32
	kept := w.files[:0]
	for _, f := range w.files {
		first := row
		row += uint32(f.Records)
		if !w.superseded.anyIn(first, row) {
			kept = append(kept, f)
			continue
		}
		nf, err := w.rewrite(f, first)
		if err != nil {
			return fmt.Errorf("removing repeated users from %s: %w", f.Path, err)
		}
		if nf.Records == 0 {
			os.Remove(nf.Path)
			continue
		}
		kept = append(kept, nf)
	}
	w.files = kept
	w.superseded = nil
	return nil
}

// rewrite copies f without its superseded rows into a new file, which
// replaces f on disk.
func (w *Writer) rewrite(f File, first uint32) (File, error) {
	in, err := os.Open(f.Path)
	if err != nil {
		return File{}, err
	}
	defer in.Close()
	out, err := os.CreateTemp(w.dir, "profilesync-*.json")
	if err != nil {
		return File{}, err
	}
	// Every row removed takes its properties along: they are counted in
	// the removed lines only, which are few.
	nf := File{Path: out.Name(), Properties: f.Properties}
	fail := func(err error) (File, error) {
		out.Close()
		os.Remove(nf.Path)
		return File{}, err
	}
	br := bufio.NewReaderSize(in, bufferSize)
	bw := bufio.NewWriterSize(out, bufferSize)
	head, err := br.ReadString('\n')
	if err != nil || head != header+firstSep {
		return fail(errors.New("unexpected file header"))
	}
	bw.WriteString(header)
	nf.Bytes = int64(len(header))
	row := first
	for {
		// ReadSlice reuses the reader's buffer: no allocation per record
		// unless one is longer than the buffer.
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			return fail(fmt.Errorf("reading a record: %w", err))
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if string(line) == "]}" {
			break
		}
		line = bytes.TrimSuffix(line, []byte(","))
		r := row
		row++
		if w.superseded.has(r) {
			nf.Properties -= recordProperties(line)
			continue
		}
		sep := recordSep
		if nf.Records == 0 {
			sep = firstSep
		}
		bw.WriteString(sep)
		bw.Write(line)
		nf.Records++
		nf.Bytes += int64(len(sep) + len(line))
	}
	if row-first != uint32(f.Records) {
		return fail(fmt.Errorf("found %d records, want %d", row-first, f.Records))
	}
	bw.WriteString(trailer)
	nf.Bytes += int64(len(trailer))
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		os.Remove(nf.Path)
		return File{}, err
	}
	in.Close()
	os.Remove(f.Path)
	return nf, nil
}

// rowSet is a set of rows, one bit per row up to the highest row added:
// 62.5 kB for 500,000 rows, and a lookup is an index.
type rowSet []uint64

// add puts row r into the set.
func (s *rowSet) add(r uint32) {
	i := int(r >> 6)
	if i >= len(*s) {
		*s = append(*s, make(rowSet, i+1-len(*s))...)
	}
	(*s)[i] |= 1 << (r & 63)
}

// has reports whether row r is in the set.
func (s rowSet) has(r uint32) bool {
	i := int(r >> 6)
	return i < len(s) && s[i]&(1<<(r&63)) != 0
}

// anyIn reports whether a row of [from, to) is in the set.
func (s rowSet) anyIn(from, to uint32) bool {
	for r := from; r < to; r++ {
		if i := int(r >> 6); i >= len(s) {
			return false
		} else if r&63 == 0 && to-r >= 64 {
			if s[i] != 0 {
				return true
			}
			r += 63
		} else if s[i]&(1<<(r&63)) != 0 {
			return true
		}
	}
	return false
}

// recordProperties counts the key/value pairs of one encoded record: the
// keys are the strings that a ':' outside any string follows.
func recordProperties(rec []byte) int {
	n, inStr, esc := 0, false, false
	for _, c := range rec {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && c == ':':
			n++
		}
	}
	return n
}
