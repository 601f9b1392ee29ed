package azfunc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/testenv"
)

// FuzzRequest sends any body to a function behind Handler and reads the
// payload the way the handler's functions do. The seed corpus
// (testdata/fuzz/FuzzRequest) holds the host's own fixtures
// (functions-custom-handler.md §6: R1, R2), the docs' and the code-derived
// queue, timer and payload-mode HTTP requests (§1.4–1.6), and the payloads
// the handler's end-to-end tests send (timers, status messages).
//
//   - Every body gets the envelope the host needs: 200 when it decodes (the
//     function ran), 500 with the reason in Logs when it does not; always
//     application/json, always a JSON object with Outputs and Logs.
//   - What Queue, DataString, MetaString, MetaInt and MetaTime read
//     re-encodes in the host's shape (strings serialized twice, numbers as
//     numeric strings, DateTimeOffset with an offset) to a payload they read
//     back as the same value.
//   - An error names the binding or metadata field it is about.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"Data":{"msg":"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""},"Metadata":{"DequeueCount":"1"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var got *Request
		rec := invokeHandler(t, nil, func(_ context.Context, r *Request) (*Response, error) {
			got = r
			return nil, nil
		}, string(body))
		env := checkEnvelope(t, rec)
		if got == nil {
			if rec.Code != http.StatusInternalServerError || len(env.Logs) != 1 || !strings.HasPrefix(env.Logs[0], "decoding invocation payload") {
				t.Fatalf("undecodable payload answered %d %+v", rec.Code, env)
			}
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("the function ran; answered %d %+v", rec.Code, env)
		}
		checkQueue(t, got, "msg")
		for name := range got.Data {
			checkValue(t, got.Data, "data", name)
		}
		for name := range got.Metadata {
			checkValue(t, got.Metadata, "metadata", name)
		}
	})
}

// hostString encodes s as the host encodes a string value: serialized to a
// JSON string literal, which is then sent as a JSON string (§1.3).
func hostString(s string) json.RawMessage {
	inner, _ := json.Marshal(s)
	outer, _ := json.Marshal(string(inner))
	return outer
}

// hostTime encodes t as the host encodes a DateTimeOffset: ISO 8601 with an
// offset, not serialized twice.
func hostTime(t time.Time) json.RawMessage {
	b, _ := json.Marshal(t.Format(time.RFC3339Nano))
	return b
}

// checkValue reads one Data or Metadata value with every accessor and
// holds each result to its round trip and each error to naming the value.
func checkValue(t *testing.T, m map[string]json.RawMessage, kind, name string) {
	t.Helper()
	r := &Request{Data: m, Metadata: m}
	again := func(v json.RawMessage) *Request {
		return roundTrip(t, map[string]json.RawMessage{name: v}, map[string]json.RawMessage{name: v})
	}
	s, err := lookupString(m, kind, name)
	switch {
	case err != nil:
		mustName(t, err, name)
	case utf8.ValidString(s):
		// JSON cannot carry invalid UTF-8: such text comes back changed.
		if s2, err := again(hostString(s)).MetaString(name); err != nil || s2 != s {
			t.Fatalf("%s %q = %q re-encoded reads %q, %v", kind, name, s, s2, err)
		}
	}
	if n, err := r.MetaInt(name); err != nil {
		mustName(t, err, name)
	} else if n2, err := again(hostString(strconv.FormatInt(n, 10))).MetaInt(name); err != nil || n2 != n {
		t.Fatalf("%s %q = %d re-encoded reads %d, %v", kind, name, n, n2, err)
	}
	if tm, err := r.MetaTime(name); err != nil {
		mustName(t, err, name)
	} else {
		tm2, err := again(hostTime(tm)).MetaTime(name)
		if err != nil || !tm2.Equal(tm) || tm2.IsZero() != tm.IsZero() {
			t.Fatalf("%s %q = %v re-encoded as %s reads %v, %v", kind, name, tm, hostTime(tm), tm2, err)
		}
	}
	var v any
	if err := r.Bind(name, &v); err != nil {
		mustName(t, err, name)
	}
}

