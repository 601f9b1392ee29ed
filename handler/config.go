package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/profilesync/profilesync/internal/azstorage"
	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/graph"
	"github.com/profilesync/profilesync/internal/profile"
)

// setting describes one app setting the handler reads. The table is the
// single source for validation, `handler config` and the README's settings
// table (a test keeps them in step).
type setting struct {
	Name    string
	Default string
	Secret  bool
}

// settings lists every app setting the handler reads itself (storage
// connection settings are read by azstorage.ParseConnection with the
// AzureWebJobsStorage prefix).
var settings = []setting{
	{Name: "GRAPH_ENDPOINT", Default: graph.DefaultEndpoint},
	{Name: "SPO_SITE_URL"},
	{Name: "SPO_FOLDER", Default: "Shared Documents"},
	{Name: "SYNC_SCHEDULE", Default: "0 0 2 * * *"},
	{Name: "SYNC_CONTAINER", Default: "profilesync"},
	{Name: "SYNC_STATUS_QUEUE", Default: "profilesync-status"},
	{Name: "SYNC_RUN_QUEUE", Default: "profilesync-runs"},
	{Name: "STATUS_POLL_BACKOFF", Default: "1m,2m,5m,10m,15m,30m"},
	{Name: "STATUS_POLL_MAX_AGE", Default: "48h"},
	{Name: "CLEANUP_AFTER_DAYS", Default: "0"},
	{Name: "RECORDS_RETENTION_DAYS", Default: "90"},
	{Name: "SPO_CHUNK_SIZE", Default: "10485760"},
	{Name: "GRAPH_PARALLELISM", Default: "16"},
	{Name: "LOG_LEVEL", Default: "info"},
	{Name: "HTTP_READ_TIMEOUT", Default: "30s"},
	{Name: "IDENTITY_ENDPOINT"},
	{Name: "IDENTITY_HEADER", Secret: true},
	{Name: "AZURE_CLIENT_ID"},
	{Name: "AZURE_TENANT_ID"},
	{Name: "AZURE_CLIENT_CERTIFICATE_PATH"},
	{Name: "AZURE_CLIENT_CERTIFICATE_PASSWORD", Secret: true},
	{Name: "FUNCTIONS_CUSTOMHANDLER_PORT"},
}

// config is every setting, read once and validated together.
type config struct {
	Storage       azstorage.Connection
	GraphEndpoint string // origin
	SiteURL       string
	Folder        string
	Schedule      string
	Container     string
	StatusQueue   string
	RunQueue      string // manual runs requested over HTTP, run by the SyncRun function
	PollBackoff   []time.Duration
	PollMaxAge    time.Duration
	CleanupAfter  time.Duration // 0 = housekeeping off
	Retention     time.Duration // 0 = keep run, job and poll records forever
	ChunkSize     int64         // bytes per upload request
	Parallelism   int           // Graph ranges a full sync reads at once
	LogLevel      slog.Level    // LOG_LEVEL: the least level logged
	ReadTimeout   time.Duration // HTTP_READ_TIMEOUT: the most a request's headers and body may take to arrive

	IdentityEndpoint, IdentityHeader string
	ClientID, TenantID               string
	CertPath, CertPassword           string
}

func value(getenv func(string) string, name string) string {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		for _, s := range settings {
			if s.Name == name {
				return s.Default
			}
		}
	}
	return v
}

var (
	containerName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
)

