package azstorage

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

// TestStreams: CreateFrom uploads the first size bytes of a file only if
// the blob is new, and Open streams a blob back, against Azurite.
func TestStreams(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	if _, err := b.Open(ctx, "none.bin"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a missing blob: %v, want fs.ErrNotExist", err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(want, "trailing bytes not sent"...)); err != nil {
		t.Fatal(err)
	}
	etag, err := b.CreateFrom(ctx, "s/x.bin", f, int64(len(want)))
	if err != nil || etag == "" {
		t.Fatalf("CreateFrom: etag %q, %v", etag, err)
	}
	if _, err := b.CreateFrom(ctx, "s/x.bin", bytes.NewReader([]byte("other")), 5); !errors.Is(err, profile.ErrStale) {
		t.Errorf("CreateFrom over an existing blob: %v, want profile.ErrStale", err)
	}
	rc, err := b.Open(ctx, "s/x.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("Open read %d bytes (%v), want the %d written", len(got), err, len(want))
	}
}
