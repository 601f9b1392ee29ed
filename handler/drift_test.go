package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/azfunc"
)

// The drift test keeps four descriptions of the app settings in step: the
// settings the handler reads (the settings table in config.go, plus the
// storage connection read by azstorage.ParseConnection), local.settings.json,
// the app settings in infra/ (Bicep) and the settings table of README.md.
// Every exception is listed below with its reason.

// storageSettings are the settings azstorage.ParseConnection reads with the
// prefix AzureWebJobsStorage (a test below checks the handler reads exactly
// these besides the settings table).
var storageSettings = []string{
	"AzureWebJobsStorage",
	"AzureWebJobsStorage__accountName",
	"AzureWebJobsStorage__blobServiceUri",
	"AzureWebJobsStorage__queueServiceUri",
	"AzureWebJobsStorage__credential",
	"AzureWebJobsStorage__clientId",
}

// unlisted are settings the handler reads that belong in no table.
var unlisted = map[string]string{
	"FUNCTIONS_HTTPWORKER_PORT": "legacy alias the host sets to the same value as FUNCTIONS_CUSTOMHANDLER_PORT; read only as a fallback",
	"PROFILESYNC_CRASH_AT":      "the kill matrix's setting, honoured only by builds tagged crashpoints; the product refuses to start with it",
	"GOGC":                      "Go's own collector setting: the handler only checks whether it is set before choosing its default target (tuneMemory)",
}

// notLocal are settings the handler reads that local.settings.json leaves out.
var notLocal = map[string]string{
	"FUNCTIONS_CUSTOMHANDLER_PORT":         "set by the Functions host (func start) for the handler process",
	"AZURE_CLIENT_ID":                      "user-assigned identity or certificate principal; the simulator's managed-identity endpoint needs none",
	"AZURE_TENANT_ID":                      "certificate principal only; local runs use the simulator's managed identity",
	"AZURE_CLIENT_CERTIFICATE_PATH":        "certificate principal only; local runs use the simulator's managed identity",
	"AZURE_CLIENT_CERTIFICATE_PASSWORD":    "certificate principal only; local runs use the simulator's managed identity",
	"AzureWebJobsStorage__accountName":     "identity-based storage is for Azure; locally AzureWebJobsStorage points at Azurite",
	"AzureWebJobsStorage__blobServiceUri":  "identity-based storage is for Azure; locally AzureWebJobsStorage points at Azurite",
	"AzureWebJobsStorage__queueServiceUri": "identity-based storage is for Azure; locally AzureWebJobsStorage points at Azurite",
	"AzureWebJobsStorage__credential":      "identity-based storage is for Azure; locally AzureWebJobsStorage points at Azurite",
	"AzureWebJobsStorage__clientId":        "identity-based storage is for Azure; locally AzureWebJobsStorage points at Azurite",
}

// notInBicep are settings the handler reads that infra/ does not set.
var notInBicep = map[string]string{
	"IDENTITY_ENDPOINT":                 "set by the platform for managed identity",
	"IDENTITY_HEADER":                   "set by the platform for managed identity",
	"FUNCTIONS_CUSTOMHANDLER_PORT":      "set by the Functions host for the handler process",
	"AZURE_TENANT_ID":                   "certificate principal: not used in Azure, where the managed identity signs in",
	"AZURE_CLIENT_CERTIFICATE_PATH":     "certificate principal: not used in Azure, where the managed identity signs in",
	"AZURE_CLIENT_CERTIFICATE_PASSWORD": "certificate principal: not used in Azure, where the managed identity signs in",
	"AzureWebJobsStorage":               "a connection string needs shared keys, which the storage account disables; the identity-based settings are set",
	"AzureWebJobsStorage__accountName":  "the explicit __blobServiceUri and __queueServiceUri are set instead",
	"SPO_CHUNK_SIZE":                    "tuning for proxies that limit request bodies; the default (PnP's 10 MiB) suits Azure",
	"HTTP_READ_TIMEOUT":                 "protection against callers that send requests slowly; the default suits Azure, tests shorten it",
}

// hostRead are settings that may be set or documented although the handler
// does not read them: the Functions host (or Core Tools) does.
var hostRead = map[string]string{
	"FUNCTIONS_WORKER_RUNTIME":                  "tells Core Tools to run a custom handler (Flex Consumption refuses it: the runtime is functionAppConfig.runtime)",
	"APPLICATIONINSIGHTS_CONNECTION_STRING":     "the host sends its logs and the handler's stdout to Application Insights",
	"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host signs in to Application Insights with the managed identity (local auth is disabled)",
}

