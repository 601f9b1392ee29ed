package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/m365sim"
	"github.com/profilesync/profilesync/internal/syncer"
	"github.com/profilesync/profilesync/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func() {
		// The handler binaries built for the end-to-end tests.
		for _, dir := range []string{binary.dir, crashBinary.dir} {
			if dir != "" {
				os.RemoveAll(dir)
			}
		}
	})
}

// builtHandler is a handler binary built once per test process, in a
// temporary folder removed by TestMain.
type builtHandler struct {
	once sync.Once
	path string
	err  error
	dir  string
}

var binary builtHandler

// handlerBinary builds the handler once per test process, as the Functions
// host would run it: a separate process speaking the custom-handler protocol.
func handlerBinary(t testing.TB) string {
	t.Helper()
	return binary.build(t, "profilesync-handler-")
}

// build builds the handler into a new temporary folder once, with the given
// build tags. Under the race detector the handler the tests start is built
// with it too: its goroutines are what the end-to-end tests exercise.
func (b *builtHandler) build(t testing.TB, prefix string, tags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			b.err = err
			return
		}
		b.dir, b.path = dir, filepath.Join(dir, "handler")
		args := []string{"build", "-o", b.path}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		if raceEnabled {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// stack is one end-to-end environment: Azurite, the simulator and a running
// handler process.
type stack struct {
	t         testing.TB
	az        *testenv.AzuriteEnv
	sim       *m365sim.Sim
	env       []string
	url       string
	blobs     *azstorage.Blobs
	queue     *azstorage.Queue
	runs      *azstorage.Queue // SYNC_RUN_QUEUE: what POST /api/sync hands to SyncRun
	container string
	qname     string
	runQName  string
	out       *syncBuffer
	proc      *os.Process // the handler process, when startStack started one
	// functionKey is what api sends as the function key (default functionkey123).
	functionKey string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type stackOptions struct {
	users   int
	seed    int64
	jobStep time.Duration
	extra   []string // more KEY=value settings
	// noHandler: set everything up but start no handler process.
	noHandler bool
	// ownAzurite: an Azurite for this test alone (s.az), which it may
	// pause and resume.
	ownAzurite bool
	// sqlAzurite: an Azurite of its own whose blob metadata lives in
	// MariaDB (indexed), for 100,000s of blobs in one container.
	sqlAzurite bool
	// identityHeader is the managed-identity secret the simulator and the
	// handler share (default e2e-identity-header).
	identityHeader string
}

func startStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.users == 0 {
		o.users = 120
	}
	if o.seed == 0 {
		o.seed = 7
	}
	az := testenv.Azurite(t)
	switch {
	case o.sqlAzurite:
		az = testenv.SQLAzurite(t)
	case o.ownAzurite:
		az = testenv.DedicatedAzurite(t)
	}
	if o.identityHeader == "" {
		o.identityHeader = "e2e-identity-header"
	}
	sim, err := m365sim.Start(m365sim.Options{Users: o.users, Seed: o.seed, JobStep: o.jobStep, IdentityHeader: o.identityHeader})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	s := &stack{t: t, sim: sim, az: az, container: testenv.Name(t, "ps"), qname: testenv.Name(t, "psq"), runQName: testenv.Name(t, "psr"), out: &syncBuffer{}}
	port := testenv.FreePort(t)
	s.url = "http://127.0.0.1:" + strconv.Itoa(port)
	s.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"TMPDIR=" + t.TempDir(),
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port),
		"AzureWebJobsStorage=" + az.ConnectionString,
		"SYNC_CONTAINER=" + s.container,
		"SYNC_STATUS_QUEUE=" + s.qname,
		"SYNC_RUN_QUEUE=" + s.runQName,
		"SPO_FOLDER=Shared Documents/Profile Imports",
	}, sim.Env()...)
	s.env = append(s.env, o.extra...)

	conn, err := azstorage.ParseConnection("AzureWebJobsStorage", s.getenv)
	if err != nil {
		t.Fatal(err)
	}
	if s.blobs, err = azstorage.NewBlobs(conn, nil, s.container); err != nil {
		t.Fatal(err)
	}
	if s.queue, err = azstorage.NewQueue(conn, nil, s.qname); err != nil {
		t.Fatal(err)
	}
	if s.runs, err = azstorage.NewQueue(conn, nil, s.runQName); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.blobs.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.runs.EnsureQueue(ctx); err != nil {
		t.Fatal(err)
	}

	if o.noHandler {
		return s // the caller runs the handler (see killmatrix_test.go)
	}
	cmd := exec.Command(handlerBinary(t))
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.proc = cmd.Process
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if strings.Contains(s.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in the handler process")
		}
		if t.Failed() {
			t.Logf("handler output:\n%s", s.out.String())
		}
	})
	// The host polls GET / until the handler answers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.url + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler did not answer GET / within 20 s: %v\n%s", err, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

