package syncer

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilesync/profilesync/internal/testenv"
)

// The record fuzz targets read any bytes as a record of the engine. Their
// seed corpora (testdata/fuzz/FuzzDecode…) hold records the engine wrote
// in a run of its own (a full run whose job ended in
// ImportCompleteWithError: state.json carrying users to send again, the
// run record with its file, job and job result, the poll record mid-way
// and the job record with per-user results), variants with a real Graph
// delta link, a timed-out and requeued job, and records with ids that
// name other blobs ("../mapping", "a/b").
//
// For each: a record the decoder accepts is written as the engine writes
// it (json.MarshalIndent) and decodes again to the same record; an error
// names the field at fault (one of the record's JSON names) or says the
// bytes are not a JSON object.

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"deltaLink":"https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc","updated":"2026-11-28T18:30:03Z"}`))
	fuzzRecord(f, DecodeState)
}

func FuzzDecodeRun(f *testing.F) {
	f.Add([]byte(`{"runId":"20261128T183001.000Z-56a45a84","mode":"full","status":"running","started":"2026-11-28T18:30:01Z","usersRead":0,"usersSent":0,"deltaLinkSaved":false}`))
	fuzzRecord(f, DecodeRun)
}

func FuzzDecodeJobRecord(f *testing.F) {
	f.Add([]byte(`{"jobId":"00000000-0000-0000-0000-000000000001","state":"Succeeded","errorCode":0,"error":"NoError","attempts":1,"recorded":"2026-11-28T18:30:08Z"}`))
	fuzzRecord(f, DecodeJobRecord)
}

func FuzzDecodePollState(f *testing.F) {
	f.Add([]byte(`{"jobId":"00000000-0000-0000-0000-000000000001","queuedAt":"2026-11-28T18:30:02Z","attempt":1,"scheduled":true}`))
	fuzzRecord(f, DecodePollState)
}

func FuzzDecodeCurrent(f *testing.F) {
	f.Add([]byte(`{"runId":"20261128T183001.000Z-56a45a84"}`))
	fuzzRecord(f, func(data []byte) (current, error) {
		id, err := decodeCurrent(data)
		return current{RunID: id}, err
	})
}

// fuzzRecord runs the record properties over decode.
func fuzzRecord[T any](f *testing.F, decode func([]byte) (T, error)) {
	names := jsonNames(reflect.TypeFor[T]())
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decode(data)
		if err != nil {
			checkNamesField(t, err, names)
			return
		}
		again := reencode(t, v, decode)
		if !bytes.Equal(mustMarshal(t, again), mustMarshal(t, v)) {
			t.Fatalf("re-encoded record decodes to\n%s\nwant\n%s", mustMarshal(t, again), mustMarshal(t, v))
		}
	})
}

// reencode writes v as the engine writes records and decodes it again.
func reencode[T any](t *testing.T, v T, decode func([]byte) (T, error)) T {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("a decoded record does not encode (the engine would write an empty blob): %v\n%+v", err, v)
	}
	again, err := decode(data)
	if err != nil {
		t.Fatalf("the re-encoded record is refused: %v\n%s", err, data)
	}
	return again
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkNamesField fails unless err names one of names or says the input
// is not a JSON object.
func checkNamesField(t *testing.T, err error, names []string) {
	t.Helper()
	msg := err.Error()
	if strings.HasPrefix(msg, "not JSON: ") || strings.HasPrefix(msg, "not a JSON object") {
		return
	}
	field := msg // "resendUsers[3].id: …", "jobId \"x\" is not …"
	if i := strings.IndexAny(msg, ":[ "); i >= 0 {
		field = msg[:i]
	}
	for _, n := range names {
		if strings.EqualFold(field, n) || strings.HasPrefix(field, n+".") {
			return
		}
	}
	t.Fatalf("error %q does not start with a field of the record (%v)", msg, names)
}

// jsonNames lists the JSON names of the fields of t, a struct.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" && tag != "-" {
			names = append(names, tag)
		}
	}
	return names
}

// FuzzParsePollMessage reads any bytes as a status queue message (seeds in
// testdata/fuzz/FuzzParsePollMessage: the messages the engine and the
// poller schedule, a message as the docs' example writes it, ids in braces
// and upper case, ids that are paths). A message it accepts names its job
// by a GUID in canonical form, polls at least once, and encoded as the
// engine encodes messages parses to the same message; a message it refuses
// is dropped (ErrDrop) with an error naming the field.
func FuzzParsePollMessage(f *testing.F) {
	f.Add([]byte(`{"jobId":"00000000-0000-0000-0000-000000000001","runId":"20261128T183001.000Z-56a45a84","queuedAt":"2026-11-28T18:30:04Z","attempt":1}`))
	names := jsonNames(reflect.TypeFor[PollMessage]())
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParsePollMessage(body)
		if err != nil {
			if !errors.Is(err, ErrDrop) {
				t.Fatalf("error %v does not drop the message", err)
			}
			msg := strings.TrimPrefix(err.Error(), ErrDrop.Error()+": ")
			if strings.HasPrefix(msg, "the message has no jobId") {
				return
			}
			checkNamesField(t, errors.New(strings.TrimPrefix(msg, "not a status message: ")), names)
			return
		}
		if id, err := uuid.Parse(m.JobID); err != nil || id.String() != m.JobID {
			t.Fatalf("jobId %q is not a canonical GUID", m.JobID)
		}
		if m.Attempt < 1 {
			t.Fatalf("attempt %d", m.Attempt)
		}
		body2, _ := json.Marshal(m)
		m2, err := ParsePollMessage(body2)
		if err != nil || !m2.QueuedAt.Equal(m.QueuedAt) {
			t.Fatalf("re-encoded message %s: %+v, %v", body2, m2, err)
		}
		m2.QueuedAt = m.QueuedAt
		if m2 != m {
			t.Fatalf("re-encoded message %s parses to %+v, want %+v", body2, m2, m)
		}
	})
}

// TestRecordDecodersBoundMemory feeds each decoder 10 MB records of the
// shapes that cost most (one huge string, a huge time, many files or
// results, deep nesting in an unknown member): each allocates a bounded
// multiple of its input, and says what is wrong in a short error. (The
// store refuses records above their limits unread: limits.go.)
func TestRecordDecodersBoundMemory(t *testing.T) {
	const size = 10 << 20
	huge := strings.Repeat("x", size)
	many := func(item string) string {
		var b strings.Builder
		for b.Len() < size {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(item)
		}
		return b.String()
	}
	decoders := map[string]func([]byte) error{
		"state": func(b []byte) error { _, err := DecodeState(b); return err },
		"run":   func(b []byte) error { _, err := DecodeRun(b); return err },
		"job":   func(b []byte) error { _, err := DecodeJobRecord(b); return err },
		"poll":  func(b []byte) error { _, err := DecodePollState(b); return err },
		"message": func(b []byte) error {
			_, err := ParsePollMessage(b)
			return err
		},
	}
	// most is the bound, in allocated bytes per input byte: encoding/json
	// decodes an array of small objects into a slice it grows by doubling,
	// which costs up to about 36 bytes per byte of a 13-byte element (an
	// 80-byte FileRecord, grown; 41 with the race detector).
	cases := []struct {
		decoder, name, data, wantErr string
		most                         int
	}{
		{"state", "huge delta link", `{"deltaLink":"` + huge + `"}`, "", 4},
		{"state", "huge time", `{"updated":"` + huge + `"}`, "updated: ", 16},
		{"state", "many users to send again", `{"resendUsers":[` + many(`{"id":"u"}`) + `]}`, "resendUsers: ", 48},
		{"run", "many files", `{"runId":"r","files":[` + many(`{"name":"f","jobId":"j"}`) + `]}`, "", 48},
		{"run", "a bad id after many files", `{"runId":"r","files":[` + many(`{"name":"f"}`) + `,{"jobId":"../x"}]}`, "jobId: ", 48},
		{"job", "many results", `{"jobId":"j","results":[` + many(`{"code":"c","message":"m"}`) + `]}`, "results: ", 48},
		{"job", "huge message", `{"jobId":"j","errorMessage":"` + huge + `"}`, "", 4},
		{"poll", "deep nesting", `{"jobId":"j","x":` + strings.Repeat("[", size/2) + strings.Repeat("]", size/2) + `}`, "not JSON: ", 4},
		{"poll", "many property map entries", `{"jobId":"j","propertyMap":{` + many(`"a":"b"`) + `}}`, "", 4},
		{"message", "huge job id", `{"jobId":"` + huge + `"}`, "jobId ", 4},
	}
	for _, c := range cases {
		var err error
		alloc := testenv.Allocated(func() { err = decoders[c.decoder]([]byte(c.data)) })
		t.Logf("%s, %s: %d bytes allocated for %d (%.1f per byte): %.100v", c.decoder, c.name, alloc, len(c.data), float64(alloc)/float64(len(c.data)), err)
		if limit := uint64(c.most * len(c.data)); alloc > limit {
			t.Errorf("%s, %s: %d bytes allocated, want at most %d", c.decoder, c.name, alloc, limit)
		}
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s, %s: %.200v", c.decoder, c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s, %s: error %.200v, want one naming %q", c.decoder, c.name, err, c.wantErr)
		case err != nil && len(err.Error()) > 1000:
			t.Errorf("%s, %s: a %d-byte error", c.decoder, c.name, len(err.Error()))
		}
	}
}

// TestRecordsNameTheirBlobs: a record whose id is not the one its blob's
// name says is not written back under that id.
func TestRecordsNameTheirBlobs(t *testing.T) {
	for _, tc := range []struct {
		data, want string
	}{
		{`{"jobId":"../mapping"}`, `jobId: "../mapping" is not an id`},
		{`{"jobId":"a/b","runId":"r"}`, `jobId: "a/b" is not an id`},
		{`{"jobId":"j","runId":".."}`, `runId: ".." is not an id`},
		{`{"jobId":"j","attempt":-1}`, `attempt: -1 is out of range`},
		{`{"jobId":"j","queuedAt":"yesterday"}`, `queuedAt: parsing time`},
		{`{"jobId":"j","attempt":"2"}`, `attempt: string where an integer is expected`},
		{`[]`, `not a JSON object but array`},
		{`{"jobId":"j"`, `not JSON: unexpected end of JSON input`},
	} {
		_, err := DecodePollState([]byte(tc.data))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("DecodePollState(%s) = %v, want %q…", tc.data, err, tc.want)
		}
	}
	for _, tc := range []struct {
		data, want string
	}{
		{`{"runId":"r","jobIds":["j","x/y"]}`, `jobIds[1]: "x/y" is not an id`},
		{`{"runId":"r","files":[{"jobId":"ok"},{"jobId":"../../z"}]}`, `files[1].jobId: "../../z" is not an id`},
		{`{"runId":"r","jobResults":[{"state":"Error"}]}`, `jobResults[0].jobId: missing`},
		{`{"status":"running"}`, `runId: missing`},
		{`{"runId":"r","files":[{"records":"x"}]}`, `files.records: string where an integer is expected`},
	} {
		_, err := DecodeRun([]byte(tc.data))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("DecodeRun(%s) = %v, want %q…", tc.data, err, tc.want)
		}
	}
	if _, err := DecodeState([]byte(`{"resendUsers":[{"id":"a"},{"id":" "}]}`)); err == nil || err.Error() != "resendUsers[1].id: missing" {
		t.Errorf("DecodeState with an empty user id: %v", err)
	}
	if _, err := DecodeJobRecord([]byte(`{"jobId":"j","requeuedAs":"j/../k"}`)); err == nil || !strings.HasPrefix(err.Error(), "requeuedAs: ") {
		t.Errorf("DecodeJobRecord with a path for requeuedAs: %v", err)
	}

	// The poller refuses a poll record that names another job: it would
	// write that job's record.
	f := newPollFixture(t, "j1")
	ps, _ := json.Marshal(PollState{JobID: "j2", QueuedAt: f.clock, Attempt: 1})
	f.blobs.put(PollsPrefix+"j1.json", ps)
	if _, err := f.p.Poll(t.Context(), PollMessage{JobID: "j1", Attempt: 1}); !errors.Is(err, ErrDrop) || !strings.Contains(err.Error(), "names job j2") {
		t.Errorf("poll with a record naming another job: %v", err)
	}
	if _, ok := f.blobs.data[PollsPrefix+"j2.json"]; ok {
		t.Error("the poller wrote the poll record of the job the tampered record names")
	}

	// A run closing an interrupted run whose record says another id does
	// not write that id's record.
	e := newFixture(t)
	e.blobs.put(CurrentBlob, []byte(`{"runId":"20261128T183001.000Z-aaaaaaaa"}`))
	rec, _ := json.Marshal(Run{ID: "20261128T183001.000Z-bbbbbbbb", Status: StatusRunning, Started: time.Now()})
	e.blobs.put(RunsPrefix+"20261128T183001.000Z-aaaaaaaa.json", rec)
	if _, err := e.eng.Sync(t.Context(), Options{Trigger: "timer"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.blobs.data[RunsPrefix+"20261128T183001.000Z-bbbbbbbb.json"]; ok {
		t.Error("closing an interrupted run wrote the record its tampered record names")
	}
}
