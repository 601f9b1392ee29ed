package azfunc

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	const meta = `"ExpirationTime":"2024-05-08T10:00:00+00:00","Id":"\"800ae4b3-bdd2-4c08-badd-f08e5a34b865\"","InsertionTime":"2024-05-01T10:00:00+00:00","NextVisibleTime":"2024-05-01T10:10:01+00:00","PopReceipt":"\"AgAAAAMAAAAAAAAAAgtnj8x+1QE=\"","sys":{"MethodName":"ImportStatus","UtcNow":"2024-05-01T10:00:01.1234567Z","RandGuid":"24ad4c06-24ad-4e5b-8294-3da9714877e9"}`
	full := QueueMessage{
		ID:              "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
		InsertionTime:   time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
		NextVisibleTime: time.Date(2024, 5, 1, 10, 10, 1, 0, time.UTC),
		PopReceipt:      "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
	}
	with := func(body string, count int64) QueueMessage {
		m := full
		m.Body, m.DequeueCount = []byte(body), count
		return m
	}
	tests := []struct {
		name    string
		payload string
		want    QueueMessage
	}{
		{
			name:    "code-derived, double-encoded",
			payload: `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"1",` + meta + `}}`,
			want:    with(`{"jobId":"j-42","attempt":3}`, 1),
		},
		{
			name:    "DequeueCount as a number",
			payload: `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":4,` + meta + `}}`,
			want:    with(`{"jobId":"j-42","attempt":3}`, 4),
		},
		{
			name:    "DequeueCount as a numeric string",
			payload: `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"4",` + meta + `}}`,
			want:    with(`{"jobId":"j-42","attempt":3}`, 4),
		},
		{
			name:    "DequeueCount double-encoded",
			payload: `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"\"4\"",` + meta + `}}`,
			want:    with(`{"jobId":"j-42","attempt":3}`, 4),
		},
		{
			name: "docs example, single-encoded",
			payload: `{
  "Data": {
    "myQueueItem": "{ message: \"Message sent\" }"
  },
  "Metadata": {
    "DequeueCount": 1,
    "ExpirationTime": "2019-10-16T17:58:31+00:00",
    "Id": "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
    "InsertionTime": "2019-10-09T17:58:31+00:00",
    "NextVisibleTime": "2019-10-09T18:08:32+00:00",
    "PopReceipt": "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
    "sys": {
      "MethodName": "QueueTrigger",
      "UtcNow": "2019-10-09T17:58:32.2205399Z",
      "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9"
    }
  }
}`,
			want: QueueMessage{
				Body:            []byte(`{ message: "Message sent" }`),
				ID:              "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
				DequeueCount:    1,
				InsertionTime:   time.Date(2019, 10, 9, 17, 58, 31, 0, time.UTC),
				NextVisibleTime: time.Date(2019, 10, 9, 18, 8, 32, 0, time.UTC),
				PopReceipt:      "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
			},
		},
		{
			name:    "body only, metadata absent",
			payload: `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-1\\\"}\""}}`,
			want:    QueueMessage{Body: []byte(`{"jobId":"j-1"}`)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRequest(t, tc.payload)
			name := "msg"
			if _, ok := r.Data["myQueueItem"]; ok {
				name = "myQueueItem"
			}
			got, err := r.Queue(name)
			if err != nil {
				t.Fatalf("Queue: %v", err)
			}
			if string(got.Body) != string(tc.want.Body) {
				t.Errorf("Body = %s, want %s", got.Body, tc.want.Body)
			}
			if got.ID != tc.want.ID || got.DequeueCount != tc.want.DequeueCount || got.PopReceipt != tc.want.PopReceipt {
				t.Errorf("ID, DequeueCount, PopReceipt = %q, %d, %q; want %q, %d, %q",
					got.ID, got.DequeueCount, got.PopReceipt, tc.want.ID, tc.want.DequeueCount, tc.want.PopReceipt)
			}
			if !got.InsertionTime.Equal(tc.want.InsertionTime) || !got.NextVisibleTime.Equal(tc.want.NextVisibleTime) {
				t.Errorf("InsertionTime, NextVisibleTime = %v, %v; want %v, %v",
					got.InsertionTime, got.NextVisibleTime, tc.want.InsertionTime, tc.want.NextVisibleTime)
			}
		})
	}
}

// TestQueueBodyDecodes checks the body of a double-encoded message is the
// JSON the producer enqueued, ready for json.Unmarshal.
func TestQueueBodyDecodes(t *testing.T) {
	r := mustRequest(t, `{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"2"}}`)
	m, err := r.Queue("msg")
	if err != nil {
		t.Fatal(err)
	}
	var got jobMsg
	if err := json.Unmarshal(m.Body, &got); err != nil {
		t.Fatalf("body %s does not decode: %v", m.Body, err)
	}
	if got != (jobMsg{"j-42", 3}) {
		t.Errorf("body = %+v", got)
	}
}

func TestQueueErrors(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		wantMissing bool
	}{
		{"body missing", `{"Data":{},"Metadata":{"DequeueCount":"1"}}`, true},
		{"bad DequeueCount", `{"Data":{"msg":"\"x\""},"Metadata":{"DequeueCount":"four"}}`, false},
		{"bad InsertionTime", `{"Data":{"msg":"\"x\""},"Metadata":{"InsertionTime":"tuesday"}}`, false},
		{"bad NextVisibleTime", `{"Data":{"msg":"\"x\""},"Metadata":{"NextVisibleTime":17}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mustRequest(t, tc.payload).Queue("msg")
			if err == nil {
				t.Fatal("Queue succeeded, want an error")
			}
			if got := errors.Is(err, ErrMissing); got != tc.wantMissing {
				t.Errorf("errors.Is(%v, ErrMissing) = %v, want %v", err, got, tc.wantMissing)
			}
		})
	}
}
