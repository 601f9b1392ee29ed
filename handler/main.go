// Command handler is profilesync's Azure Functions custom handler. With no
// arguments it serves the custom-handler protocol on
// FUNCTIONS_CUSTOMHANDLER_PORT; with a subcommand it is the administrator's
// command line (see usage).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

const usage = `usage: handler [command] [flags]

With no command, serve the Azure Functions custom-handler protocol on
127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (what the Functions host runs).

Commands:
  serve                 the same as no command
  sync [--full] [--what-if] [--dry-run] [--users a,b] [--filter F] [--mapping FILE]
                        run one sync now, showing its progress on stderr, and print a summary
                        --full       read every user (an initial delta round)
                        --what-if    build and upload the import file(s), queue nothing,
                                     keep the delta link (PnP's -WhatIf)
                        --dry-run    change nothing; print the plan (users and values that
                                     would be sent, users skipped and why, values cleared)
                        --users      only these users (UPNs or object ids; PnP's -Users)
                        --filter     the users a Graph $filter selects
                        --mapping    a mapping file for this run only
                        (--users, --filter and --mapping never move the delta link)
  runs [--top N]        the newest runs, one line each
  status [JOBID] [--errors] [--wait] [--timeout D] [--top N]
                        import jobs, newest first (--top, default 50), or one job (live from SharePoint
                        while it runs); --errors prints the per-user results;
                        --wait follows the job until it ends (Ctrl-C stops waiting)
  mapping get           print the mapping stored in SYNC_CONTAINER
  mapping put FILE      validate FILE and store it as the mapping
  mapping validate FILE validate FILE, change nothing
  config                check the settings and print them (secrets hidden)
  help                  this text

Settings are read from the environment (the Function App's app settings);
see README.md, "Configuration".
`

// run is the whole program; main only binds it to the process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	tuneMemory(getenv)
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout)
	case "sync":
		return syncCmd(ctx, args, getenv, stdout, stderr)
	case "runs":
		return runsCmd(ctx, args, getenv, stdout)
	case "status":
		return statusCmd(ctx, args, getenv, stdout)
	case "mapping":
		return mappingCmd(ctx, args, getenv, stdout)
	case "config":
		return configCmd(getenv, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// gcPercent is the handler's garbage collector target (Go's default is
// 100). A full sync holds about 28 MB live at 500,000 users (mostly the
// one-row-per-user table, 16 bytes per user in a Go map); at 100 the heap
// may grow to twice that before a collection, at 30 to 1.3 times. Measured
// with BenchmarkFullSync at 500,000 users (README "Performance"): peak RSS
// 65 MB at 50, 63 MB at 40, 59 MB at 30, still above 80,000 users/s.
const gcPercent = 30

// tuneMemory sets the collector's target unless GOGC is set, which the
// runtime has already honoured.
func tuneMemory(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
