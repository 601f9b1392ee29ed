package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
)

// tokenRecorder stands between the handler and the simulator's
// managed-identity endpoint and keeps every access token issued.
type tokenRecorder struct {
	mu     sync.Mutex
	target string // the simulator's /msi/token, set once it runs
	tokens []string
}

func (rec *tokenRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	target := rec.target
	rec.mu.Unlock()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target+"?"+r.URL.RawQuery, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &tok) == nil && tok.AccessToken != "" {
		rec.mu.Lock()
		rec.tokens = append(rec.tokens, tok.AccessToken)
		rec.mu.Unlock()
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

func (rec *tokenRecorder) issued() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.tokens...)
}

// leakScan collects everything the handler said or stored, by where it came from.
type leakScan struct {
	mu    sync.Mutex
	texts []scanned
}

type scanned struct{ where, text string }

func (l *leakScan) add(where string, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.texts = append(l.texts, scanned{where, text})
}

// jwtShape matches any JSON web token, whoever issued it.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

// findings names every secret found, and where.
func (l *leakScan) findings(secrets map[string]string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.texts {
		for name, secret := range secrets {
			if i := strings.Index(s.text, secret); i >= 0 {
				out = append(out, fmt.Sprintf("%s found in %s: …%s…", name, s.where, context40(s.text, i, len(secret))))
			}
		}
		if loc := jwtShape.FindStringIndex(s.text); loc != nil {
			out = append(out, fmt.Sprintf("an access token found in %s: …%s…", s.where, context40(s.text, loc[0], loc[1]-loc[0])))
		}
	}
	return out
}

func context40(s string, i, n int) string {
	return s[max(0, i-40):min(len(s), i+n+40)]
}

