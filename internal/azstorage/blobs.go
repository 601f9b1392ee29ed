package azstorage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/profilesync/profilesync/internal/profile"
)

// DefaultListLimit is the most blobs List returns before giving up (about
// 10 MB of names: years of run and job records).
const DefaultListLimit = 100000

// Blobs stores small named documents in one container. Methods are safe for
// concurrent use.
type Blobs struct {
	container *container.Client
	name      string

	listLimit int
	pageSize  int32                   // blobs per List page; 0 leaves it to the service (5000)
	getLimit  func(name string) int64 // see SetLimits; nil: DefaultGetLimit for all
	// Lease timing; fields so tests can shorten or drive them.
	leaseDuration time.Duration
	renewEvery    time.Duration
	newTicker     func(d time.Duration) (<-chan time.Time, func())
	now           func() time.Time
}

// BlobInfo describes one blob returned by List.
type BlobInfo struct {
	Name         string
	ETag         string
	Size         int64
	LastModified time.Time
}

// NewBlobs returns a client for container on the account c points to. cred is
// required when c.NeedsCredential() and ignored otherwise. It does not contact
// the service; see EnsureContainer.
func NewBlobs(c Connection, cred azcore.TokenCredential, containerName string) (*Blobs, error) {
	if containerName == "" {
		return nil, errors.New("creating blob client: empty container name")
	}
	opts := &container.ClientOptions{ClientOptions: clientOptions()}
	var (
		client *container.Client
		err    error
	)
	switch {
	case !c.NeedsCredential():
		client, err = container.NewClientFromConnectionString(c.connectionString, containerName, opts)
	case c.blobURL == "":
		return nil, errors.New("creating blob client: connection has no blob service URL (use ParseConnection)")
	case cred == nil:
		return nil, fmt.Errorf("creating blob client: %s is identity-based and needs a credential", c.setting)
	default:
		var u string
		u, err = url.JoinPath(c.blobURL, containerName)
		if err == nil {
			client, err = container.NewClient(u, cred, opts)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating blob client: %w", err)
	}
	return &Blobs{
		container:     client,
		name:          containerName,
		listLimit:     DefaultListLimit,
		leaseDuration: 60 * time.Second,
		renewEvery:    20 * time.Second,
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		now: time.Now,
	}, nil
}

// EnsureContainer creates the container if it does not exist yet.
func (b *Blobs) EnsureContainer(ctx context.Context) error {
	_, err := b.container.Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("creating container %q: %w", b.name, err)
	}
	return nil
}

// DefaultGetLimit is the most bytes Get reads of a blob when SetLimits gave
// none for its name.
const DefaultGetLimit = 64 << 20

// SetLimits sets the most bytes Get reads of each blob: limit(name), or
// DefaultGetLimit when it returns 0 or less. Call it before the Blobs is
// shared.
func (b *Blobs) SetLimits(limit func(name string) int64) { b.getLimit = limit }

func (b *Blobs) limitOf(name string) int64 {
	if b.getLimit != nil {
		if n := b.getLimit(name); n > 0 {
			return n
		}
	}
	return DefaultGetLimit
}

// Get returns the content and ETag of blob name. A missing blob (or container)
// returns an error wrapping fs.ErrNotExist. A blob larger than its limit (see
// SetLimits) is not read: the error names the blob and the limit and wraps
// profile.ErrTooLarge.
func (b *Blobs) Get(ctx context.Context, name string) (data []byte, etag string, err error) {
	limit := b.limitOf(name)
	resp, err := b.container.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return nil, "", fmt.Errorf("getting blob %q: %w", name, fs.ErrNotExist)
		}
		return nil, "", fmt.Errorf("getting blob %q: %w", name, err)
	}
	defer resp.Body.Close()
	tooLarge := func(size string) error {
		return fmt.Errorf("blob %q holds %s; a blob of its kind may hold at most %d bytes: %w", name, size, limit, profile.ErrTooLarge)
	}
	if resp.ContentLength != nil && *resp.ContentLength > limit {
		return nil, "", tooLarge(fmt.Sprintf("%d bytes", *resp.ContentLength))
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("reading blob %q: %w", name, err)
	}
	if int64(len(data)) > limit { // the length the service announced was wrong
		return nil, "", tooLarge(fmt.Sprintf("more than %d bytes", limit))
	}
	return data, etagString(resp.ETag), nil
}

