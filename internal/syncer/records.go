package syncer

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

// The engine's records come back from Blob storage, where anyone with
// access to the container can edit them. Each is read through its decoder
// below, which checks what the engine relies on: the ids that name other
// blobs (runs/<id>.json, jobs/<id>.json, polls/<id>.json) are ids, never
// paths, and the lists it walks are bounded. An error names the field at
// fault, as a JSON path ("files[2].jobId: …"); the caller says which blob.

// MaxIDLength bounds the run and job ids records hold. Run ids (NewRunID)
// are 29 bytes, SharePoint's job ids (GUIDs) 36.
const MaxIDLength = 80

// maxAttempts bounds the poll and requeue counts a record may hold: a job
// is polled at most a few hundred times before STATUS_POLL_MAX_AGE.
const maxAttempts = 1_000_000

// idRE matches an id that names exactly one blob below its folder: no
// slash, no "..", no leading or trailing dot.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// checker collects the first problem of a record.
type checker struct{ err error }

func (c *checker) failf(field, format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
	}
}

// id checks an id the record uses to name a blob; "" is missing when
// required and accepted otherwise.
func (c *checker) id(field, s string, required bool) {
	switch {
	case s == "" && required:
		c.failf(field, "missing")
	case s != "" && (len(s) > MaxIDLength || !idRE.MatchString(s)):
		c.failf(field, "%.90q is not an id (letters, digits, '-', '_' and single dots, at most %d bytes)", s, MaxIDLength)
	}
}

// count checks a count the engine adds to or compares.
func (c *checker) count(field string, n, most int) {
	if n < 0 || n > most {
		c.failf(field, "%d is out of range (0 to %d)", n, most)
	}
}

// DecodeState reads state.json.
func DecodeState(data []byte) (State, error) {
	return decodeChecked(data, func(c *checker, st *State) {
		c.id("lastRunId", st.LastRunID, false)
		if len(st.Resend) > MaxResendUsers {
			c.failf("resendUsers", "%d users; at most %d are carried into a run", len(st.Resend), MaxResendUsers)
		}
		for i, u := range st.Resend {
			if strings.TrimSpace(u.ID) == "" {
				c.failf(fmt.Sprintf("resendUsers[%d].id", i), "missing")
			}
			c.count(fmt.Sprintf("resendUsers[%d].tries", i), u.Tries, MaxResendTries)
		}
	})
}

// DecodeRun reads a run record, runs/<id>.json.
func DecodeRun(data []byte) (Run, error) {
	return decodeChecked(data, func(c *checker, run *Run) {
		c.id("runId", run.ID, true)
		for i, id := range run.JobIDs {
			c.id(fmt.Sprintf("jobIds[%d]", i), id, true)
		}
		for i, f := range run.Files {
			c.id(fmt.Sprintf("files[%d].jobId", i), f.JobID, false)
		}
		for i, l := range run.JobResults {
			c.id(fmt.Sprintf("jobResults[%d].jobId", i), l.JobID, true)
		}
	})
}

// DecodeJobRecord reads a job record, jobs/<id>.json.
func DecodeJobRecord(data []byte) (JobRecord, error) {
	return decodeChecked(data, func(c *checker, rec *JobRecord) {
		c.id("jobId", rec.JobID, true)
		c.id("runId", rec.RunID, false)
		c.id("requeuedAs", rec.RequeuedAs, false)
		if len(rec.Results) > MaxResults {
			c.failf("results", "%d results; a record keeps at most %d", len(rec.Results), MaxResults)
		}
	})
}

// DecodePollState reads a poll record, polls/<jobId>.json.
func DecodePollState(data []byte) (PollState, error) {
	return decodeChecked(data, func(c *checker, ps *PollState) {
		c.id("jobId", ps.JobID, true)
		c.id("runId", ps.RunID, false)
		c.count("attempt", ps.Attempt, maxAttempts)
		c.count("requeues", ps.Requeues, maxAttempts)
	})
}

// current is current-run.json.
type current struct {
	RunID string `json:"runId"`
}

// decodeCurrent returns the run id current-run.json names.
func decodeCurrent(data []byte) (string, error) {
	cur, err := decodeChecked(data, func(c *checker, cur *current) {
		c.id("runId", cur.RunID, true)
	})
	return cur.RunID, err
}

// decodeChecked decodes data into a T (decodeRecord) and checks it; on
// error it returns the zero T.
func decodeChecked[T any](data []byte, check func(*checker, *T)) (T, error) {
	var v, zero T
	if err := decodeRecord(data, &v); err != nil {
		return zero, err
	}
	var c checker
	if check(&c, &v); c.err != nil {
		return zero, c.err
	}
	return v, nil
}

// decodeRecord decodes the JSON object data into v, a pointer to a struct,
// with an error that says where data is wrong: the offset of a syntax
// error, the path of a value of the wrong type, or the member whose own
// decoding (a time) failed. A value quoted in the error is cut short.
func decodeRecord(data []byte, v any) error {
	err := json.Unmarshal(data, v)
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return fmt.Errorf("not JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("not a JSON object but %s", te.Value)
	case errors.As(err, &te):
		return fmt.Errorf("%s: %s where %s is expected", te.Field, te.Value, jsonKind(te.Type))
	}
	return fmt.Errorf("%s: %.200s", culprit(data, v), err.Error())
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// culprit names the member of the JSON object data that the field of v (a
// pointer to a struct) it sets does not accept. encoding/json does not say
// which field an error of the field's own decoding (a time) comes from.
func culprit(data []byte, v any) string {
	var members map[string]json.RawMessage
	if json.Unmarshal(data, &members) != nil {
		return "a member"
	}
	t := reflect.TypeOf(v).Elem()
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.IsExported() && strings.EqualFold(tag, name) &&
				json.Unmarshal(members[name], reflect.New(f.Type).Interface()) != nil {
				return tag
			}
		}
	}
	return "a member"
}
