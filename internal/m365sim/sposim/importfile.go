package sposim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// pair is one key/value of an import file record.
type pair struct{ k, v string }

// scanner streams an import file, {"value":[{"IdName":"…","Prop":"…"},…]},
// checking its shape, that every key is mapped and the property limit.
type scanner struct {
	idProp   string
	mapped   func(key string) bool
	maxProps int64
}

// errScan carries a finished outcome out of the token walk.
type errScan struct{ o outcome }

func (e *errScan) Error() string { return e.o.msg }

// run walks the file open returns, calling each (if not nil) for every
// record. A problem with the file is reported in the outcome; err is set
// only when the file could not be read at all.
func (sc *scanner) run(open func() (io.ReadCloser, error), each func([]pair)) (outcome, error) {
	rc, err := open()
	if err != nil {
		return outcome{}, err
	}
	defer rc.Close()
	w := walk{dec: json.NewDecoder(rc), open: open}
	err = sc.walk(&w, each)
	var es *errScan
	if errors.As(err, &es) {
		return es.o, nil
	}
	return outcome{}, err
}

func (sc *scanner) walk(w *walk, each func([]pair)) error {
	if err := w.delim("", '{', "StartObject"); err != nil {
		return err
	}
	sawValue := false
	var props int64
	var rec []pair
	for w.dec.More() {
		t, err := w.next("")
		if err != nil {
			return err
		}
		name, _ := t.(string) // object keys are always strings
		if name != "value" {
			if err := w.skip(name); err != nil {
				return err
			}
			continue
		}
		sawValue = true
		if err := w.delim("value", '[', "StartArray"); err != nil {
			return err
		}
		for i := 0; w.dec.More(); i++ {
			path := fmt.Sprintf("value[%d]", i)
			if err := w.delim(path, '{', "StartObject"); err != nil {
				return err
			}
			rec = rec[:0]
			for w.dec.More() {
				t, err := w.next(path)
				if err != nil {
					return err
				}
				k, _ := t.(string)
				kp := path + "." + k
				t, err = w.next(kp)
				if err != nil {
					return err
				}
				v, ok := t.(string)
				if !ok {
					return w.notJSON(kp, fmt.Sprintf("Unexpected token %s when reading the value of '%s'; values must be strings.", tokenName(t), k))
				}
				props++
				if props > sc.maxProps {
					return &errScan{outcome{code: jobErrTooBig, msg: msgTooBig}}
				}
				rec = append(rec, pair{k, v})
			}
			if _, err := w.next(path); err != nil { // '}'
				return err
			}
			id := ""
			for _, p := range rec {
				if p.k == sc.idProp {
					id = p.v
				}
			}
			for _, p := range rec {
				if p.k != sc.idProp && !sc.mapped(p.k) {
					return &errScan{outcome{code: jobErrInvalidFile, msg: msgInvalidFile, lines: []string{
						fmt.Sprintf("InvalidProperty\t%s\tProperty '%s' is not mapped to any property in the user profile application.", id, p.k),
					}}}
				}
			}
			if each != nil {
				each(rec)
			}
		}
		if _, err := w.next("value"); err != nil { // ']'
			return err
		}
	}
	if _, err := w.next(""); err != nil { // '}'
		return err
	}
	if _, err := w.dec.Token(); err != io.EOF {
		return w.notJSON("", "Additional text encountered after finished reading JSON content.")
	}
	if !sawValue {
		return w.notJSON("", "The data file has no 'value' array of user objects.")
	}
	return nil
}

// walk is the token reader with error reporting.
type walk struct {
	dec  *json.Decoder
	open func() (io.ReadCloser, error)
}

// next reads one token; syntax errors become DataFileNotJson outcomes.
func (w *walk) next(path string) (json.Token, error) {
	t, err := w.dec.Token()
	if err == nil {
		return t, nil
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes before the bad character; SharePoint's
		// parser counts the bad character too.
		return nil, w.notJSONAt(path, fmt.Sprintf("Invalid JSON: %v.", se), se.Offset+1)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, w.notJSON(path, "Unexpected end of content while reading JSON.")
	}
	var rd *readError
	if errors.As(err, &rd) {
		return nil, rd.err
	}
	return nil, w.notJSON(path, fmt.Sprintf("Invalid JSON: %v.", err))
}

// delim reads one token that must be the delimiter d.
func (w *walk) delim(path string, d json.Delim, name string) error {
	t, err := w.next(path)
	if err != nil {
		return err
	}
	if got, ok := t.(json.Delim); !ok || got != d {
		return w.notJSON(path, fmt.Sprintf("Unexpected token %s; expected %s.", tokenName(t), name))
	}
	return nil
}

