package graph

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/m365sim/faults"
	"github.com/profilesync/profilesync/internal/profile"
	"github.com/profilesync/profilesync/internal/testenv"
)

// readAll runs one Delta call and counts the users it hands over.
func readAll(c *Client, link string) (int, string, error) {
	n := 0
	next, err := c.Delta(context.Background(), testSel, link, func(profile.User) error { n++; return nil })
	return n, next, err
}

// checkRefused checks that err is the refusal of a link to other, naming
// both origins.
func checkRefused(t *testing.T, err error, other, graphOrigin string) {
	t.Helper()
	if !errors.Is(err, profile.ErrForeignOrigin) {
		t.Fatalf("err = %v, want profile.ErrForeignOrigin", err)
	}
	if errors.Is(err, profile.ErrDeltaExpired) {
		t.Errorf("a foreign link reads as an expired one (the engine would start a full sync): %v", err)
	}
	t.Logf("refused: %v", err)
	if msg := err.Error(); !strings.Contains(msg, other) || !strings.Contains(msg, graphOrigin) {
		t.Errorf("the error names neither the link's origin %s nor the configured %s: %v", other, graphOrigin, err)
	}
}

// TestStoredDeltaLinkOnAnotherOrigin: a state.json whose delta link was
// edited to point elsewhere fails the round before anything is sent.
func TestStoredDeltaLinkOnAnotherOrigin(t *testing.T) {
	sim, c := newSimClient(t, 30, 10)
	c.parallelism = 1
	_, link, err := readAll(c, "")
	if err != nil || !strings.HasPrefix(link, sim.GraphURL+"/") {
		t.Fatalf("initial round: link %q, %v", link, err)
	}
	other, hits := testenv.Elsewhere(t)
	before := len(sim.Requests.All())
	n, next, err := readAll(c, other+strings.TrimPrefix(link, sim.GraphURL))
	checkRefused(t, err, other, sim.GraphURL)
	if n != 0 || next != "" {
		t.Errorf("handed over %d users and link %q", n, next)
	}
	if strings.Contains(err.Error(), "deltatoken") {
		t.Errorf("the error shows the delta token: %v", err)
	}
	if hits.Load() != 0 || len(sim.Requests.All()) != before {
		t.Errorf("requests sent: %d elsewhere, %d to the simulator", hits.Load(), len(sim.Requests.All())-before)
	}
	// Nothing else about the URL may differ: userinfo and another scheme
	// are refused alike.
	for _, bad := range []string{
		strings.Replace(link, "://", "://user@", 1),
		strings.Replace(link, "http://", "https://", 1),
		"/v1.0/users/delta?$deltatoken=x",
	} {
		if _, _, err := readAll(c, bad); !errors.Is(err, profile.ErrForeignOrigin) {
			t.Errorf("link %q: err = %v, want profile.ErrForeignOrigin", bad, err)
		}
	}
	// The true link still works.
	if _, _, err := readAll(c, link); err != nil {
		t.Errorf("the stored link itself: %v", err)
	}
}

// TestNextLinkOnAnotherOrigin: a page whose nextLink points elsewhere ends
// the read there, in a delta round and in a full read by ranges alike.
func TestNextLinkOnAnotherOrigin(t *testing.T) {
	for _, tc := range []struct {
		name        string
		users       int
		parallelism int
		path        string // the requests whose answers carry the moved links
	}{
		{"delta round", 60, 1, "^/v1.0/users/delta$"},
		// Ranges of a few hundred users: pages with $expand hold 100.
		{"range read", 1500, 2, "^/v1.0/users$"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, c := newSimClient(t, tc.users, 10)
			c.parallelism = tc.parallelism
			other, hits := testenv.Elsewhere(t)
			if err := sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: tc.path, LinkOrigin: other}); err != nil {
				t.Fatal(err)
			}
			_, next, err := readAll(c, "")
			checkRefused(t, err, other, sim.GraphURL)
			if next != "" {
				t.Errorf("link %q returned", next)
			}
			if hits.Load() != 0 {
				t.Errorf("%d requests reached the other origin", hits.Load())
			}
			if r := sim.Faults.Rules(); r[0].Hits == 0 {
				t.Error("no page had its links moved: the test proves nothing")
			}
		})
	}
}

// TestRedirectToAnotherOrigin: the SDK's redirect handler follows a
// Location to any host; the pinned transport under it refuses one that
// points elsewhere, for a page read and for an SDK call alike.
func TestRedirectToAnotherOrigin(t *testing.T) {
	sim, c := newSimClient(t, 30, 10)
	c.parallelism = 1
	other, hits := testenv.Elsewhere(t)
	if err := sim.Faults.Add(faults.Rule{Origin: faults.Graph, Path: "^/v1.0/users", Redirect: other}); err != nil {
		t.Fatal(err)
	}
	_, _, err := readAll(c, "")
	checkRefused(t, err, other, sim.GraphURL)
	err = c.Ping(context.Background())
	checkRefused(t, err, other, sim.GraphURL)
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the other origin", hits.Load())
	}
	if r := sim.Faults.Rules(); r[0].Hits < 2 {
		t.Errorf("the redirect rule applied %d times, want 2: the test proves nothing", r[0].Hits)
	}
}

func TestOriginSetting(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://graph.microsoft.com", "https://graph.microsoft.com"},
		{"https://Graph.Microsoft.com:443/v1.0/", "https://graph.microsoft.com"},
		{"http://127.0.0.1:8370", "http://127.0.0.1:8370"},
		{"http://[::1]:8370", "http://[::1]:8370"},
		{"http://localhost", "http://localhost"},
		{"http://graph.microsoft.com", ""},
		{"https://graph.microsoft.com/beta", ""},
		{"https://u:p@graph.microsoft.com", ""},
		{"https://graph.microsoft.com?x=1", ""},
		{"graph.microsoft.com", ""},
	} {
		got, err := Origin(tc.in)
		if (tc.want == "") != (err != nil) || got != tc.want {
			t.Errorf("Origin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
