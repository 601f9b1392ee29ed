// Package importfile writes the JSON files SharePoint's bulk user profile
// import reads: {"value":[{"IdName":"<id>","Prop":"value",…},…]}, UTF-8
// with a byte order mark.
//
// Unlike PnP, which builds the file by string concatenation and escapes only
// backslashes, every key and value goes through a JSON string encoder, the
// file is streamed to disk instead of being held in memory, and a load that
// would cross SharePoint's limits (500,000 properties or 2 GB per file) is
// split into several files, one import job each.
package importfile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/crashpoint"
)

// The default limits stay a little below SharePoint's documented maxima of
// 500,000 properties and 2 GB per file.
const (
	DefaultMaxProperties       = 499_000
	DefaultMaxBytes      int64 = 2_000_000_000
)

// idName is the key of the user's id in every record (profile.IDProperty).
const idName = "IdName"

// The fixed parts of a file. Each record sits on its own line, so that the
// line numbers in SharePoint's import logs point at a user.
const (
	header    = "\xEF\xBB\xBF" + `{"value":[`
	firstSep  = "\n"
	recordSep = ",\n"
	trailer   = "\n]}\n"
)

const bufferSize = 256 << 10

// Limits bound one import file. Every key/value pair of a record counts as
// one property, the IdName pair included. Zero fields take the defaults.
type Limits struct {
	MaxProperties int
	MaxBytes      int64
}

// KV is one SharePoint property and its value.
type KV struct {
	Name, Value string
}

// File describes one finished import file.
type File struct {
	Path       string
	Records    int
	Properties int
	Bytes      int64
	// Notes is the path of a file holding the Note of each row, in row
	// order (ReadNotes), or "" when no row was given a note. It is removed
	// with the file by Abort; a caller that removes the file removes it too.
	Notes string
}

// Writer streams records into import files in a directory, starting a new
// file whenever the next record would cross a limit. After any error from
// Write or Close, call Abort to remove what was written. A Writer is not
// safe for concurrent use.
type Writer struct {
	dir string
	lim Limits

	files []File // finished files
	f     *os.File
	bw    *bufio.Writer
	cur   File     // the file being written, when f != nil
	rec   []byte   // the record being encoded, reused
	keys  keyCache // the keys of the last record, encoded
	err   error    // sticky: set by a failed write or by Close/Abort

	// One row per user (Put and Drop): the newest sighting wins; rows
	// written before a newer sighting of their user are removed by Close.
	latest     *Latest
	rows       uint32 // rows written so far, across files
	superseded rowSet // rows to remove: a newer sighting replaced them

	// Notes of the rows (notes.go): spilled to disk in row order once a
	// row has one, split per finished file by Close.
	next      Note          // the note of the row being written
	spill     *os.File      // every row's note, in row order
	nbw       *bufio.Writer // writes spill
	noteFiles []string      // the notes files made per finished file
}

var errClosed = errors.New("import file writer is closed")

