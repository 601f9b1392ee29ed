package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/syncer"
)

// Timer payloads as the Functions host sends them (functions-custom-handler.md §1.4).
const (
	timerNormal = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-05-01T10:15:00.0090125+00:00","Next":"2024-05-01T10:30:00+00:00","LastUpdated":"2024-05-01T10:15:00.0090125+00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":"2024-05-01T10:30:00.0123456Z","RandGuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}}}`
	timerFirst  = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00+00:00","Next":"2024-05-01T10:30:00+00:00","LastUpdated":"0001-01-01T00:00:00+00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":"2024-05-01T10:30:00.0123456Z","RandGuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}}}`
	timerPast   = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-05-01T10:15:00","Next":"2024-05-01T10:30:00","LastUpdated":"2024-05-01T10:15:00"},"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":"2024-05-01T12:00:00Z","RandGuid":"3f1c0c9e-5d1e-4c8a-9a57-2b0f3b1d9e11"}}}`
	timerNull   = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"SyncTimer","UtcNow":"2024-05-01T10:30:00Z","RandGuid":"24ad4c06-24ad-4e5b-8294-3da9714877e9"}}}`
)

const e2eMapping = `{
  "idType": "CloudId",
  "properties": {
    "CostCenter": "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter",
    "HomePhone": "mobilePhone",
    "Division": "employeeOrgData.division",
    "Ext1": "onPremisesExtensionAttributes.extensionAttribute1",
    "ManagerEmail": "manager.mail",
    "Phones": "businessPhones",
    "Building": "jobTitle",
    "Nickname": "displayName",
    "HireDate": "employeeHireDate"
  },
  "users": { "includeGuests": false, "includeDisabled": false }
}`

// expected computes, independently of the product's mapping code, what
// SharePoint must hold for u under e2eMapping.
func expected(u directory.User, byID map[string]directory.User) map[string]string {
	str := func(v any) string {
		switch x := v.(type) {
		case nil:
			return ""
		case string:
			return x
		case []any:
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = fmt.Sprint(e)
			}
			return strings.Join(parts, ",")
		}
		return fmt.Sprint(v)
	}
	sub := func(name, key string) string {
		m, _ := u.Props[name].(map[string]any)
		return str(m[key])
	}
	hire := str(u.Props["employeeHireDate"])
	if t, err := time.Parse(time.RFC3339, hire); err == nil {
		hire = t.UTC().Format("2006-01-02T15:04:05Z")
	}
	mgr := ""
	if m, ok := byID[u.ManagerID]; ok && u.ManagerID != "" {
		mgr = str(m.Props["mail"])
	}
	return map[string]string{
		"CostCenter":   str(u.Props[directory.CostCenterExt]),
		"HomePhone":    str(u.Props["mobilePhone"]),
		"Division":     sub("employeeOrgData", "division"),
		"Ext1":         sub("onPremisesExtensionAttributes", "extensionAttribute1"),
		"ManagerEmail": mgr,
		"Phones":       str(u.Props["businessPhones"]),
		"Building":     str(u.Props["jobTitle"]),
		"Nickname":     str(u.Props["displayName"]),
		"HireDate":     hire,
	}
}

func isGuest(u directory.User) bool {
	return strings.EqualFold(fmt.Sprint(u.Props["userType"]), "Guest")
}
func isDisabled(u directory.User) bool { return u.Props["accountEnabled"] == false }

// checkProfiles compares every simulated SharePoint profile with what the
// directory says it must hold; it returns how many users were checked.
func checkProfiles(t *testing.T, s *stack) int {
	t.Helper()
	users := s.sim.Directory.Users()
	byID := map[string]directory.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	checked := 0
	for _, u := range users {
		got, ok := s.sim.SPO.Profile(u.ID)
		if u.Deleted {
			continue // deleted users are never sent; SharePoint keeps what an earlier run sent
		}
		if isGuest(u) || isDisabled(u) {
			if ok {
				t.Errorf("user %s (deleted %v guest %v disabled %v) reached SharePoint: %v", u.ID, u.Deleted, isGuest(u), isDisabled(u), got)
			}
			continue
		}
		if !ok {
			t.Errorf("user %s (%v) has no SharePoint profile values", u.ID, u.Props["userPrincipalName"])
			continue
		}
		for k, want := range expected(u, byID) {
			// A property never sent is absent; one cleared is "".
			if v, sent := got[k]; !sent || v != want {
				t.Errorf("user %s %s = %q (sent: %v), want %q", u.ID, k, v, sent, want)
			}
		}
		checked++
	}
	return checked
}

// fileRecords reads an uploaded import file back from the simulator.
func fileRecords(t *testing.T, s *stack, fileURL string) []map[string]string {
	t.Helper()
	u, err := url.Parse(fileURL)
	if err != nil {
		t.Fatal(err)
	}
	data, ok := s.sim.SPO.File(u.Path)
	if !ok {
		t.Fatalf("uploaded file %s not found in the simulator", u.Path)
	}
	if !strings.HasPrefix(string(data), "\xef\xbb\xbf") {
		t.Fatalf("import file has no BOM")
	}
	var doc struct {
		Value []map[string]string `json:"value"`
	}
	if err := json.Unmarshal(data[3:], &doc); err != nil {
		t.Fatalf("import file is not JSON: %v", err)
	}
	return doc.Value
}

func TestTimerSyncEndToEnd(t *testing.T) {
	s := startStack(t, stackOptions{users: 150, extra: []string{"STATUS_POLL_BACKOFF=1s,5s"}})
	s.putMapping(e2eMapping)

	// 1. First run: a full sync of every member.
	inv := s.invoke("SyncTimer", timerFirst)
	if inv.Status != 200 {
		t.Fatalf("first run: %d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if run.Mode != syncer.ModeFull || run.Status != syncer.StatusSucceeded || len(run.JobIDs) != 1 {
		t.Fatalf("first run %+v", run)
	}
	if run.Skipped["guest"] == 0 || run.Skipped["disabled"] == 0 {
		t.Errorf("generated guests/disabled users not skipped: %v", run.Skipped)
	}
	if job, ok := s.sim.SPO.Job(run.JobIDs[0]); !ok || job.State != 4 {
		t.Fatalf("job %s in the simulator: %+v (want Succeeded)", run.JobIDs[0], job)
	}
	if n := checkProfiles(t, s); n != run.Sent || n < 100 {
		t.Errorf("%d profiles checked, run sent %d", n, run.Sent)
	}
	if got := strings.Join(inv.Body.Logs, "\n"); !strings.Contains(got, run.JobIDs[0]) {
		t.Errorf("invocation logs %q do not name the job", got)
	}
	st := s.state()
	if st.DeltaLink == "" || st.LastRunID != run.ID {
		t.Fatalf("state after first run: %+v", st)
	}
	// The status poll is on the queue, base64-encoded, visible after the first backoff delay.
	msg := s.waitPoll(t, 10*time.Second)
	var pm syncer.PollMessage
	if err := json.Unmarshal(msg, &pm); err != nil || pm.JobID != run.JobIDs[0] {
		t.Errorf("poll message %s (%v)", msg, err)
	}

	// 2. Change a user (nasty value), delete one, add one: the delta run sends only those.
	users := s.sim.Directory.Users()
	var changed, deleted directory.User
	for _, u := range users[directory.GenFixedCount:] {
		if u.Deleted || isGuest(u) || isDisabled(u) {
			continue
		}
		if changed.ID == "" {
			changed = u
		} else if deleted.ID == "" {
			deleted = u
			break
		}
	}
	nasty := "Chief \"Quote\" Officer \\ backslash\nnewline\ttab 🚀 李雷 Ελένη"
	if _, err := s.sim.Directory.Update(changed.ID, directory.Patch{Props: map[string]any{"jobTitle": nasty}}); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.Directory.Delete(deleted.ID, false); err != nil {
		t.Fatal(err)
	}
	added, err := s.sim.Directory.Add(directory.User{ManagerID: changed.ID, Props: map[string]any{
		"userPrincipalName": "new.hire@" + directory.Domain, "mail": "new.hire@contoso.com", "displayName": "Zoë Ñandú",
		"userType": "Member", "accountEnabled": true, "jobTitle": `Back\slash "and" quotes`,
		"businessPhones": []any{"+1 555 0100", "+1 555 0101"}, directory.CostCenterExt: "CC-9",
	}})
	if err != nil {
		t.Fatal(err)
	}
	inv = s.invoke("SyncTimer", timerNormal)
	if inv.Status != 200 {
		t.Fatalf("delta run: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if run.Mode != syncer.ModeDelta || len(run.Files) != 1 {
		t.Fatalf("delta run %+v", run)
	}
	var ids []string
	for _, r := range fileRecords(t, s, run.Files[0].URL) {
		ids = append(ids, r["IdName"])
	}
	slices.Sort(ids)
	want := []string{changed.ID, added.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("delta file holds %v, want only the changed and the new user %v", ids, want)
	}
	if run.Skipped["deleted"] != 1 {
		t.Errorf("skipped %v, want the deleted user counted", run.Skipped)
	}
	if p, _ := s.sim.SPO.Profile(changed.ID); p["Building"] != nasty {
		t.Errorf("changed user's Building = %q, want %q", p["Building"], nasty)
	}
	if p, _ := s.sim.SPO.Profile(added.ID); p["Nickname"] != "Zoë Ñandú" || p["ManagerEmail"] != fmt.Sprint(changed.Props["mail"]) || p["Phones"] != "+1 555 0100,+1 555 0101" {
		t.Errorf("new user's profile %v", p)
	}

	// 3. A catch-up run after downtime with nothing changed: no file, no job, the link advances.
	if inv := s.invoke("SyncTimer", timerPast); inv.Status != 200 {
		t.Fatalf("past-due run: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if st := s.state(); len(run.Files) != 0 || len(run.JobIDs) != 0 || st.LastRunID != run.ID || !run.DeltaSaved {
		t.Errorf("empty delta run: files %d jobs %d, state %+v", len(run.Files), len(run.JobIDs), st)
	}

	// 4. An expired delta token leads to a full round.
	s.simPost("/_sim/delta/expire", "")
	if inv := s.invoke("SyncTimer", timerNull); inv.Status != 200 {
		t.Fatalf("run after expiry: %d %s", inv.Status, inv.Raw)
	}
	run = s.lastRun()
	if run.Mode != syncer.ModeFull || !strings.Contains(run.Reason, "expired") {
		t.Errorf("after expiry: mode %q reason %q", run.Mode, run.Reason)
	}
	checkProfiles(t, s)

	// 5. A changed mapping leads to a full round.
	s.putMapping(strings.Replace(e2eMapping, `"HireDate": "employeeHireDate"`, `"HireDate": "employeeHireDate", "EmployeeId": "employeeId"`, 1))
	if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
		t.Fatalf("run after mapping change: %d %s", inv.Status, inv.Raw)
	}
	if run = s.lastRun(); run.Mode != syncer.ModeFull || !strings.Contains(run.Reason, "mapping changed") {
		t.Errorf("after mapping change: mode %q reason %q", run.Mode, run.Reason)
	}
}

// waitPoll waits (bounded) for the first status-poll message to become visible.
func (s *stack) waitPoll(t *testing.T, within time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		msgs, err := s.queue.Receive(t.Context(), 1, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			return msgs[0].Body
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no status poll message on %s within %s", s.qname, within)
	return nil
}

func TestBadMappingUploadsNothing(t *testing.T) {
	s := startStack(t, stackOptions{users: 30})
	s.putMapping(`{"idType":"Upn","properties":{"":"mail","HomePhone":"mobilPhone","AboutMe":"aboutMe"},"colour":"blue"}`)
	inv := s.invoke("SyncTimer", timerNormal)
	if inv.Status < 300 {
		t.Fatalf("a bad mapping answered %d; the invocation must fail", inv.Status)
	}
	for _, culprit := range []string{"idType", "mobilPhone", "aboutMe", "colour"} {
		if !strings.Contains(inv.Raw, culprit) {
			t.Errorf("error does not name %q: %s", culprit, inv.Raw)
		}
	}
	if jobs := s.sim.SPO.Jobs(); len(jobs) != 0 {
		t.Errorf("jobs queued: %v", jobs)
	}
	if st := s.state(); st.DeltaLink != "" {
		t.Errorf("delta link saved: %+v", st)
	}
	if n := s.sim.Directory.Len(); n == 0 {
		t.Fatal("empty directory")
	}
	// Nothing reached SharePoint or Graph: the mapping is refused before
	// any user is read or any file written.
	for _, r := range s.sim.Requests.All() {
		if strings.Contains(r.Path, "/_api/") || strings.Contains(r.Path, "/_vti_bin/") || strings.Contains(r.Path, "/users") {
			t.Errorf("a bad mapping still led to %s %s", r.Method, r.Path)
		}
	}
}

func TestUserSwitchesAndEmailIDs(t *testing.T) {
	s := startStack(t, stackOptions{users: 40})
	s.putMapping(`{"idType":"Email","properties":{"Building":"jobTitle"},"users":{"includeGuests":true,"includeDisabled":true}}`)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	run := s.lastRun()
	if run.Skipped["no-id"] == 0 || run.Skipped["guest"] != 0 || run.Skipped["disabled"] != 0 {
		t.Errorf("skipped %v: want users without mail counted as no-id, no guest/disabled skips", run.Skipped)
	}
	users := s.sim.Directory.Users()
	for _, u := range users {
		_, has := s.sim.SPO.Profile(u.ID)
		mail, _ := u.Props["mail"].(string)
		switch {
		case mail == "" && has:
			t.Errorf("user %s without mail reached SharePoint", u.ID)
		case mail != "" && !u.Deleted && !has:
			t.Errorf("user %s (guest %v disabled %v) with mail missing from SharePoint", u.ID, isGuest(u), isDisabled(u))
		}
	}
}

func TestFailedUploadOrQueueKeepsTheDeltaLink(t *testing.T) {
	s := startStack(t, stackOptions{users: 60})
	s.putMapping(e2eMapping)
	if inv := s.invoke("SyncTimer", timerFirst); inv.Status != 200 {
		t.Fatalf("%d %s", inv.Status, inv.Raw)
	}
	var members []directory.User
	for _, u := range s.sim.Directory.Users()[directory.GenFixedCount:] {
		if !u.Deleted && !isGuest(u) && !isDisabled(u) {
			members = append(members, u)
		}
	}
	for i, tc := range []struct {
		name string
		rule faults.Rule
	}{
		{"upload", faults.Rule{Origin: faults.SPO, Method: "POST", Path: "AddUsingPath", Status: 500, Count: 1}},
		{"queue", faults.Rule{Origin: faults.SPO, Method: "POST", Path: "ProcessQuery", Status: 500, Count: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := members[i]
			title := "Changed before a failed " + tc.name
			if _, err := s.sim.Directory.Update(u.ID, directory.Patch{Props: map[string]any{"jobTitle": title}}); err != nil {
				t.Fatal(err)
			}
			// Earlier jobs count as finished (no status poller runs in this test), so the
			// run's only SharePoint calls are the upload and the queue call.
			s.clearPolls(t)
			before := s.state()
			if err := s.sim.Faults.Add(tc.rule); err != nil {
				t.Fatal(err)
			}
			inv := s.invoke("SyncTimer", timerNormal)
			if inv.Status < 300 {
				t.Fatalf("a failed %s answered %d", tc.name, inv.Status)
			}
			if after := s.state(); after.DeltaLink != before.DeltaLink {
				t.Fatalf("the delta link moved after a failed %s", tc.name)
			}
			run := s.lastRun()
			if run.Status != syncer.StatusFailed || run.DeltaSaved || len(run.JobIDs) != 0 {
				t.Errorf("run %+v", run)
			}
			if tc.name == "queue" && (len(run.Files) != 1 || run.Files[0].URL == "") {
				t.Errorf("the failed queue run should have uploaded its file first: %+v", run.Files)
			}
			if p, _ := s.sim.SPO.Profile(u.ID); p["Building"] == title {
				t.Fatal("the change reached SharePoint although the run failed")
			}
			// The next run sends the same user again.
			if inv := s.invoke("SyncTimer", timerNormal); inv.Status != 200 {
				t.Fatalf("retry: %d %s", inv.Status, inv.Raw)
			}
			run = s.lastRun()
			if run.Status != syncer.StatusSucceeded || run.Sent < 1 {
				t.Fatalf("retry run %+v", run)
			}
			if p, _ := s.sim.SPO.Profile(u.ID); p["Building"] != title {
				t.Errorf("after the retry Building = %q, want %q", p["Building"], title)
			}
		})
	}
}

func (s *stack) clearPolls(t *testing.T) {
	t.Helper()
	list, err := s.blobs.List(t.Context(), syncer.PollsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range list {
		if err := s.blobs.Delete(t.Context(), b.Name, ""); err != nil {
			t.Fatal(err)
		}
	}
}
