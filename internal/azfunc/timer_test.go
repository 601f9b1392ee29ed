package azfunc

import (
	"testing"
	"time"
)

func TestTimer(t *testing.T) {
	utc := func(s string) time.Time {
		t.Helper()
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	const sys = `"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":"2024-05-01T10:30:00.0123456Z","RandGuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`
	tests := []struct {
		name      string
		payload   string
		wantNil   bool // ScheduleStatus null
		want      ScheduleStatus
		pastDue   bool
		firstRun  bool
		adjustDST bool
	}{
		{
			name:      "normal, code-derived with fractional seconds",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-05-01T10:15:00.0090125+00:00","Next":"2024-05-01T10:30:00+00:00","LastUpdated":"2024-05-01T10:15:00.0090125+00:00"},"IsPastDue":false}},` + sys + `}`,
			want:      ScheduleStatus{Last: utc("2024-05-01T10:15:00.0090125Z"), Next: utc("2024-05-01T10:30:00Z"), LastUpdated: utc("2024-05-01T10:15:00.0090125Z")},
			adjustDST: true,
		},
		{
			name:      "docs example",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2016-10-04T10:15:00+00:00","LastUpdated":"2016-10-04T10:16:00+00:00","Next":"2016-10-04T10:20:00+00:00"},"IsPastDue":false}},"Metadata":{}}`,
			want:      ScheduleStatus{Last: utc("2016-10-04T10:15:00Z"), Next: utc("2016-10-04T10:20:00Z"), LastUpdated: utc("2016-10-04T10:16:00Z")},
			adjustDST: true,
		},
		{
			name:      "first run",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00+00:00","Next":"2024-05-01T10:30:00+00:00","LastUpdated":"0001-01-01T00:00:00+00:00"},"IsPastDue":false}},` + sys + `}`,
			want:      ScheduleStatus{Next: utc("2024-05-01T10:30:00Z")},
			firstRun:  true,
			adjustDST: true,
		},
		{
			name:      "first run on a machine east of UTC",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00+02:00","Next":"2024-05-01T12:30:00+02:00","LastUpdated":"0001-01-01T00:00:00+02:00"},"IsPastDue":false}},"Metadata":{}}`,
			want:      ScheduleStatus{Next: utc("2024-05-01T10:30:00Z")},
			firstRun:  true,
			adjustDST: true,
		},
		{
			name:      "offset-less times",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-05-01T10:15:00.123","Next":"2024-05-01T10:30:00","LastUpdated":"0001-01-01T00:00:00"},"IsPastDue":false}},"Metadata":{}}`,
			want:      ScheduleStatus{Last: utc("2024-05-01T10:15:00.123Z"), Next: utc("2024-05-01T10:30:00Z")},
			adjustDST: true,
		},
		{
			name:    "ScheduleStatus null (useMonitor false)",
			payload: `{"Data":{"timer":{"Schedule":{"AdjustForDST":false},"ScheduleStatus":null,"IsPastDue":false}},` + sys + `}`,
			wantNil: true,
		},
		{
			name:      "past due catch-up",
			payload:   `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-05-01T08:00:00+00:00","Next":"2024-05-01T08:15:00+00:00","LastUpdated":"2024-05-01T08:00:00.5+00:00"},"IsPastDue":true}},` + sys + `}`,
			want:      ScheduleStatus{Last: utc("2024-05-01T08:00:00Z"), Next: utc("2024-05-01T08:15:00Z"), LastUpdated: utc("2024-05-01T08:00:00.5Z")},
			pastDue:   true,
			adjustDST: true,
		},
		{
			name:      "timer sent as a JSON string",
			payload:   `{"Data":{"timer":"{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":null,\"IsPastDue\":true}"},"Metadata":{}}`,
			wantNil:   true,
			pastDue:   true,
			adjustDST: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tm Timer
			if err := mustRequest(t, tc.payload).Bind("timer", &tm); err != nil {
				t.Fatalf("Bind: %v", err)
			}
			if tm.IsPastDue != tc.pastDue {
				t.Errorf("IsPastDue = %v, want %v", tm.IsPastDue, tc.pastDue)
			}
			if tm.Schedule.AdjustForDST != tc.adjustDST {
				t.Errorf("AdjustForDST = %v, want %v", tm.Schedule.AdjustForDST, tc.adjustDST)
			}
			if tm.FirstRun() != tc.firstRun {
				t.Errorf("FirstRun = %v, want %v", tm.FirstRun(), tc.firstRun)
			}
			if tc.wantNil {
				if tm.ScheduleStatus != nil {
					t.Fatalf("ScheduleStatus = %+v, want nil", *tm.ScheduleStatus)
				}
				return
			}
			if tm.ScheduleStatus == nil {
				t.Fatal("ScheduleStatus = nil")
			}
			got := *tm.ScheduleStatus
			for _, f := range []struct {
				field     string
				got, want time.Time
			}{
				{"Last", got.Last, tc.want.Last},
				{"Next", got.Next, tc.want.Next},
				{"LastUpdated", got.LastUpdated, tc.want.LastUpdated},
			} {
				if !f.got.Equal(f.want) || f.got.IsZero() != f.want.IsZero() {
					t.Errorf("%s = %v, want %v", f.field, f.got, f.want)
				}
			}
		})
	}
}

func TestTimerErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload string
	}{
		{"bad time", `{"Data":{"timer":{"ScheduleStatus":{"Last":"yesterday"}}}}`},
		{"time as number", `{"Data":{"timer":{"ScheduleStatus":{"Next":20240501}}}}`},
		{"status not an object", `{"Data":{"timer":{"ScheduleStatus":"soon"}}}`},
		{"before .NET's MinValue", `{"Data":{"timer":{"ScheduleStatus":{"Next":"0000-01-01T00:00:00+01:00"}}}}`},
		{"timer missing", `{"Data":{"other":{}}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tm Timer
			if err := mustRequest(t, tc.payload).Bind("timer", &tm); err == nil {
				t.Errorf("Bind succeeded with %+v, want an error", tm)
			}
		})
	}
}

func TestFirstRunWithoutStatus(t *testing.T) {
	tests := []struct {
		name  string
		timer Timer
		want  bool
	}{
		{"no status", Timer{}, false},
		{"zero Last", Timer{ScheduleStatus: &ScheduleStatus{}}, true},
		{"ran before", Timer{ScheduleStatus: &ScheduleStatus{Last: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}}, false},
	}
	for _, tc := range tests {
		if got := tc.timer.FirstRun(); got != tc.want {
			t.Errorf("%s: FirstRun = %v, want %v", tc.name, got, tc.want)
		}
	}
}
