package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The deployment tests check what can be checked without Azure, azd or the
// Bicep CLI (none of which this project's machines can install): azure.yaml
// and the scripts it runs, the Bicep parameters and module wiring, and the
// deploy guide. The facts they pin, with their sources, are in azure.yaml,
// infra/main.bicep and docs/deploy.md.

// minAzd is the first azd release with `language: custom` (Azure/azure-dev
// CHANGELOG 1.20.0, #5771), behind the alpha flag language.custom.
const minAzd = "1.20.0"

// Flex Consumption's maximumInstanceCount range in every region (Azure/azure-powershell
// src/Functions/Functions.Autorest/custom/FunctionsStackFlexData/*/custom.json:
// lowestMaximumInstanceCount 40, highestMaximumInstanceCount 1000).
const (
	flexLowestMax  = 40
	flexHighestMax = 1000
)

// ---- a YAML subset, enough for azure.yaml (go.mod has no YAML library) ----

// yamlMap is a YAML mapping whose values are strings or yamlMaps.
type yamlMap map[string]any

// parseYAMLSubset reads block mappings with scalar values: `key: value`,
// `key:` followed by a more indented block, comments, and plain, 'single'
// or "double" quoted scalars. Anything else (sequences, flow collections,
// multi-line scalars) fails the test, so the parser never silently misreads.
func parseYAMLSubset(t *testing.T, src string) yamlMap {
	t.Helper()
	root := yamlMap{}
	type frame struct {
		indent int
		m      yamlMap
	}
	stack := []frame{{-1, root}}
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.Contains(line, "\t") {
			t.Fatalf("azure.yaml:%d: a tab", i+1)
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key, rest, ok := strings.Cut(trimmed, ":")
		if !ok || strings.HasPrefix(trimmed, "-") || strings.ContainsAny(key, `{}[]"'`) {
			t.Fatalf("azure.yaml:%d: %q is outside the YAML subset this test reads", i+1, line)
		}
		for stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		parent := stack[len(stack)-1].m
		if _, dup := parent[key]; dup {
			t.Fatalf("azure.yaml:%d: key %q twice", i+1, key)
		}
		rest = strings.TrimSpace(rest)
		if rest == "" || strings.HasPrefix(rest, "#") {
			child := yamlMap{}
			parent[key] = child
			stack = append(stack, frame{indent, child})
			continue
		}
		parent[key] = yamlScalar(t, i+1, rest)
	}
	return root
}