func (s *stack) getenv(k string) string {
	for i := len(s.env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(s.env[i], k+"="); ok {
			return v
		}
	}
	return ""
}

func (s *stack) putMapping(doc string) {
	s.t.Helper()
	if _, err := s.blobs.Put(context.Background(), syncer.MappingBlob, []byte(doc), ""); err != nil {
		s.t.Fatal(err)
	}
}

// invocation is the host's view of a custom-handler answer.
type invocation struct {
	Status int
	Body   struct {
		Outputs     map[string]any
		Logs        []string
		ReturnValue any
	}
	Raw string
}

// invoke posts a payload to /<function> exactly as the Functions host does.
func (s *stack) invoke(function, payload string) invocation {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+"/"+function, strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "e2e-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1037.0")
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1037.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	inv := invocation{Status: resp.StatusCode, Raw: string(raw)}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.t.Fatalf("%s answered Content-Type %q; the host fails such invocations", function, ct)
	}
	if err := json.Unmarshal(raw, &inv.Body); err != nil {
		s.t.Fatalf("%s answered a body the host cannot read: %v\n%s", function, err, raw)
	}
	return inv
}

// lastRun reads the newest run record.
func (s *stack) lastRun() syncer.Run {
	s.t.Helper()
	list, err := s.blobs.List(context.Background(), syncer.RunsPrefix)
	if err != nil {
		s.t.Fatal(err)
	}
	if len(list) == 0 {
		s.t.Fatal("no run record")
	}
	var newest syncer.Run
	for _, b := range list {
		data, _, err := s.blobs.Get(context.Background(), b.Name)
		if err != nil {
			s.t.Fatal(err)
		}
		var r syncer.Run
		if err := json.Unmarshal(data, &r); err != nil {
			s.t.Fatal(err)
		}
		if r.Started.After(newest.Started) {
			newest = r
		}
	}
	return newest
}

func (s *stack) state() syncer.State {
	s.t.Helper()
	var st syncer.State
	data, _, err := s.blobs.Get(context.Background(), syncer.StateBlob)
	if errors.Is(err, fs.ErrNotExist) {
		return st // no state yet
	}
	if err != nil {
		s.t.Fatalf("reading %s: %v", syncer.StateBlob, err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		s.t.Fatal(err)
	}
	return st
}

// simPost calls the simulator's admin API on the Graph origin.
func (s *stack) simPost(path, body string) {
	s.t.Helper()
	s.simDo(http.MethodPost, path, body)
}

func (s *stack) simDo(method, path, body string) []byte {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.sim.GraphURL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

// identityEnv exports the simulator's managed-identity settings for code that
// runs in the test process: azidentity reads the process environment.
func (s *stack) identityEnv(t *testing.T) {
	t.Helper()
	for _, kv := range s.env {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "IDENTITY_") {
			t.Setenv(k, v)
		}
	}
}

// inProcessApp wires the handler's app in the test process against the stack.
func (s *stack) inProcessApp(t *testing.T) *app {
	t.Helper()
	s.identityEnv(t)
	cfg, err := loadConfig(s.getenv)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, newLogger(io.Discard, s.getenv), false)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
