// Command demo runs profilesync's main job end to end on the local stack:
// Azurite (blob and queue storage), the Microsoft 365 simulator and the
// handler binary, driven exactly as the Azure Functions host drives it.
//
//	make demo        (or: go run ./cmd/demo [--users N])
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/m365sim"
	"github.com/profilesync/profilesync/internal/m365sim/directory"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

const timerPayload = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":%q,"Next":%q,"LastUpdated":%q},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":%q,"RandGuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}}}`

// shown are the SharePoint properties the demo prints.
var shown = []string{"Building", "HomePhone", "Phones", "CostCenter", "Division", "ManagerEmail"}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	users := fs.Int("users", 3000, "users in the simulated tenant")
	if err := fs.Parse(args); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	work, err := os.MkdirTemp("", "profilesync-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	say("== 1. Starting Azurite (Azure Storage emulator)")
	conn, stopAzurite, err := startAzurite(ctx, work)
	if err != nil {
		return err
	}
	defer stopAzurite()

	cs, err := azstorage.ParseConnection("AzureWebJobsStorage", func(k string) string {
		if k == "AzureWebJobsStorage" {
			return conn
		}
		return ""
	})
	if err != nil {
		return err
	}
	queue, err := azstorage.NewQueue(cs, nil, "profilesync-status")
	if err != nil {
		return err
	}

	say("== 2. Starting the Microsoft 365 simulator with %d users (jobs take a few seconds, like SharePoint's, only faster)", *users)
	sim, err := m365sim.Start(m365sim.Options{Users: *users, Seed: 42, JobStep: time.Second, IdentityHeader: "demo-identity-header"})
	if err != nil {
		return err
	}
	defer sim.Close()
	for _, kv := range sim.Env() {
		say("   %s", kv)
	}

	say("== 3. Building and starting the handler (the first build compiles the Microsoft Graph SDK: minutes)")
	bin := filepath.Join(work, "handler")
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./handler").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./handler: %v\n%s", err, b)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	env := append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + work,
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port),
		"AzureWebJobsStorage=" + conn,
		"SPO_FOLDER=Shared Documents/Profile Imports",
		"STATUS_POLL_BACKOFF=2s,3s",
	}, sim.Env()...)
	logFile := filepath.Join(work, "handler.log")
	lf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer lf.Close()
	h := exec.Command(bin)
	h.Env, h.Stdout, h.Stderr = env, lf, lf
	if err := h.Start(); err != nil {
		return err
	}
	defer func() {
		h.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { h.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.Process.Kill()
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, base+"/", 30*time.Second); err != nil {
		return fmt.Errorf("handler did not start: %w\n%s", err, tail(logFile))
	}
	say("   handler listening on %s (what the Functions host calls)", base)

	say("== 4. Storing the mapping (handler mapping put examples/mapping.json)")
	cmd := exec.CommandContext(ctx, bin, "mapping", "put", "examples/mapping.json")
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mapping put: %v\n%s", err, b)
	}
	m, _ := os.ReadFile("examples/mapping.json")
	say("%s", indent(string(m)))

	say("== 5. Timer fires: first run, a full sync")
	now := time.Now().UTC()
	if err := invokeTimer(ctx, base, fmt.Sprintf(timerPayload, "0001-01-01T00:00:00+00:00", now.Format(time.RFC3339), "0001-01-01T00:00:00+00:00", now.Format(time.RFC3339Nano)), say); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(logFile))
	}
	if err := followJobs(ctx, queue, base, say); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(logFile))
	}

	// Pick a few ordinary members to change.
	var picked []directory.User
	for _, u := range sim.Directory.Users()[directory.GenFixedCount:] {
		if u.Deleted || u.Props["userType"] == "Guest" || u.Props["accountEnabled"] == false {
			continue
		}
		picked = append(picked, u)
		if len(picked) == 4 {
			break
		}
	}
	say("== 6. Changing users in the simulated Entra ID")
	changes := []struct {
		u     directory.User
		patch map[string]any
		what  string
	}{
		{picked[0], map[string]any{"jobTitle": `Head of "R&D" \ Platform 🚀`}, "new job title with quotes, a backslash and an emoji"},
		{picked[1], map[string]any{"mobilePhone": "+45 31 41 59 26", "businessPhones": []any{"+45 1", "+45 2"}}, "new phone numbers"},
		{picked[2], map[string]any{"employeeOrgData": map[string]any{"division": "Ærøskøbing Devices", "costCenter": "CC-1"}}, "new division"},
	}
	for _, c := range changes {
		if _, err := sim.Directory.Update(c.u.ID, directory.Patch{Props: c.patch}); err != nil {
			return err
		}
		say("   %-40s %s", upn(c.u), c.what)
	}
	if err := sim.Directory.Delete(picked[3].ID, false); err != nil {
		return err
	}
	say("   %-40s deleted (not sent: SharePoint keeps the profile)", upn(picked[3]))
	before := map[string]map[string]string{}
	for _, c := range changes {
		before[c.u.ID], _ = sim.SPO.Profile(c.u.ID)
	}

	say("== 7. Timer fires again: a delta sync sends only the changed users")
	now = time.Now().UTC()
	if err := invokeTimer(ctx, base, fmt.Sprintf(timerPayload, now.Add(-15*time.Minute).Format(time.RFC3339), now.Format(time.RFC3339), now.Add(-15*time.Minute).Format(time.RFC3339), now.Format(time.RFC3339Nano)), say); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(logFile))
	}
	if err := followJobs(ctx, queue, base, say); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(logFile))
	}

	say("== 8. What changed in the SharePoint profiles")
	for _, c := range changes {
		after, _ := sim.SPO.Profile(c.u.ID)
		say("   %s", upn(c.u))
		for _, k := range shown {
			if before[c.u.ID][k] != after[k] {
				say("      %-13s %q -> %q", k, before[c.u.ID][k], after[k])
			}
		}
	}
	say("\n== handler status (the recorded jobs, like Get-PnPUPABulkImportStatus)")
	st := exec.CommandContext(ctx, bin, "status")
	st.Env = env
	b, err := st.CombinedOutput()
	if err != nil {
		return fmt.Errorf("handler status: %v\n%s", err, b)
	}
	say("%s", indent(string(b)))
	say("\nDone. The handler's log is JSON on stdout (what the Functions host collects); last lines:\n%s", tail(logFile))
	return nil
}