// checkQueue reads the payload as a queue trigger and, when it is one,
// writes it again in the host's shape and reads that back.
func checkQueue(t *testing.T, r *Request, binding string) {
	t.Helper()
	m, err := r.Queue(binding)
	if err != nil {
		if !strings.Contains(err.Error(), "reading queue message: ") {
			t.Fatalf("Queue error %q does not say what it read", err)
		}
		for _, name := range []string{binding, "Id", "DequeueCount", "InsertionTime", "NextVisibleTime", "PopReceipt"} {
			if strings.Contains(err.Error(), strconv.Quote(name)) {
				return
			}
		}
		t.Fatalf("Queue error %q names no binding or field", err)
	}
	data := map[string]json.RawMessage{binding: hostString(string(m.Body))}
	meta := map[string]json.RawMessage{
		"DequeueCount": hostString(strconv.FormatInt(m.DequeueCount, 10)),
		"Id":           hostString(m.ID),
		"PopReceipt":   hostString(m.PopReceipt),
	}
	if !m.InsertionTime.IsZero() {
		meta["InsertionTime"] = hostTime(m.InsertionTime)
	}
	if !m.NextVisibleTime.IsZero() {
		meta["NextVisibleTime"] = hostTime(m.NextVisibleTime)
	}
	m2, err := roundTrip(t, data, meta).Queue(binding)
	if err != nil {
		t.Fatalf("queue message %+v re-encoded: %v", m, err)
	}
	if utf8.Valid(m.Body) && !bytes.Equal(m2.Body, m.Body) ||
		utf8.ValidString(m.ID) && m2.ID != m.ID ||
		utf8.ValidString(m.PopReceipt) && m2.PopReceipt != m.PopReceipt ||
		m2.DequeueCount != m.DequeueCount ||
		!m2.InsertionTime.Equal(m.InsertionTime) || !m2.NextVisibleTime.Equal(m.NextVisibleTime) {
		t.Fatalf("queue message re-encoded reads\n%+v\nwant\n%+v", m2, m)
	}
}

// roundTrip sends Data and Metadata through Handler as a payload and
// returns the Request the function gets.
func roundTrip(t *testing.T, data, meta map[string]json.RawMessage) *Request {
	t.Helper()
	body, err := json.Marshal(map[string]any{"Data": data, "Metadata": meta})
	if err != nil {
		t.Fatal(err)
	}
	var got *Request
	rec := invokeHandler(t, nil, func(_ context.Context, r *Request) (*Response, error) {
		got = r
		return nil, nil
	}, string(body))
	if got == nil {
		t.Fatalf("re-encoded payload rejected: %s\n%s", rec.Body.Bytes(), body)
	}
	return got
}

// mustName fails unless err names the value it is about (quoted) or says
// the value is missing.
func mustName(t *testing.T, err error, name string) {
	t.Helper()
	if !strings.Contains(err.Error(), strconv.Quote(name)) {
		t.Fatalf("error %q does not name %q", err, name)
	}
}