func yamlScalar(t *testing.T, line int, s string) string {
	t.Helper()
	switch s[0] {
	case '\'':
		end := strings.LastIndex(s, "'")
		if end == 0 {
			t.Fatalf("azure.yaml:%d: unterminated quote", line)
		}
		return strings.ReplaceAll(s[1:end], "''", "'")
	case '"':
		end := strings.LastIndex(s, `"`)
		v, err := strconv.Unquote(s[:end+1])
		if err != nil {
			t.Fatalf("azure.yaml:%d: %v", line, err)
		}
		return v
	case '{', '[', '|', '>', '&', '*', '!':
		t.Fatalf("azure.yaml:%d: %q is outside the YAML subset this test reads", line, s)
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func (m yamlMap) str(path ...string) string {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(yamlMap)
		if !ok {
			return ""
		}
		cur = mm[k]
	}
	s, _ := cur.(string)
	return s
}

func TestYAMLSubset(t *testing.T) {
	doc := parseYAMLSubset(t, "# c\na: 1\nb:\n  c: 'it''s' # x\n  d:\n    e: \"q\\\"\"\n  f: plain # note\ng: x\n")
	for _, tc := range []struct {
		path []string
		want string
	}{{[]string{"a"}, "1"}, {[]string{"b", "c"}, "it's"}, {[]string{"b", "d", "e"}, `q"`}, {[]string{"b", "f"}, "plain"}, {[]string{"g"}, "x"}} {
		if got := doc.str(tc.path...); got != tc.want {
			t.Errorf("%v = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// semverAtLeast reports whether the ">= X.Y.Z" range accepts exactly the
// versions from min on (what azd's requiredVersions check does with it).
func parseMinRange(t *testing.T, r string) string {
	t.Helper()
	m := regexp.MustCompile(`^>=\s*(\d+\.\d+\.\d+)$`).FindStringSubmatch(strings.TrimSpace(r))
	if m == nil {
		t.Fatalf("requiredVersions.azd %q is not a \">= X.Y.Z\" range", r)
	}
	return m[1]
}

// TestDeployAzureYAML pins what azd needs from azure.yaml: the custom
// language (alpha, behind language.custom) with the azd version that has
// it, the folder it zips, hooks that run on Linux and macOS and stop with a
// message on Windows, and that every file it names exists.
func TestDeployAzureYAML(t *testing.T) {
	data, err := os.ReadFile("../azure.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	doc := parseYAMLSubset(t, src)

	if got := parseMinRange(t, doc.str("requiredVersions", "azd")); got != minAzd {
		t.Errorf("requiredVersions.azd starts at %s, want %s (the first azd with language: custom)", got, minAzd)
	}
	for path, want := range map[string]string{
		"services.handler.language": "custom", // language: go builds a binary named app for the native worker
		"services.handler.host":     "function",
		"services.handler.project":  ".",
		"services.handler.dist":     ".build/app", // resolved against azd's working directory
	} {
		if got := doc.str(strings.Split(path, ".")...); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	// The flag azd wants, both ways of setting it, named where a reader of
	// azure.yaml looks first.
	for _, want := range []string{"azd config set alpha.language.custom on", "AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=true", "docs/deploy.md", "repository root"} {
		if !strings.Contains(src, want) {
			t.Errorf("azure.yaml's comments do not say %q", want)
		}
	}

	// Hooks: POSIX sh on Linux and macOS; on Windows a message that fails.
	hooks := []struct {
		path   []string
		script string // the file it runs
	}{
		{[]string{"hooks", "preprovision"}, "scripts/preflight.sh"},
		{[]string{"services", "handler", "hooks", "prepackage"}, "scripts/package.sh"},
	}
	for _, h := range hooks {
		name := strings.Join(h.path, ".")
		posix := append(slices.Clone(h.path), "posix")
		if got := doc.str(append(posix, "shell")...); got != "sh" {
			t.Errorf("%s.posix.shell = %q, want sh", name, got)
		}
		run := doc.str(append(posix, "run")...)
		if run != h.script && !strings.HasPrefix(run, "sh "+h.script+" ") {
			t.Errorf("%s.posix.run = %q, want %s", name, run, h.script)
		}
		win := append(slices.Clone(h.path), "windows")
		if w := doc.str(append(win, "run")...); !strings.Contains(w, "WSL") || !strings.Contains(w, "exit 1") {
			t.Errorf("%s.windows.run = %q, want a failure that points to WSL", name, w)
		}
		if run == h.script {
			// azd runs a file hook as `/bin/sh -c <path>`: it must be executable.
			if info, err := os.Stat(filepath.Join("..", h.script)); err != nil || info.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: %s must exist and be executable (mode %v, %v)", name, h.script, info.Mode(), err)
			}
		}
	}
	if run := doc.str("hooks", "preprovision", "posix", "run"); !strings.HasSuffix(run, " --hook") {
		t.Errorf("the preprovision hook runs %q; want scripts/preflight.sh --hook", run)
	}

	// Every repository file azure.yaml names (outside URLs) exists.
	noURLs := regexp.MustCompile(`https?://\S+`).ReplaceAllString(src, "")
	named := regexp.MustCompile(`(?:^|[\s(`+"`"+`])((?:[\w.-]+/)*[\w.-]+\.(?:md|sh|bicep|json))\b`).FindAllStringSubmatch(noURLs, -1)
	if len(named) < 4 {
		t.Fatalf("found only %v in azure.yaml", named)
	}
	seen := map[string]bool{}
	for _, m := range named {
		if seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("azure.yaml names %s, which does not exist", m[1])
		}
	}
	for _, want := range []string{"docs/deploy.md", "README.md", "scripts/preflight.sh", "scripts/package.sh", "infra/grant-permissions.sh", "infra/main.bicep"} {
		if !seen[want] {
			t.Errorf("azure.yaml no longer names %s (found %v)", want, seen)
		}
	}
}

// ---- Bicep, as far as it can be read without the Bicep CLI ----

type bicepParamInfo struct {
	Type, Default string
	HasDefault    bool
	Min, Max      *int
	Description   string
}

var (
	bicepParamLine = regexp.MustCompile(`^param\s+(\w+)\s+(\w+)(?:\s*=\s*(.+))?$`)
	bicepDecorator = regexp.MustCompile(`^@(\w+)\((.*)\)$`)
)

// readBicepParams reads the params of a Bicep file with their @minValue,
// @maxValue and @description decorators.
func readBicepParams(t *testing.T, file string) map[string]bicepParamInfo {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]bicepParamInfo{}
	var cur bicepParamInfo
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		if m := bicepDecorator.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "minValue", "maxValue":
				n, err := strconv.Atoi(m[2])
				if err != nil {
					t.Fatalf("%s: %s", file, line)
				}
				if m[1] == "minValue" {
					cur.Min = &n
				} else {
					cur.Max = &n
				}
			case "description":
				cur.Description = m[2]
			}
			continue
		}
		if m := bicepParamLine.FindStringSubmatch(line); m != nil {
			cur.Type, cur.Default, cur.HasDefault = m[2], strings.TrimSpace(m[3]), m[3] != ""
			params[m[1]] = cur
		}
		cur = bicepParamInfo{}
	}
	return params
}

var bicepStringOrComment = regexp.MustCompile(`(?s)'(?:[^'\\\n]|\\.)*'|//[^\n]*|/\*.*?\*/`)

// checkBicepBalanced checks that braces, brackets and parentheses pair up
// outside strings and comments: a typo the Bicep compiler would refuse.
func checkBicepBalanced(t *testing.T, file string, src string) {
	t.Helper()
	code := bicepStringOrComment.ReplaceAllString(src, "''")
	var open []rune
	pair := map[rune]rune{'}': '{', ']': '[', ')': '('}
	for i, r := range code {
		switch r {
		case '{', '[', '(':
			open = append(open, r)
		case '}', ']', ')':
			if len(open) == 0 || open[len(open)-1] != pair[r] {
				t.Errorf("%s: unbalanced %c at offset %d", file, r, i)
				return
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 {
		t.Errorf("%s: %d unclosed %q", file, len(open), string(open))
	}
}

// moduleParams returns, for each module of main.bicep, its file and the
// arguments it passes (key -> value text).
func moduleParams(t *testing.T, src string) map[string]struct {
	File string
	Args map[string]string
} {
	t.Helper()
	out := map[string]struct {
		File string
		Args map[string]string
	}{}
	code := bicepStringOrComment.ReplaceAllStringFunc(src, func(s string) string {
		if strings.HasPrefix(s, "'") {
			return s // keep strings: the module path is one
		}
		return ""
	})
	head := regexp.MustCompile(`(?m)^module\s+(\w+)\s+'([^']+)'\s*=\s*\{`)
	for _, loc := range head.FindAllStringSubmatchIndex(code, -1) {
		name, file := code[loc[2]:loc[3]], code[loc[4]:loc[5]]
		rest := code[loc[1]:]
		p := regexp.MustCompile(`(?m)^\s*params:\s*\{\s*$`).FindStringIndex(rest)
		if p == nil {
			t.Fatalf("main.bicep: module %s has no params block", name)
		}
		args := map[string]string{}
		depth := 0
		for _, line := range strings.Split(rest[p[0]:], "\n") {
			if depth == 1 {
				if m := regexp.MustCompile(`^\s*(\w+)\s*:\s*(.*)$`).FindStringSubmatch(line); m != nil {
					args[m[1]] = strings.TrimSpace(m[2])
				}
			}
			depth += strings.Count(line, "{") - strings.Count(line, "}")
			if depth <= 0 {
				break
			}
		}
		out[name] = struct {
			File string
			Args map[string]string
		}{file, args}
	}
	return out
}

// TestDeployBicepModules checks what the Bicep compiler would: every file
// pairs its brackets, and every module gets exactly parameters it declares,
// including all those without a default.
func TestDeployBicepModules(t *testing.T) {
	files, _ := filepath.Glob("../infra/modules/*.bicep")
	files = append(files, "../infra/main.bicep")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkBicepBalanced(t, f, string(data))
	}
	main, err := os.ReadFile("../infra/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	mods := moduleParams(t, string(main))
	if len(mods) < 5 {
		t.Fatalf("found modules %v", mods)
	}
	for name, mod := range mods {
		declared := readBicepParams(t, filepath.Join("../infra", mod.File))
		for arg := range mod.Args {
			if _, ok := declared[arg]; !ok {
				t.Errorf("module %s passes %s, which %s does not declare", name, arg, mod.File)
			}
		}
		for param, info := range declared {
			if _, ok := mod.Args[param]; !ok && !info.HasDefault {
				t.Errorf("module %s does not pass %s, which %s requires (no default)", name, param, mod.File)
			}
		}
	}
	// Both queues the functions trigger on exist in the storage account.
	storage, _ := os.ReadFile("../infra/modules/storage.bicep")
	for _, p := range []string{"statusQueueName", "runQueueName"} {
		if !regexp.MustCompile(`(?s)'queues'\s*=\s*\{\s*name:\s*` + p).Match(storage) {
			t.Errorf("storage.bicep creates no queue named by %s", p)
		}
	}
}

// TestDeployInstanceCount pins maximumInstanceCount to what Flex Consumption
// accepts in every region (40-1000), with 40 as the default, a separate
// preview parameter for 1-39, and its meaning (per function group) stated.
func TestDeployInstanceCount(t *testing.T) {
	main := readBicepParams(t, "../infra/main.bicep")
	checkRange := func(file, name string, p bicepParamInfo, lo, hi int, def string) {
		t.Helper()
		if p.Type != "int" || p.Min == nil || *p.Min != lo || p.Max == nil || *p.Max != hi || (def != "" && p.Default != def) {
			t.Errorf("%s: param %s: type %s, min %v, max %v, default %q; want int %d..%d default %q",
				file, name, p.Type, deref(p.Min), deref(p.Max), p.Default, lo, hi, def)
		}
	}
	checkRange("main.bicep", "maximumInstanceCount", main["maximumInstanceCount"], flexLowestMax, flexHighestMax, strconv.Itoa(flexLowestMax))
	checkRange("main.bicep", "maximumInstanceCountPreview", main["maximumInstanceCountPreview"], 0, flexLowestMax-1, "0")
	if d := main["maximumInstanceCount"].Description; !strings.Contains(d, "each function group") || !strings.Contains(d, "40 to 1000") {
		t.Errorf("main.bicep: maximumInstanceCount's description does not say it is per function group, 40 to 1000: %s", d)
	}
	if d := main["maximumInstanceCountPreview"].Description; !strings.Contains(d, "azure-functions-host#10523") {
		t.Errorf("main.bicep: maximumInstanceCountPreview's description does not name where the preview is documented: %s", d)
	}
	fa := readBicepParams(t, "../infra/modules/functionapp.bicep")
	checkRange("functionapp.bicep", "maximumInstanceCount", fa["maximumInstanceCount"], 1, flexHighestMax, "")

	src, _ := os.ReadFile("../infra/main.bicep")
	mods := moduleParams(t, string(src))
	if got := mods["functionApp"].Args["maximumInstanceCount"]; got != "maximumInstanceCountPreview > 0 ? maximumInstanceCountPreview : maximumInstanceCount" {
		t.Errorf("main.bicep passes maximumInstanceCount: %s", got)
	}
	fasrc, _ := os.ReadFile("../infra/modules/functionapp.bicep")
	for _, want := range []string{
		`maximumInstanceCount: maximumInstanceCount`,
		`instanceMemoryMB: 2048`, // one of 512, 2048 (default), 4096 for the custom stack
		"name: 'custom'\n        version: '1.0'",
	} {
		if !strings.Contains(string(fasrc), want) {
			t.Errorf("functionapp.bicep lacks %q", want)
		}
	}

	// azd binds them from its environment, with the same defaults.
	data, _ := os.ReadFile("../infra/main.parameters.json")
	var params struct {
		Parameters map[string]struct{ Value string } `json:"parameters"`
	}
	if err := json.Unmarshal(data, &params); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"maximumInstanceCount":        "${MAXIMUM_INSTANCE_COUNT=" + main["maximumInstanceCount"].Default + "}",
		"maximumInstanceCountPreview": "${MAXIMUM_INSTANCE_COUNT_PREVIEW=" + main["maximumInstanceCountPreview"].Default + "}",
	} {
		if got := params.Parameters[name].Value; got != want {
			t.Errorf("main.parameters.json: %s = %q, want %q", name, got, want)
		}
	}
	// The preprovision hook checks the same ranges before ARM would.
	pre, _ := os.ReadFile("../scripts/preflight.sh")
	for _, want := range []string{
		fmt.Sprintf(`MAXIMUM_INSTANCE_COUNT "$MAXIMUM_INSTANCE_COUNT" %d %d`, flexLowestMax, flexHighestMax),
		fmt.Sprintf(`MAXIMUM_INSTANCE_COUNT_PREVIEW "$MAXIMUM_INSTANCE_COUNT_PREVIEW" 0 %d`, flexLowestMax-1),
	} {
		if !strings.Contains(string(pre), want) {
			t.Errorf("scripts/preflight.sh does not check %s", want)
		}
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// ---- scripts ----

// fakeAzdPreflight answers `azd version` and `azd config list-alpha` as azd
// does (Azure/azure-dev cli/azd/cmd/version.go, cmd/config.go): Status On or
// Off under Name: language.custom, or no such feature before 1.20.0.
const fakeAzdPreflight = `#!/bin/sh
case "$1 $2" in
"version "*) echo "azd version $FAKE_AZD_VERSION (commit 8507aac13)" ;;
"config list-alpha")
	printf 'Name: aks.helm\nDescription: Enable Helm support for AKS deployments.\nStatus: Off\n'
	if [ -n "$FAKE_ALPHA" ]; then
		printf '\nName: language.custom\nDescription: Enables support for services to use custom language.\nStatus: %s\n' "$FAKE_ALPHA"
	fi
	printf '\nName: llm\nDescription: Enables the use of LLMs in the CLI.\nStatus: On\n'
	;;
*) exit 2 ;;
esac
`

// TestDeployPreflight runs scripts/preflight.sh, under sh and bash, with
// fake azd, az, go and zip and nothing else on PATH but the few tools it
// uses, the way a reader runs it before azd and azd runs it as a hook.
func TestDeployPreflight(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "preflight.sh")
	type tc struct {
		name      string
		args      []string
		env       []string
		without   []string // fakes left out of PATH
		elsewhere bool     // run from outside the repository
		wantOK    bool
		want      []string // in the output
	}
	const alphaCmd = "azd config set alpha.language.custom on"
	cases := []tc{
		{name: "ready", wantOK: true, want: []string{"azd 1.20.0", "language.custom is on", "preflight: ready"}},
		{name: "newer azd", env: []string{"FAKE_AZD_VERSION=2.3.4"}, wantOK: true},
		{name: "alpha flag off", env: []string{"FAKE_ALPHA=Off"}, want: []string{alphaCmd, "export AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=true", "refuses"}},
		{name: "env flag azd cannot read", env: []string{"FAKE_ALPHA=Off", "AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=on"}, want: []string{alphaCmd, "is ignored by azd"}},
		{name: "azd too old", env: []string{"FAKE_AZD_VERSION=1.19.1", "FAKE_ALPHA="}, want: []string{"azd 1.19.1 is too old", "1.20.0", "does not list the alpha feature"}},
		{name: "pre-release of 1.20.0", env: []string{"FAKE_AZD_VERSION=1.20.0-beta.1"}, want: []string{"too old"}},
		{name: "no azd", without: []string{"azd"}, want: []string{"azd (Azure Developer CLI) is not installed"}},
		{name: "no az", without: []string{"az"}, want: []string{"az (Azure CLI) is not installed"}},
		{name: "no go", without: []string{"go"}, want: []string{"Go is not installed"}},
		{name: "no zip", without: []string{"zip"}, want: []string{"neither zip nor python3"}},
		{name: "not in the repository root", elsewhere: true, want: []string{"from the repository root", "azd -C"}},
		{name: "windows without WSL", env: []string{"FAKE_UNAME=MINGW64_NT-10.0-19045"}, want: []string{"WSL"}},
		{name: "macOS", env: []string{"FAKE_UNAME=Darwin"}, wantOK: true},
		// As the preprovision hook: azd has loaded azure.yaml, so it asks azd nothing.
		{name: "hook", args: []string{"--hook"}, without: []string{"azd", "az"}, wantOK: true,
			env: []string{"MAXIMUM_INSTANCE_COUNT=40", "MAXIMUM_INSTANCE_COUNT_PREVIEW=0", "SYNC_SCHEDULE=0 0 2 * * *", "CLEANUP_AFTER_DAYS=30", "SPO_SITE_URL=https://contoso.sharepoint.com/sites/hr", "LOG_LEVEL=debug"}},
		{name: "hook, preview count", args: []string{"--hook"}, env: []string{"MAXIMUM_INSTANCE_COUNT_PREVIEW=1"}, wantOK: true},
		{name: "hook, count below 40", args: []string{"--hook"}, env: []string{"MAXIMUM_INSTANCE_COUNT=4"}, want: []string{"outside 40-1000", "MAXIMUM_INSTANCE_COUNT_PREVIEW"}},
		{name: "hook, count above 1000", args: []string{"--hook"}, env: []string{"MAXIMUM_INSTANCE_COUNT=1001"}, want: []string{"outside 40-1000"}},
		{name: "hook, preview 40", args: []string{"--hook"}, env: []string{"MAXIMUM_INSTANCE_COUNT_PREVIEW=40"}, want: []string{"outside 0-39"}},
		{name: "hook, bad values", args: []string{"--hook"}, env: []string{"SPO_SITE_URL=http://contoso", "SYNC_SCHEDULE=0 2 * *", "CLEANUP_AFTER_DAYS=week"},
			want: []string{"SPO_SITE_URL=http://contoso must be an https:// URL", "has 4 fields", "CLEANUP_AFTER_DAYS=week is not a whole number"}},
		{name: "hook, log level in capitals", args: []string{"--hook"}, env: []string{"LOG_LEVEL=DEBUG"}, want: []string{"LOG_LEVEL=DEBUG is not debug, info, warn or error", "infra/main.bicep"}},
		{name: "hook, no go", args: []string{"--hook"}, without: []string{"go"}, want: []string{"Go is not installed"}},
	}
	real := map[string]string{}
	for _, tool := range []string{"dirname", "sed", "head"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed", tool)
		}
		real[tool] = p
	}
	fakes := map[string]string{
		"azd":   fakeAzdPreflight,
		"az":    "#!/bin/sh\nexit 0\n",
		"go":    "#!/bin/sh\necho 'go version go1.26.0 linux/amd64'\n",
		"zip":   "#!/bin/sh\nexit 0\n",
		"uname": "#!/bin/sh\necho \"${FAKE_UNAME:-Linux}\"\n",
	}
	for _, shell := range []string{"sh", "bash"} {
		shellPath, err := exec.LookPath(shell)
		if err != nil {
			continue
		}
		for _, c := range cases {
			t.Run(shell+"/"+c.name, func(t *testing.T) {
				bin := t.TempDir()
				for tool, p := range real {
					if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
						t.Fatal(err)
					}
				}
				for name, body := range fakes {
					if slices.Contains(c.without, name) {
						continue
					}
					if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				cmd := exec.Command(shellPath, append([]string{script}, c.args...)...)
				cmd.Dir = root
				if c.elsewhere {
					cmd.Dir = t.TempDir()
				}
				cmd.Env = append([]string{"PATH=" + bin, "HOME=" + t.TempDir(), "FAKE_AZD_VERSION=1.20.0", "FAKE_ALPHA=On"}, c.env...)
				out, err := cmd.CombinedOutput()
				if c.wantOK != (err == nil) {
					t.Errorf("exit: %v, want success %v\n%s", err, c.wantOK, out)
				}
				for _, w := range c.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("output lacks %q:\n%s", w, out)
					}
				}
			})
		}
	}
}

// bash4Syntax lists what bash 4 or later added and macOS's /bin/bash 3.2
// rejects or misreads, as regular expressions over a script's code.
var bash4Syntax = []struct{ re, what string }{
	{`\b(declare|local|typeset|readonly)\s+(-\w*\s+)*-\w*A`, "associative arrays (bash 4.0)"},
	{`\b(declare|local|typeset)\s+(-\w*\s+)*-\w*n\b`, "name references (bash 4.3)"},
	{`\b(declare|typeset)\s+(-\w*\s+)*-\w*g\b`, "declare -g (bash 4.2)"},
	{`\b(mapfile|readarray|coproc)\b`, "mapfile, readarray, coproc (bash 4.0)"},
	{`\$\{[#!]?[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?(\^\^?|,,?)`, "case modification ${x^^}, ${x,,} (bash 4.0)"},
	{`\$\{[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?@[QEPAaUuLK]\}`, "${x@Q} transformations (bash 4.4)"},
	{`&>>|\|&`, "&>> and |& (bash 4.0)"},
	{`;;&|;&`, "case fall-through ;& and ;;& (bash 4.0)"},
	{`\[\s*-[0-9]+\s*\]`, "negative array subscripts (bash 4.3)"},
	{`\b(EPOCHSECONDS|EPOCHREALTIME|BASHPID|BASH_ARGV0)\b`, "variables added in bash 4 or 5"},
	{`\bwait\s+-n\b`, "wait -n (bash 4.3)"},
	{`\bshopt\s+-s\s+(globstar|lastpipe|direxpand|autocd|checkjobs)\b`, "shell options added in bash 4"},
	{`\[\[\s+-v\s|\btest\s+-v\s|\[\s+-v\s`, "-v VAR tests (bash 4.2)"},
	{`printf\s+(-v\s+\w+\s+)?['"]?%\(`, "printf %(...)T (bash 4.2)"},
	{`\{[0-9a-z]+\.\.[0-9a-z]+\.\.[0-9]+\}`, "brace expansion with a step (bash 4.0)"},
}

// bash4Uses returns the bash-4-only syntax in src, comments aside.
func bash4Uses(src string) []string {
	var code strings.Builder
	for _, line := range strings.Split(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		code.WriteString(line + "\n")
	}
	var found []string
	for _, f := range bash4Syntax {
		if loc := regexp.MustCompile(f.re).FindStringIndex(code.String()); loc != nil {
			found = append(found, fmt.Sprintf("%s: %q", f.what, code.String()[loc[0]:loc[1]]))
		}
	}
	return found
}

func TestBash4Uses(t *testing.T) {
	for _, bad := range []string{
		"declare -A ids=()", "local -A x", "mapfile -t lines < f", "echo ${name,,}", "echo ${name^^}",
		"echo ${x@Q}", "cmd &>> log", "a |& b", "echo ${arr[-1]}", "wait -n", "shopt -s globstar",
		"[[ -v FOO ]]", "printf '%(%F)T'", "echo {1..10..2}", "declare -n ref=x", "x=$EPOCHSECONDS",
	} {
		if len(bash4Uses(bad)) == 0 {
			t.Errorf("%q is not recognised as bash 4 syntax", bad)
		}
	}
	for _, ok := range []string{
		"set -euo pipefail", "[[ $x =~ ^[0-9]+$ ]]", "arr=(a b); echo \"${arr[@]}\"", "x=${y:-z}", "read -r a <<<\"$b\"",
		"# declare -A in a comment", "echo ${#x}", "case $x in a) ;; esac", "printf '%s\\n' \"$x\"", "echo {1..3}",
	} {
		if got := bash4Uses(ok); len(got) > 0 {
			t.Errorf("%q flagged: %v", ok, got)
		}
	}
}

// TestDeployScriptsPortable checks every shell script of the repository:
// the deploy path (azd hooks, grant-permissions.sh) is POSIX sh, every
// script parses, none uses syntax newer than bash 3.2 (macOS's), every one is
// executable, and shellcheck (when installed) finds nothing.
func TestDeployScriptsPortable(t *testing.T) {
	scripts, _ := filepath.Glob("../scripts/*.sh")
	infra, _ := filepath.Glob("../infra/*.sh")
	scripts = append(scripts, infra...)
	deployPath := []string{"../scripts/preflight.sh", "../scripts/package.sh", "../infra/grant-permissions.sh"}
	for _, f := range deployPath {
		if !slices.Contains(scripts, f) {
			t.Errorf("%s is missing", f)
		}
	}
	shellcheck, _ := exec.LookPath("shellcheck")
	for _, f := range scripts {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		shell := ""
		switch first {
		case "#!/bin/sh":
			shell = "sh"
		case "#!/usr/bin/env bash", "#!/bin/bash":
			shell = "bash"
		default:
			t.Errorf("%s: shebang %q, want #!/bin/sh or bash", f, first)
			continue
		}
		if slices.Contains(deployPath, f) && shell != "sh" {
			t.Errorf("%s runs on the deploy path (Linux, macOS, WSL): make it POSIX sh, not %s", f, shell)
		}
		if info, err := os.Stat(f); err != nil || info.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable", f)
		}
		for _, use := range bash4Uses(string(data)) {
			t.Errorf("%s uses %s, which macOS's bash 3.2 does not have", f, use)
		}
		if p, err := exec.LookPath(shell); err == nil {
			if out, err := exec.Command(p, "-n", f).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", shell, f, err, out)
			}
		}
		if shellcheck != "" {
			if out, err := exec.Command(shellcheck, "--shell="+shell, f).CombinedOutput(); err != nil {
				t.Errorf("shellcheck --shell=%s %s:\n%s", shell, f, out)
			}
		}
	}
	if shellcheck == "" {
		t.Log("shellcheck is not installed: the scripts were checked with sh -n, bash -n and the bash 3.2 syntax list only")
	}
}

