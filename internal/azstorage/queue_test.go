package azstorage

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/profilesync/profilesync/internal/testenv"
)

// newQueue returns a Queue on a fresh, existing queue and a raw azqueue
// client on the same queue for looking at the wire text.
func newQueue(t *testing.T) (*Queue, *azqueue.QueueClient) {
	t.Helper()
	name := testenv.Name(t, "q")
	q, err := NewQueue(azuriteConnection(t), nil, name)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call checks idempotence
		if err := q.EnsureQueue(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := azqueue.NewQueueClientFromConnectionString(testenv.Azurite(t).ConnectionString, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q, raw
}

func TestScheduleReceive(t *testing.T) {
	q, raw := newQueue(t)
	ctx := t.Context()
	body := []byte(`{"jobId":"7f2c","attempt":1}`)
	before := time.Now().Add(-time.Minute)
	if err := q.Schedule(ctx, body, 0); err != nil {
		t.Fatal(err)
	}

	// The text on the wire is standard base64, as the queue trigger expects.
	peeked, err := raw.PeekMessages(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(peeked.Messages) != 1 {
		t.Fatalf("raw peek: %d messages, want 1", len(peeked.Messages))
	}
	if got, want := *peeked.Messages[0].MessageText, base64.StdEncoding.EncodeToString(body); got != want {
		t.Errorf("wire text %q, want %q", got, want)
	}

	p, err := q.Peek(ctx, 10)
	if err != nil || len(p) != 1 || !bytes.Equal(p[0].Body, body) || p[0].PopReceipt != "" {
		t.Fatalf("Peek = %+v, %v", p, err)
	}

	msgs, err := q.Receive(ctx, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("Receive: %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if !bytes.Equal(m.Body, body) {
		t.Errorf("Body %q, want %q", m.Body, body)
	}
	if m.ID == "" || m.PopReceipt == "" || m.DequeueCount != 1 || m.InsertionTime.Before(before) {
		t.Errorf("message metadata: %+v", m)
	}

	// Received messages are hidden until deleted or the visibility ends.
	if again, err := q.Receive(ctx, 10, time.Minute); err != nil || len(again) != 0 {
		t.Errorf("second Receive = %d messages, %v; want none", len(again), err)
	}
	if err := q.Delete(ctx, m); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := q.Delete(ctx, m); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Delete: err = %v, want fs.ErrNotExist", err)
	}
}

func TestScheduleDelayed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		// (Rounding of a fraction up to whole seconds is TestSeconds': a
		// delay of a second or two here would race the machine's speed.)
		{"30 seconds", 30 * time.Second},
		{"a fraction over 20 seconds", 20*time.Second + 300*time.Millisecond},
		{"beyond the limit is clamped", 30 * 24 * time.Hour},
		{"exactly the limit", MaxDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, raw := newQueue(t)
			ctx := t.Context()
			if err := q.Schedule(ctx, []byte("later"), tc.delay); err != nil {
				t.Fatal(err)
			}
			msgs, err := q.Receive(ctx, 32, time.Minute)
			if err != nil || len(msgs) != 0 {
				t.Errorf("Receive right away = %d messages, %v; want none", len(msgs), err)
			}
			if p, err := q.Peek(ctx, 32); err != nil || len(p) != 0 {
				t.Errorf("Peek right away = %d messages, %v; want none", len(p), err)
			}
			props, err := raw.GetProperties(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if props.ApproximateMessagesCount == nil || *props.ApproximateMessagesCount != 1 {
				t.Errorf("queue holds %v messages, want 1 (invisible)", props.ApproximateMessagesCount)
			}
		})
	}
}

func TestScheduleSizeLimit(t *testing.T) {
	q, _ := newQueue(t)
	ctx := t.Context()
	largest := bytes.Repeat([]byte("x"), MaxMessageSize)
	if err := q.Schedule(ctx, largest, 0); err != nil {
		t.Fatalf("Schedule of %d bytes: %v", len(largest), err)
	}
	msgs, err := q.Receive(ctx, 1, time.Minute)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Body, largest) {
		t.Fatalf("Receive of the largest message: %d messages, %v", len(msgs), err)
	}
	err = q.Schedule(ctx, append(largest, 'x'), 0)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Schedule over the limit: err = %v", err)
	}
}

func TestReceiveNotBase64(t *testing.T) {
	q, raw := newQueue(t)
	if _, err := raw.EnqueueMessage(t.Context(), "not base64!", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Receive(t.Context(), 1, time.Minute); err == nil || !strings.Contains(err.Error(), "not base64") {
		t.Errorf("Receive of a raw text message: err = %v", err)
	}
}

func TestReceiveBatch(t *testing.T) {
	q, _ := newQueue(t)
	ctx := t.Context()
	for i := range 5 {
		if err := q.Schedule(ctx, []byte{byte('a' + i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ max, want int }{{2, 2}, {0, 1}, {100, 2}} {
		msgs, err := q.Receive(ctx, tc.max, time.Minute)
		if err != nil || len(msgs) != tc.want {
			t.Errorf("Receive(max %d) = %d messages, %v; want %d", tc.max, len(msgs), err, tc.want)
		}
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int32
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{MaxDelay, 604800},
	} {
		if got := seconds(tc.d); got != tc.want {
			t.Errorf("seconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestCount(t *testing.T) {
	q, _ := newQueue(t)
	ctx := t.Context()
	for i, delay := range []time.Duration{0, time.Hour} {
		if err := q.Schedule(ctx, []byte("m"), delay); err != nil {
			t.Fatal(err)
		}
		if n, err := q.Count(ctx); err != nil || n != i+1 {
			t.Errorf("Count = %d, %v; want %d (delayed messages count)", n, err, i+1)
		}
	}
}
