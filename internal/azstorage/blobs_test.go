package azstorage

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// azuriteConnection parses the test Azurite's connection string the way the
// handler parses AzureWebJobsStorage.
func azuriteConnection(t *testing.T) Connection {
	t.Helper()
	env := testenv.Azurite(t)
	c, err := ParseConnection("AzureWebJobsStorage", func(k string) string {
		if k == "AzureWebJobsStorage" {
			return env.ConnectionString
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newBlobs returns a Blobs on a fresh container that already exists.
func newBlobs(t *testing.T) *Blobs {
	t.Helper()
	b, err := NewBlobs(azuriteConnection(t), nil, testenv.Name(t, "c"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call checks idempotence
		if err := b.EnsureContainer(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestGetMissing(t *testing.T) {
	b, err := NewBlobs(azuriteConnection(t), nil, testenv.Name(t, "nocontainer"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(t.Context(), "x.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get in a missing container: err = %v, want fs.ErrNotExist", err)
	}
	b = newBlobs(t)
	if _, _, err := b.Get(t.Context(), "x.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing blob: err = %v, want fs.ErrNotExist", err)
	}
}

func TestPutGet(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	for _, data := range [][]byte{[]byte(`{"deltaLink":"x"}`), {}, []byte("second\x00version")} {
		etag, err := b.Put(ctx, "state.json", data, "")
		if err != nil {
			t.Fatal(err)
		}
		got, getTag, err := b.Get(ctx, "state.json")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(data) {
			t.Errorf("Get = %q, want %q", got, data)
		}
		if etag == "" || getTag != etag {
			t.Errorf("Get ETag %q, Put ETag %q", getTag, etag)
		}
	}
}

func TestConditionalPut(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	first, err := b.Put(ctx, "state.json", []byte("1"), "")
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.Put(ctx, "state.json", []byte("2"), first)
	if err != nil {
		t.Fatalf("Put with the current ETag: %v", err)
	}
	if second == first {
		t.Errorf("ETag did not change: %q", second)
	}
	for _, tc := range []struct{ name, blob, ifMatch string }{
		{"stale etag", "state.json", first},
		{"blob missing", "other.json", first},
	} {
		if _, err := b.Put(ctx, tc.blob, []byte("3"), tc.ifMatch); !errors.Is(err, profile.ErrStale) {
			t.Errorf("%s: err = %v, want profile.ErrStale", tc.name, err)
		}
	}
	got, _, err := b.Get(ctx, "state.json")
	if err != nil || string(got) != "2" {
		t.Errorf("after the lost races Get = %q, %v; want 2", got, err)
	}
}

func TestCreate(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	etag, err := b.Create(ctx, "runs/1.json", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "runs/1.json", []byte("b")); !errors.Is(err, profile.ErrStale) {
		t.Errorf("second Create: err = %v, want profile.ErrStale", err)
	}
	got, getTag, err := b.Get(ctx, "runs/1.json")
	if err != nil || string(got) != "a" || getTag != etag {
		t.Errorf("Get = %q %q %v; want a %q", got, getTag, err, etag)
	}
}

func TestDelete(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	old, err := b.Put(ctx, "d.json", []byte("1"), "")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := b.Put(ctx, "d.json", []byte("2"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "d.json", old); !errors.Is(err, profile.ErrStale) {
		t.Errorf("Delete with a stale ETag: err = %v, want profile.ErrStale", err)
	}
	if err := b.Delete(ctx, "d.json", cur); err != nil {
		t.Fatalf("Delete with the current ETag: %v", err)
	}
	if _, _, err := b.Get(ctx, "d.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get after Delete: err = %v, want fs.ErrNotExist", err)
	}
	if err := b.Delete(ctx, "d.json", ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Delete: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Put(ctx, "u.json", nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "u.json", ""); err != nil {
		t.Errorf("unconditional Delete: %v", err)
	}
}

func TestList(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	before := time.Now().Add(-time.Minute)
	names := []string{"runs/a.json", "runs/b.json", "runs/c.json", "runs/d.json", "runs/e.json", "jobs/x.json", "state.json"}
	etags := map[string]string{}
	for i, n := range names {
		etag, err := b.Put(ctx, n, make([]byte, i), "")
		if err != nil {
			t.Fatal(err)
		}
		etags[n] = etag
	}
	b.pageSize = 2 // force several pages
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"runs/", names[:5]},
		{"jobs/", names[5:6]},
		{"", []string{"jobs/x.json", "runs/a.json", "runs/b.json", "runs/c.json", "runs/d.json", "runs/e.json", "state.json"}},
		{"nothing/", nil},
	} {
		got, err := b.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var gotNames []string
		for _, info := range got {
			gotNames = append(gotNames, info.Name)
			i := slices.Index(names, info.Name)
			if info.Size != int64(i) || info.ETag != etags[info.Name] || info.LastModified.Before(before) {
				t.Errorf("List(%q): %+v, want size %d etag %s", tc.prefix, info, i, etags[info.Name])
			}
		}
		if !slices.Equal(gotNames, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, gotNames, tc.want)
		}
	}
	listed, err := b.List(ctx, "state.json")
	if err != nil || len(listed) != 1 {
		t.Fatalf("List(state.json) = %v, %v", listed, err)
	}
	if _, err := b.Put(ctx, "state.json", []byte("x"), listed[0].ETag); err != nil {
		t.Errorf("Put with a listed ETag: %v", err)
	}
	b.listLimit = 4
	if _, err := b.List(ctx, "runs/"); err == nil {
		t.Errorf("List over the limit: no error")
	}
}

// fakeCredential is never asked for a token: building clients is offline.
type fakeCredential struct{}

func (fakeCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("fake credential")
}

func TestIdentityClientURLs(t *testing.T) {
	c, err := ParseConnection("S", func(k string) string {
		return map[string]string{"S__accountName": "acct1"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBlobs(c, fakeCredential{}, "profilesync")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.container.URL(), "https://acct1.blob.core.windows.net/profilesync"; got != want {
		t.Errorf("container URL %q, want %q", got, want)
	}
	q, err := NewQueue(c, fakeCredential{}, "status")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := q.client.URL(), "https://acct1.queue.core.windows.net/status"; got != want {
		t.Errorf("queue URL %q, want %q", got, want)
	}
}

func TestLock(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	l, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatalf("first Lock: %v", err)
	}
	if _, _, err := b.Get(ctx, "sync.lock"); err != nil {
		t.Errorf("the lock blob was not created: %v", err)
	}
	if _, err := b.Lock(ctx, "sync.lock"); !errors.Is(err, profile.ErrBusy) {
		t.Errorf("second Lock: err = %v, want profile.ErrBusy", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Release(cancelled); err != nil {
		t.Fatalf("Release with a cancelled context: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	l2, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatalf("Lock after Release: %v", err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Error(err)
	}
	if l.Err() != nil || l2.Err() != nil {
		t.Errorf("released leases report lost: %v, %v", l.Err(), l2.Err())
	}
}

func TestLockRenew(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	l, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	for range 3 {
		if err := l.renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
	}
	if _, err := b.Lock(ctx, "sync.lock"); !errors.Is(err, profile.ErrBusy) {
		t.Errorf("Lock after renewals: err = %v, want profile.ErrBusy", err)
	}
	select {
	case <-l.Lost():
		t.Errorf("lease lost after successful renewals: %v", l.Err())
	default:
	}
}

// TestLockLost breaks the lease behind the holder's back and drives the
// renewal goroutine with a hand-made ticker: Lost must close.
func TestLockLost(t *testing.T) {
	b := newBlobs(t)
	ctx := t.Context()
	tick := make(chan time.Time)
	b.newTicker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
	l, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatal(err)
	}
	other, err := lease.NewBlobClient(b.container.NewBlobClient("sync.lock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	if _, err := other.BreakLease(ctx, &lease.BlobBreakOptions{BreakPeriod: &zero}); err != nil {
		t.Fatal(err)
	}
	send(t, tick) // a renewal that fails
	select {
	case <-l.Lost():
	case <-time.After(30 * time.Second): // guard against a hang, not a timing assumption
		t.Fatal("Lost not closed after the lease was broken")
	}
	if l.Err() == nil {
		t.Error("Err is nil on a lost lease")
	}
	// The broken lease is free for someone else, and the old holder's
	// Release must not release the new holder's lease.
	l2, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatalf("Lock after the break: %v", err)
	}
	defer l2.Release(ctx)
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release of a lost lease: %v", err)
	}
	if _, err := b.Lock(ctx, "sync.lock"); !errors.Is(err, profile.ErrBusy) {
		t.Errorf("Lock while the new holder has it: err = %v, want profile.ErrBusy", err)
	}
	// The goroutine has ended: a further tick would block forever, so
	// only check the done channel.
	select {
	case <-l.done:
	default:
		t.Error("renewal goroutine still running after Release")
	}
}

// send delivers one tick to the renewal goroutine.
func send(t *testing.T, tick chan<- time.Time) {
	t.Helper()
	select {
	case tick <- time.Now():
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("the renewal goroutine does not take ticks")
	}
}

// TestRenewTransientFailure checks the decision after a failed renewal that
// does not say the lease is gone: retry while a later tick can still save
// the lease, give up otherwise.
func TestRenewTransientFailure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		since    time.Duration // since the last good renewal
		wantLost bool
	}{
		{"first failure", 20 * time.Second, false},
		{"second failure", 40 * time.Second, true},
		{"far too late", 90 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBlobs(t)
			start := time.Now()
			now := start
			b.now = func() time.Time { return now }
			b.newTicker = func(time.Duration) (<-chan time.Time, func()) { return nil, func() {} }
			l, err := b.Lock(t.Context(), "sync.lock")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(t.Context())
			now = start.Add(tc.since)
			failing, cancel := context.WithCancel(t.Context())
			cancel() // the request fails without reaching the service
			if err := l.renew(failing); err == nil {
				t.Fatal("renew with a cancelled context succeeded")
			}
			if got := l.isLost(); got != tc.wantLost {
				t.Errorf("lost = %v, want %v", got, tc.wantLost)
			}
		})
	}
}

func TestLockStopsWithContext(t *testing.T) {
	b := newBlobs(t)
	ctx, cancel := context.WithCancel(t.Context())
	l, err := b.Lock(ctx, "sync.lock")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-l.done:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("renewal goroutine did not stop when ctx was cancelled")
	}
	if err := l.Release(t.Context()); err != nil {
		t.Errorf("Release after ctx cancellation: %v", err)
	}
	l2, err := b.Lock(t.Context(), "sync.lock")
	if err != nil {
		t.Fatalf("Lock after Release: %v", err)
	}
	l2.Release(t.Context())
}
