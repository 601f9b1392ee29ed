package syncer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/testenv"
)

// FuzzFingerprintBlobs reads arbitrary bytes as a store blob and as a
// sidecar (both read back from Blob storage, which anyone with access to
// the container can write). Properties: a blob the reader accepts is
// exactly the canonical encoding of what it read (so it re-encodes to
// bytes it accepts again); one it refuses gets an ErrFingerprintsCorrupt
// naming the blob. (What reading a large blob allocates:
// TestEntryReaderStreams and TestReadStoreBoundsAllocation.)
func FuzzFingerprintBlobs(f *testing.F) {
	entry := func(b []byte, k, v, m uint64) []byte {
		return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, k), v), m)
	}
	var store, side []byte
	for i := range uint64(5) {
		store = entry(store, i*7+1, i, 0)
		side = binary.BigEndian.AppendUint64(entry(side, i*7+1, i, 9), i)
	}
	f.Add(encodeBlob(storeMagic, 5, store))
	f.Add(encodeBlob(sidecarMagic, 5, side))
	f.Add(encodeBlob(storeMagic, 0, nil))
	f.Add([]byte(storeMagic + "\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, kind := range []struct {
			magic string
			size  int
		}{{storeMagic, storeEntry}, {sidecarMagic, sidecarEntry}} {
			var body []byte
			var n int
			e, err := newEntryReader("fuzz.bin", kind.magic, kind.size, bytes.NewReader(data))
			for err == nil {
				var en fpEntry
				var ok bool
				if en, ok, err = e.next(); err != nil || !ok {
					break
				}
				body = appendStoreEntry(body, en)
				if kind.size == sidecarEntry {
					body = binary.BigEndian.AppendUint64(body, en.idn)
				}
				n++
			}
			if err != nil {
				if !errors.Is(err, ErrFingerprintsCorrupt) || !strings.Contains(err.Error(), "fuzz.bin") {
					t.Fatalf("%s: error %v does not name the blob as corrupt", kind.magic, err)
				}
				continue
			}
			if again := encodeBlob(kind.magic, n, body); !bytes.Equal(again, data) {
				t.Fatalf("%s: accepted %d bytes that are not the canonical encoding of the %d entries read", kind.magic, len(data), n)
			}
			if kind.magic == storeMagic {
				s, err := readStore("fuzz.bin", bytes.NewReader(data))
				if err != nil || s.n != n || !bytes.Equal(s.body, body) {
					t.Fatalf("readStore disagrees with the entry reader: %v", err)
				}
			}
		}
	})
}

// TestReadStoreBoundsAllocation: a header claiming 2⁶⁰ entries in front of
// a few bytes allocates no more than maxPrealloc (16 MiB) before failing.
func TestReadStoreBoundsAllocation(t *testing.T) {
	data := encodeBlob(storeMagic, 1, make([]byte, storeEntry))
	binary.BigEndian.PutUint64(data[8:], 1<<60)
	var err error
	got := testenv.Allocated(func() { _, err = readStore("big.bin", bytes.NewReader(data)) })
	if !errors.Is(err, ErrFingerprintsCorrupt) || !strings.Contains(err.Error(), "big.bin") {
		t.Errorf("err = %v, want a corrupt blob named big.bin", err)
	}
	if got > maxPrealloc+1<<20 {
		t.Errorf("allocated %d bytes", got)
	}
}

// TestEntryReaderStreams: reading a 10 MB blob entry by entry, sound or
// not, allocates a few buffers, not the blob.
func TestEntryReaderStreams(t *testing.T) {
	body := make([]byte, 0, 10<<20)
	for i := uint64(0); len(body)+storeEntry <= 10<<20; i++ {
		body = appendStoreEntry(body, fpEntry{key: i, val: i})
	}
	sound := encodeBlob(storeMagic, len(body)/storeEntry, body)
	bad := append([]byte(nil), sound...)
	bad[len(bad)-1] ^= 1
	for name, data := range map[string][]byte{"sound": sound, "bad checksum": bad} {
		var n int
		var err error
		alloc := testenv.Allocated(func() {
			var e *entryReader
			if e, err = newEntryReader("big.bin", storeMagic, storeEntry, bytes.NewReader(data)); err != nil {
				return
			}
			for {
				var ok bool
				if _, ok, err = e.next(); err != nil || !ok {
					return
				}
				n++
			}
		})
		if (err == nil) != (name == "sound") || n != len(body)/storeEntry {
			t.Errorf("%s: %d entries, %v", name, n, err)
		}
		if alloc > 256<<10 && !testenv.Race {
			t.Errorf("%s: reading %d bytes allocated %d", name, len(data), alloc)
		}
	}
}