func randomSecret(prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestSecretsNeverLeak runs a whole flow with known secrets (the
// managed-identity header, every token the simulator issued, the storage
// account key of the connection string, a function key, a certificate
// password) and looks for each, and for anything shaped like a token, in
// every log line of the handler process, every answer of the functions and
// the API (problem documents included), every blob of every container
// written meanwhile, the queue messages, the uploaded import files and the
// command line's output.
//
// The certificate password is only partly exercised: the simulator has no
// Entra ID token endpoint, so no run signs in with a certificate; the
// command line is run with one configured (handler config, and a command
// whose certificate file cannot be read with it).
func TestSecretsNeverLeak(t *testing.T) {
	began := time.Now().Add(-time.Minute) // container times come from Azurite's clock
	identityHeader := randomSecret("idh-")
	functionKey := randomSecret("fnk-")
	certPassword := randomSecret("cpw-")
	rec := &tokenRecorder{}
	msi := httptest.NewServer(rec)
	defer msi.Close()
	s := startStack(t, stackOptions{users: 30, jobStep: 200 * time.Millisecond, identityHeader: identityHeader,
		extra: []string{"IDENTITY_ENDPOINT=" + msi.URL + "/msi/token", "LOG_LEVEL=debug", "STATUS_POLL_BACKOFF=1s"}})
	rec.mu.Lock()
	rec.target = s.sim.IdentityEndpoint
	rec.mu.Unlock()
	s.functionKey = functionKey
	var seen leakScan
	api := func(method, path, body string, header ...string) apiResponse {
		t.Helper()
		r := s.api(method, path, body, header...)
		seen.add(fmt.Sprintf("the answer to %s %s (%d)", method, path, r.Status), fmt.Sprint(r.Header)+"\n"+string(r.Body))
		return r
	}
	invoke := func(function, payload string) invocation {
		t.Helper()
		inv := s.invoke(function, payload)
		seen.add("the answer of "+function, inv.Raw)
		return inv
	}

	// The mapping through the API, a timer run, its job followed to its end.
	if r := api("PUT", "/api/mapping", e2eMapping, "If-None-Match", "*"); r.Status != 200 {
		t.Fatalf("PUT mapping: %d %s", r.Status, r.Body)
	}
	if inv := invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("timer: %d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if len(run.JobIDs) != 1 {
		t.Fatalf("run %+v", run)
	}
	for i := 0; ; i++ {
		_, inv := s.pollOnce(t)
		seen.add("the answer of ImportStatus", inv.Raw)
		if _, ok := s.jobRecord(t, run.JobIDs[0]); ok {
			break
		}
		if i == 20 {
			t.Fatalf("job %s not recorded after %d polls", run.JobIDs[0], i)
		}
	}

	// HTTP API reads, runs requested over HTTP (one failing at SharePoint),
	// and refusals.
	s.serveRunQueue(t, s.url)
	api("GET", "/api/mapping", "")
	api("GET", "/api/runs", "")
	api("GET", "/api/runs/"+run.ID, "")
	api("GET", "/api/jobs", "")
	api("GET", "/api/jobs/"+run.JobIDs[0], "")
	api("GET", "/api/health", "")
	api("POST", "/api/sync", `{"dryRun":true,"mode":"full","limit":3}`)
	if r := api("POST", "/api/sync", `{"mode":"full","force":true,"allowOverlap":true}`); r.Status != 202 {
		t.Errorf("HTTP run: %d %s", r.Status, r.Body)
	}
	s.sim.Faults.Add(faults.Rule{Origin: faults.SPO, Method: "POST", Path: "AddUsingPath", Status: 500, Count: 1})
	s.sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "^/v1.0/users$", Status: 503, Count: 1})
	if r := api("POST", "/api/sync", `{"mode":"full","force":true,"allowOverlap":true}`); r.Status < 400 {
		t.Errorf("a run failing at SharePoint: %d %s", r.Status, r.Body)
	}
	api("GET", "/api/health", "")
	api("POST", "/api/sync", `{"mode":`)
	api("POST", "/api/sync", `{"users":["a"],"filter":"x"}`)
	api("POST", "/api/sync", `{"filter":"jobTitle eq 'unterminated"}`)
	api("GET", "/api/runs/nope", "")
	api("GET", "/api/jobs/..%2Fstate", "")
	api("GET", "/api/nothing", "")
	api("PUT", "/api/mapping", `{"idType":"Nope"}`, "If-Match", "*")

	// The command line, as an administrator runs it.
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"), 0o600)
	withCert := []string{"AZURE_CLIENT_CERTIFICATE_PATH=" + certFile, "AZURE_CLIENT_CERTIFICATE_PASSWORD=" + certPassword,
		"AZURE_TENANT_ID=7a3c5e1f-2b4d-4c6e-8f0a-1b2c3d4e5f60", "AZURE_CLIENT_ID=5d2a8c4e-6f1b-4a3c-9e7d-0f1a2b3c4d5e"}
	for _, c := range []struct {
		extra []string
		args  []string
	}{
		{nil, []string{"mapping", "get"}},
		{nil, []string{"runs"}},
		{nil, []string{"status"}},
		{nil, []string{"status", run.JobIDs[0], "--errors"}},
		{nil, []string{"sync", "--dry-run", "--limit", "2"}},
		{nil, []string{"config"}},
		{withCert, []string{"config"}},
		{withCert, []string{"status"}},
	} {
		stdout, stderr, err := s.cliWith(t, c.extra, c.args...)
		where := "the output of handler " + strings.Join(c.args, " ")
		if c.extra != nil {
			where += " (certificate settings)"
		}
		seen.add(where, stdout+"\n"+stderr+"\n"+fmt.Sprint(err))
	}

	// Everything stored: every blob of every container written during the
	// test, the queues, the files uploaded to SharePoint.
	svc, err := azblob.NewClientFromConnectionString(s.getenv("AzureWebJobsStorage"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blobs := 0
	for pager := svc.NewListContainersPager(nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.ContainerItems {
			if c.Properties == nil || c.Properties.LastModified == nil || c.Properties.LastModified.Before(began) {
				continue // another test's
			}
			for bp := svc.NewListBlobsFlatPager(*c.Name, nil); bp.More(); {
				bpage, err := bp.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range bpage.Segment.BlobItems {
					resp, err := svc.DownloadStream(ctx, *c.Name, *b.Name, nil)
					if err != nil {
						t.Fatal(err)
					}
					data, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					seen.add("blob "+*c.Name+"/"+*b.Name, string(data))
					blobs++
				}
			}
		}
	}
	for name, q := range map[string]*azstorage.Queue{s.qname: s.queue, s.runQName: s.runs} {
		msgs, err := q.Peek(ctx, 32)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			seen.add("a message of queue "+name, string(m.Body))
		}
	}
	files := s.sim.SPO.FilesIn(importFolder)
	for _, f := range files {
		data, _ := s.sim.SPO.File(f)
		seen.add("the uploaded file "+f, string(data))
	}
	seen.add("the handler's log (stdout and stderr)", s.out.String())

	tokens := rec.issued()
	if len(tokens) < 2 || blobs < 5 || len(files) == 0 || !strings.Contains(s.out.String(), `"level":"DEBUG"`) {
		t.Fatalf("the flow is too thin to prove anything: %d tokens issued, %d blobs, %d files, debug log %v",
			len(tokens), blobs, len(files), strings.Contains(s.out.String(), `"level":"DEBUG"`))
	}
	accountKey := ""
	for _, part := range strings.Split(s.getenv("AzureWebJobsStorage"), ";") {
		if v, ok := strings.CutPrefix(part, "AccountKey="); ok {
			accountKey = v
		}
	}
	if accountKey == "" {
		t.Fatal("the connection string carries no account key")
	}
	secrets := map[string]string{
		"the managed-identity header (IDENTITY_HEADER)": identityHeader,
		"the function key": functionKey,
		"the certificate password (AZURE_CLIENT_CERTIFICATE_PASSWORD)":       certPassword,
		"the storage account key (AccountKey of AzureWebJobsStorage)":        accountKey,
		"the account key's first 20 characters (AzureWebJobsStorage)":        accountKey[:20],
		"the managed-identity header's last 16 characters (IDENTITY_HEADER)": identityHeader[len(identityHeader)-16:],
	}
	for i, tok := range tokens {
		secrets[fmt.Sprintf("access token %d issued by the simulator", i+1)] = tok
		// Its signature alone would do: look for it too.
		secrets[fmt.Sprintf("the signature of access token %d", i+1)] = tok[strings.LastIndex(tok, ".")+1:]
	}
	// The scan finds what it looks for (a control), then finds nothing.
	control := &leakScan{texts: []scanned{{"a control", "x-identity-header: " + identityHeader + "\nAuthorization: Bearer " + tokens[0]}}}
	if f := control.findings(secrets); len(f) < 3 {
		t.Fatalf("the scan missed planted secrets: %q", f)
	}
	for _, f := range seen.findings(secrets) {
		t.Error(f)
	}
	t.Logf("scanned %d texts (%d blobs, %d files, the handler's log of %d bytes) for %d secrets, %d of them tokens",
		len(seen.texts), blobs, len(files), len(s.out.String()), len(secrets), 2*len(tokens))
}
