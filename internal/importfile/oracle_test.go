package importfile

// The writer as it was before the per-user costs were cut (commit 2fd95bc),
// kept verbatim apart from its names as the oracle of TestWriterMatchesOracle
// and the baseline of the Oracle benchmarks: the files it writes are the
// ones the Writer must write, byte for byte.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/crashpoint"
)

// oldWriter streams records into import files in a directory, starting a new
// file whenever the next record would cross a limit. After any error from
// Write or Close, call Abort to remove what was written. An oldWriter is not
// safe for concurrent use.
type oldWriter struct {
	dir string
	lim Limits

	files []File // finished files
	f     *os.File
	bw    *bufio.Writer
	cur   File   // the file being written, when f != nil
	rec   []byte // the record being encoded, reused
	err   error  // sticky: set by a failed write or by Close/Abort

	// One row per user (Put and Drop): the newest sighting wins; rows
	// written before a newer sighting of their user are removed by Close.
	latest     *oldLatest
	rows       uint32              // rows written so far, across files
	superseded map[uint32]struct{} // rows to remove: a newer sighting replaced them
}

// newOldWriter returns an oldWriter that creates its files in dir (os.TempDir()
// when dir is ""), named like "profilesync-*.json". No file is created
// before the first record.
func newOldWriter(dir string, lim Limits) *oldWriter {
	if lim.MaxProperties <= 0 {
		lim.MaxProperties = DefaultMaxProperties
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	return &oldWriter{dir: dir, lim: lim, latest: newOldLatest(), superseded: map[uint32]struct{}{}}
}

// Write adds one user's record: the id under "IdName", then values in the
// given order. It fails without writing anything when id is empty, when a
// value is named IdName (in any case), or when the record alone would not
// fit in a file within the limits; those errors leave the oldWriter usable.
func (w *oldWriter) Write(id string, values []KV) error {
	if w.err != nil {
		return w.err
	}
	if id == "" {
		return errors.New("writing import record: empty id")
	}
	for _, kv := range values {
		if strings.EqualFold(kv.Name, idName) {
			return fmt.Errorf("writing import record %q: property name %q is reserved for the id", id, kv.Name)
		}
	}
	props := 1 + len(values)
	w.rec = oldEncodeRecord(w.rec[:0], id, values)
	size := int64(len(w.rec))
	if props > w.lim.MaxProperties || int64(len(header)+len(firstSep)+len(trailer))+size > w.lim.MaxBytes {
		return fmt.Errorf("writing import record %q: %d properties and %d bytes exceed the file limits (%d properties, %d bytes)",
			id, props, size, w.lim.MaxProperties, w.lim.MaxBytes)
	}
	if w.f != nil && (w.cur.Properties+props > w.lim.MaxProperties ||
		w.cur.Bytes+int64(len(recordSep))+size+int64(len(trailer)) > w.lim.MaxBytes) {
		if err := w.finish(); err != nil {
			return err
		}
	}
	sep := recordSep
	if w.f == nil {
		if err := w.open(); err != nil {
			return err
		}
		sep = firstSep
	}
	w.bw.WriteString(sep)
	if _, err := w.bw.Write(w.rec); err != nil {
		w.err = fmt.Errorf("writing import file %s: %w", w.cur.Path, err)
		return w.err
	}
	w.cur.Records++
	w.cur.Properties += props
	w.cur.Bytes += int64(len(sep)) + size
	w.rows++
	crashpoint.Hit(crashpoint.ImportFileWrite)
	return nil
}

// open starts a new file and writes its header.
func (w *oldWriter) open() error {
	f, err := os.CreateTemp(w.dir, "profilesync-*.json")
	if err != nil {
		w.err = fmt.Errorf("creating import file: %w", err)
		return w.err
	}
	w.f = f
	w.cur = File{Path: f.Name(), Bytes: int64(len(header))}
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(f, bufferSize)
	} else {
		w.bw.Reset(f)
	}
	w.bw.WriteString(header)
	return nil
}