// skip reads past one value of any shape.
func (w *walk) skip(path string) error {
	depth := 0
	for {
		t, err := w.next(path)
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

func (w *walk) notJSON(path, msg string) error {
	return w.notJSONAt(path, msg, w.dec.InputOffset())
}

// notJSONAt reports a DataFileNotJson problem at a byte offset of the
// decoded text, with line and position as SharePoint's parser gives them.
func (w *walk) notJSONAt(path, msg string, offset int64) error {
	line, pos := lineCol(w.open, offset)
	return &errScan{outcome{code: jobErrInvalidFile, msg: msgInvalidFile, lines: []string{
		fmt.Sprintf("DataFileNotJson\t\t%s Path '%s', line %d, position %d.", msg, path, line, pos),
	}}}
}

// lineCol reads the text again to find the line and column of an offset.
func lineCol(open func() (io.ReadCloser, error), offset int64) (line, col int) {
	line = 1
	rc, err := open()
	if err != nil {
		return line, int(offset)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	for i := int64(0); i < offset; i++ {
		b, err := br.ReadByte()
		if err != nil {
			break
		}
		if b == '\n' {
			line++
			col = 0
		} else {
			col++
		}
	}
	return line, col
}

func tokenName(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "StartObject"
		case '}':
			return "EndObject"
		case '[':
			return "StartArray"
		}
		return "EndArray"
	case string:
		return "String"
	case float64, json.Number:
		return "Number"
	case bool:
		return "Boolean"
	case nil:
		return "Null"
	}
	return fmt.Sprintf("%T", t)
}

// readError marks a failure of the underlying file, as opposed to bad text.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// textReader decodes an import file to UTF-8 the way SharePoint reads it:
// a UTF-8 byte order mark is dropped, UTF-16 marks select UTF-16, and
// without a mark the bytes are ISO-8859-1.
type textReader struct {
	c       io.Closer
	br      *bufio.Reader
	started bool
	mode    int // 0 latin1, 1 utf8, 2 utf16le, 3 utf16be
	pending []byte
	hi      rune // pending UTF-16 high surrogate, or 0
}

func newTextReader(rc io.ReadCloser) *textReader {
	return &textReader{c: rc, br: bufio.NewReaderSize(rc, 64<<10)}
}

func (t *textReader) Close() error { return t.c.Close() }

func (t *textReader) Read(p []byte) (int, error) {
	if !t.started {
		t.started = true
		head, err := t.br.Peek(3)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, &readError{err}
		}
		switch {
		case len(head) >= 3 && head[0] == 0xEF && head[1] == 0xBB && head[2] == 0xBF:
			t.mode = 1
			_, _ = t.br.Discard(3)
		case len(head) >= 2 && head[0] == 0xFF && head[1] == 0xFE:
			t.mode = 2
			_, _ = t.br.Discard(2)
		case len(head) >= 2 && head[0] == 0xFE && head[1] == 0xFF:
			t.mode = 3
			_, _ = t.br.Discard(2)
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if t.mode == 1 {
		n, err := t.br.Read(p)
		if err != nil && !errors.Is(err, io.EOF) {
			err = &readError{err}
		}
		return n, err
	}
	n := 0
	if len(t.pending) > 0 {
		n = copy(p, t.pending)
		t.pending = t.pending[n:]
		return n, nil
	}
	var buf [utf8.UTFMax]byte
	for n < len(p) {
		r, err := t.nextRune()
		if err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		m := utf8.EncodeRune(buf[:], r)
		c := copy(p[n:], buf[:m])
		n += c
		if c < m {
			t.pending = append(t.pending[:0], buf[c:m]...)
			break
		}
		if t.br.Buffered() == 0 && n > 0 {
			break // do not block for more input than is at hand
		}
	}
	return n, nil
}

// nextRune decodes one character in Latin-1 or UTF-16 mode.
func (t *textReader) nextRune() (rune, error) {
	if t.mode == 0 {
		b, err := t.br.ReadByte()
		if err != nil {
			return 0, wrapRead(err)
		}
		return rune(b), nil
	}
	for range 2 { // at most a surrogate pair
		var u [2]byte
		if _, err := io.ReadFull(t.br, u[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || (errors.Is(err, io.EOF) && t.hi != 0) {
				t.hi = 0
				return utf8.RuneError, nil
			}
			return 0, wrapRead(err)
		}
		v := rune(u[0]) | rune(u[1])<<8
		if t.mode == 3 {
			v = rune(u[1]) | rune(u[0])<<8
		}
		switch {
		case t.hi != 0:
			r := utf16.DecodeRune(t.hi, v)
			t.hi = 0
			return r, nil
		case utf16.IsSurrogate(v) && v < 0xDC00:
			t.hi = v
		default:
			return v, nil
		}
	}
	return utf8.RuneError, nil
}

func wrapRead(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return &readError{err}
}
