package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// randValue returns a value of any shape Props may hold, and some it
// should not.
func randValue(rng *rand.Rand, depth int) any {
	switch rng.IntN(16) {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2:
		return []float64{0, -1.5, 1e21, 1e-7, 42, math.MaxFloat64, 3.0000000000000004}[rng.IntN(7)]
	case 3:
		return json.Number([]string{"42", "1.50", "-0", "1e3"}[rng.IntN(4)])
	case 4:
		return rng.IntN(1000) - 500
	case 5:
		return int64(rng.Int64())
	case 6:
		return time.Date(2000+rng.IntN(30), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), 0, rng.IntN(60), rng.IntN(2)*1e8,
			time.FixedZone("z", 3600*(rng.IntN(5)-2)))
	case 7: // date-time text of every form
		return []string{
			"2014-01-01T00:00:00Z", "2014-01-01T00:00:00.5Z", "2014-01-01T02:00:00+02:00", "2014-01-01",
			"2014-02-30T00:00:00Z", "abcdefghijklmnopqrsZ", "2014-01-01T00:00:00z", "2014-01-01T00:00:00",
			"not a date", "", "2014-13-01", "2014-01-01T00:00:00.123456789-07:30",
		}[rng.IntN(12)]
	case 8, 9:
		if depth < 1 {
			items := make([]any, rng.IntN(5))
			for i := range items {
				if rng.IntN(3) == 0 {
					items[i] = randValue(rng, depth+1)
				} else {
					items[i] = randString(rng)
				}
			}
			return items
		}
	case 10:
		items := make([]string, rng.IntN(4))
		for i := range items {
			items[i] = randString(rng)
		}
		return items
	case 11:
		if depth < 1 {
			m := map[string]any{}
			for _, f := range []string{"division", "costCenter", "extensionAttribute1", "extensionAttribute15", "mail", "employeeHireDate"} {
				if rng.IntN(2) == 0 {
					m[f] = randValue(rng, depth+1)
				}
			}
			return m
		}
	case 12:
		return struct{ X int }{1}
	}
	return randString(rng)
}

func randString(rng *rand.Rand) string {
	return []string{"", "x", "Sales", "+1 425 555 0100", "Müller, Jörg", "a,b", "\"quoted\"", "中文", "\xff"}[rng.IntN(9)]
}

// randSources are the Graph paths random mappings draw from: every user
// property, complex fields, the manager's properties, an extension, and
// paths only a hand-built Mapping holds.
var randSources = func() []string {
	var out []string
	for name, k := range userProps {
		switch k {
		case kindComplex:
			for _, f := range complexFields[name] {
				out = append(out, name+"."+f)
			}
			out = append(out, name+".nope")
		case kindManager:
			out = append(out, "manager.mail", "manager.businessPhones", "manager.employeeHireDate", "manager.accountEnabled", "manager.createdDateTime", "manager")
		default:
			out = append(out, name)
		}
	}
	slices.Sort(out) // the same sources in every run
	return append(out, "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter", "unknownDate", "jobTitle.sub", "", "a.b.c", "lastDate")
}()

func randMapping(rng *rand.Rand) *Mapping {
	m := &Mapping{
		IDType:          []profile.IDType{profile.CloudID, profile.PrincipalName, profile.Email, 7}[rng.IntN(4)],
		IncludeGuests:   rng.IntN(2) == 0,
		IncludeDisabled: rng.IntN(2) == 0,
	}
	for i := range rng.IntN(12) {
		m.Properties = append(m.Properties, Property{
			Target:    fmt.Sprintf("P%d", i),
			Source:    randSources[rng.IntN(len(randSources))],
			Separator: []string{",", "", " / ", ";"}[rng.IntN(4)],
		})
	}
	return m
}

func randUser(rng *rand.Rand, m *Mapping) profile.User {
	props := map[string]any{}
	for _, p := range m.Properties {
		top, field, dotted := strings.Cut(p.Source, ".")
		switch {
		case rng.IntN(8) == 0: // absent
		case dotted && rng.IntN(4) != 0:
			obj := map[string]any{}
			if rng.IntN(6) != 0 {
				obj[field] = randValue(rng, 1)
			}
			if o, ok := props[top].(map[string]any); ok {
				o[field] = obj[field]
			} else {
				props[top] = obj
			}
		default:
			props[top] = randValue(rng, 0)
		}
	}
	for key, vals := range map[string][]any{
		"userType":          {"Member", "Guest", "guest", "GUEST", nil, 7},
		"accountEnabled":    {true, false, nil, "false"},
		"id":                {"4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", "", nil, 1},
		"userPrincipalName": {"a@contoso.com", "", nil},
		"mail":              {"a@contoso.com", "", nil},
	} {
		if rng.IntN(5) != 0 {
			props[key] = vals[rng.IntN(len(vals))]
		}
	}
	id := ""
	if rng.IntN(5) != 0 {
		id = fmt.Sprintf("user-%d", rng.IntN(100))
	}
	return profile.User{ID: id, Removed: rng.IntN(20) == 0, Props: props}
}

