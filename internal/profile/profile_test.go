package profile

import (
	"encoding/json"
	"testing"
)

func TestIDTypes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want IDType
		num  int
	}{{"CloudId", CloudID, 1}, {"principalname", PrincipalName, 2}, {"EMAIL", Email, 0}} {
		got, err := ParseIDType(tc.in)
		if err != nil || got != tc.want || int(got) != tc.num {
			t.Errorf("ParseIDType(%q) = %v (%d), %v", tc.in, got, int(got), err)
		}
		if back, _ := ParseIDType(got.String()); back != got {
			t.Errorf("%v does not round-trip through its name", got)
		}
	}
	if _, err := ParseIDType("Upn"); err == nil {
		t.Error("Upn accepted")
	}
}

func TestJobStates(t *testing.T) {
	for s, done := range map[JobState]bool{Unknown: false, Submitted: false, Processing: false, Queued: false, Succeeded: true, Error: true, TimedOut: true} {
		if s.Done() != done {
			t.Errorf("%v.Done() = %v", s, s.Done())
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back JobState
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("%v -> %s -> %v (%v)", s, b, back, err)
		}
	}
	if ImportCompleteWithError.String() != "ImportCompleteWithError" || JobError(99).String() != "JobError(99)" {
		t.Error("job error names")
	}
}
