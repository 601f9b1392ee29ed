package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/graph"
	"github.com/profilesync/profilesync/internal/spo"
	"github.com/profilesync/profilesync/internal/syncer"
)

// lockBlob is the blob whose lease makes sure one sync runs at a time.
const lockBlob = "sync.lock"

// app holds the wired adapters and the engine.
type app struct {
	cfg    config
	log    *slog.Logger
	blobs  *azstorage.Blobs
	queue  *azstorage.Queue // SYNC_STATUS_QUEUE: job status polls
	runs   *azstorage.Queue // SYNC_RUN_QUEUE: manual runs for the SyncRun function
	spo    *spo.Client
	graph  *graph.Client
	engine *syncer.Engine
	poller *syncer.Poller
	house  *syncer.Housekeeper
	// reads holds a slot per API read being served (gated): at most
	// maxReads at once, each holding up to apiparse.MaxTop records.
	reads chan struct{}
}

// maxReads bounds the API reads served at once. Each reads up to 1,000
// records from storage (and asks SharePoint about unfinished jobs), so a
// burst of callers waits for a slot rather than holding every answer in
// memory at the same time.
const maxReads = 8

// newApp builds every adapter from the settings. It does not touch the network.
// interactive is true for the administrator's command line, which may sign in
// with the Azure CLI's account when no other identity is configured.
func newApp(cfg config, log *slog.Logger, interactive bool) (*app, error) {
	cred, err := credential(cfg, interactive)
	if err != nil {
		return nil, err
	}
	storageCred := azcore.TokenCredential(nil)
	if cfg.Storage.NeedsCredential() {
		storageCred = cred
		if id := cfg.Storage.ClientID(); id != "" && id != cfg.ClientID && cfg.IdentityEndpoint != "" {
			storageCred, err = azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(id)})
			if err != nil {
				return nil, fmt.Errorf("storage managed identity: %w", err)
			}
		}
	}
	blobs, err := azstorage.NewBlobs(cfg.Storage, storageCred, cfg.Container)
	if err != nil {
		return nil, fmt.Errorf("blob storage: %w", err)
	}
	blobs.SetLimits(blobLimit)
	queue, err := azstorage.NewQueue(cfg.Storage, storageCred, cfg.StatusQueue)
	if err != nil {
		return nil, fmt.Errorf("queue storage: %w", err)
	}
	runs, err := azstorage.NewQueue(cfg.Storage, storageCred, cfg.RunQueue)
	if err != nil {
		return nil, fmt.Errorf("queue storage: %w", err)
	}
	g, err := graph.New(graph.Options{Endpoint: cfg.GraphEndpoint, Credential: cred, Logger: log, Parallelism: cfg.Parallelism})
	if err != nil {
		return nil, err
	}
	sp, err := spo.New(spo.Options{SiteURL: cfg.SiteURL, Folder: cfg.Folder, Credential: cred, Logger: log, ChunkSize: cfg.ChunkSize})
	if err != nil {
		return nil, fmt.Errorf("SPO_SITE_URL/SPO_FOLDER: %w", err)
	}
	a := &app{cfg: cfg, log: log, blobs: blobs, queue: queue, runs: runs, spo: sp, graph: g, reads: make(chan struct{}, maxReads)}
	st := store{blobs}
	// The metric events (README, "Metrics") go with the log lines to stdout,
	// which the Functions host forwards to Application Insights, whatever
	// LOG_LEVEL says. The command line writes none: its stderr reaches no
	// Application Insights, and its runs are in the run records.
	metrics := log
	if interactive {
		metrics = nil
	}
	a.engine = &syncer.Engine{
		Source:    g,
		Target:    sp,
		Blobs:     st,
		Scheduler: queue,
		Lock:      a.lock,
		Log:       log,
		Metrics:   metrics,
		FirstPoll: cfg.PollBackoff[0],
		Jobs:      sp,
		Pending:   st,
		Lookup:    g,
		AllJobs:   sp,
		Files:     sp,
		// A poll chain with no poll for longer than the longest backoff
		// (plus slack) died; an unfinished job older than the poller
		// follows stops blocking syncs.
		PollRevive:    cfg.PollBackoff[len(cfg.PollBackoff)-1] + 30*time.Minute,
		PendingMaxAge: cfg.PollMaxAge,
	}
	a.poller = &syncer.Poller{
		Jobs:      sp,
		Logs:      spoLogs{sp},
		Blobs:     st,
		Scheduler: queue,
		Requeue:   sp,
		Backoff:   cfg.PollBackoff,
		MaxAge:    cfg.PollMaxAge,
		Log:       log,
		Metrics:   metrics,
	}
	a.house = &syncer.Housekeeper{Blobs: st, List: st, Files: sp, After: cfg.CleanupAfter, Log: log,
		Retain: cfg.Retention, Walk: st, AlsoPrune: []string{requestsPrefix, syncer.FingerprintsPendingPrefix}}
	return a, nil
}

// credential picks the identity: a certificate service principal when
// AZURE_CLIENT_CERTIFICATE_PATH is set, otherwise managed identity
// (user-assigned when AZURE_CLIENT_ID is set). On an administrator's
// workstation (interactive, no IDENTITY_ENDPOINT) it is the account of
// `az login`.
func credential(cfg config, interactive bool) (azcore.TokenCredential, error) {
	if cfg.CertPath != "" {
		data, err := os.ReadFile(cfg.CertPath)
		if err != nil {
			return nil, fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH: %w", err)
		}
		certs, key, err := azidentity.ParseCertificates(data, []byte(cfg.CertPassword))
		if err != nil {
			return nil, fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH: %w", err)
		}
		return azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{SendCertificateChain: true})
	}
	if interactive && cfg.IdentityEndpoint == "" {
		cred, err := azidentity.NewAzureCLICredential(nil)
		if err != nil {
			return nil, fmt.Errorf("Azure CLI sign-in: %w", err)
		}
		return cred, nil
	}
	opts := &azidentity.ManagedIdentityCredentialOptions{}
	if cfg.ClientID != "" {
		opts.ID = azidentity.ClientID(cfg.ClientID)
	}
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return nil, fmt.Errorf("managed identity: %w", err)
	}
	return cred, nil
}

// prepare creates the state container and the two queues if missing.
func (a *app) prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.blobs.EnsureContainer(ctx); err != nil {
		return fmt.Errorf("creating container %s: %w", a.cfg.Container, err)
	}
	if err := a.queue.EnsureQueue(ctx); err != nil {
		return fmt.Errorf("creating queue %s: %w", a.cfg.StatusQueue, err)
	}
	if err := a.runs.EnsureQueue(ctx); err != nil {
		return fmt.Errorf("creating queue %s: %w", a.cfg.RunQueue, err)
	}
	return nil
}

func (a *app) lock(ctx context.Context) (syncer.Lease, error) {
	l, err := a.blobs.Lock(ctx, lockBlob)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// newLogger logs JSON lines to stdout: the Functions host turns stdout into
// Information logs and every stderr line into an Error. It logs at LOG_LEVEL
// and above (info when the setting is invalid: loadConfig reports it). Every
// logger of the app derives from this one (newApp hands it to Graph,
// SharePoint, the engine, the poller and housekeeping), so the level reaches
// them all.
func newLogger(stdout interface{ Write([]byte) (int, error) }, getenv func(string) string) *slog.Logger {
	level, _ := parseLogLevel(value(getenv, "LOG_LEVEL"))
	return slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))
}
