package testenv

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// EventFields reads the field names of an event's table in the README's
// "Metrics" section: the first column of the table under the heading
// "### `<event>`". readme is the path of README.md from the test's package.
func EventFields(t testing.TB, readme, event string) []string {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "\n### `"+event+"`\n")
	if !ok {
		t.Fatalf("README.md has no \"### `%s`\" section", event)
	}
	row := regexp.MustCompile("^\\| `(\\w+)` \\|")
	var fields []string
	inTable := false
	for _, line := range strings.Split(rest, "\n") {
		if strings.HasPrefix(line, "|") {
			inTable = true
			if m := row.FindStringSubmatch(line); m != nil {
				fields = append(fields, m[1])
			}
			continue
		}
		if inTable {
			break
		}
	}
	if len(fields) < 10 {
		t.Fatalf("README.md documents only %v for %s", fields, event)
	}
	return fields
}