// NewWriter returns a Writer that creates its files in dir (os.TempDir()
// when dir is ""), named like "profilesync-*.json". No file is created
// before the first record.
func NewWriter(dir string, lim Limits) *Writer {
	if lim.MaxProperties <= 0 {
		lim.MaxProperties = DefaultMaxProperties
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	return &Writer{dir: dir, lim: lim, latest: NewLatest()}
}

// Write adds one user's record: the id under "IdName", then values in the
// given order. It fails without writing anything when id is empty, when a
// value is named IdName (in any case), or when the record alone would not
// fit in a file within the limits; those errors leave the Writer usable.
func (w *Writer) Write(id string, values []KV) error {
	if w.err != nil {
		return w.err
	}
	if id == "" {
		return errors.New("writing import record: empty id")
	}
	for _, kv := range values {
		// Only ASCII folds to the letters of "IdName" (no Kelvin sign or
		// long s among them), so a name of another length never matches.
		if len(kv.Name) == len(idName) && strings.EqualFold(kv.Name, idName) {
			return fmt.Errorf("writing import record %q: property name %q is reserved for the id", id, kv.Name)
		}
	}
	props := 1 + len(values)
	w.rec = w.keys.encodeRecord(w.rec[:0], id, values)
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
	if err := w.note(); err != nil {
		w.err = err
		return err
	}
	crashpoint.Hit(crashpoint.ImportFileWrite)
	return nil
}

// open starts a new file and writes its header.
func (w *Writer) open() error {
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
func (w *Writer) finish() error {
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
// A Writer that received no record writes no file and returns none. The
// files stay on disk until the caller removes them or calls Abort.
func (w *Writer) Close() ([]File, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.f != nil {
		if err := w.finish(); err != nil {
			return nil, err
		}
	}
	var before []File
	var notes []string
	if w.nbw != nil {
		before = append(before, w.files...)
		var err error
		if notes, err = w.splitNotes(before); err != nil {
			w.err = err
			return nil, err
		}
		w.closeSpill()
	}
	if len(w.superseded) > 0 {
		if err := w.compact(); err != nil {
			w.err = err
			return nil, err
		}
	}
	if notes != nil {
		if err := w.finishNotes(before, notes); err != nil {
			w.err = fmt.Errorf("import file notes: %w", err)
			return nil, w.err
		}
	}
	w.err = errClosed
	return w.files, nil
}

// Abort closes the Writer and removes every file it wrote, finished or not.
// It may be called at any time, also after Close, and more than once.
func (w *Writer) Abort() {
	if w.f != nil {
		_ = w.f.Close()
		_ = os.Remove(w.cur.Path)
		w.f = nil
	}
	for _, f := range w.files {
		_ = os.Remove(f.Path)
	}
	w.closeSpill()
	for _, n := range w.noteFiles {
		_ = os.Remove(n)
	}
	w.files, w.noteFiles = nil, nil
	w.err = errClosed
}

// encodeRecord appends {"IdName":id,"name":"value",…} to dst.
func encodeRecord(dst []byte, id string, values []KV) []byte {
	var keys keyCache
	return keys.encodeRecord(dst, id, values)
}

// keyCache holds the encoded keys of the last record, which the next
// record most likely shares: every record of a run has the mapping's
// properties in the same order.
type keyCache struct {
	names []string // the keys, in record order
	enc   []byte   // `,"name":` for each key, one after the other
	ends  []int    // where each key's part of enc ends
}

// encodeRecord is encodeRecord with the keys taken from the cache, which
// it updates.
func (c *keyCache) encodeRecord(dst []byte, id string, values []KV) []byte {
	dst = append(dst, `{"`+idName+`":`...)
	dst = appendString(dst, id)
	for i, kv := range values {
		if i >= len(c.names) || c.names[i] != kv.Name {
			c.set(i, kv.Name)
		}
		start := 0
		if i > 0 {
			start = c.ends[i-1]
		}
		dst = append(dst, c.enc[start:c.ends[i]]...)
		dst = appendString(dst, kv.Value)
	}
	return append(dst, '}')
}

// set makes name the i-th key, forgetting the keys after it.
func (c *keyCache) set(i int, name string) {
	start := 0
	if i > 0 {
		start = c.ends[i-1]
	}
	c.names, c.ends, c.enc = append(c.names[:i], name), c.ends[:i], append(c.enc[:start], ',')
	c.enc = append(appendString(c.enc, name), ':')
	c.ends = append(c.ends, len(c.enc))
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, byte for byte as encoding/json
// writes it with HTML escaping off: '"', '\\' and control characters are
// escaped, as are U+2028 and U+2029 (which break JavaScript consumers);
// every byte of invalid UTF-8 becomes U+FFFD; all else, including '<', '>'
// and '&', is written as it is. It allocates nothing when dst has room,
// which a per-value call through encoding/json cannot promise.
//
// Runs of bytes that need no care are skipped eight at a time and copied
// in one piece; most keys and values are such a run from end to end.
func appendString(dst []byte, s string) []byte {
	if plain(s) {
		n := len(dst)
		dst = slices.Grow(dst, len(s)+2)[:n+len(s)+2]
		dst[n] = '"'
		copy(dst[n+1:], s)
		dst[len(dst)-1] = '"'
		return dst
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plain8(load64(s, i)) {
			i += 8
		}
		if i >= len(s) {
			break
		}
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

// plain reports whether every byte of s is written as it is (see plain8).
func plain(s string) bool {
	if len(s) < 8 {
		for i := 0; i < len(s); i++ {
			if b := s[i]; b < 0x20 || b >= utf8.RuneSelf || b == '"' || b == '\\' {
				return false
			}
		}
		return true
	}
	for i := 0; i+8 < len(s); i += 8 {
		if !plain8(load64(s, i)) {
			return false
		}
	}
	return plain8(load64(s, len(s)-8)) // the last eight, overlapping
}

// load64 returns the eight bytes of s from i on as one word (the compiler
// turns this into a single load).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

const (
	lsbs = 0x0101010101010101
	msbs = 0x8080808080808080
)

// plain8 reports whether all eight bytes of x are written as they are
// without a look at their neighbours: ASCII, not a control character, not
// '"' and not '\\'. (v-lsbs*n) &^ v has the top bit of some byte set
// exactly when some byte of v is below n, for n <= 0x80.
func plain8(x uint64) bool {
	quote := x ^ (lsbs * '"')
	slash := x ^ (lsbs * '\\')
	return ((x-lsbs*0x20)&^x|(quote-lsbs)&^quote|(slash-lsbs)&^slash|x)&msbs == 0
}
