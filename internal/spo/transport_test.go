package spo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// hangUp closes the connection without answering: a network failure.
func hangUp(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestRetries(t *testing.T) {
	queueOK := readTestdata(t, "queue_ok.json")
	jobOK := readTestdata(t, "job_submitted.json")
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		maxRetries int
		// answers[i] serves request i; the last one repeats.
		answers       []func(w http.ResponseWriter)
		call          string // "queue" or "job"
		wantRequests  int
		wantSleeps    []time.Duration
		wantErr       bool
		wantRetryable bool
	}{
		{
			name: "429 with Retry-After seconds, then success",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) { w.Header().Set("Retry-After", "7"); w.WriteHeader(429) },
				func(w http.ResponseWriter) { reply(w, 200, "application/json", queueOK) },
			},
			call: "queue", wantRequests: 2, wantSleeps: []time.Duration{7 * time.Second},
		},
		{
			name: "503 with Retry-After date, then success",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) {
					w.Header().Set("Retry-After", now.Add(30*time.Second).Format(http.TimeFormat))
					w.WriteHeader(503)
				},
				func(w http.ResponseWriter) { reply(w, 200, "application/json", queueOK) },
			},
			call: "queue", wantRequests: 2, wantSleeps: []time.Duration{30 * time.Second},
		},
		{
			name:       "503 every time: give up after MaxRetries with backoff",
			maxRetries: 3,
			answers:    []func(http.ResponseWriter){func(w http.ResponseWriter) { w.WriteHeader(503) }},
			call:       "job", wantRequests: 4,
			wantSleeps: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second},
			wantErr:    true, wantRetryable: true,
		},
		{
			name:       "504 with retries disabled",
			maxRetries: -1,
			answers:    []func(http.ResponseWriter){func(w http.ResponseWriter) { w.WriteHeader(504) }},
			call:       "job", wantRequests: 1, wantErr: true, wantRetryable: true,
		},
		{
			name:    "500 is not retried",
			answers: []func(http.ResponseWriter){func(w http.ResponseWriter) { w.WriteHeader(500) }},
			call:    "job", wantRequests: 1, wantErr: true,
		},
		{
			name: "huge Retry-After is capped",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) { w.Header().Set("Retry-After", "86400"); w.WriteHeader(429) },
				func(w http.ResponseWriter) { reply(w, 200, "application/json", jobOK) },
			},
			call: "job", wantRequests: 2, wantSleeps: []time.Duration{maxRetryAfter},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, n int) {
				tc.answers[min(n, len(tc.answers)-1)](w)
			})
			c, _, sl := testClient(t, srv.URL, func(o *Options) { o.MaxRetries = tc.maxRetries })
			c.now = func() time.Time { return now }
			var err error
			switch tc.call {
			case "queue":
				_, err = c.QueueImport(context.Background(), profile.CloudID, "IdName", map[string]string{"A": "A"}, "https://x/a.json")
			case "job":
				_, err = c.Job(context.Background(), jobGUID)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got := IsRetryable(err); got != tc.wantRetryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tc.wantRetryable)
			}
			if n := len(srv.requests()); n != tc.wantRequests {
				t.Errorf("%d requests, want %d", n, tc.wantRequests)
			}
			if got := sl.got(); !reflect.DeepEqual(got, tc.wantSleeps) && (len(got) != 0 || len(tc.wantSleeps) != 0) {
				t.Errorf("sleeps %v, want %v", got, tc.wantSleeps)
			}
		})
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) {
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(429)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _, _ := testClient(t, srv.URL, func(o *Options) {
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			cancel() // the host shuts down while we wait
			return sleepCtx(ctx, d)
		}
	})
	_, err := c.Job(ctx, jobGUID)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if IsRetryable(err) {
		t.Error("a cancelled call must not be retryable")
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	// Already cancelled: nothing is sent.
	if _, err := c.Jobs(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Jobs on a cancelled context: err = %v", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests after a cancelled call, want 1", n)
	}
}

func TestNetworkErrors(t *testing.T) {
	jobOK := readTestdata(t, "job_submitted.json")
	for _, tc := range []struct {
		name         string
		call         func(*Client) error
		wantRequests int
		wantErr      bool
	}{
		{
			name:         "idempotent read is retried",
			call:         func(c *Client) error { _, err := c.Job(context.Background(), jobGUID); return err },
			wantRequests: 2,
		},
		{
			name: "queue is not resent but reported retryable",
			call: func(c *Client) error {
				_, err := c.QueueImport(context.Background(), profile.CloudID, "IdName", map[string]string{"A": "A"}, "https://x/a.json")
				return err
			},
			wantRequests: 1, wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, n int) {
				if n == 0 {
					hangUp(t, w)
					return
				}
				reply(w, 200, "application/json", jobOK)
			})
			c, _, sl := testClient(t, srv.URL, nil)
			err := tc.call(c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr && !IsRetryable(err) {
				t.Errorf("network failure %v not marked retryable", err)
			}
			if n := len(srv.requests()); n != tc.wantRequests {
				t.Errorf("%d requests, want %d", n, tc.wantRequests)
			}
			if !tc.wantErr && !reflect.DeepEqual(sl.got(), []time.Duration{time.Second}) {
				t.Errorf("sleeps %v, want [1s]", sl.got())
			}
		})
	}
}

