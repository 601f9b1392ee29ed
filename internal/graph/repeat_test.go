package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/profilesync/profilesync/internal/m365sim/directory"
	"github.com/profilesync/profilesync/internal/profile"
)

// sightings collects every user a round hands over, in order.
func sightings(t *testing.T, c *Client, link string) ([]profile.User, string) {
	t.Helper()
	var all []profile.User
	next, err := c.Delta(context.Background(), testSel, link, func(u profile.User) error {
		all = append(all, u)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all, next
}

// newestByID keeps, per user, the sighting with the highest Seq, checking
// that no two sightings share one.
func newestByID(t *testing.T, all []profile.User) map[string]profile.User {
	t.Helper()
	seqs := map[uint64]bool{}
	out := map[string]profile.User{}
	for _, u := range all {
		if u.Seq == 0 || seqs[u.Seq] {
			t.Fatalf("sighting of %s has Seq %d (zero or used twice)", u.ID, u.Seq)
		}
		seqs[u.Seq] = true
		if old, ok := out[u.ID]; !ok || u.Seq > old.Seq {
			out[u.ID] = u
		}
	}
	return out
}

// TestRepeatedUsersAreNumbered: when Graph repeats users within a round
// (initial rounds joined on disk, and incremental ones), every sighting
// carries a distinct sequence number, and the newest sighting of each user
// holds its current values.
func TestRepeatedUsersAreNumbered(t *testing.T) {
	defer func(n int) { joinBucket = n }(joinBucket)
	joinBucket = 7
	sim, c := newSimClient(t, 120, 25)
	c.tempDir = t.TempDir()
	c.parallelism = 1 // initial users/delta rounds repeat users too
	sim.Graph.SetDeltaRepeatEvery(3)
	all, link := sightings(t, c, "")
	newest := newestByID(t, all)
	if len(all) <= len(newest) {
		t.Fatalf("%d sightings of %d users: the simulator repeated nobody", len(all), len(newest))
	}
	byID := map[string]directory.User{}
	for _, u := range sim.Directory.Users() {
		byID[u.ID] = u
	}
	for id, u := range newest {
		if du := byID[id]; !du.Deleted && u.Props["jobTitle"] != du.Props["jobTitle"] {
			t.Errorf("%s: jobTitle %v, want %v", id, u.Props["jobTitle"], du.Props["jobTitle"])
		}
	}

	// Incremental: change users (one of them twice, between pages) and
	// their managers; the newest sighting holds the newest values.
	users := sim.Directory.Users()
	var changed []directory.User
	for _, u := range users[directory.GenFixedCount:] {
		if !u.Deleted && len(changed) < 6 {
			changed = append(changed, u)
		}
	}
	for i, u := range changed {
		p := directory.Patch{Props: map[string]any{"jobTitle": fmt.Sprintf("title %d", i)}}
		if i%2 == 0 {
			p.ManagerID = &changed[(i+1)%len(changed)].ID
		}
		if _, err := sim.Directory.Update(u.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	all, _ = sightings(t, c, link)
	newest = newestByID(t, all)
	for i, u := range changed {
		got := newest[u.ID]
		if got.Props["jobTitle"] != fmt.Sprintf("title %d", i) {
			t.Errorf("%s: jobTitle %v", u.ID, got.Props["jobTitle"])
		}
		m, known := got.Props["manager"]
		if i%2 == 0 {
			mm, _ := m.(map[string]any)
			if mm == nil || mm["id"] != changed[(i+1)%len(changed)].ID {
				t.Errorf("%s: manager %v, want %s", u.ID, m, changed[(i+1)%len(changed)].ID)
			}
		} else if known {
			// Graph sends manager@delta only when the manager changed:
			// unknown must stay unknown, not become "no manager".
			t.Errorf("%s: manager unchanged but handed over as %v", u.ID, m)
		}
	}
}

// staticCred is a token credential for stand-ins that check nothing.
type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestManagerKnownFromAnEarlierSighting: a user whose manager changed may
// be sent again later in the round without manager@delta (Graph sends it
// only with a change); the manager of the earlier sighting still holds.
func TestManagerKnownFromAnEarlierSighting(t *testing.T) {
	var base string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.RawQuery, "deltatoken=start"):
			fmt.Fprintf(w, `{"@odata.nextLink":%q,"value":[
				{"id":"u1","jobTitle":"a","manager@delta":[{"@odata.type":"#microsoft.graph.user","id":"m1"}]},
				{"id":"u2","jobTitle":"b"}]}`, base+"/v1.0/users/delta?$skiptoken=2")
		case strings.Contains(r.URL.RawQuery, "skiptoken=2"):
			fmt.Fprintf(w, `{"@odata.deltaLink":%q,"value":[{"id":"u1","jobTitle":"a2"}]}`, base+"/v1.0/users/delta?$deltatoken=next")
		case strings.Contains(r.URL.Path, "$batch"): // items not answered: looked up one by one
			fmt.Fprint(w, `{"responses":[]}`)
		case r.URL.Path == "/v1.0/users/m1":
			fmt.Fprint(w, `{"id":"m1","mail":"boss@contoso.com"}`)
		default:
			t.Errorf("unexpected request %s", r.URL)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	base = srv.URL
	c, err := New(Options{Endpoint: srv.URL, Credential: staticCred{}})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := sightings(t, c, srv.URL+"/v1.0/users/delta?$deltatoken=start")
	newest := newestByID(t, all)
	if m, _ := newest["u1"].Props["manager"].(map[string]any); newest["u1"].Props["jobTitle"] != "a2" || m == nil || m["mail"] != "boss@contoso.com" {
		t.Errorf("u1's newest sighting %v: want jobTitle a2 and the manager of its earlier sighting", newest["u1"].Props)
	}
	if _, known := newest["u2"].Props["manager"]; known {
		t.Errorf("u2's manager was never mentioned, but it is handed over as %v", newest["u2"].Props["manager"])
	}
}

// TestListQueryKinds: a filter run whose mapping needs the manager sends a
// default query with $expand=manager (Graph refuses $expand in advanced
// queries) and says so when Graph wants an advanced query; without the
// manager it sends the advanced headers.
func TestListQueryKinds(t *testing.T) {
	type seen struct {
		consistency, count, expand bool
	}
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		s := seen{r.Header.Get("ConsistencyLevel") == "eventual", q.Get("$count") == "true", q.Get("$expand") != ""}
		got = append(got, s)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(q.Get("$filter"), "endsWith") && !s.consistency {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"code":"Request_UnsupportedQuery","message":"Unsupported Query."}}`)
			return
		}
		fmt.Fprint(w, `{"value":[{"id":"u1","userPrincipalName":"a@contoso.com"}]}`)
	}))
	defer srv.Close()
	c, err := New(Options{Endpoint: srv.URL, Credential: staticCred{}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	count := func(profile.User) error { n++; return nil }
	withManager := profile.Selection{Properties: []string{"id", "userPrincipalName"}, Manager: []string{"id", "mail"}}
	if err := c.List(context.Background(), withManager, "startsWith(userPrincipalName,'a')", count); err != nil || n != 1 {
		t.Fatalf("default filter with the manager: %v (%d users)", err, n)
	}
	if last := got[len(got)-1]; last.consistency || last.count || !last.expand {
		t.Errorf("with the manager: %+v, want $expand and no advanced headers", last)
	}
	err = c.List(context.Background(), withManager, "endsWith(mail,'@contoso.com')", count)
	if err == nil || !strings.Contains(err.Error(), "manager") || !strings.Contains(err.Error(), "eq, startsWith or in") {
		t.Errorf("advanced filter with the manager: %v, want an error naming the conflict", err)
	}
	noManager := profile.Selection{Properties: []string{"id", "userPrincipalName"}}
	if err := c.List(context.Background(), noManager, "endsWith(mail,'@contoso.com')", count); err != nil {
		t.Fatalf("advanced filter without the manager: %v", err)
	}
	if last := got[len(got)-1]; !last.consistency || !last.count || last.expand {
		t.Errorf("without the manager: %+v, want ConsistencyLevel and $count, no $expand", last)
	}
}

// TestPrefetchKeepsTheOrder: reading pages ahead changes nothing in what a
// round hands over, nor in its order; a caller that stops early stops the
// reader.
func TestPrefetchKeepsTheOrder(t *testing.T) {
	sim, c := newSimClient(t, 300, 40) // 8 pages
	sim.Graph.SetDeltaRepeatEvery(7)
	c.tempDir = t.TempDir()
	c.parallelism = 1
	var orders [][]string
	for _, prefetch := range []int{-1, 1, 3} {
		c.prefetch = prefetch
		var ids []string
		_, err := c.Delta(context.Background(), testSel, "", func(u profile.User) error {
			ids = append(ids, fmt.Sprintf("%s/%d", u.ID, u.Seq))
			return nil
		})
		if err != nil {
			t.Fatalf("prefetch %d: %v", prefetch, err)
		}
		orders = append(orders, ids)
	}
	for i := 1; i < len(orders); i++ {
		if strings.Join(orders[i], ",") != strings.Join(orders[0], ",") {
			t.Errorf("prefetch changed what the round handed over (%d vs %d sightings)", len(orders[i]), len(orders[0]))
		}
	}
	// Stop after the first user: the round ends with the caller's error.
	c.prefetch = 2
	stop := errors.New("enough")
	done := make(chan error, 1)
	go func() {
		_, err := c.Delta(context.Background(), testSel, "", func(profile.User) error { return stop })
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Errorf("err = %v, want the caller's", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a round whose caller stopped did not end")
	}
}
