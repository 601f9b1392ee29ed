package azfunc

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The app layout lives at the repository root; these tests check it against
// what the Functions host and this package expect.
const repoRoot = "../.."

// binding is one entry of a function.json "bindings" array.
type binding struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"`
	Direction    string   `json:"direction"`
	Schedule     string   `json:"schedule"`
	RunOnStartup *bool    `json:"runOnStartup"`
	UseMonitor   *bool    `json:"useMonitor"`
	QueueName    string   `json:"queueName"`
	Connection   string   `json:"connection"`
	AuthLevel    string   `json:"authLevel"`
	Methods      []string `json:"methods"`
	Route        string   `json:"route"`
}

// readJSONStrict decodes path into v, rejecting unknown fields and trailing data.
func readJSONStrict(t *testing.T, path string, v any) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dec.More() {
		t.Fatalf("%s: trailing data after the JSON document", path)
	}
	return data
}

type localSettings struct {
	IsEncrypted *bool
	Values      map[string]string // the Core Tools accept strings only
	Host        struct {
		LocalHttpPort int
	}
}

func readLocalSettings(t *testing.T) localSettings {
	t.Helper()
	var ls localSettings
	readJSONStrict(t, filepath.Join(repoRoot, "local.settings.json"), &ls)
	return ls
}

