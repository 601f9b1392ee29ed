package azfunc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Timer is the timer trigger value (the WebJobs TimerInfo), decoded with
// Request.Bind from the binding named in function.json:
//
//	{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":…,"Next":…,"LastUpdated":…},"IsPastDue":false}
//
// ScheduleStatus is nil when the function's useMonitor is false (or the
// schedule fires more than once a minute). It carries the status from before
// this run: Next is the occurrence being run now. IsPastDue is true for the
// single catch-up run the host makes after missing occurrences while down.
type Timer struct {
	Schedule struct {
		AdjustForDST bool
	}
	ScheduleStatus *ScheduleStatus
	IsPastDue      bool
}

// FirstRun reports whether the schedule monitor says the timer never ran
// before: Last is .NET's DateTime.MinValue ("0001-01-01T00:00:00"). Without a
// ScheduleStatus nothing is known and FirstRun reports false.
func (t Timer) FirstRun() bool {
	return t.ScheduleStatus != nil && t.ScheduleStatus.Last.IsZero()
}

// ScheduleStatus is the timer's schedule monitor record. Its times arrive
// with or without an offset and with fractional seconds (see ParseTime); a
// never-reached time ("0001-01-01T00:00:00") decodes as the zero time.Time.
type ScheduleStatus struct {
	Last, Next, LastUpdated time.Time
}

// UnmarshalJSON decodes the host's serialization of ScheduleStatus, whose
// offset-less times encoding/json's time.Time would reject.
// A time that is not one names its field.
func (s *ScheduleStatus) UnmarshalJSON(b []byte) error {
	var aux struct {
		Last, Next, LastUpdated json.RawMessage
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return fmt.Errorf("decoding schedule status: %w", err)
	}
	var out ScheduleStatus
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *time.Time
	}{{"Last", aux.Last, &out.Last}, {"Next", aux.Next, &out.Next}, {"LastUpdated", aux.LastUpdated, &out.LastUpdated}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		str, err := decodeString(f.raw)
		if err == nil {
			*f.dst, err = ParseTime(str)
		}
		if err != nil {
			return fmt.Errorf("decoding schedule status: %s: %w", f.name, err)
		}
	}
	*s = out
	return nil
}
