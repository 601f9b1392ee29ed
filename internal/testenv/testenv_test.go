package testenv

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// validName is Azure's rule for container and queue names.
var validName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9])*$`)

func TestName(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   string // expected start of the name
	}{
		{"blobs", "blobs-testname-"},
		{"My_Queue!!", "my-queue-testname-"},
		{"", "testname-"},
		{"9lives", "t-9lives-testname-"},
		{"--", "testname-"},
		{strings.Repeat("long", 30), "longlong"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			a, b := Name(t, tc.prefix), Name(t, tc.prefix)
			if a == b {
				t.Errorf("two calls returned the same name %q", a)
			}
			for _, n := range []string{a, b} {
				if len(n) < 3 || len(n) > 63 || !validName.MatchString(n) || n[0] < 'a' || n[0] > 'z' {
					t.Errorf("Name(%q) = %q: not a valid container/queue name", tc.prefix, n)
				}
				if !strings.HasPrefix(n, tc.want) {
					t.Errorf("Name(%q) = %q, want prefix %q", tc.prefix, n, tc.want)
				}
			}
		})
	}
}

func TestSanitizeName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"TestX/sub_case", "testx-sub-case"},
		{"--a--b--", "a-b"},
		{"ÄÖ", ""},
		{"abc123", "abc123"},
	} {
		if got := sanitizeName(tc.in); got != tc.want {
			t.Errorf("sanitizeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseStartOutput(t *testing.T) {
	for _, tc := range []struct {
		name, out      string
		wantErr        bool
		blob, queue, d string
	}{
		{
			name: "ok",
			out: "noise\nAZURITE_DIR=/tmp/x\nAzureWebJobsStorage=DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k;" +
				"BlobEndpoint=http://127.0.0.1:1/a;QueueEndpoint=http://127.0.0.1:2/a;\n",
			blob: "http://127.0.0.1:1/a", queue: "http://127.0.0.1:2/a", d: "/tmp/x",
		},
		{name: "no dir", out: "AzureWebJobsStorage=BlobEndpoint=x;QueueEndpoint=y\n", wantErr: true},
		{name: "no queue", out: "AZURITE_DIR=/d\nAzureWebJobsStorage=BlobEndpoint=x\n", wantErr: true},
		{name: "empty", out: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := parseStartOutput(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if env.BlobURL != tc.blob || env.QueueURL != tc.queue || env.dir != tc.d {
				t.Errorf("got blob %q queue %q dir %q", env.BlobURL, env.QueueURL, env.dir)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "module github.com/profilesync/profilesync") {
		t.Errorf("RepoRoot = %q holds another module", root)
	}
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d from FreePort cannot be bound: %v", port, err)
	}
	l.Close()
}

func TestAzurite(t *testing.T) {
	env := Azurite(t)
	if again := Azurite(t); again != env {
		t.Errorf("second call started another Azurite")
	}
	for _, u := range []string{env.BlobURL, env.QueueURL} {
		resp, err := http.Get(u + "?comp=list")
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
		if s := resp.Header.Get("Server"); !strings.HasPrefix(s, "Azurite") {
			t.Errorf("GET %s: Server %q, want Azurite", u, s)
		}
	}
	if _, err := os.Stat(filepath.Join(env.dir, "azurite.pid")); err != nil {
		t.Errorf("no pid file: %v", err)
	}
	if !strings.Contains(env.ConnectionString, "AccountName=devstoreaccount1;") {
		t.Errorf("connection string %q lacks the dev account", env.ConnectionString)
	}
}
