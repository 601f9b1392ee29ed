package graph

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/profilesync/profilesync/internal/m365sim"
	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/profile"
)

// newSimClient starts the simulator and builds a Client exactly as the
// handler does: azidentity's ManagedIdentityCredential reading
// IDENTITY_ENDPOINT/IDENTITY_HEADER, and msgraph-sdk-go.
func newSimClient(t *testing.T, users, pageSize int) (*m365sim.Sim, *Client) {
	t.Helper()
	sim, err := m365sim.Start(m365sim.Options{Users: users, Seed: 3, PageSize: pageSize, IdentityHeader: "graph-test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	t.Setenv("IDENTITY_ENDPOINT", sim.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", sim.IdentityHeader)
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Endpoint: sim.GraphURL, Credential: cred})
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

var testSel = profile.Selection{
	Properties: []string{"id", "userPrincipalName", "mail", "userType", "accountEnabled", "jobTitle", "businessPhones",
		"employeeOrgData", "onPremisesExtensionAttributes", directory.CostCenterExt},
	Manager: []string{"id", "mail"},
}

func collect(t *testing.T, c *Client, link string) (map[string]profile.User, string) {
	t.Helper()
	got := map[string]profile.User{}
	next, err := c.Delta(context.Background(), testSel, link, func(u profile.User) error {
		got[u.ID] = u
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, next
}

func TestDeltaRoundsAgainstTheSimulator(t *testing.T) {
	sim, c := newSimClient(t, 250, 60) // 250 users, 60 per page: 5 pages
	c.parallelism = 1                  // a full sync as one users/delta round
	full, link := collect(t, c, "")
	if len(full) != 250 || link == "" {
		t.Fatalf("initial round: %d users, link %q", len(full), link)
	}
	pages := 0
	for _, r := range sim.Requests.All() {
		if strings.Contains(r.Path, "/users/delta") {
			pages++
		}
	}
	if pages < 3 {
		t.Errorf("initial round used %d pages, want at least 3", pages)
	}
	users := sim.Directory.Users()
	byID := map[string]directory.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	for _, du := range users {
		u := full[du.ID]
		if u.Props["userPrincipalName"] != du.Props["userPrincipalName"] {
			t.Fatalf("user %s: upn %v, want %v", du.ID, u.Props["userPrincipalName"], du.Props["userPrincipalName"])
		}
		if v, set := du.Props["jobTitle"]; set && u.Props["jobTitle"] != v {
			t.Errorf("user %s jobTitle %q, want %q", du.ID, u.Props["jobTitle"], v)
		}
		if _, set := du.Props[directory.CostCenterExt]; !set {
			if _, got := u.Props[directory.CostCenterExt]; got {
				t.Errorf("user %s: unset extension present", du.ID)
			}
		}
		m, hasKey := u.Props["manager"]
		if !hasKey {
			t.Fatalf("user %s: manager unknown in an initial round", du.ID)
		}
		if du.ManagerID == "" {
			if m != nil {
				t.Errorf("user %s has no manager, got %v", du.ID, m)
			}
		} else if mm, _ := m.(map[string]any); mm == nil || mm["mail"] != byID[du.ManagerID].Props["mail"] {
			t.Errorf("user %s manager %v, want mail %v", du.ID, m, byID[du.ManagerID].Props["mail"])
		}
	}
	// Collections and complex values arrive JSON-shaped.
	for _, u := range full {
		if bp, ok := u.Props["businessPhones"]; ok {
			if _, isList := bp.([]any); !isList {
				t.Fatalf("businessPhones is %T", bp)
			}
		}
		if eo, ok := u.Props["employeeOrgData"]; ok && eo != nil {
			if _, isMap := eo.(map[string]any); !isMap {
				t.Fatalf("employeeOrgData is %T", eo)
			}
		}
	}

	// Incremental round: a changed, a deleted and a new user.
	var changed, deleted string
	for _, u := range users[directory.GenFixedCount:] {
		if changed == "" {
			changed = u.ID
		} else if deleted == "" && u.ID != changed {
			deleted = u.ID
			break
		}
	}
	if _, err := sim.Directory.Update(changed, directory.Patch{Props: map[string]any{"jobTitle": "Changed \"title\""}}); err != nil {
		t.Fatal(err)
	}
	if err := sim.Directory.Delete(deleted, false); err != nil {
		t.Fatal(err)
	}
	added, err := sim.Directory.Add(directory.User{ManagerID: changed, Props: map[string]any{
		"userPrincipalName": "added@" + directory.Domain, "mail": "added@contoso.com", "userType": "Member", "accountEnabled": true}})
	if err != nil {
		t.Fatal(err)
	}
	delta, link2 := collect(t, c, link)
	if link2 == "" || link2 == link {
		t.Errorf("delta link did not advance")
	}
	ids := []string{}
	for id := range delta {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	want := []string{changed, deleted, added.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("incremental round returned %v, want %v", ids, want)
	}
	if delta[changed].Props["jobTitle"] != "Changed \"title\"" || !delta[deleted].Removed || delta[added.ID].Removed {
		t.Errorf("incremental users: %+v", delta)
	}
	if m, _ := delta[added.ID].Props["manager"].(map[string]any); m == nil || m["mail"] != byID[changed].Props["mail"] {
		t.Errorf("new user's manager %v", delta[added.ID].Props["manager"])
	}
	// Nothing changed: an empty round still yields a new link.
	empty, link3 := collect(t, c, link2)
	if len(empty) != 0 || link3 == "" {
		t.Errorf("empty round: %d users, link %q", len(empty), link3)
	}
}

func TestExpiredAndResetTokensAreReported(t *testing.T) {
	sim, c := newSimClient(t, 20, 0)
	_, link := collect(t, c, "")
	sim.Graph.ExpireDeltaTokens()
	_, err := c.Delta(context.Background(), testSel, link, func(profile.User) error { return nil })
	if !errors.Is(err, profile.ErrDeltaExpired) || !strings.Contains(err.Error(), "syncStateNotFound") {
		t.Fatalf("expired token: %v", err)
	}
	_, link = collect(t, c, "")
	sim.Graph.ResetDelta()
	_, err = c.Delta(context.Background(), testSel, link, func(profile.User) error { return nil })
	if !errors.Is(err, profile.ErrDeltaExpired) {
		t.Fatalf("reset (410): %v", err)
	}
}

func TestThrottlingIsWaitedOut(t *testing.T) {
	sim, c := newSimClient(t, 30, 0)
	for _, st := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		if err := sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "/users/delta", Status: st, RetryAfter: 1, Count: 1}); err != nil {
			t.Fatal(err)
		}
	}
	got, link := collect(t, c, "")
	if len(got) != 30 || link == "" {
		t.Fatalf("%d users, link %q", len(got), link)
	}
	var statuses []int
	for _, r := range sim.Requests.All() {
		if strings.Contains(r.Path, "/users/delta") {
			statuses = append(statuses, r.Status)
		}
	}
	if len(statuses) < 3 || statuses[0] != 429 || statuses[1] != 503 || statuses[2] != 200 {
		t.Errorf("delta requests answered %v, want 429, 503, then 200", statuses)
	}
}

