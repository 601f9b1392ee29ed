package importfile

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// benchRecords returns n realistic records of the example mapping
// (examples/mapping.json): seven properties in target order, a few empty,
// some names and values not ASCII.
func benchRecords(n int) [][]KV {
	rng := rand.New(rand.NewPCG(3, 4))
	titles := []string{"Engineer", "Senior Engineer", "Sales Manager", "Account Executive", "Head of R&D", "Data Analyst"}
	divs := []string{"Sales", "Research & Development", "Operations", "Finance", "Customer Success"}
	names := []string{"anna.mueller", "jörg.schmidt", "josé.garcía", "li.wang", "siobhán.o'brien", "émilie.dubois"}
	out := make([][]KV, n)
	for i := range out {
		phones := ""
		switch rng.IntN(3) {
		case 1:
			phones = fmt.Sprintf("+1 425 555 %04d", rng.IntN(10000))
		case 2:
			phones = fmt.Sprintf("+1 425 555 %04d,+1 425 555 %04d", rng.IntN(10000), rng.IntN(10000))
		}
		mobile := ""
		if rng.IntN(2) == 0 {
			mobile = fmt.Sprintf("+1 206 555 %04d", rng.IntN(10000))
		}
		out[i] = []KV{
			{"Building", titles[rng.IntN(len(titles))]},
			{"CostCenter", fmt.Sprint(4000 + rng.IntN(1000))},
			{"Division", divs[rng.IntN(len(divs))]},
			{"Ext1", fmt.Sprintf("EMP%06d", i)},
			{"HomePhone", mobile},
			{"ManagerEmail", names[rng.IntN(len(names))] + "@contoso.com"},
			{"Phones", phones},
		}
	}
	return out
}

// putCloseCase is one shape of a run: every every-th user a repeat of an
// earlier user (newer) and a drop of another one.
type putCloseCase struct {
	name    string
	repeats int // 1 in repeats users is followed by a newer sighting of an earlier user; 0: none
	drops   int // 1 in drops users is followed by a drop of an earlier user; 0: none
}

var putCloseCases = []putCloseCase{
	{"repeats=0%", 0, 0},
	{"repeats=1%,drops=1%", 100, 100},
	{"repeats=10%", 10, 0},
}

// putCloseUsers is the number of users per op of BenchmarkPutClose.
const putCloseUsers = 100_000

// putCloseRun feeds one run of putCloseUsers users into w the way the
// syncer does (Put per user, Drop per skipped sighting) and closes it.
func putCloseRun(b *testing.B, c putCloseCase, keys []string, recs [][]KV,
	put func(Appearance) error, drop func(string, uint64, uint8), close func() ([]File, error)) []File {
	seq := uint64(0)
	for i, k := range keys {
		seq++
		if err := put(Appearance{Key: k, Seq: seq, ID: k, Values: recs[i%len(recs)]}); err != nil {
			b.Fatal(err)
		}
		if c.repeats > 0 && i%c.repeats == c.repeats-1 {
			seq++
			old := keys[i/2]
			if err := put(Appearance{Key: old, Seq: seq, ID: old, Values: recs[(i+7)%len(recs)]}); err != nil {
				b.Fatal(err)
			}
		}
		if c.drops > 0 && i%c.drops == c.drops/2 {
			seq++
			drop(keys[i/3], seq, 2)
		}
	}
	files, err := close()
	if err != nil {
		b.Fatal(err)
	}
	return files
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

// BenchmarkPutClose is the writer's whole part of a sync: 100,000 users
// with realistic records through Put (and Drop), then Close, which
// compacts the files when users were repeated. ns/user, allocs/user and
// B/user are per user of the run.
func BenchmarkPutClose(b *testing.B) {
	keys := make([]string, putCloseUsers)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i*2654435761%(1<<32))
	}
	recs := benchRecords(4096)
	for _, c := range putCloseCases {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			before, cpu0 := perUserStart()
			for b.Loop() {
				w := NewWriter(dir, Limits{})
				putCloseRun(b, c, keys, recs, w.Put, w.Drop, w.Close)
				w.Abort()
			}
			perUser(b, before, cpu0, putCloseUsers)
		})
	}
}
