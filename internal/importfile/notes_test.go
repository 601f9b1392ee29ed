package importfile

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// noteOf is the note a test gives a sighting: the user and its value.
func noteOf(key string, v int) Note {
	k, _ := strconv.Atoi(key[1:])
	return Note{uint64(k) + 1, uint64(v) + 1, 7, uint64(v) << 3}
}

// TestNotesFollowTheRowsTheyBelongTo: every finished file's notes are
// exactly those of the rows it holds, in row order, after repeated users
// were removed (rows rewritten, files left empty removed) and across file
// splits; randomized against a model.
func TestNotesFollowTheRowsTheyBelongTo(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 11))
		dir := t.TempDir()
		w := NewWriter(dir, Limits{MaxProperties: 2 * (2 + rng.IntN(6))})
		users := 1 + rng.IntN(40)
		n := rng.IntN(120)
		want := map[string]Note{} // newest sighting of each user sent
		for i := range n {
			key := "u" + strconv.Itoa(rng.IntN(users))
			seq := uint64(i + 1)
			if rng.IntN(5) == 0 {
				w.Drop(key, seq, 1)
				delete(want, key)
				continue
			}
			note := noteOf(key, i)
			if rng.IntN(10) == 0 {
				note = Note{} // a row without a note
			}
			if err := w.Put(Appearance{Key: key, Seq: seq, ID: key, Values: []KV{{"V", strconv.Itoa(i)}}, Note: note}); err != nil {
				t.Fatal(err)
			}
			want[key] = note
		}
		files, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]Note{}
		anyNote := false
		for _, v := range want {
			anyNote = anyNote || v != (Note{})
		}
		for _, f := range files {
			rows := readFile(t, f).Value
			if f.Notes == "" {
				if anyNote && n > 0 {
					// Notes start with the first row that has one: a file
					// written before it may lack them only if the spill
					// never opened.
					t.Fatalf("seed %d: file %s has no notes", seed, f.Path)
				}
				continue
			}
			var notes []Note
			if err := EachNote(f.Notes, func(n Note) { notes = append(notes, n) }); err != nil {
				t.Fatal(err)
			}
			if len(notes) != len(rows) {
				t.Fatalf("seed %d: %d notes for %d rows", seed, len(notes), len(rows))
			}
			for i, r := range rows {
				got[r[idName]] = notes[i]
			}
		}
		if anyNote {
			for k, v := range want {
				if got[k] != v {
					t.Errorf("seed %d: user %s note %v, want %v", seed, k, got[k], v)
				}
			}
		}
		// Only the import files and their notes are left on disk; Abort
		// removes them all.
		entries, _ := os.ReadDir(dir)
		if len(entries) != len(files)*2 && anyNote {
			names := []string{}
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("seed %d: %d files on disk for %d import files: %v", seed, len(entries), len(files), names)
		}
		w.Abort()
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("seed %d: Abort left %d files", seed, len(entries))
		}
	}
}

func TestNoNotesNoNotesFiles(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(dir, Limits{})
	for i := range 5 {
		if err := w.Put(Appearance{Key: strconv.Itoa(i), ID: strconv.Itoa(i), Values: []KV{{"V", "x"}}}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if len(files) != 1 || files[0].Notes != "" {
		t.Fatalf("files %+v", files)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.notes")); len(m) != 0 {
		t.Errorf("notes files without notes: %v", m)
	}
}

func TestEachNoteRefusesAPartialNote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.notes")
	if err := os.WriteFile(path, make([]byte, NoteSize+8), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := EachNote(path, func(Note) { n++ })
	if err == nil || !strings.Contains(err.Error(), "not a whole note") || n != 1 {
		t.Errorf("EachNote: %d notes, %v; want 1 and an error about the partial note", n, err)
	}
}
