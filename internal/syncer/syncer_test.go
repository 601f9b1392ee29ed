package syncer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/profile"
)

// fakeSource serves one delta round per link from rounds; "" is the initial round.
type fakeSource struct {
	rounds map[string][]profile.User
	next   map[string]string // link -> next link
	errFor map[string]error
	calls  []string
	sels   []profile.Selection
}

func (s *fakeSource) Delta(ctx context.Context, sel profile.Selection, link string, fn func(profile.User) error) (string, error) {
	s.calls = append(s.calls, link)
	s.sels = append(s.sels, sel)
	if err := s.errFor[link]; err != nil {
		return "", err
	}
	for _, u := range s.rounds[link] {
		if err := fn(u); err != nil {
			return "", err
		}
	}
	return s.next[link], nil
}

type upload struct {
	name string
	data []byte
}

type fakeTarget struct {
	uploads   []upload
	queued    []string // source URIs
	idType    []profile.IDType
	propMaps  []map[string]string
	failUp    error
	failQueue error
	ops       *journal
	// queuedTried: every queue call's source URI, failed ones included
	// (a failed call may still have reached SharePoint).
	queuedTried []string
}

func (t *fakeTarget) EnsureFolder(context.Context) error { return nil }

func (t *fakeTarget) Upload(_ context.Context, name string, r io.Reader, size int64) (string, error) {
	if t.failUp != nil {
		return "", t.failUp
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if int64(len(data)) != size {
		return "", fmt.Errorf("size %d != %d", len(data), size)
	}
	t.uploads = append(t.uploads, upload{name, data})
	t.ops.add("upload " + name)
	return "https://contoso.sharepoint.com/sites/s/Shared Documents/" + name, nil
}

func (t *fakeTarget) QueueImport(_ context.Context, idType profile.IDType, idProp string, pm map[string]string, uri string) (string, error) {
	t.queuedTried = append(t.queuedTried, uri)
	if t.failQueue != nil {
		return "", t.failQueue
	}
	if idProp != profile.IDProperty {
		return "", fmt.Errorf("id property %q", idProp)
	}
	t.queued = append(t.queued, uri)
	t.ops.add("queue " + uri)
	t.idType = append(t.idType, idType)
	t.propMaps = append(t.propMaps, pm)
	return fmt.Sprintf("00000000-0000-0000-0000-%012d", len(t.queued)), nil
}

type memBlobs struct {
	mu    sync.Mutex
	data  map[string][]byte
	etags map[string]string
	n     int
	ops   *journal
}

// journal records, in order, what the fakes were asked to do.
type journal struct {
	mu  sync.Mutex
	ops []string
}

func (j *journal) add(op string) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ops = append(j.ops, op)
}

// index is the position of the first op starting with prefix after from, or -1.
func (j *journal) index(prefix string, from int) int {
	for i := max(from, 0); i < len(j.ops); i++ {
		if strings.HasPrefix(j.ops[i], prefix) {
			return i
		}
	}
	return -1
}

func newMemBlobs() *memBlobs {
	return &memBlobs{data: map[string][]byte{}, etags: map[string]string{}}
}

func (b *memBlobs) Get(_ context.Context, name string) ([]byte, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.data[name]
	if !ok {
		return nil, "", fmt.Errorf("blob %s: %w", name, fs.ErrNotExist)
	}
	return append([]byte(nil), d...), b.etags[name], nil
}

func (b *memBlobs) put(name string, data []byte) string {
	b.n++
	b.data[name] = append([]byte(nil), data...)
	b.etags[name] = strconv.Itoa(b.n)
	return b.etags[name]
}

func (b *memBlobs) Put(_ context.Context, name string, data []byte, ifMatch string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ifMatch != "" && b.etags[name] != ifMatch {
		return "", fmt.Errorf("blob %s: %w", name, profile.ErrStale)
	}
	b.ops.add("put " + name + " " + string(data))
	return b.put(name, data), nil
}

func (b *memBlobs) Create(_ context.Context, name string, data []byte) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.data[name]; ok {
		return "", fmt.Errorf("blob %s: %w", name, profile.ErrStale)
	}
	b.ops.add("put " + name + " " + string(data))
	return b.put(name, data), nil
}

