// Package testenv holds helpers shared by the tests of several packages:
// a per-process Azurite (started through scripts/azurite.sh), free loopback
// ports, the repository root and unique storage names.
//
// A package whose tests use Azurite declares
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// so the emulator is stopped when its tests end. Without it Azurite still goes
// away: the script watches the test process and stops the emulator about a
// second after the process has exited (also when it was killed).
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// AzuriteEnv describes a running Azurite.
type AzuriteEnv struct {
	// ConnectionString is a shared-key connection string for the
	// devstoreaccount1 account with explicit blob and queue endpoints.
	ConnectionString string
	// BlobURL and QueueURL are the service URLs, e.g.
	// http://127.0.0.1:PORT/devstoreaccount1.
	BlobURL  string
	QueueURL string

	dir   string   // data folder handed to the script; removed by stop
	root  string   // repository root
	extra []string // more environment for the script (AZURITE_DB)
}

// startAttempts bounds how often start is retried with fresh ports: a port
// picked by FreePort can be taken by another process before Azurite binds it.
const startAttempts = 3

// startTimeout bounds one run of "azurite.sh start" (the script itself waits
// at most 30 s for the ports, npm install may take longer on a cold machine).
const startTimeout = 5 * time.Minute

var azurite struct {
	once sync.Once
	mu   sync.Mutex
	env  *AzuriteEnv
	err  error
}

// Azurite returns the Azurite of this test process, starting it on first use.
// A failure to start (Node.js missing, install failed, ports busy) fails the
// test with the script's output: CI is expected to provide Node.js.
//
// The emulator is shared by every test of the process; each test should use
// its own container and queue names (see Name). Stopping is left to Main or,
// failing that, to the script's watch on the test process, so Azurite is safe
// to call from tests that use tb.Cleanup or run in parallel.
func Azurite(tb testing.TB) *AzuriteEnv {
	tb.Helper()
	azurite.once.Do(func() {
		env, err := startAzurite()
		azurite.mu.Lock()
		azurite.env, azurite.err = env, err
		azurite.mu.Unlock()
	})
	azurite.mu.Lock()
	env, err := azurite.env, azurite.err
	azurite.mu.Unlock()
	if err != nil {
		tb.Fatalf("starting Azurite: %v", err)
	}
	return env
}

// Main runs the tests and then stops the Azurite they started, if any. Call it
// from TestMain.
func Main(m *testing.M, cleanups ...func()) {
	os.Exit(runAndStop(m, cleanups...))
}

func runAndStop(m *testing.M, cleanups ...func()) int {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if err := stopAzurite(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stopping Azurite: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// startAzurite must not call tb.Fatal: it runs inside sync.Once, which would
// then count as done without a result.
func startAzurite(extraEnv ...string) (*AzuriteEnv, error) {
	root, err := findRepoRoot()
	if err != nil {
		return nil, err
	}
	var errs []error
	for range startAttempts {
		blobPort, err := freePort()
		if err != nil {
			return nil, err
		}
		queuePort, err := freePort()
		if err != nil {
			return nil, err
		}
		env, err := startOnce(root, blobPort, queuePort, extraEnv...)
		if err == nil {
			return env, nil
		}
		errs = append(errs, err)
		// Only a lost race for a port is worth another try.
		if !strings.Contains(err.Error(), "EADDRINUSE") && blobPort != queuePort {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func startOnce(root string, blobPort, queuePort int, extraEnv ...string) (*AzuriteEnv, error) {
	if blobPort == queuePort {
		return nil, errors.New("free port picker returned the same port twice")
	}
	// The script creates the folder and stop (or its watchdog) removes it
	// whole, so nothing is left behind even when the test binary is killed.
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("naming the Azurite folder: %w", err)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("testenv-azurite-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:])))

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "azurite.sh"), "start", dir)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"AZURITE_BLOB_PORT="+strconv.Itoa(blobPort),
		"AZURITE_QUEUE_PORT="+strconv.Itoa(queuePort),
		"AZURITE_TABLE_PORT=0",
		"AZURITE_WATCH_PID="+strconv.Itoa(os.Getpid()),
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("scripts/azurite.sh start: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	env, err := parseStartOutput(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("scripts/azurite.sh start: %w\n%s", err, stdout.String())
	}
	env.root = root
	env.extra = extraEnv
	return env, nil
}

// parseStartOutput reads the AZURITE_DIR= and AzureWebJobsStorage= lines the
// script prints.
func parseStartOutput(out string) (*AzuriteEnv, error) {
	env := &AzuriteEnv{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "AZURITE_DIR="); ok {
			env.dir = v
		}
		if v, ok := strings.CutPrefix(line, "AzureWebJobsStorage="); ok {
			env.ConnectionString = v
		}
	}
	if env.dir == "" || env.ConnectionString == "" {
		return nil, errors.New("output has no AZURITE_DIR or AzureWebJobsStorage line")
	}
	for _, part := range strings.Split(env.ConnectionString, ";") {
		if v, ok := strings.CutPrefix(part, "BlobEndpoint="); ok {
			env.BlobURL = v
		}
		if v, ok := strings.CutPrefix(part, "QueueEndpoint="); ok {
			env.QueueURL = v
		}
	}
	if env.BlobURL == "" || env.QueueURL == "" {
		return nil, errors.New("connection string has no BlobEndpoint or QueueEndpoint")
	}
	return env, nil
}

// stopAzurite stops the Azurite of this process, if one was started, and
// removes its data folder.
func stopAzurite() error {
	azurite.mu.Lock()
	env := azurite.env
	azurite.env = nil
	if env != nil {
		azurite.err = errors.New("the emulator was already stopped by testenv.Main")
	}
	azurite.mu.Unlock()
	if env == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(env.root, "scripts", "azurite.sh"), "stop", env.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/azurite.sh stop: %w\n%s", err, out)
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; callers that can retry
// should.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	return port, nil
}

// RepoRoot returns the directory holding go.mod, found by walking up from the
// working directory (a package's folder under go test).
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := findRepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("finding repository root: no go.mod above the working directory")
		}
		dir = up
	}
}

