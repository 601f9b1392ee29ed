package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

var minimal = map[string]string{
	"AzureWebJobsStorage": "UseDevelopmentStorage=true",
	"SPO_SITE_URL":        "https://contoso.sharepoint.com/sites/hr",
}

func with(extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range minimal {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(env(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.GraphEndpoint != "https://graph.microsoft.com" || c.Folder != "Shared Documents" || c.Container != "profilesync" ||
		c.StatusQueue != "profilesync-status" || c.RunQueue != "profilesync-runs" || c.PollMaxAge != 48*time.Hour || c.CleanupAfter != 0 ||
		len(c.PollBackoff) != 6 || c.PollBackoff[0] != time.Minute || c.PollBackoff[5] != 30*time.Minute ||
		c.Retention != 90*24*time.Hour || c.ChunkSize != 10<<20 || c.ReadTimeout != 30*time.Second {
		t.Errorf("defaults %+v", c)
	}
}

func TestConfigProblemsNameTheirSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing set", map[string]string{}, []string{"AzureWebJobsStorage", "SPO_SITE_URL is required"}},
		{"many at once", with(map[string]string{
			"SPO_SITE_URL": "contoso.sharepoint.com/sites/hr", "GRAPH_ENDPOINT": "http://graph.example.com",
			"SYNC_CONTAINER": "Profile_Sync", "SYNC_STATUS_QUEUE": "q", "STATUS_POLL_BACKOFF": "1m,soon",
			"STATUS_POLL_MAX_AGE": "-1h", "CLEANUP_AFTER_DAYS": "a week",
		}), []string{"SPO_SITE_URL", "GRAPH_ENDPOINT", "SYNC_CONTAINER", "SYNC_STATUS_QUEUE", "STATUS_POLL_BACKOFF", "STATUS_POLL_MAX_AGE", "CLEANUP_AFTER_DAYS"}},
		{"backoff beyond a queue's reach", with(map[string]string{"STATUS_POLL_BACKOFF": "1m,8d"}), []string{"STATUS_POLL_BACKOFF", "7 days"}},
		{"identity header missing", with(map[string]string{"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token"}), []string{"IDENTITY_HEADER is empty"}},
		{"certificate without tenant", with(map[string]string{"AZURE_CLIENT_CERTIFICATE_PATH": "/x.pem"}), []string{"AZURE_TENANT_ID and AZURE_CLIENT_ID"}},
		{"http site off loopback", with(map[string]string{"SPO_SITE_URL": "http://contoso.sharepoint.com/sites/hr"}), []string{"SPO_SITE_URL", "https"}},
		{"empty folder", with(map[string]string{"SPO_FOLDER": " / "}), []string{"SPO_FOLDER"}},
		{"bad run queue", with(map[string]string{"SYNC_RUN_QUEUE": "Runs!"}), []string{"SYNC_RUN_QUEUE"}},
		{"one queue for both functions", with(map[string]string{"SYNC_RUN_QUEUE": "profilesync-status"}), []string{"SYNC_RUN_QUEUE and SYNC_STATUS_QUEUE", "its own queue"}},
		{"retention and chunk size", with(map[string]string{"RECORDS_RETENTION_DAYS": "-1", "SPO_CHUNK_SIZE": "100"}), []string{"RECORDS_RETENTION_DAYS", "SPO_CHUNK_SIZE"}},
		{"chunk size too large", with(map[string]string{"SPO_CHUNK_SIZE": "3000000000"}), []string{"SPO_CHUNK_SIZE"}},
		{"read timeout out of range", with(map[string]string{"HTTP_READ_TIMEOUT": "500ms"}), []string{"HTTP_READ_TIMEOUT", "1s to 10m"}},
		{"read timeout not a duration", with(map[string]string{"HTTP_READ_TIMEOUT": "soon"}), []string{"HTTP_READ_TIMEOUT"}},
		// The product refuses the kill matrix's setting rather than ignore it.
		{"crash point in a product build", with(map[string]string{"PROFILESYNC_CRASH_AT": "before-queue"}), []string{"PROFILESYNC_CRASH_AT", "test builds"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(env(tc.env))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDurationsAcceptDays(t *testing.T) {
	c, err := loadConfig(env(with(map[string]string{"STATUS_POLL_MAX_AGE": "3d", "STATUS_POLL_BACKOFF": "30s, 1d"})))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollMaxAge != 72*time.Hour || c.PollBackoff[1] != 24*time.Hour {
		t.Errorf("max age %v backoff %v", c.PollMaxAge, c.PollBackoff)
	}
}

func TestConfigCommandHidesSecrets(t *testing.T) {
	var out bytes.Buffer
	e := with(map[string]string{"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER": "s3cret"})
	if err := run(context.Background(), []string{"config"}, env(e), &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "IDENTITY_HEADER=<set>") {
		t.Errorf("config printed:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"bogus"}, env(e), &out, &out); err == nil || !strings.Contains(out.String(), "usage:") {
		t.Errorf("unknown command: %v\n%s", err, out.String())
	}
}