// loadConfig reads and checks every setting; the error lists every problem,
// each naming its setting.
func loadConfig(getenv func(string) string) (config, error) {
	var c config
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	st, err := azstorage.ParseConnection("AzureWebJobsStorage", getenv)
	if err != nil {
		errs = append(errs, err)
	}
	c.Storage = st

	if origin, err := graph.Origin(value(getenv, "GRAPH_ENDPOINT")); err != nil {
		bad("GRAPH_ENDPOINT: %v", err)
	} else {
		c.GraphEndpoint = origin
	}

	c.SiteURL = strings.TrimRight(value(getenv, "SPO_SITE_URL"), "/")
	if c.SiteURL == "" {
		bad("SPO_SITE_URL is required: the absolute URL of the site whose library receives the import files, e.g. https://contoso.sharepoint.com/sites/hr")
	} else if u, err := url.Parse(c.SiteURL); err != nil {
		bad("SPO_SITE_URL %q is not an absolute http(s) URL", c.SiteURL)
	} else if err := profile.CheckScheme(u); err != nil {
		// The rule spo.New applies too: plain http only on loopback.
		bad("SPO_SITE_URL: %v", err)
	}

	c.Folder = strings.Trim(strings.ReplaceAll(value(getenv, "SPO_FOLDER"), `\`, "/"), "/")
	if c.Folder == "" {
		bad("SPO_FOLDER must name a folder or library of the site, e.g. \"Shared Documents\"")
	}
	c.Schedule = value(getenv, "SYNC_SCHEDULE")

	c.Container = value(getenv, "SYNC_CONTAINER")
	if !containerName.MatchString(c.Container) {
		bad("SYNC_CONTAINER %q is not a valid blob container name (3-63 lowercase letters, digits and single hyphens)", c.Container)
	}
	c.StatusQueue = value(getenv, "SYNC_STATUS_QUEUE")
	if !containerName.MatchString(c.StatusQueue) {
		bad("SYNC_STATUS_QUEUE %q is not a valid queue name (3-63 lowercase letters, digits and single hyphens)", c.StatusQueue)
	}
	c.RunQueue = value(getenv, "SYNC_RUN_QUEUE")
	switch {
	case !containerName.MatchString(c.RunQueue):
		bad("SYNC_RUN_QUEUE %q is not a valid queue name (3-63 lowercase letters, digits and single hyphens)", c.RunQueue)
	case c.RunQueue == c.StatusQueue:
		bad("SYNC_RUN_QUEUE and SYNC_STATUS_QUEUE are both %q: each function needs its own queue", c.RunQueue)
	}

	if b, err := parseBackoff(value(getenv, "STATUS_POLL_BACKOFF")); err != nil {
		bad("STATUS_POLL_BACKOFF: %v", err)
	} else {
		c.PollBackoff = b
	}
	if d, err := parseDuration(value(getenv, "STATUS_POLL_MAX_AGE")); err != nil || d <= 0 {
		bad("STATUS_POLL_MAX_AGE %q is not a positive duration such as 48h", value(getenv, "STATUS_POLL_MAX_AGE"))
	} else {
		c.PollMaxAge = d
	}

	if n, err := strconv.Atoi(value(getenv, "CLEANUP_AFTER_DAYS")); err != nil || n < 0 {
		bad("CLEANUP_AFTER_DAYS %q is not a whole number of days (0 turns housekeeping off)", value(getenv, "CLEANUP_AFTER_DAYS"))
	} else {
		c.CleanupAfter = time.Duration(n) * 24 * time.Hour
	}

	if n, err := strconv.Atoi(value(getenv, "RECORDS_RETENTION_DAYS")); err != nil || n < 0 {
		bad("RECORDS_RETENTION_DAYS %q is not a whole number of days (0 keeps every record)", value(getenv, "RECORDS_RETENTION_DAYS"))
	} else {
		c.Retention = time.Duration(n) * 24 * time.Hour
	}
	// SharePoint takes up to 2 GB in one request; PnP sends 10 MiB slices.
	// A smaller size suits proxies that limit request bodies.
	if n, err := strconv.ParseInt(value(getenv, "SPO_CHUNK_SIZE"), 10, 64); err != nil || n < 4096 || n > 250<<20 {
		bad("SPO_CHUNK_SIZE %q is not a number of bytes between 4096 and 262144000", value(getenv, "SPO_CHUNK_SIZE"))
	} else {
		c.ChunkSize = n
	}
	// How many ranges of users a full sync reads at once (graph.DefaultParallelism
	// explains the default); 1 reads it as one users/delta round, as PnP does.
	if n, err := strconv.Atoi(value(getenv, "GRAPH_PARALLELISM")); err != nil || n < 1 || n > 64 {
		bad("GRAPH_PARALLELISM %q is not a whole number between 1 and 64 (1 reads a full sync as one users/delta round)", value(getenv, "GRAPH_PARALLELISM"))
	} else {
		c.Parallelism = n
	}
	if l, ok := parseLogLevel(value(getenv, "LOG_LEVEL")); !ok {
		bad("LOG_LEVEL %q is not a log level: want one of %s (in any case)", value(getenv, "LOG_LEVEL"), logLevelNames())
	} else {
		c.LogLevel = l
	}
	// A caller that sends its request slowly (a byte a second) would hold
	// a connection and a goroutine for as long as it likes: the server
	// gives each request this long to arrive, headers and body (serve).
	if d, err := parseDuration(value(getenv, "HTTP_READ_TIMEOUT")); err != nil || d < time.Second || d > 10*time.Minute {
		bad("HTTP_READ_TIMEOUT %q is not a duration from 1s to 10m, such as 30s", value(getenv, "HTTP_READ_TIMEOUT"))
	} else {
		c.ReadTimeout = d
	}
	// The kill matrix's setting: only builds tagged crashpoints honour it,
	// and the product refuses to start with it rather than ignore it.
	if v := getenv(crashpoint.Setting); v != "" && !crashpoint.Enabled {
		bad("%s is set (%q) but honoured only by test builds of the handler (go build -tags crashpoints): remove it", crashpoint.Setting, v)
	}

	c.IdentityEndpoint = value(getenv, "IDENTITY_ENDPOINT")
	c.IdentityHeader = value(getenv, "IDENTITY_HEADER")
	c.ClientID = value(getenv, "AZURE_CLIENT_ID")
	c.TenantID = value(getenv, "AZURE_TENANT_ID")
	c.CertPath = value(getenv, "AZURE_CLIENT_CERTIFICATE_PATH")
	c.CertPassword = getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD")
	switch {
	case c.CertPath != "":
		if c.TenantID == "" || c.ClientID == "" {
			bad("AZURE_CLIENT_CERTIFICATE_PATH is set, so AZURE_TENANT_ID and AZURE_CLIENT_ID are required too")
		}
	case c.IdentityEndpoint != "" && c.IdentityHeader == "":
		bad("IDENTITY_HEADER is empty while IDENTITY_ENDPOINT is set: managed identity would fall back to the instance metadata service")
	case c.IdentityEndpoint == "" && c.IdentityHeader != "":
		bad("IDENTITY_ENDPOINT is empty while IDENTITY_HEADER is set")
	}
	return c, errors.Join(errs...)
}

// logLevels are the values LOG_LEVEL takes, in any case.
var logLevels = []struct {
	name  string
	level slog.Level
}{{"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}}

// parseLogLevel reads LOG_LEVEL: debug, info, warn or error, in any case.
// Anything else is info, and not ok.
func parseLogLevel(s string) (slog.Level, bool) {
	for _, l := range logLevels {
		if strings.EqualFold(s, l.name) {
			return l.level, true
		}
	}
	return slog.LevelInfo, false
}

// logLevelNames is "debug, info, warn, error".
func logLevelNames() string {
	names := make([]string, len(logLevels))
	for i, l := range logLevels {
		names[i] = l.name
	}
	return strings.Join(names, ", ")
}

// parseBackoff parses "1m,2m,5m": at least one positive duration, at most 7 days each
// (the longest a queue message can stay invisible).
func parseBackoff(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		d, err := parseDuration(part)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q is not a list of positive durations such as 1m,2m,5m", s)
		}
		if d > 7*24*time.Hour {
			return nil, fmt.Errorf("%s is longer than 7 days, the longest a queue message can wait", part)
		}
		out = append(out, d)
	}
	return out, nil
}

// parseDuration is time.ParseDuration plus whole days ("2d"), which
// administrators write for ages like STATUS_POLL_MAX_AGE.
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// configCmd prints the effective settings, hiding secrets.
func configCmd(getenv func(string) string, stdout io.Writer) error {
	_, err := loadConfig(getenv)
	for _, s := range settings {
		v := value(getenv, s.Name)
		if s.Secret && v != "" {
			v = "<set>"
		}
		fmt.Fprintf(stdout, "%s=%s\n", s.Name, v)
	}
	if err != nil {
		return fmt.Errorf("invalid settings:\n%w", err)
	}
	fmt.Fprintln(stdout, "settings OK")
	return nil
}
