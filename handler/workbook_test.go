package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/testenv"
)

// The workbook (infra/modules/workbook.bicep) charts the metric events the
// README's "Metrics" section documents, with the queries of
// infra/workbook/*.kql. Without the Bicep CLI, these tests read the
// workbook's content the way ARM will serialize it (string(content)), and
// check that the README shows the same queries and that they read only
// documented fields.

// readmeEventFields reads the field names of an event's table in the
// README's "Metrics" section.
func readmeEventFields(t testing.TB, event string) []string {
	t.Helper()
	return testenv.EventFields(t, "../README.md", event)
}

// ---- a Bicep expression subset, enough for the workbook's content ----

// bicepReader reads one Bicep value: objects and arrays written one entry
// per line, 'strings' (escapes, no interpolation), integers, true, false,
// null, loadTextContent('file') (the file's text, relative to dir) and
// references such as appInsights.id, which become "<appInsights.id>" (ARM
// fills them in at deployment). Anything else fails the test, so the
// reader never silently misreads.
type bicepReader struct {
	t   testing.TB
	src string
	pos int
	dir string
}

func (r *bicepReader) fail(format string, args ...any) {
	r.t.Helper()
	line := strings.Count(r.src[:min(r.pos, len(r.src))], "\n") + 1
	r.t.Fatalf("workbook.bicep:%d: "+format, append([]any{line}, args...)...)
}

func (r *bicepReader) skip() {
	for r.pos < len(r.src) {
		switch c := r.src[r.pos]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			r.pos++
		case strings.HasPrefix(r.src[r.pos:], "//"):
			for r.pos < len(r.src) && r.src[r.pos] != '\n' {
				r.pos++
			}
		default:
			return
		}
	}
}

func (r *bicepReader) peek() byte {
	r.skip()
	if r.pos >= len(r.src) {
		r.fail("unexpected end")
	}
	return r.src[r.pos]
}

func (r *bicepReader) ident() string {
	start := r.pos
	for r.pos < len(r.src) {
		c := r.src[r.pos]
		if c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			r.pos++
			continue
		}
		break
	}
	if start == r.pos {
		r.fail("want a name at %q", r.src[r.pos:min(r.pos+20, len(r.src))])
	}
	return r.src[start:r.pos]
}