// Put writes blob name and returns its new ETag. With ifMatch "" the write is
// unconditional; otherwise it succeeds only while the blob still has that
// ETag, and returns an error wrapping profile.ErrStale when the blob changed
// or was deleted meanwhile.
func (b *Blobs) Put(ctx context.Context, name string, data []byte, ifMatch string) (etag string, err error) {
	var cond *blob.AccessConditions
	if ifMatch != "" {
		m := azcore.ETag(ifMatch)
		cond = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &m}}
	}
	etag, err = b.upload(ctx, name, data, cond)
	if err != nil {
		if ifMatch != "" && bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobNotFound) {
			return "", fmt.Errorf("writing blob %q: %w", name, profile.ErrStale)
		}
		return "", fmt.Errorf("writing blob %q: %w", name, err)
	}
	return etag, nil
}

// Create writes blob name only if it does not exist yet (If-None-Match: *);
// an existing blob returns an error wrapping profile.ErrStale.
func (b *Blobs) Create(ctx context.Context, name string, data []byte) (etag string, err error) {
	star := azcore.ETagAny
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &star}}
	etag, err = b.upload(ctx, name, data, cond)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
			return "", fmt.Errorf("creating blob %q: %w", name, profile.ErrStale)
		}
		return "", fmt.Errorf("creating blob %q: %w", name, err)
	}
	return etag, nil
}

// upload writes data in a single Put Blob request, so the precondition and the
// write are one atomic step.
func (b *Blobs) upload(ctx context.Context, name string, data []byte, cond *blob.AccessConditions) (string, error) {
	body := streaming.NopCloser(bytes.NewReader(data))
	resp, err := b.container.NewBlockBlobClient(name).Upload(ctx, body, &blockblob.UploadOptions{AccessConditions: cond})
	if err != nil {
		return "", err
	}
	return etagString(resp.ETag), nil
}

// Delete removes blob name; with a non-empty ifMatch only while it has that
// ETag (else the error wraps profile.ErrStale). A missing blob returns an
// error wrapping fs.ErrNotExist.
func (b *Blobs) Delete(ctx context.Context, name string, ifMatch string) error {
	var opts *blob.DeleteOptions
	if ifMatch != "" {
		m := azcore.ETag(ifMatch)
		opts = &blob.DeleteOptions{AccessConditions: &blob.AccessConditions{
			ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &m},
		}}
	}
	_, err := b.container.NewBlobClient(name).Delete(ctx, opts)
	switch {
	case err == nil:
		return nil
	case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound):
		return fmt.Errorf("deleting blob %q: %w", name, fs.ErrNotExist)
	case bloberror.HasCode(err, bloberror.ConditionNotMet):
		return fmt.Errorf("deleting blob %q: %w", name, profile.ErrStale)
	}
	return fmt.Errorf("deleting blob %q: %w", name, err)
}

// List returns the blobs whose names start with prefix, in name order, paging
// through the service's results. It is meant for the handful of documents the
// sync keeps: more than DefaultListLimit matches is an error rather than a
// silently truncated answer.
func (b *Blobs) List(ctx context.Context, prefix string) ([]BlobInfo, error) {
	var out []BlobInfo
	err := b.Each(ctx, prefix, func(info BlobInfo) error {
		if len(out) == b.listLimit {
			return fmt.Errorf("listing blobs under %q: more than %d blobs", prefix, b.listLimit)
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ErrStop, returned by an Each callback, ends the listing without error.
var ErrStop = errors.New("stop listing")

// Each streams the blobs under prefix, in name order, page by page: memory
// stays at one page however many blobs there are. fn returning ErrStop
// ends the listing early; any other error ends it with that error.
func (b *Blobs) Each(ctx context.Context, prefix string, fn func(BlobInfo) error) error {
	var opts container.ListBlobsFlatOptions
	if prefix != "" {
		opts.Prefix = &prefix
	}
	if b.pageSize > 0 {
		opts.MaxResults = &b.pageSize
	}
	pager := b.container.NewListBlobsFlatPager(&opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing blobs under %q: %w", prefix, err)
		}
		for _, item := range page.Segment.BlobItems {
			if item == nil || item.Name == nil {
				continue
			}
			info := BlobInfo{Name: *item.Name}
			if p := item.Properties; p != nil {
				info.ETag = quoteETag(etagString(p.ETag))
				if p.ContentLength != nil {
					info.Size = *p.ContentLength
				}
				if p.LastModified != nil {
					info.LastModified = *p.LastModified
				}
			}
			if err := fn(info); errors.Is(err, ErrStop) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	return nil
}

func etagString(e *azcore.ETag) string {
	if e == nil {
		return ""
	}
	return string(*e)
}

// quoteETag puts a listed ETag in the quoted form the ETag header uses: the
// service's list XML leaves the quotes off, and the forms should compare equal
// and be usable as ifMatch alike.
func quoteETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) || strings.HasPrefix(e, `W/"`) {
		return e
	}
	return `"` + e + `"`
}