// FuzzTimer binds any timer trigger value (Data["timer"], seeds in
// testdata/fuzz/FuzzTimer: the docs' and the code-derived TimerInfo, first
// run, useMonitor false, past due, offset-less and non-UTC times, the timer
// as a JSON string). A value Bind accepts, written again in TimerInfo's
// shape (times in ISO 8601 with their offset, .NET's MinValue
// "0001-01-01T00:00:00" for never), binds to the same Timer; an error
// names the binding, and a bad time its field.
func FuzzTimer(f *testing.F) {
	f.Add([]byte(`{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2016-10-04T10:15:00+00:00","LastUpdated":"2016-10-04T10:16:00+00:00","Next":"2016-10-04T10:20:00+00:00"},"IsPastDue":false}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		if !json.Valid(value) {
			return // the payload would not decode: FuzzRequest covers that
		}
		r := &Request{Data: map[string]json.RawMessage{"timer": value}}
		var tm Timer
		if err := r.Bind("timer", &tm); err != nil {
			mustName(t, err, "timer")
			if strings.Contains(err.Error(), "schedule status: parsing time") {
				t.Fatalf("error %q does not name the time's field", err)
			}
			return
		}
		type status struct{ Last, Next, LastUpdated string }
		enc := func(t time.Time) string {
			if t.IsZero() {
				return "0001-01-01T00:00:00"
			}
			return t.Format("2006-01-02T15:04:05.999999999Z07:00")
		}
		host := struct {
			Schedule       struct{ AdjustForDST bool }
			ScheduleStatus *status
			IsPastDue      bool
		}{IsPastDue: tm.IsPastDue}
		host.Schedule.AdjustForDST = tm.Schedule.AdjustForDST
		if s := tm.ScheduleStatus; s != nil {
			host.ScheduleStatus = &status{enc(s.Last), enc(s.Next), enc(s.LastUpdated)}
		}
		b, _ := json.Marshal(host)
		var tm2 Timer
		if err := roundTrip(t, map[string]json.RawMessage{"timer": b}, nil).Bind("timer", &tm2); err != nil {
			t.Fatalf("timer %+v re-encoded as %s: %v", tm, b, err)
		}
		if tm2.IsPastDue != tm.IsPastDue || tm2.Schedule != tm.Schedule || tm2.FirstRun() != tm.FirstRun() ||
			(tm2.ScheduleStatus == nil) != (tm.ScheduleStatus == nil) {
			t.Fatalf("timer re-encoded as %s binds to %+v, want %+v", b, tm2, tm)
		}
		if s, s2 := tm.ScheduleStatus, tm2.ScheduleStatus; s != nil &&
			(!s2.Last.Equal(s.Last) || !s2.Next.Equal(s.Next) || !s2.LastUpdated.Equal(s.LastUpdated)) {
			t.Fatalf("schedule status re-encoded as %s reads %+v, want %+v", b, *s2, *s)
		}
	})
}

// FuzzParseTime parses any text as a host time (seeds in
// testdata/fuzz/FuzzParseTime: the times of the host's fixtures and of
// .NET's DateTime and DateTimeOffset formats). A time it accepts, formatted
// with an offset or, in UTC, without one (as .NET writes DateTime), parses
// to the same instant; .NET's MinValue is the zero time whatever its offset;
// an error quotes the text.
func FuzzParseTime(f *testing.F) {
	f.Add("2019-10-16T17:58:31+00:00")
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTime(s)
		if err != nil {
			text := strings.TrimSpace(s)
			if len(text) > 40 {
				text = strings.ToValidUTF8(text[:40], "")
			}
			if !strings.Contains(err.Error(), strconv.Quote(text)) {
				t.Fatalf("error %q does not quote the text", err)
			}
			return
		}
		for _, text := range []string{tm.Format(time.RFC3339Nano), tm.UTC().Format("2006-01-02T15:04:05.999999999")} {
			tm2, err := ParseTime(text)
			if err != nil || !tm2.Equal(tm) || tm2.IsZero() != tm.IsZero() {
				t.Fatalf("ParseTime(%q) = %v; formatted as %q it parses to %v, %v", s, tm, text, tm2, err)
			}
		}
	})
}

// TestRequestMemoryBounded sends 10 MB payloads of the shapes that cost
// most (a huge double-encoded body or metadata string, a huge time, many
// metadata keys, deep nesting) to a function that reads them as a queue
// message and a timer: each costs a bounded multiple of its size (measured
// at most 14 times, for half a million metadata keys; 17 with the race
// detector).
func TestRequestMemoryBounded(t *testing.T) {
	const size = 10 << 20
	huge := strings.Repeat("x", size)
	many := func(format string) string {
		var b strings.Builder
		for i := 0; b.Len() < size; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.ReplaceAll(format, "N", strconv.Itoa(i)))
		}
		return b.String()
	}
	payloads := map[string]string{
		"huge double-encoded body": `{"Data":{"msg":` + string(hostString(huge)) + `},"Metadata":{"DequeueCount":"1"}}`,
		"huge metadata id":         `{"Data":{"msg":"\"{}\""},"Metadata":{"Id":` + string(hostString(huge)) + `}}`,
		"many metadata keys":       `{"Data":{"msg":"\"{}\""},"Metadata":{` + many(`"kN":"N"`) + `}}`,
		"deep nesting":             `{"Data":{"msg":` + strings.Repeat("[", size/2) + strings.Repeat("]", size/2) + `}}`,
		"huge timer string":        `{"Data":{"timer":{"ScheduleStatus":{"Last":` + string(hostString(huge)) + `}}}}`,
	}
	for name, payload := range payloads {
		alloc := testenv.Allocated(func() {
			rec := invokeHandler(t, nil, func(_ context.Context, r *Request) (*Response, error) {
				_, err := r.Queue("msg")
				var tm Timer
				return nil, errors.Join(err, r.Bind("timer", &tm))
			}, payload)
			if rec.Code != http.StatusOK && rec.Code != http.StatusInternalServerError {
				t.Errorf("%s: answered %d", name, rec.Code)
			}
		})
		t.Logf("%s, %d bytes: %d bytes allocated (%.1f per input byte)", name, len(payload), alloc, float64(alloc)/float64(len(payload)))
		if limit := uint64(20 * len(payload)); alloc > limit {
			t.Errorf("%s: %d bytes allocated for %d bytes, want at most %d", name, alloc, len(payload), limit)
		}
	}
}