// Open and CreateFrom stream blobs (BlobStreams), as azstorage.Blobs does.
func (b *memBlobs) Open(_ context.Context, name string) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.data[name]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", name, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(d)), nil // blobs are replaced, never changed in place
}

func (b *memBlobs) CreateFrom(_ context.Context, name string, r io.ReaderAt, size int64) (string, error) {
	data := make([]byte, size) // the stored copy: no other
	if _, err := r.ReadAt(data, 0); err != nil && err != io.EOF {
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.data[name]; ok {
		return "", fmt.Errorf("blob %s: %w", name, profile.ErrStale)
	}
	b.ops.add("put " + name)
	b.n++
	b.data[name], b.etags[name] = data, strconv.Itoa(b.n)
	return b.etags[name], nil
}

type sched struct {
	msgs   [][]byte
	delays []time.Duration
	ops    *journal
}

func (s *sched) Schedule(_ context.Context, msg []byte, d time.Duration) error {
	s.ops.add("schedule " + string(msg))
	s.msgs = append(s.msgs, msg)
	s.delays = append(s.delays, d)
	return nil
}

const goodMapping = `{"idType":"CloudId","properties":{"CostCenter":"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter","Phones":"businessPhones","ManagerEmail":"manager.mail"}}`

func user(id string, props map[string]any) profile.User {
	p := map[string]any{"id": id, "userPrincipalName": id + "@contoso.com", "mail": id + "@contoso.com", "userType": "Member", "accountEnabled": true}
	for k, v := range props {
		p[k] = v
	}
	return profile.User{ID: id, Props: p}
}

type fixture struct {
	src    *fakeSource
	tgt    *fakeTarget
	blobs  *memBlobs
	sched  *sched
	eng    *Engine
	locked bool
	ops    *journal // every upload, queue call, blob write and scheduled message, in order
	lease  *fakeLease
	// loseLease, if set, is handed each lease as it is taken.
	loseLease func(*fakeLease)
}

type fakeLease struct {
	lost    chan struct{}
	once    sync.Once
	release func()
}

func (l *fakeLease) Release(context.Context) error { l.release(); return nil }
func (l *fakeLease) Lost() <-chan struct{}         { return l.lost }
func (l *fakeLease) lose()                         { l.once.Do(func() { close(l.lost) }) }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		src: &fakeSource{
			rounds: map[string][]profile.User{
				"": {
					user("u1", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter": `CC "1" \ x`, "businessPhones": []any{"1", "2"}, "manager": map[string]any{"id": "m", "mail": "boss@contoso.com"}}),
					user("u2", map[string]any{"userType": "Guest"}),
					user("u3", map[string]any{"accountEnabled": false}),
					{ID: "u4", Removed: true, Props: map[string]any{"id": "u4"}},
				},
				"link1": {user("u5", map[string]any{"manager": nil})},
				"link2": {},
			},
			next:   map[string]string{"": "link1", "link1": "link2", "link2": "link3"},
			errFor: map[string]error{},
		},
		tgt:   &fakeTarget{},
		blobs: newMemBlobs(),
		sched: &sched{},
	}
	f.ops = &journal{}
	f.tgt.ops, f.blobs.ops, f.sched.ops = f.ops, f.ops, f.ops
	f.blobs.put(MappingBlob, []byte(goodMapping))
	clock := time.Date(2026, 11, 28, 18, 30, 0, 0, time.UTC)
	f.eng = &Engine{
		Source: f.src, Target: f.tgt, Blobs: f.blobs, Scheduler: f.sched,
		Lock: func(context.Context) (Lease, error) {
			if f.locked {
				return nil, fmt.Errorf("lease: %w", profile.ErrBusy)
			}
			f.locked = true
			f.lease = &fakeLease{lost: make(chan struct{}), release: func() { f.locked = false }}
			if f.loseLease != nil {
				f.loseLease(f.lease)
			}
			return f.lease, nil
		},
		Now:       func() time.Time { clock = clock.Add(time.Second); return clock },
		TempDir:   t.TempDir(),
		FirstPoll: time.Minute,
	}
	return f
}