func TestLocalSettings(t *testing.T) {
	ls := readLocalSettings(t)
	if ls.IsEncrypted == nil || *ls.IsEncrypted {
		t.Error("IsEncrypted must be present and false (Core Tools default it to true)")
	}
	if ls.Host.LocalHttpPort != 7071 {
		t.Errorf("Host.LocalHttpPort = %d, want 7071", ls.Host.LocalHttpPort)
	}
	tests := []struct {
		key  string
		want *regexp.Regexp
	}{
		{"FUNCTIONS_WORKER_RUNTIME", regexp.MustCompile(`^custom$`)},
		{"AzureWebJobsStorage", regexp.MustCompile(`^UseDevelopmentStorage=true$`)},
		{"SYNC_SCHEDULE", regexp.MustCompile(`^\S+( \S+){5}$`)}, // six-field NCRONTAB
		{"GRAPH_ENDPOINT", regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`)},
		{"SPO_SITE_URL", regexp.MustCompile(`^http://127\.0\.0\.1:\d+/sites/\S+$`)},
		{"SPO_FOLDER", regexp.MustCompile(`^.+$`)},
		{"SYNC_CONTAINER", regexp.MustCompile(`^[a-z0-9](-?[a-z0-9])+$`)},
		{"SYNC_STATUS_QUEUE", regexp.MustCompile(`^[a-z0-9](-?[a-z0-9])+$`)},
		{"SYNC_RUN_QUEUE", regexp.MustCompile(`^[a-z0-9](-?[a-z0-9])+$`)},
		{"STATUS_POLL_BACKOFF", regexp.MustCompile(`^\d+[smh](,\d+[smh])*$`)},
		{"STATUS_POLL_MAX_AGE", regexp.MustCompile(`^\d+[smh]$`)},
		{"IDENTITY_ENDPOINT", regexp.MustCompile(`^http://127\.0\.0\.1:\d+/`)},
		{"IDENTITY_HEADER", regexp.MustCompile(`^.+$`)},
	}
	for _, tc := range tests {
		v, ok := ls.Values[tc.key]
		if !ok {
			t.Errorf("Values lacks %s", tc.key)
			continue
		}
		if !tc.want.MatchString(v) {
			t.Errorf("Values.%s = %q, want it to match %s", tc.key, v, tc.want)
		}
	}
}

func TestHostJSON(t *testing.T) {
	var host struct {
		Version         string `json:"version"`
		FunctionTimeout string `json:"functionTimeout"`
		CustomHandler   struct {
			Description struct {
				DefaultExecutablePath string   `json:"defaultExecutablePath"`
				WorkingDirectory      *string  `json:"workingDirectory"`
				Arguments             []string `json:"arguments"`
			} `json:"description"`
			EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
		ExtensionBundle struct {
			ID      string `json:"id"`
			Version string `json:"version"`
		} `json:"extensionBundle"`
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
			Queues struct {
				MessageEncoding    string `json:"messageEncoding"`
				MaxDequeueCount    int    `json:"maxDequeueCount"`
				VisibilityTimeout  string `json:"visibilityTimeout"`
				BatchSize          int    `json:"batchSize"`
				NewBatchThreshold  int    `json:"newBatchThreshold"`
				MaxPollingInterval string `json:"maxPollingInterval"`
			} `json:"queues"`
		} `json:"extensions"`
		Logging struct {
			ApplicationInsights struct {
				SamplingSettings struct {
					IsEnabled     bool   `json:"isEnabled"`
					ExcludedTypes string `json:"excludedTypes"`
				} `json:"samplingSettings"`
			} `json:"applicationInsights"`
			LogLevel map[string]string `json:"logLevel"`
		} `json:"logging"`
	}
	readJSONStrict(t, filepath.Join(repoRoot, "host.json"), &host)
	timeSpan := regexp.MustCompile(`^\d\d:[0-5]\d:[0-5]\d$`)
	q := host.Extensions.Queues
	checks := []struct {
		what string
		ok   bool
	}{
		{"version is 2.0", host.Version == "2.0"},
		{"functionTimeout is a TimeSpan", timeSpan.MatchString(host.FunctionTimeout)},
		{"defaultExecutablePath is handler", host.CustomHandler.Description.DefaultExecutablePath == "handler"},
		{"workingDirectory is present", host.CustomHandler.Description.WorkingDirectory != nil},
		{"arguments is an array", host.CustomHandler.Description.Arguments != nil},
		{"HTTP forwarding is on (Api is pure HTTP in/out)", host.CustomHandler.EnableForwardingHTTPRequest},
		{"extension bundle id", host.ExtensionBundle.ID == "Microsoft.Azure.Functions.ExtensionBundle"},
		{"extension bundle 4.x", strings.HasPrefix(host.ExtensionBundle.Version, "[4.")},
		{"routePrefix is api", host.Extensions.HTTP.RoutePrefix != nil && *host.Extensions.HTTP.RoutePrefix == "api"},
		// azstorage enqueues base64 text by hand: the trigger must decode it.
		{"queue messageEncoding is base64", q.MessageEncoding == "base64"},
		{"maxDequeueCount >= 1", q.MaxDequeueCount >= 1},
		{"visibilityTimeout is a non-zero TimeSpan", timeSpan.MatchString(q.VisibilityTimeout) && q.VisibilityTimeout != "00:00:00"},
		{"batchSize in 1..32", q.BatchSize >= 1 && q.BatchSize <= 32},
		{"newBatchThreshold >= 0", q.NewBatchThreshold >= 0},
		{"maxPollingInterval is a TimeSpan", timeSpan.MatchString(q.MaxPollingInterval)},
		{"default log level set", host.Logging.LogLevel["default"] != ""},
		// The metric events are traces: sampling must not drop them (README "Metrics").
		{"traces never sampled", slices.Contains(strings.Split(host.Logging.ApplicationInsights.SamplingSettings.ExcludedTypes, ";"), "Trace")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("host.json: %s: not so", c.what)
		}
	}
}

func TestFunctionJSON(t *testing.T) {
	ls := readLocalSettings(t)
	tests := []struct {
		function    string
		triggerType string
		triggerName string
		pureHTTP    bool
	}{
		{"SyncTimer", "timerTrigger", "timer", false},
		{"ImportStatus", "queueTrigger", "msg", false},
		{"SyncRun", "queueTrigger", "msg", false},
		{"Api", "httpTrigger", "req", true},
	}
	// Every folder under functions/ must be a function this table knows:
	// the host calls POST /<folder name> and the handler must route it.
	entries, err := os.ReadDir(filepath.Join(repoRoot, "functions"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs, want []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	for _, tc := range tests {
		want = append(want, tc.function)
	}
	sort.Strings(dirs)
	sort.Strings(want)
	if !slices.Equal(dirs, want) {
		t.Errorf("functions/ holds %v, want %v", dirs, want)
	}

	settingRef := regexp.MustCompile(`%([^%]+)%`)
	for _, tc := range tests {
		t.Run(tc.function, func(t *testing.T) {
			var fj struct {
				Bindings []binding `json:"bindings"`
			}
			data := readJSONStrict(t, filepath.Join(repoRoot, "functions", tc.function, "function.json"), &fj)
			if len(fj.Bindings) == 0 {
				t.Fatal("no bindings")
			}
			var triggers, ins, outs int
			names := map[string]bool{}
			for i, b := range fj.Bindings {
				if b.Name == "" || b.Type == "" {
					t.Errorf("binding %d lacks name or type: %+v", i, b)
				}
				if names[b.Name] {
					t.Errorf("binding name %q used twice", b.Name)
				}
				names[b.Name] = true
				switch b.Direction {
				case "in":
					ins++
				case "out":
					outs++
				default:
					t.Errorf("binding %q: direction %q, want in or out", b.Name, b.Direction)
				}
				if strings.HasSuffix(b.Type, "Trigger") {
					triggers++
					if b.Type != tc.triggerType || b.Name != tc.triggerName || b.Direction != "in" {
						t.Errorf("trigger = %s %q (%s), want %s %q (in)", b.Type, b.Name, b.Direction, tc.triggerType, tc.triggerName)
					}
				}
				switch b.Type {
				case "timerTrigger":
					if b.Schedule == "" || b.RunOnStartup == nil || *b.RunOnStartup || b.UseMonitor == nil || !*b.UseMonitor {
						t.Errorf("timer %q: want a schedule, runOnStartup false and useMonitor true", b.Name)
					}
				case "queueTrigger", "queue":
					if b.QueueName == "" {
						t.Errorf("queue binding %q lacks queueName", b.Name)
					}
					if b.Connection != "" {
						if _, ok := ls.Values[b.Connection]; !ok {
							t.Errorf("queue binding %q: connection %q is not in local.settings.json", b.Name, b.Connection)
						}
					}
				case "httpTrigger":
					if !slices.Contains([]string{"anonymous", "function", "admin"}, b.AuthLevel) || len(b.Methods) == 0 {
						t.Errorf("http trigger %q: want authLevel and methods, got %q %v", b.Name, b.AuthLevel, b.Methods)
					}
				}
			}
			if triggers != 1 {
				t.Errorf("%d triggers, want 1", triggers)
			}
			// Forwarding (host.json) only applies to exactly one httpTrigger in
			// and one http out; anything else gets the JSON payload.
			isPure := ins == 1 && outs == 1 && tc.triggerType == "httpTrigger" && slices.ContainsFunc(fj.Bindings, func(b binding) bool { return b.Type == "http" && b.Direction == "out" })
			if isPure != tc.pureHTTP {
				t.Errorf("pure HTTP in/out = %v, want %v", isPure, tc.pureHTTP)
			}
			// %SETTING% references must resolve locally, or func start fails.
			for _, m := range settingRef.FindAllSubmatch(data, -1) {
				name := string(m[1])
				v, ok := ls.Values[name]
				if !ok || v == "" {
					t.Errorf("%%%s%% is not set in local.settings.json", name)
				}
			}
		})
	}
}
