package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/profilesync/profilesync/internal/syncer"
)

// progressView shows the progress of `handler sync` on stderr. On a
// terminal it is one line, redrawn in place (carriage return, then the
// line, then "erase to the end of the line") and cleared when the run
// ends; elsewhere (a file, a pipe, CI) it is a plain line at each phase
// change and at most every progressLines while users are read.
//
// The CLI's log lines go through it too (Write): on a terminal the
// progress line is cleared before a log line and drawn again after it.
type progressView struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	every time.Duration
	now   func() time.Time
	last  time.Time    // plain lines: when the last one was printed
	phase syncer.Phase // plain lines: the phase of the last one
	line  string       // terminal: the progress line on screen, "" if none
}

// progressLines is the least time between two plain progress lines within
// one phase.
const progressLines = 5 * time.Second

// eraseLine returns to the start of the line and erases it (ANSI EL).
const eraseLine = "\r\x1b[K"

func newProgressView(w io.Writer) *progressView {
	return &progressView{w: w, tty: isTerminal(w), every: progressLines, now: time.Now}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressText is one progress report in words.
func progressText(p syncer.Progress) string {
	var what string
	switch p.Phase {
	case syncer.PhaseReading:
		what = "reading Graph"
	case syncer.PhaseWriting:
		what = "writing files"
	case syncer.PhaseUploading:
		what = fmt.Sprintf("uploading file %d of %d", p.File, p.Files)
	case syncer.PhaseQueueing:
		what = fmt.Sprintf("queueing file %d of %d", p.File, p.Files)
	default:
		what = string(p.Phase)
	}
	pages := ""
	if p.Pages > 0 {
		pages = fmt.Sprintf("%d pages, ", p.Pages)
	}
	return fmt.Sprintf("%s: %s%d users read, %d to send, %s elapsed", what, pages, p.Read, p.Sent, p.Elapsed.Round(time.Second))
}

// terminalLine is what redraws the progress line on a terminal.
func terminalLine(text string) string { return "\r" + text + "\x1b[K" }

// update shows p: syncer.Options.Progress.
func (v *progressView) update(p syncer.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	text := progressText(p)
	if v.tty {
		v.line = text
		io.WriteString(v.w, terminalLine(text))
		return
	}
	now := v.now()
	if p.Phase == v.phase && now.Sub(v.last) < v.every {
		return
	}
	v.phase, v.last = p.Phase, now
	fmt.Fprintf(v.w, "progress: %s\n", text)
}

// done clears the progress line (terminal), before the summary is printed.
func (v *progressView) done() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tty && v.line != "" {
		io.WriteString(v.w, eraseLine)
		v.line = ""
	}
}

// Write writes a log line, keeping the progress line below it.
func (v *progressView) Write(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.tty || v.line == "" {
		return v.w.Write(b)
	}
	io.WriteString(v.w, eraseLine)
	n, err := v.w.Write(b)
	io.WriteString(v.w, terminalLine(v.line))
	return n, err
}
