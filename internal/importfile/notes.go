package importfile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Note is 32 bytes a caller attaches to a row (Appearance.Note) and reads
// back, once the Writer is closed, for the rows each finished file holds
// (File.Notes): the engine keeps each user's fingerprint in it, so that it
// knows, per import file, whose values the file sends. A row whose user was
// seen again later (one row per user, see Latest) takes its note along
// when it is removed.
type Note [4]uint64

// NoteSize is the size of one note in a notes file.
const NoteSize = 32

// Notes are spilled to disk as rows are written (32 bytes a row, in row
// order across files) and split per finished file by Close, so that a run
// holds none of them in memory.

// note records the note of the row just written (w.next). Nothing is
// written until the first row with a note; rows before it get zero notes.
func (w *Writer) note() error {
	n := w.next
	w.next = Note{}
	if w.nbw == nil {
		if n == (Note{}) {
			return nil
		}
		f, err := os.CreateTemp(w.dir, "profilesync-*.notes")
		if err != nil {
			return fmt.Errorf("creating the notes file: %w", err)
		}
		w.spill, w.nbw = f, bufio.NewWriterSize(f, 64<<10)
		var zero [NoteSize]byte
		for range w.rows - 1 {
			w.nbw.Write(zero[:])
		}
	}
	var b [NoteSize]byte
	binary.LittleEndian.PutUint64(b[0:], n[0])
	binary.LittleEndian.PutUint64(b[8:], n[1])
	binary.LittleEndian.PutUint64(b[16:], n[2])
	binary.LittleEndian.PutUint64(b[24:], n[3])
	if _, err := w.nbw.Write(b[:]); err != nil {
		return fmt.Errorf("writing the notes file: %w", err)
	}
	return nil
}

// splitNotes writes, for each file in files (the files as written, before
// superseded rows are removed), the notes of its rows that are not
// superseded into a notes file of its own, and returns their paths ("" for
// a file left without rows). It runs before compact, which keeps exactly
// the files with rows left, in order.
func (w *Writer) splitNotes(files []File) ([]string, error) {
	if err := w.nbw.Flush(); err != nil {
		return nil, fmt.Errorf("writing the notes file: %w", err)
	}
	if _, err := w.spill.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(w.spill, 64<<10)
	paths := make([]string, len(files))
	var row uint32
	var b [NoteSize]byte
	for i, f := range files {
		out, err := os.CreateTemp(w.dir, "profilesync-*.notes")
		if err != nil {
			return nil, fmt.Errorf("creating a notes file: %w", err)
		}
		w.noteFiles = append(w.noteFiles, out.Name())
		bw := bufio.NewWriterSize(out, 64<<10)
		kept := 0
		for range f.Records {
			if _, err := io.ReadFull(br, b[:]); err != nil {
				out.Close()
				return nil, fmt.Errorf("reading the notes file: %w", err)
			}
			if !w.superseded.has(row) {
				bw.Write(b[:])
				kept++
			}
			row++
		}
		err = bw.Flush()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("writing a notes file: %w", err)
		}
		if kept > 0 {
			paths[i] = out.Name()
		} else {
			os.Remove(out.Name())
		}
	}
	return paths, nil
}

// closeSpill closes and removes the notes spill file.
func (w *Writer) closeSpill() {
	if w.spill != nil {
		w.spill.Close()
		os.Remove(w.spill.Name())
		w.spill, w.nbw = nil, nil
	}
}

// finishNotes gives each finished file the notes of its rows (Close).
// before are the files as written, after those compact kept.
func (w *Writer) finishNotes(before []File, paths []string) error {
	k := 0
	for i := range before {
		if paths[i] == "" {
			continue
		}
		if k >= len(w.files) {
			return errors.New("notes left over for a removed file")
		}
		info, err := os.Stat(paths[i])
		if err != nil {
			return err
		}
		if info.Size() != int64(w.files[k].Records)*NoteSize {
			return fmt.Errorf("%d notes for %d rows of %s", info.Size()/NoteSize, w.files[k].Records, w.files[k].Path)
		}
		w.files[k].Notes = paths[i]
		k++
	}
	if k != len(w.files) {
		return fmt.Errorf("notes for %d of %d files", k, len(w.files))
	}
	return nil
}

// EachNote streams a notes file (File.Notes) to fn: one note per row of
// its import file, in row order, never holding the file.
func EachNote(path string, fn func(Note)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var b [NoteSize]byte
	for i := 0; ; i++ {
		n, err := io.ReadFull(br, b[:])
		switch {
		case err == io.EOF:
			return nil
		case err == io.ErrUnexpectedEOF:
			return fmt.Errorf("notes file %s: %d bytes after note %d is not a whole note", path, n, i)
		case err != nil:
			return fmt.Errorf("reading notes file %s: %w", path, err)
		}
		fn(Note{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), binary.LittleEndian.Uint64(b[24:])})
	}
}