func (r *bicepReader) str() string {
	r.pos++ // the opening quote
	var b strings.Builder
	for r.pos < len(r.src) {
		c := r.src[r.pos]
		switch {
		case c == '\'':
			r.pos++
			return b.String()
		case c == '\n':
			r.fail("a line break in a single-line string")
		case c == '$' && strings.HasPrefix(r.src[r.pos:], "${"):
			r.fail("string interpolation is outside the subset this test reads")
		case c == '\\':
			if r.pos+1 >= len(r.src) {
				r.fail("unterminated escape")
			}
			esc := map[byte]string{'\\': `\`, '\'': "'", 'n': "\n", 'r': "\r", 't': "\t", '$': "$"}[r.src[r.pos+1]]
			if esc == "" {
				r.fail("escape \\%c is outside the subset this test reads", r.src[r.pos+1])
			}
			b.WriteString(esc)
			r.pos += 2
			continue
		default:
			b.WriteByte(c)
		}
		r.pos++
	}
	r.fail("unterminated string")
	return ""
}

func (r *bicepReader) value() any {
	switch c := r.peek(); {
	case c == '{':
		r.pos++
		obj := map[string]any{}
		for r.peek() != '}' {
			var key string
			if r.peek() == '\'' {
				key = r.str()
			} else {
				key = r.ident()
			}
			if r.peek() != ':' {
				r.fail("want : after %s", key)
			}
			r.pos++
			if _, dup := obj[key]; dup {
				r.fail("key %s twice", key)
			}
			obj[key] = r.value()
			if r.peek() == ',' {
				r.pos++
			}
		}
		r.pos++
		return obj
	case c == '[':
		r.pos++
		arr := []any{}
		for r.peek() != ']' {
			arr = append(arr, r.value())
			if r.peek() == ',' {
				r.pos++
			}
		}
		r.pos++
		return arr
	case c == '\'':
		return r.str()
	case c == '-' || c >= '0' && c <= '9':
		start := r.pos
		r.pos++
		for r.pos < len(r.src) && r.src[r.pos] >= '0' && r.src[r.pos] <= '9' {
			r.pos++
		}
		n, err := strconv.ParseInt(r.src[start:r.pos], 10, 64)
		if err != nil {
			r.fail("%v", err)
		}
		return json.Number(strconv.FormatInt(n, 10))
	}
	name := r.ident()
	switch name {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if r.pos < len(r.src) && r.src[r.pos] == '(' {
		if name != "loadTextContent" {
			r.fail("function %s is outside the subset this test reads", name)
		}
		r.pos++
		if r.peek() != '\'' {
			r.fail("loadTextContent takes a string")
		}
		file := r.str()
		if r.peek() != ')' {
			r.fail("loadTextContent takes one argument")
		}
		r.pos++
		data, err := os.ReadFile(filepath.Join(r.dir, file))
		if err != nil {
			r.fail("loadTextContent: %v", err)
		}
		return string(data)
	}
	return "<" + name + ">"
}

// workbookContent reads `var content = …` of workbook.bicep and returns it
// serialized as ARM's string() would, and the files it loads.
func workbookContent(t *testing.T) (serialized []byte, src string) {
	t.Helper()
	const file = "../infra/modules/workbook.bicep"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	src = string(data)
	i := strings.Index(src, "\nvar content = ")
	if i < 0 {
		t.Fatal("workbook.bicep has no `var content = …`")
	}
	r := &bicepReader{t: t, src: src, pos: i + len("\nvar content = "), dir: filepath.Dir(file)}
	v := r.value()
	serialized, err = json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return serialized, src
}

func TestBicepReaderSubset(t *testing.T) {
	r := &bicepReader{t: t, src: "{\n  a: 'it\\'s\\n'\n  // note\n  b: [\n    1\n    -2\n  ]\n  c: {\n    d: true\n    e: x.id\n  }\n  'f-g': null\n}", dir: "."}
	got, err := json.Marshal(r.value())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"it's\n","b":[1,-2],"c":{"d":true,"e":"\u003cx.id\u003e"},"f-g":null}`; string(got) != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

// workbookQueries are the chart queries, by file name (infra/workbook/*.kql).
func workbookQueries(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../infra/workbook/*.kql")
	if err != nil || len(files) < 5 {
		t.Fatalf("infra/workbook/*.kql: %v %v", files, err)
	}
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = string(data)
	}
	return out
}

// TestWorkbookBicep: the workbook module is part of main.bicep and its
// content, as ARM serializes it, is a workbook whose charts run the
// queries of infra/workbook/ over Application Insights, each once.
func TestWorkbookBicep(t *testing.T) {
	main, err := os.ReadFile("../infra/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	mod, ok := moduleParams(t, string(main))["workbook"]
	if !ok || mod.File != "./modules/workbook.bicep" {
		t.Fatalf("main.bicep has no module workbook './modules/workbook.bicep': %+v", mod)
	}
	if got := mod.Args["applicationInsightsName"]; got != "monitoring.outputs.applicationInsightsName" {
		t.Errorf("the workbook charts %q, want the Application Insights resource of monitoring.bicep", got)
	}

	serialized, src := workbookContent(t)
	for _, want := range []string{
		"resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {", "kind: 'shared'",
		"serializedData: string(content)", "sourceId: toLower(appInsights.id)", "category: 'workbook'",
		"resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("workbook.bicep lacks %q", want)
		}
	}
	if !json.Valid(serialized) {
		t.Fatalf("serializedData is not JSON: %s", serialized)
	}
	var wb struct {
		Version string `json:"version"`
		Items   []struct {
			Type        int             `json:"type"`
			Name        string          `json:"name"`
			CustomWidth string          `json:"customWidth"`
			Content     json.RawMessage `json:"content"`
		} `json:"items"`
		FallbackResourceIDs []string `json:"fallbackResourceIds"`
	}
	dec := json.NewDecoder(strings.NewReader(string(serialized)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wb); err != nil {
		t.Fatalf("serializedData: %v", err)
	}
	if wb.Version != "Notebook/1.0" || !slices.Equal(wb.FallbackResourceIDs, []string{"<appInsights.id>"}) {
		t.Errorf("version %q fallbackResourceIds %v", wb.Version, wb.FallbackResourceIDs)
	}
	queries := workbookQueries(t)
	params := map[string]bool{}
	names := map[string]bool{}
	used := map[string]int{}
	for _, it := range wb.Items {
		if it.Name == "" || names[it.Name] {
			t.Errorf("item name %q empty or not unique", it.Name)
		}
		names[it.Name] = true
		if w, err := strconv.Atoi(it.CustomWidth); it.CustomWidth != "" && (err != nil || w < 10 || w > 100) {
			t.Errorf("item %s: customWidth %q, want a percentage", it.Name, it.CustomWidth)
		}
		switch it.Type {
		case 1: // markdown
		case 9: // parameters
			var c struct {
				Version    string `json:"version"`
				Parameters []struct {
					Name  string `json:"name"`
					Type  int    `json:"type"`
					Value struct {
						DurationMs int64 `json:"durationMs"`
					} `json:"value"`
				} `json:"parameters"`
			}
			if err := json.Unmarshal(it.Content, &c); err != nil || c.Version != "KqlParameterItem/1.0" {
				t.Errorf("parameters item %s: %v %s", it.Name, err, it.Content)
			}
			for _, p := range c.Parameters {
				if p.Type == 4 && p.Value.DurationMs > 0 { // a time range with a default
					params[p.Name] = true
				}
			}
		case 3: // a KQL chart
			var c struct {
				Version                  string   `json:"version"`
				Title                    string   `json:"title"`
				Query                    string   `json:"query"`
				QueryType                int      `json:"queryType"`
				ResourceType             string   `json:"resourceType"`
				CrossComponentResources  []string `json:"crossComponentResources"`
				TimeContextFromParameter string   `json:"timeContextFromParameter"`
				Visualization            string   `json:"visualization"`
			}
			if err := json.Unmarshal(it.Content, &c); err != nil {
				t.Fatalf("item %s: %v", it.Name, err)
			}
			if c.Version != "KqlItem/1.0" || c.QueryType != 0 || c.ResourceType != "microsoft.insights/components" || c.Title == "" ||
				!slices.Equal(c.CrossComponentResources, []string{"<appInsights.id>"}) {
				t.Errorf("item %s is not a KQL query over the Application Insights resource: %s", it.Name, it.Content)
			}
			if !params[c.TimeContextFromParameter] {
				t.Errorf("item %s takes its time range from %q, which no earlier parameter declares", it.Name, c.TimeContextFromParameter)
			}
			if !slices.Contains([]string{"table", "timechart", "barchart", "linechart", "areachart", "piechart", "scatterchart", "tiles"}, c.Visualization) {
				t.Errorf("item %s: visualization %q", it.Name, c.Visualization)
			}
			found := ""
			for name, q := range queries {
				if q == c.Query {
					found = name
				}
			}
			if found == "" {
				t.Errorf("item %s runs a query that is no infra/workbook/*.kql file:\n%s", it.Name, c.Query)
			}
			used[found]++
		default:
			t.Errorf("item %s of type %d", it.Name, it.Type)
		}
	}
	for name := range queries {
		if used[name] != 1 {
			t.Errorf("infra/workbook/%s is charted %d times, want once", name, used[name])
		}
	}
	for _, want := range []string{"runs-by-outcome.kql", "users-per-run.kql", "unchanged-ratio.kql", "job-durations.kql", "job-errors.kql"} {
		if _, ok := queries[want]; !ok {
			t.Errorf("no chart %s", want)
		}
	}
}

// TestWorkbookQueriesInREADME: the README shows each chart's query as it is
// in its file (named just before the block), and no other; the queries read
// only fields the README documents, keep to what embeds safely in the
// workbook (no double quotes, backslashes or tabs; no braces, which the
// workbook would take for parameters) and pair their brackets and quotes.
func TestWorkbookQueriesInREADME(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n### The workbook\n")
	if !ok {
		t.Fatal(`README.md has no "### The workbook" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	queries := workbookQueries(t)
	block := regexp.MustCompile("(?s)`infra/workbook/([\\w.-]+\\.kql)`\\):\n\n```kusto\n(.*?)```\n")
	shown := map[string]bool{}
	for _, m := range block.FindAllStringSubmatch(section, -1) {
		q, ok := queries[m[1]]
		switch {
		case !ok:
			t.Errorf("README.md shows infra/workbook/%s, which does not exist", m[1])
		case m[2] != q:
			t.Errorf("README.md shows for %s:\n%s\nthe file holds:\n%s", m[1], m[2], q)
		}
		shown[m[1]] = true
	}
	if n := strings.Count(section, "```kusto"); n != len(shown) {
		t.Errorf("%d kusto blocks in the workbook section, %d of them named by their file", n, len(shown))
	}
	fields := map[string]bool{}
	for _, ev := range []string{"profilesync.run", "profilesync.job"} {
		for _, f := range readmeEventFields(t, ev) {
			fields[f] = true
		}
	}
	ref := regexp.MustCompile(`\be\.(\w+)`)
	for name, q := range queries {
		if !shown[name] {
			t.Errorf("README.md does not show infra/workbook/%s", name)
		}
		if !strings.HasPrefix(q, "traces\n| where message has 'profilesync'\n| extend e = parse_json(message)\n") || !strings.HasSuffix(q, "\n") {
			t.Errorf("%s does not read the events from traces as the others do:\n%s", name, q)
		}
		if i := strings.IndexAny(q, "\"\\\t{}"); i >= 0 {
			t.Errorf("%s holds %q", name, q[i])
		}
		for _, m := range ref.FindAllStringSubmatch(q, -1) {
			if !fields[m[1]] {
				t.Errorf("%s reads e.%s, which README.md does not document", name, m[1])
			}
		}
		for _, m := range regexp.MustCompile(`tostring\(e\.msg\) == '([^']*)'`).FindAllStringSubmatch(q, -1) {
			if m[1] != "profilesync.run" && m[1] != "profilesync.job" {
				t.Errorf("%s looks for events %q", name, m[1])
			}
		}
		depth := 0
		for _, line := range strings.Split(q, "\n") {
			if strings.Count(line, "'")%2 != 0 {
				t.Errorf("%s: unpaired quote in %q", name, line)
			}
			code := regexp.MustCompile(`'[^']*'`).ReplaceAllString(line, "''")
			depth += strings.Count(code, "(") - strings.Count(code, ")")
			if depth < 0 {
				t.Errorf("%s: unbalanced ) in %q", name, line)
			}
		}
		if depth != 0 {
			t.Errorf("%s: %d unclosed (", name, depth)
		}
	}
}

// TestMetricEventsAreNotSampled: Application Insights keeps every trace,
// hence every metric event (adaptive sampling is on by default in Functions
// and would drop some when many lines come at once).
func TestMetricEventsAreNotSampled(t *testing.T) {
	data, err := os.ReadFile("../host.json")
	if err != nil {
		t.Fatal(err)
	}
	var host struct {
		Logging struct {
			ApplicationInsights struct {
				SamplingSettings struct {
					IsEnabled     *bool  `json:"isEnabled"`
					ExcludedTypes string `json:"excludedTypes"`
				} `json:"samplingSettings"`
			} `json:"applicationInsights"`
		} `json:"logging"`
	}
	if err := json.Unmarshal(data, &host); err != nil {
		t.Fatal(err)
	}
	s := host.Logging.ApplicationInsights.SamplingSettings
	sampled := s.IsEnabled == nil || *s.IsEnabled
	if sampled && !slices.Contains(strings.Split(s.ExcludedTypes, ";"), "Trace") {
		t.Errorf("host.json lets Application Insights sample traces (samplingSettings %+v): metric events may be dropped", s)
	}
}
