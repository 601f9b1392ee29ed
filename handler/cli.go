package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// syncCmd is `handler sync [--full] [--what-if]`: one run, then a summary.
func syncCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stdout)
	full := fs.Bool("full", false, "read every user (an initial delta round)")
	whatIf := fs.Bool("what-if", false, "build and upload the import file(s) but queue nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sync: unexpected arguments %v", fs.Args())
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("invalid settings:\n%w", err)
	}
	log := newLogger(stdout, getenv)
	a, err := newApp(cfg, log, true)
	if err != nil {
		return err
	}
	if err := a.prepare(ctx); err != nil {
		return err
	}
	opts := syncer.Options{Trigger: "cli", WhatIf: *whatIf}
	if *full {
		opts.Mode = syncer.ModeFull
	}
	run, err := a.engine.Sync(ctx, opts)
	if errors.Is(err, profile.ErrBusy) {
		return fmt.Errorf("another sync is running (the lease on %s/%s is held); try again later", cfg.Container, lockBlob)
	}
	if run != nil {
		fmt.Fprintln(stdout, summary(run))
		for _, f := range run.Files {
			fmt.Fprintf(stdout, "  file %s  %d users  %d bytes  job %s\n", f.URL, f.Records, f.Bytes, orNone(f.JobID))
		}
	}
	return err
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// mappingCmd is `handler mapping get|put|validate [FILE]`.
func mappingCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("mapping: want get, put FILE or validate FILE")
	}
	sub, args := args[0], args[1:]
	readFile := func() ([]byte, *mapping.Mapping, error) {
		if len(args) != 1 {
			return nil, nil, fmt.Errorf("mapping %s: want exactly one FILE", sub)
		}
		data, err := os.ReadFile(args[0])
		if err != nil {
			return nil, nil, err
		}
		m, err := mapping.Parse(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s is not a valid mapping:\n%w", args[0], err)
		}
		return data, m, nil
	}
	if sub == "validate" {
		_, m, err := readFile()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "mapping OK: idType %s, %d properties, hash %s\n", m.IDType, len(m.Properties), m.Hash()[:12])
		return nil
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("invalid settings:\n%w", err)
	}
	a, err := newApp(cfg, newLogger(io.Discard, getenv), true)
	if err != nil {
		return err
	}
	switch sub {
	case "get":
		data, _, err := a.blobs.Get(ctx, syncer.MappingBlob)
		if err != nil {
			return fmt.Errorf("reading %s/%s: %w", cfg.Container, syncer.MappingBlob, err)
		}
		_, err = stdout.Write(data)
		return err
	case "put":
		data, m, err := readFile()
		if err != nil {
			return err
		}
		if err := a.prepare(ctx); err != nil {
			return err
		}
		if _, err := a.blobs.Put(ctx, syncer.MappingBlob, data, ""); err != nil {
			return fmt.Errorf("writing %s/%s: %w", cfg.Container, syncer.MappingBlob, err)
		}
		fmt.Fprintf(stdout, "mapping saved to %s/%s (%d properties); the next sync is a full one if it changed\n",
			cfg.Container, syncer.MappingBlob, len(m.Properties))
		return nil
	}
	return fmt.Errorf("mapping: unknown subcommand %q (want get, put or validate)", sub)
}