// finish writes the trailer of the current file and closes it.
func (w *oldWriter) finish() error {
	w.bw.WriteString(trailer)
	err := w.bw.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.cur.Bytes += int64(len(trailer))
	w.files = append(w.files, w.cur)
	w.f = nil
	if err != nil {
		w.err = fmt.Errorf("writing import file %s: %w", w.cur.Path, err)
	}
	return w.err
}

// Close finishes the current file and returns every file written, in order.
// An oldWriter that received no record writes no file and returns none. The
// files stay on disk until the caller removes them or calls Abort.
func (w *oldWriter) Close() ([]File, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.f != nil {
		if err := w.finish(); err != nil {
			return nil, err
		}
	}
	if len(w.superseded) > 0 {
		if err := w.compact(); err != nil {
			w.err = err
			return nil, err
		}
	}
	w.err = errClosed
	return w.files, nil
}

// Abort closes the oldWriter and removes every file it wrote, finished or not.
// It may be called at any time, also after Close, and more than once.
func (w *oldWriter) Abort() {
	if w.f != nil {
		_ = w.f.Close()
		_ = os.Remove(w.cur.Path)
		w.f = nil
	}
	for _, f := range w.files {
		_ = os.Remove(f.Path)
	}
	w.files = nil
	w.err = errClosed
}

// oldEncodeRecord appends {"IdName":id,"name":"value",…} to dst.
func oldEncodeRecord(dst []byte, id string, values []KV) []byte {
	dst = append(dst, `{"`+idName+`":`...)
	dst = oldAppendString(dst, id)
	for _, kv := range values {
		dst = append(dst, ',')
		dst = oldAppendString(dst, kv.Name)
		dst = append(dst, ':')
		dst = oldAppendString(dst, kv.Value)
	}
	return append(dst, '}')
}

// oldAppendString appends s as a JSON string, byte for byte as encoding/json
// writes it with HTML escaping off: '"', '\\' and control characters are
// escaped, as are U+2028 and U+2029 (which break JavaScript consumers);
// every byte of invalid UTF-8 becomes U+FFFD; all else, including '<', '>'
// and '&', is written as it is. It allocates nothing when dst has room,
// which a per-value call through encoding/json cannot promise.
func oldAppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// oldLatest decides, sighting by sighting, which sighting of each user a run
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
// 8-byte slot), about 10 to 19 MB for 500,000 users, never the records.
// Keys are hashed with a seed chosen per oldLatest; two different users share a
// hash with a probability of about n²/2⁶⁵ per run (7·10⁻⁹ at 500,000 users),
// and the seed changes every run, so such a collision cannot repeat.
//
// The zero value is not usable; call newOldLatest. Not safe for concurrent use.
type oldLatest struct {
	seed    maphash.Seed
	seen    map[uint64]oldSlot
	last    uint32
	rows    int // users whose newest sighting is a row
	repeats int
	dropped map[uint8]int // users whose newest sighting is a drop, by tag
}

// oldSlot is the newest sighting of one user: its sequence number and either
// the row it wrote or dropFlag|tag.
type oldSlot struct {
	seq uint32
	row uint32
}

// newOldLatest returns an empty oldLatest.
func newOldLatest() *oldLatest {
	return &oldLatest{seed: maphash.MakeSeed(), seen: make(map[uint64]oldSlot), dropped: map[uint8]int{}}
}

// outcome of a sighting.
type oldSighting struct {
	newest   bool   // this sighting is the newest so far: keep it
	replaced bool   // it replaces a row written before
	oldRow   uint32 // that row
}

// see records a sighting of key with sequence seq (0: newer than every
// sighting so far; higher is newer) that is row (or dropFlag|tag).
func (l *oldLatest) see(key string, seq uint64, row uint32) oldSighting {
	s := l.seq(seq)
	h := maphash.String(l.seed, key)
	old, ok := l.seen[h]
	var out oldSighting
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
	l.seen[h] = oldSlot{seq: s, row: row}
	if row&dropFlag != 0 {
		l.dropped[uint8(row)]++
	} else {
		l.rows++
	}
	return out
}

