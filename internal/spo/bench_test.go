package spo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// zeros is an endless source of zero bytes that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// BenchmarkUploadChunked measures a 16 MiB chunked upload in 1 MiB slices.
// Allocated bytes per op should stay near one chunk (the reused buffer) plus
// per-request overhead, not grow with the file size.
func BenchmarkUploadChunked(b *testing.B) {
	const size, chunk = 16 << 20, 1 << 20
	var offset int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		switch {
		case strings.Contains(r.URL.Path, "/Files/AddUsingPath("):
			offset = 0
			fmt.Fprint(w, `{"ServerRelativeUrl":"/sites/hr/Shared Documents/big.json"}`)
		case strings.Contains(r.URL.Path, "/FinishUpload("):
			fmt.Fprintf(w, `{"Length":"%d","ServerRelativeUrl":"/sites/hr/Shared Documents/big.json"}`, offset+n)
		default:
			offset += n
			fmt.Fprintf(w, `{"value":"%d"}`, offset)
		}
	}))
	defer srv.Close()
	c, err := New(Options{SiteURL: srv.URL + "/sites/hr", Credential: &fakeCred{}, ChunkSize: chunk})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Upload(context.Background(), "big.json", io.LimitReader(zeros{}, size), size); err != nil {
			b.Fatal(err)
		}
	}
}