func (f *fixture) state(t *testing.T) State {
	t.Helper()
	var st State
	if d, ok := f.blobs.data[StateBlob]; ok {
		if err := json.Unmarshal(d, &st); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// records parses an uploaded import file into its records.
func records(t *testing.T, data []byte) []map[string]string {
	t.Helper()
	if !bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		t.Fatalf("import file has no UTF-8 BOM: %q", data[:min(len(data), 20)])
	}
	var doc struct {
		Value []map[string]string `json:"value"`
	}
	if err := json.Unmarshal(data[3:], &doc); err != nil {
		t.Fatalf("import file is not valid JSON: %v\n%s", err, data)
	}
	return doc.Value
}

func TestFirstRunIsFullAndCommitsInOrder(t *testing.T) {
	f := newFixture(t)
	run, err := f.eng.Sync(context.Background(), Options{Trigger: "timer"})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeFull || !strings.Contains(run.Reason, "first run") {
		t.Errorf("mode %q reason %q, want full because first run", run.Mode, run.Reason)
	}
	if run.Read != 4 || run.Sent != 1 {
		t.Errorf("read %d sent %d, want 4 and 1", run.Read, run.Sent)
	}
	wantSkips := map[string]int{"guest": 1, "disabled": 1, "deleted": 1}
	for k, v := range wantSkips {
		if run.Skipped[k] != v {
			t.Errorf("skipped[%s] = %d, want %d (all: %v)", k, run.Skipped[k], v, run.Skipped)
		}
	}
	if len(f.tgt.uploads) != 1 || len(f.tgt.queued) != 1 {
		t.Fatalf("uploads %d queued %d, want 1 and 1", len(f.tgt.uploads), len(f.tgt.queued))
	}
	name := f.tgt.uploads[0].name
	if !strings.HasPrefix(name, "userprofilesyncdata-20261128183001-") || len(name) != len("userprofilesyncdata-20261128183001-")+32+5 {
		t.Errorf("file name %q does not follow userprofilesyncdata-<yyyyMMddHHmmss>-<guid32>.json", name)
	}
	recs := records(t, f.tgt.uploads[0].data)
	want := map[string]string{"IdName": "u1", "CostCenter": `CC "1" \ x`, "Phones": "1,2", "ManagerEmail": "boss@contoso.com"}
	if len(recs) != 1 || fmt.Sprint(recs[0]) != fmt.Sprint(want) {
		t.Errorf("records = %v, want [%v]", recs, want)
	}
	if f.tgt.idType[0] != profile.CloudID {
		t.Errorf("idType %v", f.tgt.idType[0])
	}
	if pm := f.tgt.propMaps[0]; pm["CostCenter"] != "CostCenter" || len(pm) != 3 {
		t.Errorf("property map %v, want identity map of the 3 SharePoint properties", pm)
	}
	st := f.state(t)
	if st.DeltaLink != "link1" || st.MappingHash != run.MappingHash || st.LastRunID != run.ID {
		t.Errorf("state %+v", st)
	}
	if len(f.sched.msgs) != 1 || f.sched.delays[0] != time.Minute {
		t.Fatalf("polls %v delays %v", f.sched.msgs, f.sched.delays)
	}
	var pm PollMessage
	if err := json.Unmarshal(f.sched.msgs[0], &pm); err != nil || pm.JobID != run.JobIDs[0] || pm.RunID != run.ID {
		t.Errorf("poll message %s (%v)", f.sched.msgs[0], err)
	}
	var stored Run
	if err := json.Unmarshal(f.blobs.data[RunsPrefix+run.ID+".json"], &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Status != StatusSucceeded || len(stored.JobIDs) != 1 || !stored.DeltaSaved || !stored.PollsQueued {
		t.Errorf("stored run %+v", stored)
	}
	if f.locked {
		t.Error("lock not released")
	}
	// The commit point, in order: upload; the intent in the run record;
	// the queue call; the job followed (polls/) and its id in the run
	// record; only then the delta link; then the first status poll.
	j := f.ops
	up := j.index("upload ", 0)
	intent := j.index("put "+RunsPrefix+run.ID+".json", up)
	queue := j.index("queue ", intent)
	follow := j.index("put "+PollsPrefix+run.JobIDs[0], queue)
	recorded := j.index("put "+RunsPrefix+run.ID+".json", follow)
	state := j.index("put "+StateBlob, recorded)
	poll := j.index("schedule ", state)
	if up < 0 || intent < 0 || queue < 0 || follow < 0 || recorded < 0 || state < 0 || poll < 0 {
		t.Fatalf("steps out of order (upload %d, intent %d, queue %d, follow %d, run record %d, state %d, poll %d):\n%s",
			up, intent, queue, follow, recorded, state, poll, strings.Join(j.ops, "\n"))
	}
	if !strings.Contains(j.ops[intent], `"queueing": true`) || !strings.Contains(j.ops[recorded], run.JobIDs[0]) {
		t.Errorf("the run record before the queue call holds no intent, or after it no job id:\n%s\n%s", j.ops[intent], j.ops[recorded])
	}
	// The poll document keeps what a re-send needs once the poll is sent.
	var ps PollState
	if err := json.Unmarshal(f.blobs.data[PollsPrefix+run.JobIDs[0]+".json"], &ps); err != nil || !ps.Scheduled ||
		ps.SourceURI != f.tgt.queued[0] || ps.IDType != "CloudId" || ps.PropertyMap["CostCenter"] != "CostCenter" {
		t.Errorf("poll document after scheduling: %+v (%v)", ps, err)
	}
	if first := j.index("put "+StateBlob, 0); first != state {
		t.Errorf("state.json written before the job was recorded (op %d)", first)
	}
	if len(f.src.sels) != 1 || !contains(f.src.sels[0].Properties, "businessPhones") || !contains(f.src.sels[0].Manager, "mail") {
		t.Errorf("selection %+v", f.src.sels)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestSecondRunUsesDeltaLinkAndEmptyRoundAdvances(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.eng.Sync(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	run, err := f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeDelta || f.src.calls[1] != "link1" {
		t.Errorf("second run mode %q calls %v", run.Mode, f.src.calls)
	}
	recs := records(t, f.tgt.uploads[1].data)
	if len(recs) != 1 || recs[0]["IdName"] != "u5" || recs[0]["ManagerEmail"] != "" {
		t.Errorf("second file %v, want only u5 with ManagerEmail cleared", recs)
	}
	// Third round: nobody changed.
	run, err = f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.tgt.uploads) != 2 || len(run.JobIDs) != 0 || len(run.Files) != 0 {
		t.Errorf("empty round uploaded %d files, jobs %v", len(f.tgt.uploads), run.JobIDs)
	}
	if st := f.state(t); st.DeltaLink != "link3" {
		t.Errorf("delta link %q after an empty round, want link3", st.DeltaLink)
	}
}

func TestFullRoundWhenMappingChangesOrTokenExpires(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.eng.Sync(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	f.blobs.put(MappingBlob, []byte(`{"idType":"CloudId","properties":{"Phones":"businessPhones"}}`))
	run, err := f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeFull || !strings.Contains(run.Reason, "mapping changed") || f.src.calls[1] != "" {
		t.Errorf("mode %q reason %q calls %v", run.Mode, run.Reason, f.src.calls)
	}
	// Now link1 is stored; make it expire.
	f.src.errFor["link1"] = fmt.Errorf("graph 400 syncStateNotFound: %w", profile.ErrDeltaExpired)
	run, err = f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeFull || !strings.Contains(run.Reason, "expired") {
		t.Errorf("after expiry: mode %q reason %q", run.Mode, run.Reason)
	}
	if got := f.src.calls[len(f.src.calls)-2:]; got[0] != "link1" || got[1] != "" {
		t.Errorf("calls %v, want link1 then a full round", f.src.calls)
	}
	if st := f.state(t); st.DeltaLink != "link1" {
		t.Errorf("delta link %q", st.DeltaLink)
	}
}

func TestFailuresKeepTheDeltaLink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture)
		files int
	}{
		{"upload fails", func(f *fixture) { f.tgt.failUp = errors.New("503 server too busy") }, 0},
		{"queue fails", func(f *fixture) { f.tgt.failQueue = errors.New("Property Names [X] are editable by user.") }, 1},
		{"graph fails", func(f *fixture) { f.src.errFor["link1"] = errors.New("graph: 500") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			if _, err := f.eng.Sync(ctx, Options{}); err != nil {
				t.Fatal(err)
			}
			before := f.state(t)
			tc.setup(f)
			run, err := f.eng.Sync(ctx, Options{})
			if err == nil {
				t.Fatal("want an error")
			}
			if run == nil || run.Status != StatusFailed || run.DeltaSaved || len(run.Files) != tc.files {
				t.Fatalf("run %+v", run)
			}
			if after := f.state(t); !reflect.DeepEqual(after, before) {
				t.Errorf("state changed on failure: %+v -> %+v", before, after)
			}
			var stored Run
			if err := json.Unmarshal(f.blobs.data[RunsPrefix+run.ID+".json"], &stored); err != nil || stored.Status != StatusFailed || stored.Error == "" {
				t.Errorf("failed run not recorded: %+v %v", stored, err)
			}
			// The next run sends the same users again.
			f.tgt.failUp, f.tgt.failQueue = nil, nil
			delete(f.src.errFor, "link1")
			if _, err := f.eng.Sync(ctx, Options{}); err != nil {
				t.Fatal(err)
			}
			last := f.tgt.uploads[len(f.tgt.uploads)-1]
			if recs := records(t, last.data); len(recs) != 1 || recs[0]["IdName"] != "u5" {
				t.Errorf("retry sent %v, want u5 again", recs)
			}
		})
	}
}

func TestBadMappingReadsAndUploadsNothing(t *testing.T) {
	f := newFixture(t)
	f.blobs.put(MappingBlob, []byte(`{"idType":"Upn","properties":{"":"mail","X":"mobilPhone"},"extra":1}`))
	run, err := f.eng.Sync(context.Background(), Options{})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"idType", "mobilPhone", "extra"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if len(f.src.calls) != 0 || len(f.tgt.uploads) != 0 {
		t.Errorf("graph calls %v uploads %d", f.src.calls, len(f.tgt.uploads))
	}
	if run == nil || run.Status != StatusFailed {
		t.Errorf("run %+v", run)
	}
}

func TestMissingMappingSaysWhatToDo(t *testing.T) {
	f := newFixture(t)
	delete(f.blobs.data, MappingBlob)
	_, err := f.eng.Sync(context.Background(), Options{})
	if err == nil || !strings.Contains(err.Error(), "upload a mapping") {
		t.Fatalf("err = %v", err)
	}
}

func TestWhatIfUploadsButQueuesNothingAndKeepsLink(t *testing.T) {
	f := newFixture(t)
	run, err := f.eng.Sync(context.Background(), Options{WhatIf: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.tgt.uploads) != 1 || len(f.tgt.queued) != 0 || len(f.sched.msgs) != 0 {
		t.Errorf("uploads %d queued %d polls %d", len(f.tgt.uploads), len(f.tgt.queued), len(f.sched.msgs))
	}
	if run.Files[0].URL == "" || run.DeltaSaved {
		t.Errorf("run %+v", run)
	}
	if _, ok := f.blobs.data[StateBlob]; ok {
		t.Error("what-if wrote state.json")
	}
}

func TestBusyLockDoesNothing(t *testing.T) {
	f := newFixture(t)
	f.locked = true
	run, err := f.eng.Sync(context.Background(), Options{})
	if !errors.Is(err, profile.ErrBusy) || run != nil {
		t.Fatalf("run %v err %v", run, err)
	}
	if len(f.src.calls) != 0 {
		t.Error("read users while another sync holds the lock")
	}
}

func TestStateChangedDuringRunIsAnError(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.eng.Sync(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	// Someone rewrites state.json while the next run reads Graph.
	src := f.src
	f.eng.Source = sourceFunc(func(ctx context.Context, sel profile.Selection, link string, fn func(profile.User) error) (string, error) {
		f.blobs.put(StateBlob, []byte(`{"deltaLink":"other"}`))
		return src.Delta(ctx, sel, link, fn)
	})
	_, err := f.eng.Sync(ctx, Options{})
	if !errors.Is(err, profile.ErrStale) {
		t.Fatalf("err = %v, want ErrStale", err)
	}
	if st := f.state(t); st.DeltaLink != "other" {
		t.Errorf("state overwritten: %+v", st)
	}
}

type sourceFunc func(context.Context, profile.Selection, string, func(profile.User) error) (string, error)

func (s sourceFunc) Delta(ctx context.Context, sel profile.Selection, link string, fn func(profile.User) error) (string, error) {
	return s(ctx, sel, link, fn)
}

func TestSplitsIntoSeveralFilesAndJobs(t *testing.T) {
	f := newFixture(t)
	var many []profile.User
	for i := range 10 {
		many = append(many, user(fmt.Sprintf("x%02d", i), map[string]any{"businessPhones": []any{"1"}, "manager": nil}))
	}
	f.src.rounds[""] = many
	f.eng.Limits = importfile.Limits{MaxProperties: 12, MaxBytes: 1 << 20} // 4 pairs per user -> 3 users per file
	run, err := f.eng.Sync(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Files) != 4 || len(run.JobIDs) != 4 || len(f.sched.msgs) != 4 {
		t.Fatalf("files %d jobs %d polls %d, want 4 each", len(run.Files), len(run.JobIDs), len(f.sched.msgs))
	}
	total := 0
	for _, u := range f.tgt.uploads {
		total += len(records(t, u.data))
	}
	if total != 10 {
		t.Errorf("%d records across files, want 10", total)
	}
}

func TestInterruptedRunIsClosedByTheNext(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A run that died after queueing its job: its record says running, current-run.json names it.
	dead := Run{ID: "20261128T000000.000Z-deadbeef", Status: StatusRunning, JobIDs: []string{"j1"}}
	data, _ := json.Marshal(dead)
	f.blobs.put(RunsPrefix+dead.ID+".json", data)
	f.blobs.put(CurrentBlob, []byte(`{"runId":"`+dead.ID+`"}`))
	run, err := f.eng.Sync(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got Run
	json.Unmarshal(f.blobs.data[RunsPrefix+dead.ID+".json"], &got)
	if got.Status != StatusFailed || !strings.Contains(got.Error, "interrupted") || len(got.JobIDs) != 1 {
		t.Errorf("dead run record %+v", got)
	}
	if _, ok := f.blobs.data[CurrentBlob]; ok {
		t.Error("current-run.json left behind after a finished run")
	}
	var mine Run
	json.Unmarshal(f.blobs.data[RunsPrefix+run.ID+".json"], &mine)
	if mine.Status != StatusSucceeded {
		t.Errorf("this run %+v", mine)
	}
}

// TestRepeatedUsersAreSentOnce: Graph may hand a user over more than once
// in a round (and a join or parallel reads may hand them over out of
// order); each user is sent once with its newest sighting, and a user whose
// newest sighting is a skip is not sent at all.
func TestRepeatedUsersAreSentOnce(t *testing.T) {
	f := newFixture(t)
	cc := "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter"
	seen := func(id string, seq uint64, cost string) profile.User {
		u := user(id, map[string]any{cc: cost, "manager": nil})
		u.Seq = seq
		return u
	}
	disabled := seen("u3", 6, "x")
	disabled.Props["accountEnabled"] = false
	f.src.rounds[""] = []profile.User{
		seen("u1", 1, "old"), seen("u2", 2, "two"), seen("u3", 3, "three"),
		seen("u1", 5, "new"),   // newer sighting of u1
		seen("u2", 4, "late"),  // newer than u2's first (4 > 2)
		seen("u2", 3, "stale"), // older than the one before: ignored
		disabled,               // u3's newest sighting: disabled
		seen("u4", 7, "four"), seen("u4", 8, "four"),
	}
	run, err := f.eng.Sync(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]string
	for _, up := range f.tgt.uploads {
		recs = append(recs, records(t, up.data)...)
	}
	got := map[string]string{}
	for _, r := range recs {
		if _, dup := got[r["IdName"]]; dup {
			t.Errorf("user %s has two rows", r["IdName"])
		}
		got[r["IdName"]] = r["CostCenter"]
	}
	want := map[string]string{"u1": "new", "u2": "late", "u4": "four"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	if run.Read != 9 || run.Sent != 3 || run.Repeated != 5 || run.Skipped["disabled"] != 1 || len(run.Skipped) != 1 {
		t.Errorf("read %d sent %d repeated %d skipped %v; want 9, 3, 5, disabled 1", run.Read, run.Sent, run.Repeated, run.Skipped)
	}
	if run.Files[0].Records != 3 {
		t.Errorf("file record says %d records, want 3", run.Files[0].Records)
	}

	// The dry run counts and lists the same way.
	f.blobs.data = map[string][]byte{MappingBlob: []byte(goodMapping)}
	plan, err := f.eng.Plan(context.Background(), Options{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Sent != 3 || len(plan.Users) != 3 || plan.Skipped["disabled"] != 1 || len(plan.SkippedUsers) != 1 {
		t.Errorf("plan sent %d listed %d skipped %v listed %v; want 3, 3, disabled 1", plan.Sent, len(plan.Users), plan.Skipped, plan.SkippedUsers)
	}
	for _, u := range plan.Users {
		if u.Values["CostCenter"] != want[u.ID] {
			t.Errorf("plan lists %s with %q, want %q", u.ID, u.Values["CostCenter"], want[u.ID])
		}
	}
}

// lookupByID serves Lookup from a fixed set of users.
type lookupByID map[string]profile.User

func (l lookupByID) Lookup(_ context.Context, _ profile.Selection, ids []string, fn func(profile.User) error) ([]string, error) {
	var missing []string
	for _, id := range ids {
		u, ok := l[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		if err := fn(u); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

func (l lookupByID) List(context.Context, profile.Selection, string, func(profile.User) error) error {
	return errors.New("not used")
}

// TestFailedImportsAreSentAgain: what the poller marked in state.json after
// a failed import reaches the next run.
func TestFailedImportsAreSentAgain(t *testing.T) {
	f := newFixture(t)
	if _, err := f.eng.Sync(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	// The poller carried two users (one deleted since) into the next run.
	f.eng.Lookup = lookupByID{"u1": user("u1", map[string]any{"manager": nil, "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter": "again"})}
	st := f.state(t)
	st.Resend = []ResendUser{{ID: "u1", Tries: 1}, {ID: "gone"}}
	data, _ := json.Marshal(st)
	f.blobs.put(StateBlob, data)
	run, err := f.eng.Sync(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeDelta || run.Sent != 2 { // u5 from the delta round, u1 carried
		t.Fatalf("mode %s sent %d, want delta and 2", run.Mode, run.Sent)
	}
	recs := records(t, f.tgt.uploads[len(f.tgt.uploads)-1].data)
	got := map[string]string{}
	for _, r := range recs {
		got[r["IdName"]] = r["CostCenter"]
	}
	if got["u1"] != "again" || len(got) != 2 {
		t.Errorf("file %v, want u1 read again", got)
	}
	if len(run.Resent) != 2 || run.Resent[0].ID != "u1" || run.Resent[0].Tries != 2 {
		t.Errorf("run record says resent %+v", run.Resent)
	}
	if after := f.state(t); len(after.Resend) != 0 {
		t.Errorf("carried users still waiting after the run: %+v", after.Resend)
	}

	// A job failed in a way only a full run repairs.
	st = f.state(t)
	st.FullSync = "job x ended Error (InvalidDataFile)"
	data, _ = json.Marshal(st)
	f.blobs.put(StateBlob, data)
	run, err = f.eng.Sync(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Mode != ModeFull || !strings.Contains(run.Reason, "InvalidDataFile") {
		t.Errorf("mode %s reason %q, want full because of the failed import", run.Mode, run.Reason)
	}
	if after := f.state(t); after.FullSync != "" || !run.DeltaSaved {
		t.Errorf("state after the full run %+v", after)
	}
}

type jobList []profile.Job

func (l jobList) Jobs(context.Context) ([]profile.Job, error) { return l, nil }

// TestJobOfAProcessKilledAtTheQueueCallIsFollowed: the process died after
// SharePoint accepted a job and before its id was written; the next run
// finds the job by its source file and has it followed.
func TestJobOfAProcessKilledAtTheQueueCallIsFollowed(t *testing.T) {
	f := newFixture(t)
	const url = "https://t/sites/s/Shared Documents/Profile Imports/userprofilesyncdata-1.json"
	dead := Run{ID: "20261128T180000.000Z-dead", Status: StatusRunning, Started: time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC),
		Files: []FileRecord{{Name: "userprofilesyncdata-1.json", URL: url, Records: 3, Queueing: true}}}
	data, _ := json.Marshal(dead)
	f.blobs.put(RunsPrefix+dead.ID+".json", data)
	f.blobs.put(CurrentBlob, []byte(`{"runId":"`+dead.ID+`"}`))
	f.eng.AllJobs = jobList{
		{ID: "other", SourceURI: "https://t/sites/s/Shared Documents/Profile Imports/someone-else.json"},
		{ID: "lost-job", SourceURI: url, State: profile.Processing},
	}
	if _, err := f.eng.Sync(context.Background(), Options{AllowOverlap: true}); err != nil {
		t.Fatal(err)
	}
	var got Run
	if err := json.Unmarshal(f.blobs.data[RunsPrefix+dead.ID+".json"], &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusFailed || len(got.JobIDs) != 1 || got.JobIDs[0] != "lost-job" || got.Files[0].JobID != "lost-job" || got.Files[0].Queueing {
		t.Errorf("interrupted run record %+v", got)
	}
	var ps PollState
	if err := json.Unmarshal(f.blobs.data[PollsPrefix+"lost-job.json"], &ps); err != nil || ps.RunID != dead.ID || !ps.Scheduled {
		t.Errorf("lost job not followed: %+v (%v)", ps, err)
	}
	if _, ok := f.blobs.data[PollsPrefix+"other.json"]; ok {
		t.Error("a job of another file was adopted")
	}
	found := false
	for _, m := range f.sched.msgs {
		var pm PollMessage
		json.Unmarshal(m, &pm)
		found = found || pm.JobID == "lost-job"
	}
	if !found {
		t.Error("no status poll scheduled for the lost job")
	}
}

// TestNoOrphans: files a killed process left in the temp folder are
// removed by the next run; a queue call that failed after SharePoint took
// the job leaves no job unfollowed.
func TestNoOrphans(t *testing.T) {
	f := newFixture(t)
	dir := f.eng.TempDir
	for _, name := range []string{"profilesync-123.json", "profilesync-users-9.jsonl", "profilesync-managers-part-1.jsonl"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keep := []string{"other.json", "profilesync-notes.txt"}
	for _, name := range keep {
		os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600)
	}
	os.Mkdir(filepath.Join(dir, "profilesync-handler-1"), 0o700)
	f.tgt.failQueue = errors.New("csom: timeout")
	f.eng.AllJobs = jobListFunc(func() []profile.Job {
		var out []profile.Job
		for i, u := range f.tgt.queuedTried {
			out = append(out, profile.Job{ID: fmt.Sprintf("taken-%d", i), SourceURI: u})
		}
		return out
	})
	run, err := f.eng.Sync(context.Background(), Options{})
	if err == nil {
		t.Fatal("want the queue error")
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if fmt.Sprint(left) != fmt.Sprint([]string{"other.json", "profilesync-handler-1", "profilesync-notes.txt"}) {
		t.Errorf("temp folder holds %v", left)
	}
	if len(run.JobIDs) != 1 || run.JobIDs[0] != "taken-0" {
		t.Errorf("run jobs %v, want the job SharePoint took", run.JobIDs)
	}
	if _, ok := f.blobs.data[PollsPrefix+"taken-0.json"]; !ok {
		t.Error("the job SharePoint took is not followed")
	}
	if f.state(t).DeltaLink != "" {
		t.Error("a failed run moved the delta link")
	}
}

type jobListFunc func() []profile.Job

func (f jobListFunc) Jobs(context.Context) ([]profile.Job, error) { return f(), nil }

// TestLostLockStopsBeforeTheCommitPoint: a run whose lease could not be
// renewed (another sync may now hold the lock) never moves the delta link.
func TestLostLockStopsBeforeTheCommitPoint(t *testing.T) {
	f := newFixture(t)
	f.loseLease = func(l *fakeLease) { l.lose() }
	run, err := f.eng.Sync(context.Background(), Options{})
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("err = %v, want ErrLockLost", err)
	}
	if run == nil || run.Status != StatusFailed || run.DeltaSaved {
		t.Errorf("run %+v", run)
	}
	if st := f.state(t); st.DeltaLink != "" {
		t.Errorf("the delta link moved: %+v", st)
	}
	if f.locked {
		t.Error("the lease was not released")
	}
	f.loseLease = nil
	if run, err := f.eng.Sync(context.Background(), Options{}); err != nil || !run.DeltaSaved {
		t.Fatalf("the next run: %v", err)
	}
}
