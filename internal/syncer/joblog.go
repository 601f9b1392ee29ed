package syncer

import (
	"bufio"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxLogLine bounds one line of a job's log as profilesync keeps it: the
// rest of a longer line is skipped. SharePoint's lines are an error code,
// an identity and one sentence (`DataFileNotJson\t\tAfter parsing a value
// an unexpected character was encountered…`, pnp/powershell#3981); the
// bound keeps a job record (MaxResults lines: about 5 MB at most, under
// MaxJobBytes) and the reader's memory small whatever a log file holds.
const MaxLogLine = 1 << 10

// ScanLogLines calls fn with each line of a job's log file read from r,
// without its "\n" or "\r\n"; the last line needs no line ending. A line
// longer than MaxLogLine is cut there (at a UTF-8 boundary) and the rest of
// it skipped, so reading holds one MaxLogLine buffer whatever the file
// holds, a file without any newline included. It returns fn's first error,
// or r's.
func ScanLogLines(r io.Reader, fn func(line string) error) error {
	br := bufio.NewReaderSize(r, MaxLogLine)
	for {
		b, err := br.ReadSlice('\n')
		line, empty := string(b), len(b) == 0
		cut := err == bufio.ErrBufferFull
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if cut {
			line = dropPartialRune(line)
		}
		if !empty {
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// dropPartialRune removes the start of a UTF-8 sequence that a cut left at
// the end of s.
func dropPartialRune(s string) string {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				return s[:i]
			}
			break
		}
	}
	return s
}

// MaxResultCodes bounds the distinct codes a job record counts lines by
// (SharePoint documents four per-user codes); lines with further codes are
// counted under OtherCodes, so the counts still cover every line.
const MaxResultCodes = 100

// OtherCodes counts the lines whose code came after MaxResultCodes others.
const OtherCodes = "(other codes)"

// countResult counts one log line of the given code in counts.
func countResult(counts map[string]int, code string) {
	if _, ok := counts[code]; !ok && len(counts) >= MaxResultCodes {
		code = OtherCodes
	}
	counts[code]++
}
