package azfunc

import (
	"errors"
	"fmt"
	"time"
)

// QueueMessage gathers what a queue trigger delivers. Body is the message
// text after the host's base64 decoding (messageEncoding "base64") with the
// host's extra JSON string layer removed, so a message enqueued as
// base64({"jobId":"j-42"}) arrives as the bytes {"jobId":"j-42"}. The other
// fields come from the trigger metadata; a field the host did not send is
// left zero.
type QueueMessage struct {
	Body                           []byte
	ID                             string
	DequeueCount                   int64
	InsertionTime, NextVisibleTime time.Time
	PopReceipt                     string
}

// Queue reads the queue trigger bound as bindingName: Data[bindingName] is the
// body (a double-encoded JSON string from the host, a single-encoded one in
// the docs; both are accepted) and Metadata supplies Id, DequeueCount (number
// or numeric string), InsertionTime, NextVisibleTime and PopReceipt.
//
// A missing body is an error wrapping ErrMissing; missing metadata is not.
// Metadata that is present but malformed is an error.
func (r *Request) Queue(bindingName string) (QueueMessage, error) {
	body, err := r.DataString(bindingName)
	if err != nil {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	m := QueueMessage{Body: []byte(body)}
	if m.ID, err = r.MetaString("Id"); present(err) {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	if m.DequeueCount, err = r.MetaInt("DequeueCount"); present(err) {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	if m.InsertionTime, err = r.MetaTime("InsertionTime"); present(err) {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	if m.NextVisibleTime, err = r.MetaTime("NextVisibleTime"); present(err) {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	if m.PopReceipt, err = r.MetaString("PopReceipt"); present(err) {
		return QueueMessage{}, fmt.Errorf("reading queue message: %w", err)
	}
	return m, nil
}

// present reports whether err is a real error rather than an absent value.
func present(err error) bool {
	return err != nil && !errors.Is(err, ErrMissing)
}
