package m365sim

import (
	"runtime/metrics"
	"sync"
	"time"
)

// Stats is the body of GET /_sim/stats: the simulator's own serving rate
// since Start finished building the tenant, or since the last POST
// /_sim/stats/reset. A benchmark reads it to tell the simulator's cost from
// the handler's: users served per busy second, simulator CPU seconds.
type Stats struct {
	Since          time.Time `json:"since"`
	ElapsedSeconds float64   `json:"elapsedSeconds"`

	GraphRequests int64 `json:"graphRequests"` // requests Graph (/v1.0) answered; a $batch counts once; requests answered by injected faults or refused by authentication do not count
	GraphErrors   int64 `json:"graphErrors"`   // of which with a status >= 400
	BatchItems    int64 `json:"batchItems"`    // requests run inside $batch
	Pages         int64 `json:"pages"`         // /users and /users/delta pages answered 200
	UserItems     int64 `json:"userItems"`     // user objects in Graph answers (expanded managers not counted)

	// BusySeconds is the wall time inside Graph's handlers, summed over
	// requests, without the injected page latency (PageLatencySeconds) and
	// fault delays on $batch items. It includes writing answers to the
	// connection, and waiting for a CPU when more requests run than there
	// are cores.
	BusySeconds float64 `json:"busySeconds"`
	// ActiveSeconds is the wall time during which at least one Graph
	// request was being worked on (the union of the intervals BusySeconds
	// adds up): ElapsedSeconds minus the time Graph sat idle or only waited
	// injected latency.
	ActiveSeconds      float64 `json:"activeSeconds"`
	PageLatencySeconds float64 `json:"pageLatencySeconds"`

	// CPU time of the whole simulator process (Graph, SharePoint, the
	// garbage collector), from getrusage(RUSAGE_SELF); absent off Unix.
	CPUSeconds       float64 `json:"cpuSeconds"`
	CPUUserSeconds   float64 `json:"cpuUserSeconds"`
	CPUSystemSeconds float64 `json:"cpuSystemSeconds"`
	// Of the CPU time, the Go runtime's estimate of what went to garbage
	// collection (runtime/metrics /cpu/classes/gc/total:cpu-seconds), and
	// the collections completed: a large heap (500,000 users) makes each
	// cycle cost, and when one falls inside a measurement it shows here.
	GCCPUSeconds float64 `json:"gcCpuSeconds"`
	GCCycles     int64   `json:"gcCycles"`

	UsersPerBusySecond   float64 `json:"usersPerBusySecond"`   // UserItems / BusySeconds
	UsersPerActiveSecond float64 `json:"usersPerActiveSecond"` // UserItems / ActiveSeconds
	UsersPerCPUSecond    float64 `json:"usersPerCpuSecond"`    // UserItems / CPUSeconds
	CPUMicrosPerUser     float64 `json:"cpuMicrosPerUser"`     // CPUSeconds / UserItems, in µs
}

// statsBase is where the counters were last zeroed.
type statsBase struct {
	mu           sync.Mutex
	since        time.Time
	user, system time.Duration
	gcCPU        float64
	gcCycles     int64
}

func (b *statsBase) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.since = time.Now()
	b.user, b.system, _ = processCPU()
	b.gcCPU, b.gcCycles = gcMetrics()
}

// gcMetrics reads the collector's CPU estimate and cycle count.
func gcMetrics() (cpuSeconds float64, cycles int64) {
	m := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(m)
	if m[0].Value.Kind() == metrics.KindFloat64 {
		cpuSeconds = m[0].Value.Float64()
	}
	if m[1].Value.Kind() == metrics.KindUint64 {
		cycles = int64(m[1].Value.Uint64())
	}
	return cpuSeconds, cycles
}

// Stats returns the counters GET /_sim/stats reports.
func (s *Sim) Stats() Stats {
	s.stats.mu.Lock()
	since, u0, s0, gc0, gcn0 := s.stats.since, s.stats.user, s.stats.system, s.stats.gcCPU, s.stats.gcCycles
	s.stats.mu.Unlock()
	g := s.Graph.Stats()
	st := Stats{
		Since: since.UTC(), ElapsedSeconds: time.Since(since).Seconds(),
		GraphRequests: g.Requests, GraphErrors: g.Errors, BatchItems: g.BatchItems, Pages: g.Pages, UserItems: g.UserItems,
		BusySeconds: g.Busy.Seconds(), ActiveSeconds: g.Active.Seconds(), PageLatencySeconds: g.PageLatency.Seconds(),
	}
	if u, sys, ok := processCPU(); ok {
		st.CPUUserSeconds, st.CPUSystemSeconds = (u - u0).Seconds(), (sys - s0).Seconds()
		st.CPUSeconds = st.CPUUserSeconds + st.CPUSystemSeconds
	}
	gc, gcn := gcMetrics()
	st.GCCPUSeconds, st.GCCycles = gc-gc0, gcn-gcn0
	if st.BusySeconds > 0 {
		st.UsersPerBusySecond = float64(st.UserItems) / st.BusySeconds
	}
	if st.ActiveSeconds > 0 {
		st.UsersPerActiveSecond = float64(st.UserItems) / st.ActiveSeconds
	}
	if st.CPUSeconds > 0 {
		st.UsersPerCPUSecond = float64(st.UserItems) / st.CPUSeconds
	}
	if st.UserItems > 0 {
		st.CPUMicrosPerUser = st.CPUSeconds * 1e6 / float64(st.UserItems)
	}
	return st
}

// ResetStats zeroes the counters GET /_sim/stats reports.
func (s *Sim) ResetStats() {
	s.Graph.ResetStats()
	s.stats.reset()
}