func (l *oldLatest) seq(seq uint64) uint32 {
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
func (l *oldLatest) Row(key string, seq uint64, row uint32) (newest bool, replaced bool, oldRow uint32) {
	s := l.see(key, seq, row&^dropFlag)
	return s.newest, s.replaced, s.oldRow
}

// Drop records a sighting that is not sent, with a caller-chosen tag (the
// reason). It reports whether it is the newest sighting so far and, if it
// replaces an earlier row, which.
func (l *oldLatest) Drop(key string, seq uint64, tag uint8) (newest bool, replaced bool, oldRow uint32) {
	s := l.see(key, seq, dropFlag|uint32(tag))
	return s.newest, s.replaced, s.oldRow
}

// Stats counts users by their newest sighting.

// Stats returns the counts so far.
func (l *oldLatest) Stats() Stats {
	d := make(map[uint8]int, len(l.dropped))
	for k, v := range l.dropped {
		if v > 0 {
			d[k] = v
		}
	}
	return Stats{Rows: l.rows, Repeats: l.repeats, Dropped: d}
}

// Appearance is one sighting of a user that would be sent.

// Put adds a user's row unless a newer sighting of the same user was
// already recorded; a row written earlier for the same user is removed when
// the oldWriter closes. Any error ends the oldWriter (call Abort).
func (w *oldWriter) Put(a Appearance) error {
	if w.err != nil {
		return w.err
	}
	key := a.Key
	if key == "" {
		key = a.ID
	}
	newest, replaced, old := w.latest.Row(key, a.Seq, w.rows)
	if !newest {
		return nil
	}
	if replaced {
		w.superseded[old] = struct{}{}
	}
	if err := w.Write(a.ID, a.Values); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Drop records a sighting of a user that is not sent (tag says why), so
// that a row written for an older sighting of the same user is removed.
func (w *oldWriter) Drop(key string, seq uint64, tag uint8) {
	if _, replaced, old := w.latest.Drop(key, seq, tag); replaced {
		w.superseded[old] = struct{}{}
	}
}

// Stats counts the users of the run by their newest sighting (Put and Drop
// only; rows added with Write are not counted).
func (w *oldWriter) Stats() Stats { return w.latest.Stats() }

// compact rewrites the files that hold superseded rows without them. Each
// record sits on its own line, so rows are found by counting lines; files
// left without rows are removed.
func (w *oldWriter) compact() error {
	var row uint32
	kept := w.files[:0]
	for _, f := range w.files {
		first := row
		row += uint32(f.Records)
		drop := 0
		for r := first; r < row; r++ {
			if _, ok := w.superseded[r]; ok {
				drop++
			}
		}
		if drop == 0 {
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
	w.superseded = map[uint32]struct{}{}
	return nil
}

// rewrite copies f without its superseded rows into a new file, which
// replaces f on disk.
func (w *oldWriter) rewrite(f File, first uint32) (File, error) {
	in, err := os.Open(f.Path)
	if err != nil {
		return File{}, err
	}
	defer in.Close()
	out, err := os.CreateTemp(w.dir, "profilesync-*.json")
	if err != nil {
		return File{}, err
	}
	nf := File{Path: out.Name()}
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
		if _, ok := w.superseded[r]; ok {
			continue
		}
		sep := recordSep
		if nf.Records == 0 {
			sep = firstSep
		}
		bw.WriteString(sep)
		bw.Write(line)
		nf.Records++
		nf.Properties += oldRecordProperties(line)
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

// oldRecordProperties counts the key/value pairs of one encoded record: the
// keys are the strings that a ':' outside any string follows.
func oldRecordProperties(rec []byte) int {
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
