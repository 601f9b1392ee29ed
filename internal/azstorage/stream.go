package azstorage

import (
	"context"
	"fmt"
	"io"
	"io/fs"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/profilesync/profilesync/internal/profile"
)

// Open streams blob name: for blobs too large to hold whole (the
// fingerprint store). A missing blob (or container) returns an error
// wrapping fs.ErrNotExist. The caller closes the reader.
func (b *Blobs) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	resp, err := b.container.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return nil, fmt.Errorf("opening blob %q: %w", name, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("opening blob %q: %w", name, err)
	}
	return resp.Body, nil
}

// CreateFrom writes blob name from the first size bytes of r
// only if the blob does not exist yet (If-None-Match: *); an existing blob
// returns an error wrapping profile.ErrStale. The body goes in one Put Blob
// request (up to 5,000 MiB: learn.microsoft.com/rest/api/storageservices/put-blob),
// so the precondition and the write are one atomic step, and it is read
// from r as it is sent, never held whole.
func (b *Blobs) CreateFrom(ctx context.Context, name string, r io.ReaderAt, size int64) (string, error) {
	star := azcore.ETagAny
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &star}}
	body := streaming.NopCloser(io.NewSectionReader(r, 0, size))
	resp, err := b.container.NewBlockBlobClient(name).Upload(ctx, body, &blockblob.UploadOptions{AccessConditions: cond})
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
			return "", fmt.Errorf("creating blob %q: %w", name, profile.ErrStale)
		}
		return "", fmt.Errorf("creating blob %q: %w", name, err)
	}
	return etagString(resp.ETag), nil
}
