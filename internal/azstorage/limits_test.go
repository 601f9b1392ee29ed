package azstorage

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

// TestGetLimits: a blob larger than the limit of its name is refused, with
// an error naming it and the limit, and without being read.
func TestGetLimits(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	const mib = 1 << 20
	b.SetLimits(func(name string) int64 {
		switch name {
		case "mapping.json":
			return mib
		case "tiny.json":
			return 4
		}
		return 0 // DefaultGetLimit
	})
	put := func(name string, n int) {
		t.Helper()
		if _, err := b.Put(ctx, name, bytes.Repeat([]byte{'x'}, n), ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"mapping.json", mib, true},
		{"mapping.json", mib + 1, false},
		{"tiny.json", 4, true},
		{"tiny.json", 5, false},
		{"other.json", 3 * mib, true}, // DefaultGetLimit
	} {
		put(tc.name, tc.size)
		data, _, err := b.Get(ctx, tc.name)
		if tc.ok {
			if err != nil || len(data) != tc.size {
				t.Errorf("%s of %d bytes: %d bytes, %v", tc.name, tc.size, len(data), err)
			}
			continue
		}
		if !errors.Is(err, profile.ErrTooLarge) || data != nil {
			t.Errorf("%s of %d bytes: %d bytes, %v; want profile.ErrTooLarge", tc.name, tc.size, len(data), err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+tc.name+`"`) || !strings.Contains(msg, "at most") {
			t.Errorf("the error names neither the blob nor its limit: %v", err)
		}
	}

	// A 10 MB blob under a 1 MiB limit costs far less than 10 MB to refuse.
	put("mapping.json", 10_000_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, _, err := b.Get(ctx, "mapping.json")
	runtime.ReadMemStats(&after)
	if !errors.Is(err, profile.ErrTooLarge) {
		t.Fatalf("10 MB mapping: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 2*mib {
		t.Errorf("refusing a 10 MB blob allocated %d bytes", n)
	}
}
