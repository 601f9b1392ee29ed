package main

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPackage runs scripts/package.sh (what `make package` and azd's
// prepackage hook run) with each zip tool it supports and checks the zip:
// exactly host.json, the handler and one function.json per function, the
// handler a Linux x86-64 executable stored with mode 0755, no
// local.settings.json.
func TestPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Linux handler (minutes on a cold build cache); skipped with -short")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	functions, err := filepath.Glob("../functions/*/function.json")
	if err != nil || len(functions) == 0 {
		t.Fatalf("no functions/*/function.json (err %v)", err)
	}
	want := map[string]string{ // entry -> source file
		"host.json": "../host.json",
	}
	for _, f := range functions {
		want[filepath.Base(filepath.Dir(f))+"/function.json"] = f
	}
	for _, name := range []string{"SyncTimer", "ImportStatus", "Api"} {
		if _, ok := want[name+"/function.json"]; !ok {
			t.Errorf("functions/%s/function.json is missing", name)
		}
	}

	zipped := 0
	defer func() {
		// package.sh needs one of them: a machine with neither cannot
		// package, and this test must not pass without checking a zip.
		if zipped == 0 && !t.Failed() {
			t.Error("neither zip nor python3 is installed: no package was built or checked")
		}
	}()
	for _, zipper := range []string{"zip", "python3"} {
		t.Run(zipper, func(t *testing.T) {
			if _, err := exec.LookPath(zipper); err != nil {
				t.Skipf("%s is not installed; package.sh falls back to the other tool", zipper)
			}
			zipped++
			build := t.TempDir()
			cmd := exec.Command(bash, "../scripts/package.sh")
			cmd.Env = append(os.Environ(), "BUILD_DIR="+build, "ZIPPER="+zipper)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("scripts/package.sh: %v\n%s", err, out)
			}
			zr, err := zip.OpenReader(filepath.Join(build, "profilesync.zip"))
			if err != nil {
				t.Fatal(err)
			}
			defer zr.Close()

			var names []string
			for _, f := range zr.File {
				names = append(names, f.Name)
				if f.Name == "local.settings.json" || strings.HasSuffix(f.Name, "/local.settings.json") {
					t.Errorf("the package holds %s: local settings must not be deployed", f.Name)
				}
				switch src, ok := want[f.Name]; {
				case f.Name == "handler":
					checkHandler(t, f)
				case !ok:
					t.Errorf("unexpected entry %s", f.Name)
				default:
					got := readEntry(t, f)
					if wantData, err := os.ReadFile(src); err != nil || !bytes.Equal(got, wantData) {
						t.Errorf("%s differs from %s (err %v)", f.Name, src, err)
					}
				}
			}
			wantNames := []string{"handler"}
			for name := range want {
				wantNames = append(wantNames, name)
			}
			slices.Sort(names)
			slices.Sort(wantNames)
			if !slices.Equal(names, wantNames) {
				t.Errorf("entries = %v, want exactly %v", names, wantNames)
			}
		})
	}
}

func readEntry(t *testing.T, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatalf("%s: %v", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("%s: %v", f.Name, err)
	}
	return data
}

// checkHandler checks that the zip's handler is an executable the Functions
// host on Linux x86-64 can start.
func checkHandler(t *testing.T, f *zip.File) {
	t.Helper()
	if mode := f.Mode(); !mode.IsRegular() || mode.Perm() != 0o755 {
		t.Errorf("handler has mode %v in the zip, want -rwxr-xr-x", mode)
	}
	ef, err := elf.NewFile(bytes.NewReader(readEntry(t, f)))
	if err != nil {
		t.Fatalf("handler is not an ELF file: %v", err)
	}
	defer ef.Close()
	if ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64 || (ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN) {
		t.Errorf("handler is %v %v %v, want ELFCLASS64 EM_X86_64 ET_EXEC or ET_DYN", ef.Class, ef.Machine, ef.Type)
	}
}

// fakeAz stands in for the Azure CLI: it logs each call to $FAKE_LOG and
// answers the Graph requests infra/grant-permissions.sh makes. Assignments in
// $FAKE_EXISTING ("resourceId:appRoleId ...") already exist.
const fakeAz = `#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
[[ $1 == rest ]] || { echo "fake az: only rest" >&2; exit 2; }
method="" url="" query="" body=""
while (($# > 0)); do
	case $1 in
	--method) method=$2; shift ;;
	--url) url=$2; shift ;;
	--query) query=$2; shift ;;
	--body) body=$2; shift ;;
	esac
	shift
done
base=https://graph.microsoft.com/v1.0/servicePrincipals
case "$method $url" in
"GET $base/$FAKE_PRINCIPAL") echo "id-profilesync-test" ;;
"GET $base(appId='00000003-0000-0000-c000-000000000000')")
	case $query in
	id) echo graph-sp ;;
	*"'User.Read.All'"*) echo role-user-read ;;
	*) echo None ;;
	esac ;;
"GET $base(appId='00000003-0000-0ff1-ce00-000000000000')")
	case $query in
	id) echo spo-sp ;;
	*"'Sites.FullControl.All'"*) echo role-sites-full ;;
	*"'User.ReadWrite.All'"*) echo role-user-write ;;
	*) echo None ;;
	esac ;;
"GET $base/$FAKE_PRINCIPAL/appRoleAssignments")
	for e in $FAKE_EXISTING; do
		if [[ $query == *"'${e%%:*}'"*"'${e##*:}'"* ]]; then echo 1; exit 0; fi
	done
	echo 0 ;;
"POST $base/$FAKE_PRINCIPAL/appRoleAssignments") printf 'POST %s\n' "$body" >>"$FAKE_LOG" ;;
*) echo "fake az: unexpected $method $url" >&2; exit 3 ;;
esac
`

