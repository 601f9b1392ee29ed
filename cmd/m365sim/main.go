// Command m365sim runs the Microsoft 365 simulator: managed identity and
// Microsoft Graph on one loopback port, SharePoint Online on the next. It
// prints the settings a profilesync handler needs as KEY=value lines on
// stdout and logs to stderr until interrupted.
//
//	m365sim --port 8370 --users 1000 --seed 1
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "m365sim:", err)
		os.Exit(1)
	}
}

// config holds the settings; its JSON keys are the flag names.
type config struct {
	Port           int      `json:"port"`
	SPOPort        int      `json:"spo-port"`
	Users          int      `json:"users"`
	Seed           int64    `json:"seed"`
	Tenant         string   `json:"tenant"`
	PageSize       int      `json:"page-size"`
	PageLatency    duration `json:"page-latency"`
	JobStep        duration `json:"job-step"`
	IdentityHeader string   `json:"identity-header"`
	FileDir        string   `json:"file-dir"`
	DeltaRepeat    int      `json:"delta-repeat"`
}

// duration reads JSON strings such as "2s".
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("durations are strings like \"2s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// run parses args, starts the simulator and serves until ctx is done.
// getenv supplies M365SIM_CONFIG, the default of --config.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	spoPort := cfg.SPOPort
	if spoPort < 0 {
		spoPort = 0
		if cfg.Port != 0 {
			spoPort = cfg.Port + 1
		}
	}
	sim, err := m365sim.Start(m365sim.Options{
		Users:            cfg.Users,
		Seed:             cfg.Seed,
		TenantFile:       cfg.Tenant,
		GraphAddr:        "127.0.0.1:" + strconv.Itoa(cfg.Port),
		SPOAddr:          "127.0.0.1:" + strconv.Itoa(spoPort),
		PageSize:         cfg.PageSize,
		PageLatency:      time.Duration(cfg.PageLatency),
		JobStep:          time.Duration(cfg.JobStep),
		IdentityHeader:   cfg.IdentityHeader,
		FileDir:          cfg.FileDir,
		Logger:           log,
		DeltaRepeatEvery: cfg.DeltaRepeat,
	})
	if err != nil {
		return err
	}
	for _, kv := range sim.Env() {
		if _, err := fmt.Fprintln(stdout, kv); err != nil {
			sim.Close()
			return fmt.Errorf("writing settings: %w", err)
		}
	}
	<-ctx.Done()
	log.Info("m365sim stopping")
	if err := sim.Close(); err != nil {
		return fmt.Errorf("stopping simulator: %w", err)
	}
	return nil
}

// parseConfig reads flags over an optional JSON config file: flags given on
// the command line win over the file, the file over the defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := config{Port: 8370, SPOPort: -1, Users: 1000, Seed: 1, JobStep: duration(2 * time.Second)}
	fs := flag.NewFlagSet("m365sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var fromFlags config
	fs.IntVar(&fromFlags.Port, "port", cfg.Port, "Graph/identity port (0 = random); SharePoint uses port+1")
	fs.IntVar(&fromFlags.SPOPort, "spo-port", -1, "SharePoint port (default port+1; 0 = random)")
	fs.IntVar(&fromFlags.Users, "users", cfg.Users, "users to generate")
	fs.Int64Var(&fromFlags.Seed, "seed", cfg.Seed, "generator seed")
	fs.StringVar(&fromFlags.Tenant, "tenant", "", "tenant JSON file (replaces generated users)")
	fs.IntVar(&fromFlags.PageSize, "page-size", 0, "users per GET /users/delta page (default 200; a delta $top can only lower it). "+
		"Not GET /users: its pages hold $top users (1-999; 100 without $top; at most 100 with $expand)")
	fs.DurationVar((*time.Duration)(&fromFlags.PageLatency), "page-latency", 0, "delay before every GET /users and /users/delta page, "+
		"$deltatoken=latest and nextLinks included; not /users/$count, single users, managers, $batch items or /msi/token. "+
		"GET /_sim/stats keeps it out of the busy time (PUT /_sim/faults {\"pageLatency\":…} changes it)")
	fs.DurationVar((*time.Duration)(&fromFlags.JobStep), "job-step", time.Duration(cfg.JobStep), "time per import job state (0 = immediate, <0 = manual)")
	fs.StringVar(&fromFlags.IdentityHeader, "identity-header", "", "managed identity secret (default random)")
	fs.StringVar(&fromFlags.FileDir, "file-dir", "", "directory for uploaded files (default a temp dir)")
	fs.IntVar(&fromFlags.DeltaRepeat, "delta-repeat", 0, "Graph delta rounds send every n-th user twice, as Graph may (0 = off; PUT /_sim/delta/repeat changes it)")
	configFile := fs.String("config", getenv("M365SIM_CONFIG"), "JSON file with the same keys as the flags")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return config{}, fmt.Errorf("reading config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return config{}, fmt.Errorf("config %s: %w", *configFile, err)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "port":
			cfg.Port = fromFlags.Port
		case "spo-port":
			cfg.SPOPort = fromFlags.SPOPort
		case "users":
			cfg.Users = fromFlags.Users
		case "seed":
			cfg.Seed = fromFlags.Seed
		case "tenant":
			cfg.Tenant = fromFlags.Tenant
		case "page-size":
			cfg.PageSize = fromFlags.PageSize
		case "page-latency":
			cfg.PageLatency = fromFlags.PageLatency
		case "job-step":
			cfg.JobStep = fromFlags.JobStep
		case "identity-header":
			cfg.IdentityHeader = fromFlags.IdentityHeader
		case "file-dir":
			cfg.FileDir = fromFlags.FileDir
		case "delta-repeat":
			cfg.DeltaRepeat = fromFlags.DeltaRepeat
		}
	})
	var errs []error
	if cfg.Port < 0 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d must be 0..65535", cfg.Port))
	}
	if cfg.SPOPort > 65535 || (cfg.SPOPort < 0 && cfg.Port == 65535) {
		errs = append(errs, errors.New("--spo-port must be 0..65535"))
	}
	if cfg.Users < 0 {
		errs = append(errs, errors.New("--users must not be negative"))
	}
	if cfg.PageSize < 0 || cfg.PageSize > 999 {
		errs = append(errs, errors.New("--page-size must be 1..999"))
	}
	if cfg.DeltaRepeat < 0 {
		errs = append(errs, errors.New("--delta-repeat must not be negative"))
	}
	if cfg.PageLatency < 0 {
		errs = append(errs, errors.New("--page-latency must not be negative"))
	}
	return cfg, errors.Join(errs...)
}
