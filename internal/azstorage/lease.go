package azstorage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/profilesync/profilesync/internal/profile"
)

// releaseTimeout bounds Release, which runs even when the caller's context is
// already cancelled.
const releaseTimeout = 15 * time.Second

// Lease is a lock held as a blob lease. It is renewed in the background until
// Release; Lost reports when renewal failed and the lock may be held by
// someone else.
type Lease struct {
	client *lease.BlobClient
	name   string
	blobs  *Blobs

	stop chan struct{} // closed by Release
	done chan struct{} // closed when the renewal goroutine returns
	lost chan struct{}

	mu        sync.Mutex
	lastRenew time.Time
	lostErr   error

	lostOnce    sync.Once
	releaseOnce sync.Once
	releaseErr  error
}

// Lock takes a 60-second lease on blob name, creating the blob empty if it is
// missing, and renews it every 20 seconds until Release. When another holder
// has the lease it returns an error wrapping profile.ErrBusy. A holder that
// crashes never releases; its lease expires by itself 60 seconds after the
// last renewal.
//
// Renewal stops when ctx is done (the lease then expires on its own unless
// Release is called) or when a renewal fails for good, in which case Lost is
// closed.
func (b *Blobs) Lock(ctx context.Context, name string) (*Lease, error) {
	client, err := lease.NewBlobClient(b.container.NewBlobClient(name), nil)
	if err != nil {
		return nil, fmt.Errorf("locking %q: %w", name, err)
	}
	seconds := int32(b.leaseDuration / time.Second)
	_, err = client.AcquireLease(ctx, seconds, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		// First use: create the lock blob. Losing that race to another
		// creator is fine; the lease decides who holds the lock.
		if _, cerr := b.Create(ctx, name, nil); cerr != nil && !errors.Is(cerr, profile.ErrStale) {
			return nil, fmt.Errorf("locking %q: %w", name, cerr)
		}
		_, err = client.AcquireLease(ctx, seconds, nil)
	}
	if err != nil {
		if bloberror.HasCode(err, bloberror.LeaseAlreadyPresent, bloberror.LeaseIsBreakingAndCannotBeAcquired) {
			return nil, fmt.Errorf("locking %q: %w", name, profile.ErrBusy)
		}
		return nil, fmt.Errorf("locking %q: %w", name, err)
	}
	l := &Lease{
		client:    client,
		name:      name,
		blobs:     b,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		lost:      make(chan struct{}),
		lastRenew: b.now(),
	}
	go l.keep(ctx)
	return l, nil
}

// keep renews the lease on every tick until Release, ctx's end or a renewal
// failure that loses the lease.
func (l *Lease) keep(ctx context.Context) {
	defer close(l.done)
	tick, stopTicker := l.blobs.newTicker(l.blobs.renewEvery)
	defer stopTicker()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-tick:
			if err := l.renew(ctx); err != nil && l.isLost() {
				return
			}
		}
	}
}

// renew renews the lease once. A failure that means the lease is gone, or
// that leaves too little time for another attempt before it expires, marks
// the lease lost.
func (l *Lease) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.blobs.renewEvery)
	defer cancel()
	_, err := l.client.RenewLease(ctx, nil)
	now := l.blobs.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.lastRenew = now
		return nil
	}
	err = fmt.Errorf("renewing lease on %q: %w", l.name, err)
	if leaseGone(err) || now.Sub(l.lastRenew)+l.blobs.renewEvery >= l.blobs.leaseDuration {
		l.lostErr = err
		l.lostOnce.Do(func() { close(l.lost) })
	}
	return err
}

// leaseGone reports whether err says the lease no longer exists or belongs to
// someone else, so retrying the renewal is pointless.
func leaseGone(err error) bool {
	return bloberror.HasCode(err,
		bloberror.LeaseIDMismatchWithLeaseOperation,
		bloberror.LeaseNotPresentWithLeaseOperation,
		bloberror.LeaseIsBrokenAndCannotBeRenewed,
		bloberror.LeaseLost,
		bloberror.BlobNotFound,
		bloberror.ContainerNotFound)
}

func (l *Lease) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// Lost returns a channel that is closed when renewal failed and the lock can
// no longer be trusted; Err then says why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns why the lease was lost, or nil while it is held.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// Release stops renewal and releases the lease so the next Lock succeeds at
// once. It is idempotent and works after ctx is cancelled (it then gets its
// own short deadline). A lease already lost or expired is not an error.
func (l *Lease) Release(ctx context.Context) error {
	l.releaseOnce.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		_, err := l.client.ReleaseLease(ctx, nil)
		if err != nil && !leaseGone(err) {
			l.releaseErr = fmt.Errorf("releasing lease on %q: %w", l.name, err)
		}
	})
	return l.releaseErr
}