// fakeAzd answers `azd env get-values` with $FAKE_AZD_VALUES.
const fakeAzd = `#!/usr/bin/env bash
[[ "$*" == "env get-values" ]] || exit 2
printf '%s\n' "$FAKE_AZD_VALUES"
`

// TestGrantPermissions runs infra/grant-permissions.sh against a fake az and
// checks which app role assignments it creates. It runs the script under each
// shell it must work with: sh (dash on Debian: POSIX only, so no arrays at all,
// let alone the associative arrays macOS's bash 3.2 refuses) and bash; on
// macOS, sh and bash are bash 3.2 (TestDeployScriptsPortable rejects syntax
// newer than bash 3.2 in every script).
func TestGrantPermissions(t *testing.T) {
	for _, shell := range []string{"sh", "bash"} {
		t.Run(shell, func(t *testing.T) {
			path, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed", shell)
			}
			testGrantPermissions(t, path)
		})
	}
}

func testGrantPermissions(t *testing.T, shell string) {
	const principal = "0f8fad5b-d9cb-469f-a165-70867728950e"
	post := func(resource, role string) string {
		return fmt.Sprintf(`POST {"principalId":"%s","resourceId":"%s","appRoleId":"%s"}`, principal, resource, role)
	}
	all := []string{
		post("graph-sp", "role-user-read"),
		post("spo-sp", "role-sites-full"),
		post("spo-sp", "role-user-write"),
	}
	for _, tc := range []struct {
		name      string
		args      []string
		env       []string
		wantErr   string   // in stderr; "" = success
		wantPosts []string // assignments created, in order
		wantOut   []string // in stdout
		noCalls   bool     // az must not be called at all
	}{
		{name: "grants all three", args: []string{principal}, wantPosts: all,
			wantOut: []string{"User.Read.All", "Sites.FullControl.All", "User.ReadWrite.All", "pnp/powershell#3248"}},
		{name: "skips existing", args: []string{principal}, env: []string{"FAKE_EXISTING=spo-sp:role-sites-full graph-sp:role-user-read"},
			wantPosts: all[2:], wantOut: []string{"already granted: skipped"}},
		{name: "all existing", args: []string{principal}, env: []string{"FAKE_EXISTING=graph-sp:role-user-read spo-sp:role-sites-full spo-sp:role-user-write"},
			wantPosts: nil},
		{name: "principal from environment", env: []string{"PROFILESYNC_IDENTITY_PRINCIPAL_ID=" + principal}, wantPosts: all},
		{name: "principal from azd", env: []string{`FAKE_AZD_VALUES=AZURE_LOCATION="westeurope"` + "\n" + `PROFILESYNC_IDENTITY_PRINCIPAL_ID="` + principal + `"`},
			wantPosts: all},
		{name: "dry run sends nothing", args: []string{"--dry-run", principal}, noCalls: true,
			wantOut: []string{"POST https://graph.microsoft.com/v1.0/servicePrincipals/" + principal + "/appRoleAssignments", "nothing was changed"}},
		{name: "no principal", env: []string{"FAKE_AZD_VALUES="}, wantErr: "no principal id", noCalls: true},
		{name: "not a guid", args: []string{"id-profilesync"}, wantErr: "not an object id", noCalls: true},
		{name: "a guid and more", args: []string{principal + "\n" + principal}, wantErr: "not an object id", noCalls: true},
		{name: "unknown option", args: []string{"--force", principal}, wantErr: "unknown option", noCalls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, script := range map[string]string{"az": fakeAz, "azd": fakeAzd} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			logFile := filepath.Join(dir, "calls.log")
			cmd := exec.Command(shell, append([]string{"../infra/grant-permissions.sh"}, tc.args...)...)
			cmd.Env = append(os.Environ(),
				"PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"),
				"FAKE_LOG="+logFile, "FAKE_PRINCIPAL="+principal, "FAKE_EXISTING=",
				"PROFILESYNC_IDENTITY_PRINCIPAL_ID=", "FAKE_AZD_VALUES=")
			cmd.Env = append(cmd.Env, tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			calls, _ := os.ReadFile(logFile)

			if tc.wantErr == "" && err != nil {
				t.Fatalf("failed: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(stderr.String(), tc.wantErr)) {
				t.Fatalf("err = %v, stderr %q; want a failure saying %q", err, &stderr, tc.wantErr)
			}
			if tc.noCalls && len(calls) > 0 {
				t.Errorf("az was called:\n%s", calls)
			}
			var posts []string
			for line := range strings.Lines(string(calls)) {
				if strings.HasPrefix(line, "POST ") {
					posts = append(posts, strings.TrimSpace(line))
				}
			}
			if !tc.noCalls && !slices.Equal(posts, tc.wantPosts) {
				t.Errorf("assignments created:\n%s\nwant:\n%s", strings.Join(posts, "\n"), strings.Join(tc.wantPosts, "\n"))
			}
			// Each resource service principal is looked up once, however
			// many of its roles are granted.
			if n := strings.Count(string(calls), "servicePrincipals(appId='00000003-0000-0ff1-ce00-000000000000') --query id "); !tc.noCalls && tc.wantErr == "" && n != 1 {
				t.Errorf("the SharePoint service principal was looked up %d times, want once:\n%s", n, calls)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
		})
	}
}