// TestDeployDocs checks that the deploy guide exists and that the README's
// Deploy section names every step a reader on Linux or macOS needs before
// `azd up` (and the first-run 403), and that their links resolve.
func TestDeployDocs(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatalf("docs/deploy.md (named by azure.yaml): %v", err)
	}
	start := strings.Index(string(readme), "\n## Deploy to Azure\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Deploy to Azure" section`)
	}
	section := string(readme)[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	for _, want := range []string{
		"git clone", "repository root", "scripts/preflight.sh", "azd config set alpha.language.custom on",
		"AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=true", minAzd, "azd up", "403", "azd deploy", "per function group",
		"WSL", "macOS", "docs/deploy.md", "infra/grant-permissions.sh",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("README.md's Deploy section does not mention %q", want)
		}
	}
	if strings.Contains(section, "at most 4 instances") {
		t.Error("README.md still says \"at most 4 instances\"")
	}
	for _, want := range []string{
		"alpha.language.custom", "container.go", "requiredVersions", "MAXIMUM_INSTANCE_COUNT_PREVIEW",
		"per function group", "SyncRun", "WSL", "403", "azd deploy", "bash 3.2",
	} {
		if !strings.Contains(string(guide), want) {
			t.Errorf("docs/deploy.md does not mention %q", want)
		}
	}
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, doc := range []struct{ name, dir, text string }{{"README.md", "..", section}, {"docs/deploy.md", "../docs", string(guide)}} {
		for _, m := range link.FindAllStringSubmatch(doc.text, -1) {
			if strings.Contains(m[1], "://") || strings.HasPrefix(m[1], "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(doc.dir, m[1])); err != nil {
				t.Errorf("%s links to %s, which does not exist", doc.name, m[1])
			}
		}
	}
}