func TestLookupAndFilterAgainstTheSimulator(t *testing.T) {
	sim, c := newSimClient(t, 60, 0)
	users := sim.Directory.Users()
	byID := map[string]directory.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	var ids []string
	for _, u := range users[1:26] { // 25 users: two batches
		ids = append(ids, u.ID)
	}
	ids = append(ids, users[30].Props["userPrincipalName"].(string), "nobody@contoso.com", "00000000-0000-0000-0000-00000000dead", users[1].ID)
	got := map[string]profile.User{}
	missing, err := c.Lookup(context.Background(), testSel, ids, func(u profile.User) error { got[u.ID] = u; return nil })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(missing)
	if want := []string{"00000000-0000-0000-0000-00000000dead", "nobody@contoso.com"}; !slices.Equal(missing, want) {
		t.Errorf("missing %v, want %v", missing, want)
	}
	if len(got) != 26 {
		t.Errorf("found %d users, want 26 (25 by id, 1 by UPN, duplicates once)", len(got))
	}
	for id, u := range got {
		du := byID[id]
		if du.ManagerID == "" {
			if u.Props["manager"] != nil {
				t.Errorf("%s: manager %v, want none", id, u.Props["manager"])
			}
		} else if m, _ := u.Props["manager"].(map[string]any); m == nil || m["mail"] != byID[du.ManagerID].Props["mail"] {
			t.Errorf("%s: manager %v", id, u.Props["manager"])
		}
	}

	guests := 0
	err = c.List(context.Background(), testSel, "userType eq 'Guest'", func(u profile.User) error {
		if u.Props["userType"] != "Guest" {
			t.Errorf("filter returned %v", u.Props["userType"])
		}
		guests++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, u := range users {
		if u.Props["userType"] == "Guest" && !u.Deleted {
			want++
		}
	}
	if guests != want || want == 0 {
		t.Errorf("filter found %d guests, want %d", guests, want)
	}
	err = c.List(context.Background(), testSel, "jobTitle eq 'unterminated", func(profile.User) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad filter: %v", err)
	}
}

func TestInitialRoundJoinsManagersOnDisk(t *testing.T) {
	defer func(n int) { joinBucket = n }(joinBucket)
	joinBucket = 7 // many buckets even for a small tenant
	sim, c := newSimClient(t, 200, 50)
	users := sim.Directory.Users()
	// A manager who left (soft-deleted): their reports point at someone who is
	// not among the round's users, so the join falls back to a lookup.
	gone := users[3]
	if err := sim.Directory.Delete(gone.ID, false); err != nil {
		t.Fatal(err)
	}
	users = sim.Directory.Users()
	byID := map[string]directory.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	c.tempDir = t.TempDir()
	c.parallelism = 1 // the join serves initial users/delta rounds
	got, link := collect(t, c, "")
	if link == "" {
		t.Fatal("no delta link")
	}
	active := 0
	for _, du := range users {
		if du.Deleted {
			continue
		}
		active++
		u, ok := got[du.ID]
		if !ok {
			t.Fatalf("user %s missing from the round", du.ID)
		}
		m, _ := u.Props["manager"].(map[string]any)
		switch {
		case du.ManagerID == "":
			if u.Props["manager"] != nil {
				t.Errorf("%s has no manager, got %v", du.ID, u.Props["manager"])
			}
		case byID[du.ManagerID].Deleted:
			if m != nil && m["mail"] != byID[du.ManagerID].Props["mail"] {
				t.Errorf("%s: departed manager resolved to %v", du.ID, m)
			}
		case m == nil || m["mail"] != byID[du.ManagerID].Props["mail"] || m["id"] != du.ManagerID:
			t.Errorf("%s: manager %v, want %s / %v", du.ID, u.Props["manager"], du.ManagerID, byID[du.ManagerID].Props["mail"])
		}
	}
	if len(got) < active {
		t.Errorf("%d users handed on, %d active", len(got), active)
	}
	if left, _ := os.ReadDir(c.tempDir); len(left) != 0 {
		t.Errorf("spill files left behind: %d", len(left))
	}
}
