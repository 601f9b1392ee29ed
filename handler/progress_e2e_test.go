package main

import (
	"bytes"
	"strings"
	"testing"
)

// cliWith runs the command line in-process against the stack's settings
// plus extra KEY=value settings, returning its stdout and stderr.
func (s *stack) cliWith(t *testing.T, extra []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	s.identityEnv(t)
	getenv := func(k string) string {
		for i := len(extra) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(extra[i], k+"="); ok {
				return v
			}
		}
		return s.getenv(k)
	}
	var out, logs bytes.Buffer
	err = run(t.Context(), args, getenv, &out, &logs)
	return out.String(), logs.String(), err
}

// LOG_LEVEL reaches the handler the host runs and the command line, down to
// SharePoint's debug lines; `handler sync` shows its progress on stderr
// (plain lines: stderr is no terminal here) and its summary on stdout.
func TestLogLevelAndCommandLineProgress(t *testing.T) {
	s := startStack(t, stackOptions{users: 30, extra: []string{"LOG_LEVEL=debug"}})
	s.putMapping(e2eMapping)
	const spoDebug = `"level":"DEBUG","msg":"sharepoint request"`

	// The handler process, as the host runs it.
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	if !strings.Contains(s.out.String(), spoDebug) {
		t.Errorf("LOG_LEVEL=debug: the handler logged no SharePoint debug line:\n%s", s.out.String())
	}

	// The command line at warn: progress and summary, no info line.
	out, logs, err := s.cliWith(t, []string{"LOG_LEVEL=warn"}, "sync", "--full", "--allow-overlap")
	if err != nil || !strings.Contains(out, "full sync (full sync requested), ") {
		t.Fatalf("sync: %v\nstdout:\n%s\nstderr:\n%s", err, out, logs)
	}
	for _, want := range []string{
		"progress: reading Graph: 0 users read, 0 to send, ",
		"progress: writing files: ",
		"progress: uploading file 1 of 1: ",
		"progress: queueing file 1 of 1: ",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, `"level":"INFO"`) || strings.Contains(logs, `"level":"DEBUG"`) {
		t.Errorf("LOG_LEVEL=warn, yet info or debug lines:\n%s", logs)
	}
	if strings.Contains(out, "progress:") || strings.ContainsAny(logs, "\r\x1b") {
		t.Errorf("progress on stdout, or terminal controls on a plain stderr:\nstdout:\n%s\nstderr:\n%q", out, logs)
	}
	if i, j := strings.Index(logs, "progress: reading"), strings.Index(logs, "progress: queueing"); i < 0 || j < i {
		t.Errorf("phases out of order:\n%s", logs)
	}

	// The command line at debug (in any case): SharePoint's debug lines.
	out, logs, err = s.cliWith(t, []string{"LOG_LEVEL=DEBUG"}, "sync", "--what-if", "--full")
	if err != nil || !strings.Contains(out, "what-if: nothing queued") {
		t.Fatalf("sync --what-if: %v\n%s\n%s", err, out, logs)
	}
	if !strings.Contains(logs, spoDebug) || !strings.Contains(logs, `"level":"INFO"`) {
		t.Errorf("LOG_LEVEL=DEBUG: no SharePoint debug line or no info line on stderr:\n%s", logs)
	}

	// A bad level: a configuration error naming the setting.
	_, _, err = s.cliWith(t, []string{"LOG_LEVEL=chatty"}, "sync")
	if err == nil || !strings.Contains(err.Error(), `LOG_LEVEL "chatty" is not a log level: want one of debug, info, warn, error`) {
		t.Errorf("LOG_LEVEL=chatty: %v", err)
	}
}