func upn(u directory.User) string { return fmt.Sprint(u.Props["userPrincipalName"]) }

// invokeTimer posts a timer payload as the Functions host does and prints the invocation's log lines.
func invokeTimer(ctx context.Context, base, payload string, say func(string, ...any)) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/SyncTimer", strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", fmt.Sprintf("demo-%d", time.Now().UnixNano()))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct{ Logs []string }
	body, _ := io.ReadAll(resp.Body)
	json.Unmarshal(body, &env)
	for _, l := range env.Logs {
		say("   %s", l)
	}
	say("   (invocation answered %d in %s)", resp.StatusCode, time.Since(start).Round(time.Millisecond))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("SyncTimer failed: %d %s", resp.StatusCode, body)
	}
	return nil
}

// followJobs plays the Functions host's queue trigger: it takes each status
// message from the queue once visible, posts it to /ImportStatus exactly as
// the host does (double-encoded) and deletes it when the invocation succeeds,
// until no message is left (bounded).
func followJobs(ctx context.Context, q *azstorage.Queue, base string, say func(string, ...any)) error {
	deadline := time.Now().Add(2 * time.Minute)
	idle := 0
	for time.Now().Before(deadline) {
		msgs, err := q.Receive(ctx, 1, 30*time.Second)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			peek, err := q.Peek(ctx, 1)
			if err != nil {
				return err
			}
			// Peek sees only visible messages; a few idle rounds in a row with
			// nothing received means the last poll ended the job.
			if len(peek) == 0 {
				idle++
				if idle > 12 { // 12 x 250 ms with no scheduled poll becoming visible
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		idle = 0
		m := msgs[0]
		enc := func(s string) string {
			once, _ := json.Marshal(s)
			twice, _ := json.Marshal(string(once))
			return string(twice)
		}
		payload := fmt.Sprintf(`{"Data":{"msg":%s},"Metadata":{"DequeueCount":%q,"Id":%s,"PopReceipt":%s,"sys":{"MethodName":"ImportStatus"}}}`,
			enc(string(m.Body)), strconv.FormatInt(m.DequeueCount, 10), enc(m.ID), enc(m.PopReceipt))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/ImportStatus", strings.NewReader(payload))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		var env struct{ Logs []string }
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		json.Unmarshal(body, &env)
		for _, l := range env.Logs {
			say("   ImportStatus: %s", l)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ImportStatus failed: %d %s", resp.StatusCode, body)
		}
		if err := q.Delete(ctx, m); err != nil {
			return err
		}
		if strings.Contains(strings.Join(env.Logs, " "), " ended: ") {
			return nil
		}
	}
	return fmt.Errorf("the import job did not end within 2 minutes")
}

func startAzurite(ctx context.Context, work string) (conn string, stop func(), err error) {
	dir := filepath.Join(work, "azurite")
	bp, err := freePort()
	if err != nil {
		return "", nil, err
	}
	qp, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, "scripts/azurite.sh", "start", dir)
	cmd.Env = append(os.Environ(), "AZURITE_BLOB_PORT="+strconv.Itoa(bp), "AZURITE_QUEUE_PORT="+strconv.Itoa(qp))
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", nil, fmt.Errorf("starting Azurite: %v\n%s", err, b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AzureWebJobsStorage="); ok {
			conn = v
		}
	}
	stop = func() { exec.Command("scripts/azurite.sh", "stop", dir).Run() }
	if conn == "" {
		stop()
		return "", nil, fmt.Errorf("azurite.sh printed no connection string:\n%s", b)
	}
	return conn, stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n   ")
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return indent(strings.Join(lines, "\n"))
}
