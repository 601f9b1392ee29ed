package mapping

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/profile"
)

// exampleMapping parses examples/mapping.json, the mapping the README shows.
func exampleMapping(tb testing.TB) *Mapping {
	tb.Helper()
	data, err := os.ReadFile("../../examples/mapping.json")
	if err != nil {
		tb.Fatal(err)
	}
	m, err := Parse(data)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

var (
	benchGiven   = []string{"Anna", "Jörg", "José", "Li", "Siobhán", "Ming", "Olu", "Fatima", "Jan", "Émilie"}
	benchSurname = []string{"Müller", "Smith", "García", "Wang", "O'Brien", "Nakamura", "Okafor", "Kowalski", "Dubois", "Nguyen"}
	benchTitles  = []string{"Engineer", "Senior Engineer", "Sales Manager", "Account Executive", "Head of R&D", "Data Analyst", "Support Specialist"}
	benchDivs    = []string{"Sales", "Research & Development", "Operations", "Finance", "Customer Success"}
)

// benchUser returns a user as Graph's JSON decodes it for the example
// mapping's $select: the ids, scoping switches, the mapped properties
// (some null or absent), the 15 on-premises extension attributes Graph
// always returns (mostly null) and the manager. Users are members with
// enabled accounts, so Apply never skips them.
func benchUser(rng *rand.Rand, i int) profile.User {
	id := fmt.Sprintf("%08x-%04x-4f95-b7c0-4f8ce89dca5e", i, rng.IntN(1<<16))
	given, sur := benchGiven[rng.IntN(len(benchGiven))], benchSurname[rng.IntN(len(benchSurname))]
	upn := fmt.Sprintf("%s.%s%d@contoso.onmicrosoft.com", given, sur, i)
	ext := make(map[string]any, 15)
	for n := 1; n <= 15; n++ {
		ext[fmt.Sprintf("extensionAttribute%d", n)] = nil
	}
	if rng.IntN(3) > 0 {
		ext["extensionAttribute1"] = fmt.Sprintf("EMP%06d", i)
	}
	phones := make([]any, rng.IntN(3))
	for p := range phones {
		phones[p] = fmt.Sprintf("+1 425 555 %04d", rng.IntN(10000))
	}
	props := map[string]any{
		"id":                            id,
		"userPrincipalName":             upn,
		"mail":                          upn,
		"userType":                      "Member",
		"accountEnabled":                true,
		"jobTitle":                      benchTitles[rng.IntN(len(benchTitles))],
		"businessPhones":                phones,
		"onPremisesExtensionAttributes": ext,
		"employeeOrgData":               map[string]any{"division": benchDivs[rng.IntN(len(benchDivs))], "costCenter": fmt.Sprintf("CC-%d", rng.IntN(100))},
		"mobilePhone":                   nil,
		"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter": fmt.Sprint(4000 + rng.IntN(1000)),
	}
	if rng.IntN(2) == 0 {
		props["mobilePhone"] = fmt.Sprintf("+1 206 555 %04d", rng.IntN(10000))
	}
	if rng.IntN(10) == 0 {
		props["employeeOrgData"] = nil
	}
	if rng.IntN(5) == 0 {
		delete(props, "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter") // never set
	}
	switch rng.IntN(20) {
	case 0: // no manager
		props["manager"] = nil
	case 1: // a delta round that did not mention the manager
	default:
		props["manager"] = map[string]any{
			"@odata.type": "#microsoft.graph.user",
			"id":          fmt.Sprintf("%08x-0000-4f95-b7c0-4f8ce89dca5e", rng.IntN(1000)),
			"mail":        fmt.Sprintf("%s.%s@contoso.com", benchGiven[rng.IntN(len(benchGiven))], benchSurname[rng.IntN(len(benchSurname))]),
		}
	}
	return profile.User{ID: id, Props: props}
}

// benchUsers returns n realistic users, always the same ones.
func benchUsers(n int) []profile.User {
	rng := rand.New(rand.NewPCG(1, 2))
	users := make([]profile.User, n)
	for i := range users {
		users[i] = benchUser(rng, i)
	}
	return users
}

// BenchmarkApplyExample runs the example mapping (examples/mapping.json)
// over 4096 different realistic users; one op is one user, so ns/op,
// B/op and allocs/op are per user.
func BenchmarkApplyExample(b *testing.B) {
	m := exampleMapping(b)
	users := benchUsers(4096)
	b.ReportAllocs()
	_, cpu0 := perUserStart()
	i := 0
	for b.Loop() {
		if _, skip := m.Apply(users[i&4095]); skip != NotSkipped {
			b.Fatal(skip)
		}
		i++
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime returns the CPU time the process has used so far, all threads
// (the garbage collector's included); on a busy machine it says more than
// the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perUserStart returns what perUser needs from before the loop.
func perUserStart() (runtime.MemStats, time.Duration) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms, cpuTime()
}

// perUser reports wall and CPU ns, allocations and bytes allocated per
// user; call it after b.Loop with what perUserStart returned before it.
func perUser(b *testing.B, before runtime.MemStats, cpu0 time.Duration, users int) {
	cpu := cpuTime() - cpu0
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	n := float64(b.N) * float64(users)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/user")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/user")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/user")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/user")
}

// BenchmarkApplyPutClose is the per-user path of a full sync after Graph's
// JSON is decoded, as the syncer runs it (internal/syncer, func read):
// 100,000 realistic users through the example mapping, their values copied
// into importfile.KV, importfile.Writer.Put, then Close. One op is the whole
// run; ns/user, allocs/user and B/user are per user.
func BenchmarkApplyPutClose(b *testing.B) {
	const n = 100_000
	m := exampleMapping(b)
	// 4096 different users, each handed over under many keys: 100,000
	// users' maps would not fit in any cache, unlike a streaming read's.
	users := benchUsers(4096)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i*2654435761%(1<<32))
	}
	dir := b.TempDir()
	before, cpu0 := perUserStart()
	for b.Loop() {
		w := importfile.NewWriter(dir, importfile.Limits{})
		kvs := make([]importfile.KV, 0, len(m.Properties))
		for i, key := range keys {
			u := users[i&4095]
			u.ID = key
			rec, skip := m.Apply(u)
			if skip != NotSkipped {
				w.Drop(u.ID, u.Seq, 1)
				continue
			}
			kvs = kvs[:0]
			for _, kv := range rec.Values {
				kvs = append(kvs, importfile.KV{Name: kv.Name, Value: kv.Value})
			}
			if err := w.Put(importfile.Appearance{Key: u.ID, Seq: u.Seq, ID: rec.ID, Values: kvs}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
		w.Abort()
	}
	perUser(b, before, cpu0, n)
}