// TestUploadRetryNeedsSeeker: a streamed body can be resent only when the
// caller's reader can be rewound.
func TestUploadRetryNeedsSeeker(t *testing.T) {
	data := "abcdef"
	for _, tc := range []struct {
		name         string
		r            func() io.Reader
		wantRequests int
		wantErr      bool
	}{
		{name: "seeker", r: func() io.Reader { return strings.NewReader(data) }, wantRequests: 2},
		{name: "plain reader", r: func() io.Reader { return struct{ io.Reader }{strings.NewReader(data)} }, wantRequests: 1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, func(w http.ResponseWriter, _ recorded, n int) {
				if n == 0 {
					w.WriteHeader(503)
					return
				}
				reply(w, 200, "application/json", []byte(`{"Length":"6","ServerRelativeUrl":"/sites/hr/Shared Documents/Profile Imports/a.json"}`))
			})
			c, _, _ := testClient(t, srv.URL, nil)
			_, err := c.Upload(context.Background(), "a.json", tc.r(), int64(len(data)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr && !IsRetryable(err) {
				t.Errorf("err %v not retryable", err)
			}
			reqs := srv.requests()
			if len(reqs) != tc.wantRequests {
				t.Fatalf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			for i, r := range reqs {
				if string(r.Body) != data {
					t.Errorf("attempt %d sent %q, want %q", i, r.Body, data)
				}
			}
		})
	}
}

func TestAuth(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, r recorded, _ int) {
		reply(w, 200, "application/json", []byte(`{"value":[]}`))
	})
	c, cred, _ := testClient(t, srv.URL, func(o *Options) { o.UserAgent = "NONISV|Contoso|profilesync/1.2" })
	if _, err := c.ListFolder(context.Background(), "/sites/hr/x"); err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{srv.URL + "/.default"}}; !reflect.DeepEqual(cred.scopes, want) {
		t.Errorf("scopes %v, want %v", cred.scopes, want)
	}
	r := srv.requests()[0]
	if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
		t.Errorf("Authorization = %q", got)
	}
	if got := r.Header.Get("User-Agent"); got != "NONISV|Contoso|profilesync/1.2" {
		t.Errorf("User-Agent = %q", got)
	}

	cred.err = errors.New("AADSTS7000215: invalid client secret")
	_, err := c.ListFolder(context.Background(), "/sites/hr/x")
	if err == nil || !strings.Contains(err.Error(), "AADSTS7000215") || !strings.Contains(err.Error(), "token") {
		t.Errorf("err = %v, want the token error", err)
	}
	if IsRetryable(err) {
		t.Error("a credential failure must not be retryable")
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want none without a token", n-1)
	}
}

func TestLogging(t *testing.T) {
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, n int) {
		if n == 0 {
			w.WriteHeader(429)
			return
		}
		reply(w, 200, "application/json", readTestdata(t, "delete_true.json"))
	})
	var buf bytes.Buffer
	c, _, _ := testClient(t, srv.URL, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if _, err := c.DeleteJob(context.Background(), jobGUID); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"path=/sites/hr/_vti_bin/client.svc/ProcessQuery", "status=429", "status=200", "method=POST", "duration=", "sharepoint retry"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, testToken) || strings.Contains(out, "Bearer") {
		t.Errorf("log leaks the token:\n%s", out)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := &Client{now: func() time.Time { return now }}
	for _, tc := range []struct {
		v       string
		attempt int
		want    time.Duration
	}{
		{"7", 0, 7 * time.Second},
		{" 0 ", 3, 0},
		{"301", 0, maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 0, 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, 0},
		{"", 2, 4 * time.Second},
		{"soon", 1, 2 * time.Second},
		{"-5", 0, time.Second},
		{"", 10, maxBackoff},
	} {
		if got := c.retryAfter(tc.v, tc.attempt); got != tc.want {
			t.Errorf("retryAfter(%q, %d) = %v, want %v", tc.v, tc.attempt, got, tc.want)
		}
	}
}
