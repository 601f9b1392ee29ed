package azstorage

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
)

// Queue limits of the service (and Azurite).
const (
	// MaxDelay is the longest visibility delay a message can get.
	MaxDelay = 7 * 24 * time.Hour
	// MaxMessageSize is the largest message body Schedule accepts: the
	// service's 64 KiB text limit applies after base64 encoding.
	MaxMessageSize = 65536 / 4 * 3
	// maxBatch is the most messages one Get/Peek Messages call returns.
	maxBatch = 32
	// messageTTL is how long a message lives once it is visible.
	messageTTL = 7 * 24 * time.Hour
)

// Queue sends and receives messages on one storage queue. Message text on the
// wire is the standard base64 encoding of the body, which is what the
// Functions queue trigger decodes by default. Methods are safe for concurrent
// use.
type Queue struct {
	client *azqueue.QueueClient
	name   string
}

// Message is one received (or peeked) message.
type Message struct {
	ID            string
	PopReceipt    string // empty for peeked messages
	Body          []byte // base64-decoded
	DequeueCount  int64
	InsertionTime time.Time
}

// NewQueue returns a client for queue name on the account c points to. cred
// is required when c.NeedsCredential() and ignored otherwise. It does not
// contact the service; see EnsureQueue.
func NewQueue(c Connection, cred azcore.TokenCredential, name string) (*Queue, error) {
	if name == "" {
		return nil, errors.New("creating queue client: empty queue name")
	}
	opts := &azqueue.ClientOptions{ClientOptions: clientOptions()}
	var (
		client *azqueue.QueueClient
		err    error
	)
	switch {
	case !c.NeedsCredential():
		client, err = azqueue.NewQueueClientFromConnectionString(c.connectionString, name, opts)
	case c.queueURL == "":
		return nil, errors.New("creating queue client: connection has no queue service URL (use ParseConnection)")
	case cred == nil:
		return nil, fmt.Errorf("creating queue client: %s is identity-based and needs a credential", c.setting)
	default:
		var u string
		u, err = url.JoinPath(c.queueURL, name)
		if err == nil {
			client, err = azqueue.NewQueueClient(u, cred, opts)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating queue client: %w", err)
	}
	return &Queue{client: client, name: name}, nil
}

// EnsureQueue creates the queue if it does not exist yet.
func (q *Queue) EnsureQueue(ctx context.Context) error {
	_, err := q.client.Create(ctx, nil)
	if err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return fmt.Errorf("creating queue %q: %w", q.name, err)
	}
	return nil
}

// Schedule enqueues msg so that it becomes visible after delay. A negative
// delay counts as 0 and delays beyond MaxDelay (7 days) are clamped to it;
// fractions of a second round up, so the message never shows early. The
// message then lives 7 days after it becomes visible (its time-to-live is
// delay + 7 days, so a long delay cannot expire it before anyone sees it).
// Bodies larger than MaxMessageSize are refused.
func (q *Queue) Schedule(ctx context.Context, msg []byte, delay time.Duration) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("scheduling message on %q: body is %d bytes, the limit is %d (64 KiB after base64)",
			q.name, len(msg), MaxMessageSize)
	}
	visibility := seconds(min(max(delay, 0), MaxDelay))
	ttl := visibility + seconds(messageTTL)
	_, err := q.client.EnqueueMessage(ctx, base64.StdEncoding.EncodeToString(msg), &azqueue.EnqueueMessageOptions{
		VisibilityTimeout: &visibility,
		TimeToLive:        &ttl,
	})
	if err != nil {
		return fmt.Errorf("scheduling message on %q: %w", q.name, err)
	}
	return nil
}

// seconds converts d to whole seconds, rounding up.
func seconds(d time.Duration) int32 {
	return int32((d + time.Second - 1) / time.Second)
}

// Receive takes up to maxMessages visible messages (clamped to 1..32) and
// hides them for visibility (clamped to 1 s..7 days); Delete them once
// handled. A message whose text is not base64 fails the whole call.
func (q *Queue) Receive(ctx context.Context, maxMessages int, visibility time.Duration) ([]Message, error) {
	n := int32(min(max(maxMessages, 1), maxBatch))
	vis := seconds(min(max(visibility, time.Second), MaxDelay))
	resp, err := q.client.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vis})
	if err != nil {
		return nil, fmt.Errorf("receiving messages from %q: %w", q.name, err)
	}
	out := make([]Message, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil {
			continue
		}
		msg, err := decode(m.MessageID, m.MessageText, m.DequeueCount, m.InsertionTime)
		if err != nil {
			return nil, fmt.Errorf("receiving messages from %q: %w", q.name, err)
		}
		msg.PopReceipt = deref(m.PopReceipt)
		out = append(out, msg)
	}
	return out, nil
}

// Peek returns up to maxMessages visible messages (clamped to 1..32) without
// hiding them or counting a dequeue.
func (q *Queue) Peek(ctx context.Context, maxMessages int) ([]Message, error) {
	n := int32(min(max(maxMessages, 1), maxBatch))
	resp, err := q.client.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: &n})
	if err != nil {
		return nil, fmt.Errorf("peeking messages on %q: %w", q.name, err)
	}
	out := make([]Message, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil {
			continue
		}
		msg, err := decode(m.MessageID, m.MessageText, m.DequeueCount, m.InsertionTime)
		if err != nil {
			return nil, fmt.Errorf("peeking messages on %q: %w", q.name, err)
		}
		out = append(out, msg)
	}
	return out, nil
}

// Delete removes a received message. A message already deleted, or received
// again by someone else since (its pop receipt is stale), returns an error
// wrapping fs.ErrNotExist.
func (q *Queue) Delete(ctx context.Context, m Message) error {
	_, err := q.client.DeleteMessage(ctx, m.ID, m.PopReceipt, nil)
	if err != nil {
		if queueerror.HasCode(err, queueerror.MessageNotFound, queueerror.PopReceiptMismatch) {
			return fmt.Errorf("deleting message %s from %q: %w", m.ID, q.name, fs.ErrNotExist)
		}
		return fmt.Errorf("deleting message %s from %q: %w", m.ID, q.name, err)
	}
	return nil
}

func decode(id, text *string, dequeueCount *int64, inserted *time.Time) (Message, error) {
	m := Message{ID: deref(id)}
	body, err := base64.StdEncoding.DecodeString(deref(text))
	if err != nil {
		return Message{}, fmt.Errorf("message %s is not base64: %w", m.ID, err)
	}
	m.Body = body
	if dequeueCount != nil {
		m.DequeueCount = *dequeueCount
	}
	if inserted != nil {
		m.InsertionTime = *inserted
	}
	return m, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Count returns the queue's approximate message count, invisible (delayed
// or being processed) messages included. Azure documents it as "not lower
// than the actual number"; Azurite's is exact.
func (q *Queue) Count(ctx context.Context) (int, error) {
	props, err := q.client.GetProperties(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("reading the properties of %q: %w", q.name, err)
	}
	if props.ApproximateMessagesCount == nil {
		return 0, nil
	}
	return int(*props.ApproximateMessagesCount), nil
}
