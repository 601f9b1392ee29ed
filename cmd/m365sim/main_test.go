package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunPrintsSettingsAndStops(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "sim.json")
	if err := os.WriteFile(cfgFile, []byte(`{"users": 7, "identity-header": "from-file", "job-step": "0s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	args := []string{"--port", "0", "--spo-port", "0", "--config", cfgFile, "--identity-header", "from-flag", "--file-dir", t.TempDir(), "--delta-repeat", "4"}
	go func() {
		done <- run(ctx, args, func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	env := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(env) < 4 && sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("line %q is not KEY=value", sc.Text())
		}
		env[k] = v
	}
	go io.Copy(io.Discard, pr)
	if env["IDENTITY_HEADER"] != "from-flag" || !strings.HasSuffix(env["SPO_SITE_URL"], "/sites/profilesync") ||
		env["IDENTITY_ENDPOINT"] != env["GRAPH_ENDPOINT"]+"/msi/token" {
		t.Fatalf("env = %v", env)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(env["GRAPH_ENDPOINT"] + "/_sim/health")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]any
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health["users"] != float64(7) {
		t.Errorf("health = %v (config file users not applied)", health)
	}
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get(env["GRAPH_ENDPOINT"] + "/_sim/delta/repeat")
	if err != nil {
		t.Fatal(err)
	}
	var repeat map[string]any
	json.NewDecoder(resp.Body).Decode(&repeat)
	resp.Body.Close()
	if repeat["every"] != float64(4) {
		t.Errorf("/_sim/delta/repeat = %v, want every 4 from --delta-repeat", repeat)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
}

func TestParseConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"nope": 1}`), 0o600)
	badDur := filepath.Join(dir, "dur.json")
	os.WriteFile(badDur, []byte(`{"job-step": 5}`), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"extra args", []string{"x"}, "unexpected arguments"},
		{"bad port", []string{"--port", "70000"}, "--port 70000"},
		{"bad page size", []string{"--page-size", "1000"}, "--page-size"},
		{"missing config", []string{"--config", filepath.Join(dir, "none.json")}, "reading config"},
		{"unknown key", []string{"--config", bad}, "unknown field"},
		{"numeric duration", []string{"--config", badDur}, "durations are strings"},
		{"negative delta repeat", []string{"--delta-repeat", "-1"}, "--delta-repeat"},
	}
	for _, tc := range tests {
		_, err := parseConfig(tc.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	cfg, err := parseConfig([]string{"--port", "9000"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.Port != 9000 || cfg.Users != 1000 || cfg.Seed != 1 || time.Duration(cfg.JobStep) != 2*time.Second || cfg.DeltaRepeat != 0 {
		t.Errorf("defaults = %+v, %v", cfg, err)
	}
	repeatFile := filepath.Join(dir, "repeat.json")
	os.WriteFile(repeatFile, []byte(`{"delta-repeat": 3}`), 0o600)
	if cfg, err := parseConfig([]string{"--config", repeatFile}, func(string) string { return "" }, io.Discard); err != nil || cfg.DeltaRepeat != 3 {
		t.Errorf("delta-repeat from the config file: %+v, %v", cfg, err)
	}
}