// settingsRead returns every setting the handler reads, recorded by calling
// each function that takes the environment with a getenv that notes the
// names asked for. Several environments are tried so that every branch asks
// for its settings (identity-based storage reads __credential and __clientId
// only once an endpoint is set).
func settingsRead(t *testing.T) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	for _, env := range []map[string]string{
		{},
		{"AzureWebJobsStorage": "UseDevelopmentStorage=true", "FUNCTIONS_CUSTOMHANDLER_PORT": "7071"},
		{"AzureWebJobsStorage__accountName": "profilesync"},
		{"AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net", "AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net"},
	} {
		getenv := func(name string) string {
			read[name] = true
			return env[name]
		}
		_, _ = loadConfig(getenv)
		_, _ = azfunc.ListenAddr(getenv)
		newLogger(io.Discard, getenv)
		tuneMemory(getenv)
	}
	debug.SetGCPercent(100) // what tuneMemory changed, back for the other tests
	return read
}

// TestSettingsTableComplete checks that the settings table of config.go plus
// the storage settings are exactly what the handler reads.
func TestSettingsTableComplete(t *testing.T) {
	read := settingsRead(t)
	want := map[string]bool{}
	for _, s := range settings {
		want[s.Name] = true
	}
	for _, name := range storageSettings {
		want[name] = true
	}
	for name := range read {
		if !want[name] && unlisted[name] == "" {
			t.Errorf("the handler reads %s, which is neither in the settings table (handler/config.go) nor a storage setting", name)
		}
	}
	for name := range want {
		if !read[name] {
			t.Errorf("%s is listed (settings table or storageSettings) but the handler never reads it", name)
		}
	}
	for name := range unlisted {
		if !read[name] {
			t.Errorf("unlisted[%s]: the handler no longer reads it; drop the entry", name)
		}
	}
}

// TestSettingsDrift checks each description of the settings against what the
// handler reads: every setting it reads appears (or is exempt, with a reason),
// and nothing appears that it does not read (except settings the host reads).
func TestSettingsDrift(t *testing.T) {
	read := settingsRead(t)
	for name := range unlisted {
		delete(read, name)
	}
	readme, readmeRows := readmeSettings(t)
	for _, tc := range []struct {
		where  string
		set    map[string]bool
		exempt map[string]string
		name   string // of the exemption list, for messages
	}{
		{"local.settings.json (Values)", localSettings(t), notLocal, "notLocal"},
		{"the Bicep app settings (infra/)", bicepAppSettings(t), notInBicep, "notInBicep"},
		{"README.md's settings table", readme, nil, ""},
	} {
		t.Run(tc.where, func(t *testing.T) {
			if len(tc.set) == 0 {
				t.Fatalf("found no settings in %s: the parsing below no longer fits the file", tc.where)
			}
			for _, name := range sorted(read) {
				switch {
				case tc.set[name] && tc.exempt[name] != "":
					t.Errorf("%s is in %s, yet %s says it is not (%q): drop the exemption", name, tc.where, tc.name, tc.exempt[name])
				case !tc.set[name] && tc.exempt[name] == "":
					t.Errorf("the handler reads %s, but it is missing from %s", name, tc.where)
				}
			}
			for _, name := range sorted(tc.set) {
				if !read[name] && hostRead[name] == "" {
					t.Errorf("%s: %s is there, but the handler does not read it (nor is it in hostRead)", tc.where, name)
				}
			}
			for name := range tc.exempt {
				if !read[name] {
					t.Errorf("%s[%s]: the handler does not read it; drop the entry", tc.name, name)
				}
			}
		})
	}

	// The README's default column matches the settings table.
	for _, s := range settings {
		row, ok := readmeRows[s.Name]
		if !ok || len(row) < 3 || len(backticked(row[0])) != 1 {
			continue // missing rows are reported above; shared rows have no single default
		}
		defaults := backticked(row[2])
		switch {
		case s.Default != "" && !slices.Contains(defaults, s.Default):
			t.Errorf("README.md gives %s the default %q; handler/config.go has %q", s.Name, row[2], s.Default)
		case s.Default == "" && len(defaults) > 0:
			t.Errorf("README.md gives %s the default %q; handler/config.go has none", s.Name, row[2])
		}
	}
}

// localSettings returns the names under Values in local.settings.json.
func localSettings(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../local.settings.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		IsEncrypted *bool
		Values      map[string]string
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("local.settings.json: %v", err)
	}
	if doc.IsEncrypted == nil || *doc.IsEncrypted {
		t.Errorf("local.settings.json: IsEncrypted must be false (Core Tools assumes true when it is absent)")
	}
	names := map[string]bool{}
	for name := range doc.Values {
		names[name] = true
	}
	return names
}

var (
	bicepAppSettingsResource = regexp.MustCompile(`(?m)^\s*name:\s*'appsettings'\s*$`)
	bicepProperties          = regexp.MustCompile(`(?m)^\s*properties:\s*\{\s*$`)
	bicepKey                 = regexp.MustCompile(`^\s*'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:`)
)

