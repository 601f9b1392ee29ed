package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/syncer"
)

func TestProgressText(t *testing.T) {
	for _, tc := range []struct {
		p    syncer.Progress
		want string
	}{
		{syncer.Progress{Phase: syncer.PhaseReading, Read: 12544, Sent: 12000, Elapsed: 4200 * time.Millisecond},
			"reading Graph: 12544 users read, 12000 to send, 4s elapsed"},
		{syncer.Progress{Phase: syncer.PhaseReading, Pages: 126, Read: 12544, Sent: 12000, Elapsed: 4200 * time.Millisecond},
			"reading Graph: 126 pages, 12544 users read, 12000 to send, 4s elapsed"},
		{syncer.Progress{Phase: syncer.PhaseWriting, Read: 30, Sent: 27, Elapsed: 62 * time.Second},
			"writing files: 30 users read, 27 to send, 1m2s elapsed"},
		{syncer.Progress{Phase: syncer.PhaseUploading, Read: 30, Sent: 27, File: 2, Files: 3},
			"uploading file 2 of 3: 30 users read, 27 to send, 0s elapsed"},
		{syncer.Progress{Phase: syncer.PhaseQueueing, Read: 30, Sent: 27, File: 3, Files: 3, Elapsed: time.Second},
			"queueing file 3 of 3: 30 users read, 27 to send, 1s elapsed"},
	} {
		if got := progressText(tc.p); got != tc.want {
			t.Errorf("progressText(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// On a terminal: one line redrawn in place, log lines written above it,
// the line cleared at the end.
func TestProgressOnTerminal(t *testing.T) {
	if got := terminalLine("reading Graph"); got != "\rreading Graph\x1b[K" {
		t.Errorf("terminalLine = %q: want a carriage return, the line, then erase to the end of the line", got)
	}
	var out bytes.Buffer
	v := &progressView{w: &out, tty: true, every: progressLines, now: time.Now}
	v.Write([]byte("{\"msg\":\"before any progress\"}\n"))
	p1 := syncer.Progress{Phase: syncer.PhaseReading, Read: 256, Sent: 250}
	p2 := syncer.Progress{Phase: syncer.PhaseReading, Read: 512, Sent: 500}
	v.update(p1)
	v.update(p2)
	v.Write([]byte("{\"msg\":\"a log line\"}\n"))
	v.done()
	v.done() // a second done writes nothing
	want := "{\"msg\":\"before any progress\"}\n" +
		terminalLine(progressText(p1)) + terminalLine(progressText(p2)) +
		"\r\x1b[K" + "{\"msg\":\"a log line\"}\n" + terminalLine(progressText(p2)) +
		"\r\x1b[K"
	if out.String() != want {
		t.Errorf("terminal output\n%q\nwant\n%q", out.String(), want)
	}
	if strings.Count(out.String(), "\n") != 2 {
		t.Errorf("the progress line must never end a line: %q", out.String())
	}
}

// Elsewhere: a plain line at each phase change, and at most every few
// seconds within a phase.
func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	clock := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	v := &progressView{w: &out, every: 5 * time.Second, now: func() time.Time { return clock }}
	step := func(d time.Duration, p syncer.Progress) { clock = clock.Add(d); v.update(p) }
	step(0, syncer.Progress{Phase: syncer.PhaseReading})
	step(time.Second, syncer.Progress{Phase: syncer.PhaseReading, Read: 256})          // too soon
	step(3*time.Second, syncer.Progress{Phase: syncer.PhaseReading, Read: 512})        // too soon
	step(time.Second, syncer.Progress{Phase: syncer.PhaseReading, Read: 768})          // 5 s after the first
	step(100*time.Millisecond, syncer.Progress{Phase: syncer.PhaseWriting, Read: 800}) // a new phase
	step(0, syncer.Progress{Phase: syncer.PhaseUploading, Read: 800, File: 1, Files: 1})
	v.done()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		"progress: reading Graph: 0 users read, 0 to send, 0s elapsed",
		"progress: reading Graph: 768 users read, 0 to send, 0s elapsed",
		"progress: writing files: 800 users read, 0 to send, 0s elapsed",
		"progress: uploading file 1 of 1: 800 users read, 0 to send, 0s elapsed",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("plain lines:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
	if strings.ContainsAny(out.String(), "\r\x1b") {
		t.Errorf("control characters in plain lines: %q", out.String())
	}
	out.Reset()
	v.Write([]byte("log\n"))
	if out.String() != "log\n" {
		t.Errorf("a log line became %q", out.String())
	}
}

func TestIsTerminal(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe is not a terminal")
	}
}
