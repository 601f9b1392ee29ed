package azfunc

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// mustRequest decodes a host payload fixture the way Handler does.
func mustRequest(t testing.TB, payload string) *Request {
	t.Helper()
	var r Request
	if err := json.Unmarshal([]byte(payload), &r); err != nil {
		t.Fatalf("fixture does not decode: %v\n%s", err, payload)
	}
	return &r
}

type jobMsg struct {
	JobID   string `json:"jobId"`
	Attempt int    `json:"attempt"`
}

type jobID string

func TestBind(t *testing.T) {
	tests := []struct {
		name string
		data string // the JSON value of Data["v"]
		into func() any
		want any // the value the pointer should point to
	}{
		{"double-encoded object", `"\"{\\\"jobId\\\":\\\"j-42\\\",\\\"attempt\\\":3}\""`, func() any { return new(jobMsg) }, jobMsg{"j-42", 3}},
		{"single-encoded object", `"{\"jobId\":\"j-1\",\"attempt\":1}"`, func() any { return new(jobMsg) }, jobMsg{"j-1", 1}},
		{"plain object", `{"jobId":"j-2","attempt":2}`, func() any { return new(jobMsg) }, jobMsg{"j-2", 2}},
		{"double-encoded string", `"\"HelloWorld\""`, func() any { return new(string) }, "HelloWorld"},
		{"single-encoded string", `"HelloWorld"`, func() any { return new(string) }, "HelloWorld"},
		{"string keeps JSON content", `"{\"a\":1}"`, func() any { return new(string) }, `{"a":1}`},
		{"double-encoded JSON into string", `"\"{\\\"a\\\":1}\""`, func() any { return new(string) }, `{"a":1}`},
		{"numeric string into string", `"5"`, func() any { return new(string) }, "5"},
		{"named string type", `"\"abcd1234\""`, func() any { return new(jobID) }, jobID("abcd1234")},
		{"number into string", `4`, func() any { return new(string) }, "4"},
		{"numeric string into int", `"4"`, func() any { return new(int64) }, int64(4)},
		{"double-encoded number", `"\"4\""`, func() any { return new(int64) }, int64(4)},
		{"number", `4`, func() any { return new(int64) }, int64(4)},
		{"bool string", `"true"`, func() any { return new(bool) }, true},
		{"time with offset", `"2019-10-16T17:58:31+00:00"`, func() any { return new(time.Time) }, time.Date(2019, 10, 16, 17, 58, 31, 0, time.UTC)},
		{"double-encoded time", `"\"2019-10-16T17:58:31Z\""`, func() any { return new(time.Time) }, time.Date(2019, 10, 16, 17, 58, 31, 0, time.UTC)},
		{"any from double-encoded object", `"\"{\\\"a\\\":1}\""`, func() any { return new(any) }, map[string]any{"a": float64(1)}},
		{"any from plain string", `"HelloWorld"`, func() any { return new(any) }, "HelloWorld"},
		{"any from double-encoded string", `"\"HelloWorld\""`, func() any { return new(any) }, "HelloWorld"},
		{"raw message unwrapped", `"\"{\\\"a\\\":1}\""`, func() any { return new(json.RawMessage) }, json.RawMessage(`{"a":1}`)},
		{"binary as base64", `"SGVsbG8="`, func() any { return new([]byte) }, []byte("Hello")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRequest(t, `{"Data":{"v":`+tc.data+`},"Metadata":{}}`)
			v := tc.into()
			if err := r.Bind("v", v); err != nil {
				t.Fatalf("Bind: %v", err)
			}
			got := reflect.ValueOf(v).Elem().Interface()
			if tm, ok := got.(time.Time); ok {
				if !tm.Equal(tc.want.(time.Time)) {
					t.Errorf("Bind = %v, want %v", tm, tc.want)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Bind = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestBindErrors(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		into        any
		wantMissing bool
	}{
		{"missing key", `{"Data":{}}`, new(jobMsg), true},
		{"no Data at all", `{"Metadata":{"v":"1"}}`, new(jobMsg), true},
		{"null value", `{"Data":{"v":null}}`, new(string), true},
		{"content is not JSON", `{"Data":{"v":"{ message: \"Message sent\" }"}}`, new(jobMsg), false},
		{"wrong type", `{"Data":{"v":"\"[1,2]\""}}`, new(jobMsg), false},
		{"not a pointer", `{"Data":{"v":"1"}}`, jobMsg{}, false},
		{"nil pointer", `{"Data":{"v":"1"}}`, (*jobMsg)(nil), false},
		{"non-numeric int", `{"Data":{"v":"\"four\""}}`, new(int64), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := mustRequest(t, tc.payload).Bind("v", tc.into)
			if err == nil {
				t.Fatal("Bind succeeded, want an error")
			}
			if got := errors.Is(err, ErrMissing); got != tc.wantMissing {
				t.Errorf("errors.Is(%v, ErrMissing) = %v, want %v", err, got, tc.wantMissing)
			}
		})
	}
}

// TestFixtureR1 uses the host test fixture R1 (functions-custom-handler.md §6):
// double-encoded strings, a numeric string, offset-less and offset times, and
// camel-case keys that only match case-insensitively.
func TestFixtureR1(t *testing.T) {
	r := mustRequest(t, `{"Data":{"myqueueItem":"\"HelloWorld\""},"Metadata":{"dequeueCount":"4","VisibleTime":"2019-10-01T00:00:00","VisibleTimeOffset":"2019-10-01T00:00:00+00:00","helloString":"\"helloMetadata\""}}`)
	want := time.Date(2019, 10, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		get  func() (any, error)
		want any
	}{
		{"DataString myqueueItem", func() (any, error) { return r.DataString("myqueueItem") }, "HelloWorld"},
		{"MetaString helloString", func() (any, error) { return r.MetaString("helloString") }, "helloMetadata"},
		{"MetaInt dequeueCount", func() (any, error) { return r.MetaInt("dequeueCount") }, int64(4)},
		{"MetaInt DequeueCount case-insensitive", func() (any, error) { return r.MetaInt("DequeueCount") }, int64(4)},
		{"MetaTime VisibleTime no offset", func() (any, error) { return r.MetaTime("VisibleTime") }, want},
		{"MetaTime VisibleTimeOffset", func() (any, error) { return r.MetaTime("VisibleTimeOffset") }, want},
		{"Queue body", func() (any, error) {
			m, err := r.Queue("myqueueItem")
			return string(m.Body), err
		}, "HelloWorld"},
		{"Queue dequeue count", func() (any, error) {
			m, err := r.Queue("myqueueItem")
			return m.DequeueCount, err
		}, int64(4)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if err != nil {
				t.Fatal(err)
			}
			if tm, ok := got.(time.Time); ok {
				if !tm.Equal(tc.want.(time.Time)) {
					t.Errorf("got %v, want %v", tm, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestFixtureR2 uses fixture R2: raw strings that are not double-encoded.
func TestFixtureR2(t *testing.T) {
	r := mustRequest(t, `{"Data":{"randomDataKey":"randomDataValue"},"Metadata":{"randomMetaDataKey":"randomMetaDataValue"}}`)
	tests := []struct {
		name string
		get  func(string) (string, error)
		key  string
		want string
	}{
		{"data", r.DataString, "randomDataKey", "randomDataValue"},
		{"metadata", r.MetaString, "randomMetaDataKey", "randomMetaDataValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMetaInt(t *testing.T) {
	tests := []struct {
		value   string
		want    int64
		wantErr bool
	}{
		{`4`, 4, false},
		{`"4"`, 4, false},
		{`"\"4\""`, 4, false},
		{`"9223372036854775807"`, 9223372036854775807, false},
		{`"four"`, 0, true},
		{`"4.5"`, 0, true},
		{`{"n":4}`, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			got, err := mustRequest(t, `{"Metadata":{"DequeueCount":`+tc.value+`}}`).MetaInt("DequeueCount")
			if (err != nil) != tc.wantErr {
				t.Fatalf("MetaInt error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("MetaInt = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	plus2 := time.FixedZone("", 2*60*60)
	tests := []struct {
		in       string
		want     time.Time
		wantZero bool
		wantErr  bool
	}{
		{in: "2016-10-04T10:15:00+00:00", want: time.Date(2016, 10, 4, 10, 15, 0, 0, time.UTC)},
		{in: "2024-05-01T10:15:00.0090125+00:00", want: time.Date(2024, 5, 1, 10, 15, 0, 9012500, time.UTC)},
		{in: "2024-05-01T10:30:00.0123456Z", want: time.Date(2024, 5, 1, 10, 30, 0, 12345600, time.UTC)},
		{in: "2024-05-01T12:15:00+02:00", want: time.Date(2024, 5, 1, 12, 15, 0, 0, plus2)},
		{in: "2019-10-01T00:00:00", want: time.Date(2019, 10, 1, 0, 0, 0, 0, time.UTC)},
		{in: "2019-10-01T00:00:00.5", want: time.Date(2019, 10, 1, 0, 0, 0, 5e8, time.UTC)},
		{in: "0001-01-01T00:00:00", wantZero: true},
		{in: "0001-01-01T00:00:00+00:00", wantZero: true},
		{in: "0001-01-01T00:00:00+02:00", wantZero: true},
		{in: "0001-01-01T00:00:00.0000000Z", wantZero: true},
		{in: "yesterday", wantErr: true},
		{in: "2019-10-01", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseTime error = %v, want error %v", err, tc.wantErr)
			}
			if got.IsZero() != (tc.wantZero || tc.wantErr) {
				t.Fatalf("ParseTime = %v, IsZero = %v", got, got.IsZero())
			}
			if !tc.wantZero && !tc.wantErr && !got.Equal(tc.want) {
				t.Errorf("ParseTime = %v, want %v", got, tc.want)
			}
		})
	}
}
