package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/graph"
	"github.com/profilesync/profilesync/internal/m365sim"
	"github.com/profilesync/profilesync/internal/syncer"
	"github.com/profilesync/profilesync/internal/testenv"
)

// BenchmarkPipeline runs full syncs (Graph reads → import files →
// upload → queue → state) through the real adapters against the simulator,
// which runs as a separate process so that only the handler's memory is
// measured. It reports users per second and the peak Go heap during a run:
// the heap must not grow with the number of users. What does grow, up to a
// fixed cap, is the cache of managers (at most 20,000, a few MB); the
// 300,000-user case shows the plateau once the cache is full.
//
// "repeat=20" runs the same sync with Graph repeating every 20th user (as
// real delta rounds may): the cost of sending each user once.
func BenchmarkPipeline(b *testing.B) {
	for _, users := range []int{10000, 100000, 300000} {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) { benchPipeline(b, users) })
	}
	b.Run("users=100000/repeat=20", func(b *testing.B) { benchPipeline(b, 100000, "--delta-repeat", "20") })
}

// BenchmarkFullSync measures what a full sync of a large tenant costs in
// wall time, with Graph answering at once and with 300 ms per page (a real
// tenant's order of magnitude), side by side for the two ways of reading:
//
//   - read=delta-round: one sequential users/delta round (GRAPH_PARALLELISM=1,
//     as PnP reads; delta pages of 200 users), pages fetched one ahead;
//   - read=ranges: the default, a baseline delta link, then UPN ranges read
//     16 at a time (GET /users with $top=999 and $expand=manager, which
//     Graph, and the simulator, answer in pages of at most 100).
//
// Besides users/s and the wall time per sync it reports the process's peak
// resident memory (VmHWM) and the simulator's own rate (GET /_sim/stats):
// users it served per second of handler time, its CPU per user and its
// share of the wall time in CPU seconds, which shows it is not what limits
// the numbers. 500,000 users at 300 ms per page read as one delta round
// take over 12 minutes per run.
func BenchmarkFullSync(b *testing.B) {
	for _, users := range []int{100000, 500000} {
		for _, latency := range []string{"0ms", "300ms"} {
			for _, read := range []struct {
				name        string
				parallelism int
			}{{"delta-round", 1}, {"ranges", graph.DefaultParallelism}} {
				name := fmt.Sprintf("users=%d/page=%s/read=%s", users, latency, read.name)
				b.Run(name, func(b *testing.B) {
					benchPipelineWith(b, users, func(o *graph.Options) { o.Parallelism = read.parallelism },
						"--page-size", "200", "--page-latency", latency)
				})
			}
		}
	}
}