// maxNameLen is the longest container or queue name Azure accepts.
const maxNameLen = 63

// Name returns a container/queue name unique to this call: lowercase letters,
// digits and single hyphens, starting with a letter, 3 to 63 characters. It is
// built from prefix, the test's name and a random suffix, so a failing test's
// leftovers are easy to recognise.
func Name(tb testing.TB, prefix string) string {
	tb.Helper()
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		tb.Fatalf("making a name: %v", err)
	}
	suffix := hex.EncodeToString(rnd[:])
	base := sanitizeName(prefix + "-" + tb.Name())
	if base == "" || base[0] < 'a' || base[0] > 'z' {
		base = "t-" + base
	}
	if limit := maxNameLen - len(suffix) - 1; len(base) > limit {
		base = base[:limit]
	}
	base = strings.TrimRight(base, "-")
	return base + "-" + suffix
}

// sanitizeName lowercases s, turns every run of other characters into a
// single hyphen and trims hyphens at both ends.
func sanitizeName(s string) string {
	var b strings.Builder
	hyphen := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			hyphen = false
			continue
		}
		if !hyphen && b.Len() > 0 {
			b.WriteByte('-')
			hyphen = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// DedicatedAzurite starts an Azurite of the calling test's own, stopped (and
// its data removed) when the test ends: for tests that stop and restart
// storage (Pause, Resume), which the shared one must not see.
//
// extraEnv goes to Azurite's environment, e.g. AZURITE_DB=mysql://… for its
// SQL blob metadata store (see SQLAzurite).
func DedicatedAzurite(tb testing.TB, extraEnv ...string) *AzuriteEnv {
	tb.Helper()
	env, err := startAzurite(extraEnv...)
	if err != nil {
		tb.Fatalf("starting Azurite: %v", err)
	}
	tb.Cleanup(func() {
		cmd := exec.Command("bash", filepath.Join(env.root, "scripts", "azurite.sh"), "stop", env.dir)
		cmd.Dir = env.root
		_ = cmd.Run()
	})
	return env
}

// Pause stops Azurite and keeps its data (the service is down until Resume).
func (e *AzuriteEnv) Pause() error {
	cmd := exec.Command("bash", filepath.Join(e.root, "scripts", "azurite.sh"), "pause", e.dir)
	cmd.Dir = e.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("azurite.sh pause: %w\n%s", err, out)
	}
	return nil
}

// Resume starts a paused Azurite again on the same ports, with its data.
func (e *AzuriteEnv) Resume() error {
	port := func(u string) string {
		rest := u[strings.LastIndex(u, ":")+1:]
		p, _, _ := strings.Cut(rest, "/")
		return p
	}
	cmd := exec.Command("bash", filepath.Join(e.root, "scripts", "azurite.sh"), "start", e.dir)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(),
		"AZURITE_BLOB_PORT="+port(e.BlobURL),
		"AZURITE_QUEUE_PORT="+port(e.QueueURL),
		"AZURITE_TABLE_PORT=0",
		"AZURITE_WATCH_PID="+strconv.Itoa(os.Getpid()),
	)
	cmd.Env = append(cmd.Env, e.extra...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("azurite.sh start (resume): %w\n%s", err, out)
	}
	return nil
}

// SQLAzurite starts a dedicated Azurite whose blob metadata lives in a
// MariaDB of its own (scripts/mariadb.sh), for tests that put 100,000s of
// blobs in one container: Azurite's default store scans every blob of the
// account on each blob operation. It skips the test when MariaDB is not
// installed and cannot be.
func SQLAzurite(tb testing.TB) *AzuriteEnv {
	tb.Helper()
	root, err := findRepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "testenv-mariadb-")
	if err != nil {
		tb.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "mariadb.sh")
	out, err := exec.Command("bash", script, "start", dir).Output()
	if err != nil {
		os.RemoveAll(dir)
		if ee, ok := err.(*exec.ExitError); ok && strings.Contains(string(ee.Stderr), "needs root") {
			tb.Skipf("MariaDB for Azurite's SQL store: %s", ee.Stderr)
		}
		tb.Fatalf("scripts/mariadb.sh start: %v\n%s", err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("bash", script, "stop", dir).Run() })
	var db string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "AZURITE_DB="); ok {
			db = v
		}
	}
	if db == "" {
		tb.Fatalf("scripts/mariadb.sh start printed no AZURITE_DB line:\n%s", out)
	}
	return DedicatedAzurite(tb, "AZURITE_DB="+db)
}
