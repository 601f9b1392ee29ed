package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/profilesync/profilesync/internal/apiparse"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/syncer"
)

// syncCmd is `handler sync [--full] [--what-if] [--dry-run] [--users a,b] [--filter F] [--mapping FILE]`:
// one run, then a summary (or, for a dry run, the plan as JSON).
// Its log lines and its progress go to stderr, so that stdout holds only
// the summary or the plan.
func syncCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stdout)
	full := fs.Bool("full", false, "read every user (an initial delta round)")
	whatIf := fs.Bool("what-if", false, "build and upload the import file(s) but queue nothing")
	dryRun := fs.Bool("dry-run", false, "change nothing; print what would be sent, skipped and cleared")
	users := fs.String("users", "", "comma-separated UPNs or object ids: sync only these users")
	filter := fs.String("filter", "", "a Graph $filter selecting the users to sync, e.g. \"jobTitle eq 'IT Administrator'\"")
	mappingFile := fs.String("mapping", "", "use this mapping file for this run only")
	overlap := fs.Bool("allow-overlap", false, "queue even while an earlier import job is unfinished")
	force := fs.Bool("force", false, "send every user read, also those SharePoint already has with the same values (with --full: everyone)")
	limit := fs.Int("limit", syncer.DefaultPlanLimit, "dry run: users listed in the plan")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sync: unexpected arguments %v", fs.Args())
	}
	req := apiparse.Sync{WhatIf: *whatIf, DryRun: *dryRun, Filter: *filter, AllowOverlap: *overlap, Limit: *limit, Force: *force}
	if *full {
		req.Mode = "full"
	}
	if *users != "" {
		req.Users = strings.Split(*users, ",")
	}
	if *mappingFile != "" {
		data, err := readMappingFile(*mappingFile)
		if err != nil {
			return err
		}
		req.Mapping = data
	}
	req, err := apiparse.Check(req)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	opts := syncOptions(req)
	opts.Trigger = "cli"
	// Progress and log lines share stderr (see progressView).
	view := newProgressView(stderr)
	opts.Progress = view.update
	a, err := cliApp(getenv, view)
	if err != nil {
		return err
	}
	if err := a.prepare(ctx); err != nil {
		return err
	}
	if *dryRun {
		plan, err := a.engine.Plan(ctx, opts, *limit)
		view.done()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(plan)
	}
	run, err := a.engine.Sync(ctx, opts)
	view.done() // before the summary: stdout may be the same terminal
	if errors.Is(err, profile.ErrBusy) {
		return fmt.Errorf("another sync is running (the lease on %s/%s is held); try again later", a.cfg.Container, lockBlob)
	}
	if run != nil {
		fmt.Fprintln(stdout, summary(run))
		for _, f := range run.Files {
			fmt.Fprintf(stdout, "  file %s  %d users  %d bytes  job %s\n", f.URL, f.Records, f.Bytes, orNone(f.JobID))
		}
		if len(run.Unknown) > 0 {
			fmt.Fprintf(stdout, "  unknown users (not in Entra ID): %s\n", strings.Join(run.Unknown, ", "))
		}
	}
	return err
}

// runsCmd is `handler runs [--top N]`: the newest runs, one line each.
func runsCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("runs", flag.ContinueOnError)
	fs.SetOutput(stdout)
	top := fs.Int("top", 20, "how many runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, err := cliApp(getenv, io.Discard)
	if err != nil {
		return err
	}
	runs, err := a.listRuns(ctx, *top)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		fmt.Fprintln(stdout, "no runs recorded yet")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tTRIGGER\tMODE\tSTATUS\tREAD\tSENT\tSKIPPED\tJOBS\tERROR")
	for _, r := range runs {
		skipped := 0
		for _, n := range r.Skipped {
			skipped += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.ID, r.Trigger, r.Mode, r.Status, r.Read, r.Sent, skipped,
			strings.Join(r.JobIDs, " "), firstLine(r.Error))
	}
	return tw.Flush()
}

// cliApp loads the settings and wires the app for a command of the
// administrator's command line, logging to logs.
func cliApp(getenv func(string) string, logs io.Writer) (*app, error) {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return nil, fmt.Errorf("invalid settings:\n%w", err)
	}
	return newApp(cfg, newLogger(logs, getenv), true)
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
		data, err := readMappingFile(args[0])
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
	a, err := cliApp(getenv, io.Discard)
	if err != nil {
		return err
	}
	switch sub {
	case "get":
		data, _, err := a.blobs.Get(ctx, syncer.MappingBlob)
		if err != nil {
			return fmt.Errorf("reading %s/%s: %w", a.cfg.Container, syncer.MappingBlob, err)
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
			return fmt.Errorf("writing %s/%s: %w", a.cfg.Container, syncer.MappingBlob, err)
		}
		fmt.Fprintf(stdout, "mapping saved to %s/%s (%d properties); the next sync is a full one if it changed\n",
			a.cfg.Container, syncer.MappingBlob, len(m.Properties))
		return nil
	}
	return fmt.Errorf("mapping: unknown subcommand %q (want get, put or validate)", sub)
}

// readMappingFile reads a mapping document from a file: at most
// mapping.MaxSize bytes (the API and the state container take no more
// either), without reading more than that of a larger file.
func readMappingFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, mapping.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > mapping.MaxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes (1 MiB), the most a mapping document may be", path, mapping.MaxSize)
	}
	return data, nil
}