// TestApplyMatchesOracle compares Apply and ApplyInto with Apply as it was
// (oracle_test.go) on random mappings, parsed and hand-built, and random
// users: every record and skip reason must be the same.
func TestApplyMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	example := exampleMapping(t)
	users := benchUsers(500)
	var reused Record
	check := func(m *Mapping, u profile.User) {
		t.Helper()
		want, wantSkip := oldApply(m, u)
		got, skip := m.Apply(u)
		if skip != wantSkip || !reflect.DeepEqual(got, want) {
			t.Fatalf("mapping %+v\nuser %+v\nApply = %+v (skip %q)\noracle %+v (skip %q)", m, u, got, skip, want, wantSkip)
		}
		skip = m.ApplyInto(&reused, u)
		if skip != wantSkip || reused.ID != want.ID || len(reused.Values) != len(want.Values) ||
			len(want.Values) > 0 && !reflect.DeepEqual(reused.Values, want.Values) {
			t.Fatalf("mapping %+v\nuser %+v\nApplyInto = %+v (skip %q)\noracle %+v (skip %q)", m, u, reused, skip, want, wantSkip)
		}
	}
	for _, u := range users {
		check(example, u)
	}
	for range 3000 {
		m := randMapping(rng)
		for range 20 {
			check(m, randUser(rng, m))
		}
	}
}

// TestDateTimeNamesEndInDate backs isDateTime's shortcut.
func TestDateTimeNamesEndInDate(t *testing.T) {
	for name, k := range userProps {
		if k == kindDateTime && !strings.HasSuffix(name, "Date") && !strings.HasSuffix(name, "DateTime") {
			t.Errorf("date-time property %q ends neither in Date nor in DateTime", name)
		}
		if got := isDateTime(name); got != (k == kindDateTime) {
			t.Errorf("isDateTime(%q) = %v", name, got)
		}
	}
}

// BenchmarkApplyExampleOracle is BenchmarkApplyExample with Apply as it
// was (oracle_test.go), for comparison in one run.
func BenchmarkApplyExampleOracle(b *testing.B) {
	m := exampleMapping(b)
	users := benchUsers(4096)
	b.ReportAllocs()
	_, cpu0 := perUserStart()
	i := 0
	for b.Loop() {
		if _, skip := oldApply(m, users[i&4095]); skip != NotSkipped {
			b.Fatal(skip)
		}
		i++
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// TestApplyAllocations pins the allocations per user: the record's values
// (none with ApplyInto and a record reused) and one per collection of two
// or more items.
func TestApplyAllocations(t *testing.T) {
	m := exampleMapping(t)
	u := benchUsers(1)[0]
	u.Props["userType"] = "Guest"
	if got := testing.AllocsPerRun(100, func() { m.Apply(u) }); got != 0 {
		t.Errorf("a skipped user: Apply allocates %v times, want 0", got)
	}
	u.Props["userType"] = "Member"
	for _, tc := range []struct {
		phones              []any
		apply, applyReusing float64
	}{
		{[]any{}, 1, 0},
		{[]any{"+1 425 555 0100"}, 1, 0},
		{[]any{"+1 425 555 0100", nil, "+1 425 555 0101"}, 2, 1},
	} {
		u.Props["businessPhones"] = tc.phones
		if got := testing.AllocsPerRun(100, func() { m.Apply(u) }); got != tc.apply {
			t.Errorf("%d phones: Apply allocates %v times, want %v", len(tc.phones), got, tc.apply)
		}
		var rec Record
		if got := testing.AllocsPerRun(100, func() { m.ApplyInto(&rec, u) }); got != tc.applyReusing {
			t.Errorf("%d phones: ApplyInto allocates %v times, want %v", len(tc.phones), got, tc.applyReusing)
		}
	}
}
