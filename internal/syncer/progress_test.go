package syncer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/profile"
)

// slowSource hands over n users, pausing before each batch of 256 after
// the first, as Graph pages arriving over time.
type slowSource struct {
	n     int
	pause time.Duration
}

func (s slowSource) Delta(ctx context.Context, _ profile.Selection, _ string, fn func(profile.User) error) (string, error) {
	for i := range s.n {
		if i > 0 && i%256 == 0 {
			time.Sleep(s.pause)
		}
		if err := fn(user(fmt.Sprintf("u%04d", i), map[string]any{"manager": nil})); err != nil {
			return "", err
		}
	}
	return "link1", nil
}

func TestProgressReportsPhasesInOrderWithGrowingCounts(t *testing.T) {
	f := newFixture(t)
	f.eng.Source = slowSource{n: 768, pause: progressEvery + 20*time.Millisecond}
	f.eng.Limits = importfile.Limits{MaxProperties: 1200, MaxBytes: 1 << 20} // 4 pairs per user: 300 users per file, 3 files
	var got []Progress
	var inside atomic.Int32
	run, err := f.eng.Sync(context.Background(), Options{Progress: func(p Progress) {
		if inside.Add(1) > 1 {
			t.Error("Progress called on two goroutines at once")
		}
		got = append(got, p)
		inside.Add(-1)
	}})
	if err != nil {
		t.Fatal(err)
	}
	files := len(run.Files)
	if files < 2 {
		t.Fatalf("%d file(s); the test needs several", files)
	}
	for i, p := range got {
		t.Logf("%d: %+v", i, p)
	}

	// The phases, in order: reading (first with nothing read, then at
	// least twice more while reading: the source pauses longer than
	// progressEvery twice), writing, then uploading and queueing per file.
	var phases []Phase
	reading := 0
	for _, p := range got {
		if p.Phase == PhaseReading {
			reading++
			continue
		}
		phases = append(phases, p.Phase)
	}
	want := []Phase{PhaseWriting}
	for range files {
		want = append(want, PhaseUploading, PhaseQueueing)
	}
	if fmt.Sprint(phases) != fmt.Sprint(want) || got[0].Phase != PhaseReading || reading < 3 {
		t.Fatalf("phases %v after %d reading reports; want reading (3 or more) then %v", phases, reading, want)
	}
	if got[0].Read != 0 || got[0].RunID != run.ID || got[0].Mode != ModeFull {
		t.Errorf("first report %+v, want nothing read yet, run %s, mode full", got[0], run.ID)
	}
	// Reading reports look at the clock once per 256 users only.
	for _, p := range got[1:reading] {
		if p.Read%256 != 0 {
			t.Errorf("a reading report at %d users (the clock is looked at every 256 users)", p.Read)
		}
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if b.Read < a.Read || b.Elapsed < a.Elapsed || (a.Phase == PhaseReading && b.Phase == PhaseReading && b.Read <= a.Read) {
			t.Errorf("report %d (%+v) goes back from %+v", i, b, a)
		}
	}
	if last := got[reading-1]; last.Read < 512 || last.Sent != last.Read-1 {
		t.Errorf("last reading report %+v: want 512 or more read, all but the user at hand to send", last)
	}
	file := 0
	for _, p := range got[reading+1:] {
		if p.Phase == PhaseUploading {
			file++
		}
		if p.Read != 768 || p.Sent != 768 || p.Files != files || p.File != file {
			t.Errorf("%+v: want 768 read and to send, file %d of %d", p, file, files)
		}
	}
	if got[len(got)-1].Elapsed < 2*progressEvery {
		t.Errorf("elapsed %v at the end; the source paused twice %v", got[len(got)-1].Elapsed, progressEvery)
	}
}

// Without Progress, a run reports nothing and the reporter costs nothing.
func TestProgressNilReporter(t *testing.T) {
	r := newReporter(nil, nil)
	if r != nil {
		t.Fatal("newReporter(nil) is not nil")
	}
	run := &Run{Read: 256}
	r.phase(PhaseReading, run, 0, 0)
	r.reading(run)
	if n := testing.AllocsPerRun(100, func() { r.reading(run) }); n != 0 {
		t.Errorf("%v allocations per user without a reporter", n)
	}
}

// A dry run reports its reading too.
func TestProgressInPlan(t *testing.T) {
	f := newFixture(t)
	var phases []Phase
	if _, err := f.eng.Plan(context.Background(), Options{Progress: func(p Progress) { phases = append(phases, p.Phase) }}, 10); err != nil {
		t.Fatal(err)
	}
	if len(phases) == 0 || phases[0] != PhaseReading {
		t.Errorf("a dry run reported %v", phases)
	}
}

// pagedSource is a slowSource that counts pages of 256 users, as
// graph.Client does (PageCounter), starting from an earlier run's count.
type pagedSource struct {
	slowSource
	pages *atomic.Int64
}

func (s pagedSource) PagesRead() int64 { return s.pages.Load() }

func (s pagedSource) Delta(ctx context.Context, sel profile.Selection, link string, fn func(profile.User) error) (string, error) {
	n := 0
	return s.slowSource.Delta(ctx, sel, link, func(u profile.User) error {
		if n%256 == 0 {
			s.pages.Add(1)
		}
		n++
		return fn(u)
	})
}

func TestProgressCountsThePagesOfTheRun(t *testing.T) {
	f := newFixture(t)
	var pages atomic.Int64
	pages.Store(40) // pages of earlier runs are not this run's
	f.eng.Source = pagedSource{slowSource{n: 768, pause: progressEvery + 20*time.Millisecond}, &pages}
	var last Progress
	if _, err := f.eng.Sync(context.Background(), Options{Progress: func(p Progress) { last = p }}); err != nil {
		t.Fatal(err)
	}
	if last.Pages != 3 {
		t.Errorf("the last report says %d pages, want the run's 3", last.Pages)
	}
}