// bicepAppSettings returns the keys of the one `appsettings` config resource
// under infra/: the top-level keys of the `properties` object that follows
// its `name: 'appsettings'`.
func bicepAppSettings(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../infra/modules/*.bicep")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../infra/main.bicep")
	names := map[string]bool{}
	found := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		src := string(data)
		for _, loc := range bicepAppSettingsResource.FindAllStringIndex(src, -1) {
			found++
			rest := src[loc[1]:]
			p := bicepProperties.FindStringIndex(rest)
			if p == nil {
				t.Fatalf("%s: no `properties: {` after name: 'appsettings'", file)
			}
			depth := 0
			for _, line := range strings.Split(strings.TrimLeft(rest[p[0]:], "\r\n"), "\n") {
				if depth == 1 {
					if m := bicepKey.FindStringSubmatch(line); m != nil {
						names[m[1]] = true
					}
				}
				// Interpolations ('${x}') open and close on the same line.
				depth += strings.Count(line, "{") - strings.Count(line, "}")
				if depth <= 0 {
					break
				}
			}
		}
	}
	if found != 1 {
		t.Fatalf("want exactly one Microsoft.Web/sites/config 'appsettings' resource under infra/, found %d", found)
	}
	return names
}

var backtick = regexp.MustCompile("`([^`]+)`")

// backticked returns the backticked words of s.
func backticked(s string) []string {
	var out []string
	for _, m := range backtick.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// readmeSettings reads the settings table of README.md's "Configuration"
// section (the first table whose header starts with "setting"). It returns
// the backticked names of its first column, and each row's cells keyed by
// each of those names.
//
// The identity-based storage settings are documented in the
// AzureWebJobsStorage row, abbreviated as `__blobServiceUri` and the like
// (possibly with `=value`): such mentions anywhere in that row count as
// `AzureWebJobsStorage__<name>`.
func readmeSettings(t *testing.T) (map[string]bool, map[string][]string) {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	rows := map[string][]string{}
	inSection, inTable := false, false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			inSection = strings.TrimSpace(line) == "## Configuration"
			inTable = false
			continue
		case !inSection:
			continue
		case !strings.HasPrefix(line, "|"):
			if inTable {
				return names, rows
			}
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if !inTable {
			inTable = strings.EqualFold(cells[0], "setting")
			continue // the header
		}
		if strings.Trim(cells[0], "-: ") == "" {
			continue // the separator
		}
		for _, name := range backticked(cells[0]) {
			names[name] = true
			rows[name] = cells
			if name != "AzureWebJobsStorage" {
				continue
			}
			for _, word := range backticked(strings.Join(cells, "|")) {
				word, _, _ = strings.Cut(word, "=")
				if sub, ok := strings.CutPrefix(word, "AzureWebJobsStorage__"); ok {
					word = "__" + sub
				}
				if strings.HasPrefix(word, "__") {
					names["AzureWebJobsStorage"+word] = true
				}
			}
		}
	}
	if !inTable {
		t.Fatal(`README.md: no table with a "setting" column under "## Configuration"`)
	}
	return names, rows
}

func sorted(set map[string]bool) []string {
	var out []string
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var (
	bicepParam  = regexp.MustCompile(`(?m)^param\s+(\w+)\s+\w+(\s*=)?`)
	bicepModule = regexp.MustCompile(`(?m)^module\s+\w+\s+'([^']+)'`)
)

// TestInfraFiles checks what can be checked without the Bicep CLI:
// main.parameters.json parses and binds only parameters main.bicep declares,
// every parameter without a default gets a value, and every module exists.
func TestInfraFiles(t *testing.T) {
	data, err := os.ReadFile("../infra/main.parameters.json")
	if err != nil {
		t.Fatal(err)
	}
	var params struct {
		Parameters map[string]struct {
			Value any `json:"value"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(data, &params); err != nil {
		t.Fatalf("infra/main.parameters.json: %v", err)
	}
	main, err := os.ReadFile("../infra/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, m := range bicepParam.FindAllStringSubmatch(string(main), -1) {
		declared[m[1]] = true
		if _, ok := params.Parameters[m[1]]; !ok && m[2] == "" {
			t.Errorf("main.bicep parameter %s has no default and no value in main.parameters.json", m[1])
		}
	}
	for name, p := range params.Parameters {
		if !declared[name] {
			t.Errorf("main.parameters.json sets %s, which main.bicep does not declare", name)
		}
		if s, ok := p.Value.(string); !ok || !strings.HasPrefix(s, "${") {
			t.Errorf("main.parameters.json: %s = %v, want an azd ${VARIABLE}", name, p.Value)
		}
	}
	for _, want := range []string{"environmentName", "location", "siteUrl", "folder", "schedule"} {
		if !declared[want] {
			t.Errorf("main.bicep lacks the parameter %s", want)
		}
	}
	modules := bicepModule.FindAllStringSubmatch(string(main), -1)
	if len(modules) == 0 {
		t.Fatal("main.bicep uses no module")
	}
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join("../infra", m[1])); err != nil {
			t.Errorf("main.bicep: module %s: %v", m[1], err)
		}
	}
}
