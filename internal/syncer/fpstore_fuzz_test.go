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
// naming the blob; nothing it reads before refusing is kept; and reading
// never allocates much more than the input, whatever its header claims.
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
			var err error
			alloc := testenv.Allocated(func() {
				var e *entryReader
				e, err = newEntryReader("fuzz.bin", kind.magic, kind.size, bytes.NewReader(data))
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
			})
			if alloc > uint64(4*len(data))+1<<20 {
				t.Fatalf("%s: reading %d bytes allocated %d", kind.magic, len(data), alloc)
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
