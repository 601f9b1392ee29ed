package syncer

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/profilesync/profilesync/internal/testenv"
)

// checkLogLine holds ParseLogLine to its properties: a line it skips is
// blank (all it may skip, as documented); a result written back as
// `<code>\t<identity>\t<message>` parses to itself.
func checkLogLine(t *testing.T, line string) {
	t.Helper()
	r, ok := ParseLogLine(line)
	if !ok {
		rest := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) || r == '\ufeff' {
				return -1
			}
			return r
		}, line)
		if rest != "" && (rest != "-" || strings.Contains(line, "\t")) {
			t.Fatalf("ParseLogLine skipped %q, which is more than spaces, byte order marks or a lone dash", line)
		}
		return
	}
	if r == (UserResult{}) {
		t.Fatalf("ParseLogLine(%q) gave an empty result", line)
	}
	again := r.Code + "\t" + r.Identity + "\t" + r.Message
	if r2, ok := ParseLogLine(again); !ok || r2 != r {
		t.Fatalf("ParseLogLine(%q) = %+v, written back as %q it parses to %+v, %v", line, r, again, r2, ok)
	}
}

// logLines is what ScanLogLines must yield for data: its lines without
// "\n" or "\r\n", none after a final newline.
func logLines(data string) []string {
	lines := strings.Split(data, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// FuzzJobLog reads a job's log file as the poller does (ScanLogLines, then
// ParseLogLine on each line). Properties: the lines are those of the file,
// the ones longer than MaxLogLine cut to a prefix that fits; each line
// parses as checkLogLine says; fn's error stops the scan. The seed corpus
// (testdata/fuzz/FuzzJobLog) holds the log lines the reference
// documentation and the simulator show.
func FuzzJobLog(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []string
		if err := ScanLogLines(bytes.NewReader(data), func(line string) error {
			got = append(got, line)
			checkLogLine(t, line)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := logLines(string(data))
		if len(got) != len(want) {
			t.Fatalf("%d lines, want %d", len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if len(g) > MaxLogLine || !strings.HasPrefix(w, g) || (len(w) <= MaxLogLine-1 && g != w) {
				t.Fatalf("line %d: %q, want %q (cut to at most %d bytes)", i, g, w, MaxLogLine)
			}
			if len(g) < len(w) && len(g) < MaxLogLine-4 {
				t.Fatalf("line %d of %d bytes cut to %d", i, len(w), len(g))
			}
		}
		if len(want) > 0 {
			stop := errors.New("stop")
			n := 0
			if err := ScanLogLines(bytes.NewReader(data), func(string) error { n++; return stop }); err != stop || n != 1 {
				t.Fatalf("fn's error: ScanLogLines returned %v after %d lines", err, n)
			}
		}
	})
}

// TestScanLogLinesHuge: a 10 MB log file costs at most one buffer plus
// the lines handed over (each at most MaxLogLine), whatever its shape; a
// file without any newline is one cut line.
func TestScanLogLinesHuge(t *testing.T) {
	const size = 10 << 20
	line := "IdentityNotResolvable\tjöhanna.wilber@contoso.com\tUser identity cannot be resolved\r\n"
	for name, tc := range map[string]struct {
		data  string
		lines int
		kept  int // bytes of the lines handed over
	}{
		"no newline":  {data: strings.Repeat("é", size/2), lines: 1, kept: MaxLogLine},
		"long lines":  {data: strings.Repeat(strings.Repeat("x", size/10)+"\n", 10), lines: 10, kept: 10 * MaxLogLine},
		"many lines":  {data: strings.Repeat(line, size/len(line)), lines: size / len(line), kept: size / len(line) * (len(line) - 2)},
		"empty lines": {data: strings.Repeat("\n", size), lines: size},
	} {
		var n, kept int
		alloc := testenv.Allocated(func() {
			if err := ScanLogLines(strings.NewReader(tc.data), func(l string) error {
				n++
				kept += len(l)
				if len(l) > MaxLogLine || !utf8.ValidString(l) {
					t.Fatalf("%s: line %d: %d bytes, valid UTF-8 %v", name, n, len(l), utf8.ValidString(l))
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
		if n != tc.lines || kept > tc.kept || kept < tc.kept-tc.lines*utf8.UTFMax {
			t.Errorf("%s: %d lines of %d bytes, want %d of %d", name, n, kept, tc.lines, tc.kept)
		}
		t.Logf("%s: %d bytes allocated for %d bytes kept", name, alloc, kept)
		if limit := uint64(2*kept + 2*MaxLogLine + 64<<10); alloc > limit {
			t.Errorf("%s: %d bytes allocated, want at most %d", name, alloc, limit)
		}
	}
}

// TestResultCodesBounded: a log whose every line has another code counts
// them all, under at most MaxResultCodes+1 codes.
func TestResultCodesBounded(t *testing.T) {
	counts := map[string]int{}
	for i := range 10 * MaxResultCodes {
		countResult(counts, fmt.Sprintf("Code%d", i%(2*MaxResultCodes)))
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	if len(counts) != MaxResultCodes+1 || total != 10*MaxResultCodes || counts["Code0"] != 5 || counts[OtherCodes] != 5*MaxResultCodes {
		t.Errorf("%d codes, %d lines: Code0 %d, %s %d", len(counts), total, counts["Code0"], OtherCodes, counts[OtherCodes])
	}
}