// benchApp starts the simulator (users, simArgs) in its own process and
// Azurite, and returns the handler's app on them, prepared, with the
// example mapping stored, as the benchmarks use it. Containers and queues
// are named after prefix.
func benchApp(b *testing.B, users int, prefix string, simArgs ...string) (*app, config, *slog.Logger) {
	az := testenv.Azurite(b)
	simEnv := startSimProcess(b, users, simArgs...)
	env := map[string]string{
		"AzureWebJobsStorage": az.ConnectionString,
		"SYNC_CONTAINER":      testenv.Name(b, prefix),
		"SYNC_STATUS_QUEUE":   testenv.Name(b, prefix+"q"),
	}
	for k, v := range simEnv {
		env[k] = v
		if strings.HasPrefix(k, "IDENTITY_") {
			b.Setenv(k, v) // azidentity reads the process environment
		}
	}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("PROFILESYNC_BENCH_LOG") != "" { // the handler's own log lines, to see where the time goes
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	tuneMemory(os.Getenv) // as run does for the handler process
	a, err := newApp(cfg, logger, false)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := a.prepare(ctx); err != nil {
		b.Fatal(err)
	}
	mapping, _ := os.ReadFile("../examples/mapping.json")
	if _, err := a.blobs.Put(ctx, syncer.MappingBlob, mapping, ""); err != nil {
		b.Fatal(err)
	}
	a.engine.TempDir = b.TempDir()
	return a, cfg, logger
}

// peakRSS reads the process's peak resident set size (VmHWM) in bytes.
func peakRSS() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

func benchPipeline(b *testing.B, users int, simArgs ...string) {
	benchPipelineWith(b, users, nil, simArgs...)
}

// benchPipelineWith runs benchPipeline with a Graph client whose options
// tune changes (nil: the handler's own client).
func benchPipelineWith(b *testing.B, users int, tune func(*graph.Options), simArgs ...string) {
	a, cfg, logger := benchApp(b, users, "bench", simArgs...)
	ctx := context.Background()
	if tune != nil {
		cred, err := credential(cfg, false)
		if err != nil {
			b.Fatal(err)
		}
		o := graph.Options{Endpoint: cfg.GraphEndpoint, Credential: cred, TempDir: a.engine.TempDir, Logger: logger}
		tune(&o)
		g, err := graph.New(o)
		if err != nil {
			b.Fatal(err)
		}
		a.engine.Source = g
	}

	var peak, peakLive atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // sample the heap while runs go on
		defer close(done)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				metrics.Read(sample)
				if v := sample[0].Value.Uint64(); v > peak.Load() {
					peak.Store(v)
				}
				if v := sample[1].Value.Uint64(); v > peakLive.Load() {
					peakLive.Store(v)
				}
			}
		}
	}()
	runtime.GC()
	// Reset the peak RSS (Linux: "5" to clear_refs), so it covers the runs.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	simStats(b, cfg.GraphEndpoint, true)
	b.ResetTimer()
	sent := 0
	for b.Loop() {
		run, err := a.engine.Sync(ctx, syncer.Options{Mode: syncer.ModeFull, AllowOverlap: true, Trigger: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		sent += run.Sent
	}
	elapsed := b.Elapsed()
	close(stop)
	<-done
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "users/s")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(peakLive.Load())/(1<<20), "peak-live-MB") // live after a GC: what the run really holds
	if rss, err := peakRSS(); err == nil {
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
	}
	if st := simStats(b, cfg.GraphEndpoint, false); st.UserItems > 0 {
		b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/sync")
		b.ReportMetric(st.UsersPerActiveSecond, "sim-users/active-s")
		b.ReportMetric(st.CPUMicrosPerUser, "sim-cpu-µs/user")
		b.ReportMetric(st.CPUSeconds/elapsed.Seconds(), "sim-cpu-share")
	}
}

// simStats resets (reset) or reads the simulator's own counters.
func simStats(b *testing.B, graphOrigin string, reset bool) m365sim.Stats {
	b.Helper()
	var st m365sim.Stats
	method, path := http.MethodGet, "/_sim/stats"
	if reset {
		method, path = http.MethodPost, "/_sim/stats/reset"
	}
	req, _ := http.NewRequest(method, graphOrigin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b.Fatalf("%s %s: %s", method, path, resp.Status)
	}
	if !reset {
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			b.Fatalf("reading /_sim/stats: %v", err)
		}
	}
	return st
}

// startSimProcess builds and starts cmd/m365sim and returns the settings it prints.
func startSimProcess(b *testing.B, users int, extra ...string) map[string]string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "m365sim")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/m365sim").CombinedOutput(); err != nil {
		b.Fatalf("building m365sim: %v\n%s", err, out)
	}
	// Jobs never start (an hour per step): the benchmark measures the handler, not SharePoint.
	args := append([]string{"--port", "0", "--users", strconv.Itoa(users), "--seed", "5", "--job-step", "1h", "--identity-header", "bench"}, extra...)
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	env := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(env) < 4 && sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	go io.Copy(io.Discard, stdout)
	for _, k := range []string{"GRAPH_ENDPOINT", "SPO_SITE_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"} {
		if env[k] == "" {
			b.Fatalf("m365sim did not print %s (got %v)", k, env)
		}
	}
	return env
}
