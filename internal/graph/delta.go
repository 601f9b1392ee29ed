package graph

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/profile"
)

// Delta reads users for the engine. With a saved deltaLink it runs one
// incremental round of GET /users/delta. With deltaLink "" it reads every
// user (a full sync): by default a baseline delta link first, then parallel
// range reads of GET /users (see fullRead); with Parallelism 1, one initial
// users/delta round, as PnP does. Either way fn is called for one user at a
// time, and the returned link is the one the next round starts from. A link
// Graph no longer honours yields an error wrapping profile.ErrDeltaExpired.
func (c *Client) Delta(ctx context.Context, sel profile.Selection, deltaLink string, fn func(profile.User) error) (string, error) {
	if deltaLink == "" && c.parallelism > 1 {
		return c.fullRead(ctx, sel, fn)
	}
	return c.deltaRound(ctx, sel, deltaLink, fn)
}

// deltaSelect is the $select of users/delta: the mapping's properties and,
// when it needs the manager, the manager's (every user may be a manager, in
// an initial round joined on disk) and the manager navigation property.
func deltaSelect(sel profile.Selection) []string {
	props := append([]string(nil), sel.Properties...)
	if len(sel.Manager) > 0 {
		for _, m := range sel.Manager {
			if !slices.Contains(props, m) {
				props = append(props, m)
			}
		}
		props = append(props, "manager")
	}
	return props
}

// deltaURL is the first URL of an initial users/delta round.
func (c *Client) deltaURL(ctx context.Context, sel profile.Selection) (string, error) {
	ri, err := c.svc.Users().Delta().ToGetRequestInformation(ctx, &users.DeltaRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.DeltaRequestBuilderGetQueryParameters{Select: deltaSelect(sel)},
	})
	if err != nil {
		return "", fmt.Errorf("building the users/delta request: %w", err)
	}
	u, err := ri.GetUri()
	if err != nil {
		return "", fmt.Errorf("building the users/delta request: %w", err)
	}
	return u.String(), nil
}

// deltaRound runs one round of GET /users/delta, page by page ("" starts an
// initial round), and returns the round's new delta link.
func (c *Client) deltaRound(ctx context.Context, sel profile.Selection, deltaLink string, fn func(profile.User) error) (string, error) {
	initial := deltaLink == ""
	first := deltaLink
	if initial {
		var err error
		if first, err = c.deltaURL(ctx, sel); err != nil {
			return "", err
		}
	}
	mgr, err := c.pickManagers(sel, false, initial)
	if err != nil {
		return "", err
	}
	defer mgr.close()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	next, _ := c.chain(pctx, first, nil, nil)
	// Graph may send a user more than once in a round; each sighting gets
	// the next sequence number, so the engine keeps the newest (see
	// profile.User.Seq).
	var seq uint64
	pages, count := 0, 0
	start := time.Now()
	for {
		p, err := next()
		if err != nil {
			return "", err
		}
		pages++
		c.pagesRead.Add(1)
		for i := range p.users {
			seq++
			p.users[i].user.Seq = seq
		}
		if err := mgr.settle(ctx, p.users, fn); err != nil {
			return "", err
		}
		crashpoint.Hit(crashpoint.GraphPage)
		count += len(p.users)
		if pages%10 == 0 {
			c.log.Info("reading users from Graph", "pages", pages, "users", count, "elapsed", time.Since(start).Round(time.Millisecond).String())
		}
		if p.nextLink != "" {
			continue
		}
		if p.deltaLink == "" {
			return "", errors.New("graph delta round ended without @odata.deltaLink")
		}
		link := p.deltaLink
		if err := mgr.finish(ctx, fn); err != nil {
			return "", err
		}
		c.log.Info("Graph delta round done", "initial", initial, "pages", pages, "users", count, "elapsed", time.Since(start).Round(time.Millisecond).String())
		return link, nil
	}
}

// baseline asks Graph for a delta link at the present moment without
// reading anyone: GET /users/delta?$select=…&$deltatoken=latest
// (learn.microsoft.com/graph/delta-query-overview, "sync from now": "the
// response will contain a @odata.deltaLink and no resource data"). The
// $select is that of a delta round, so the next round tracks the same
// properties. msgraph-sdk-go's delta builder has no $deltatoken parameter,
// so it is added to the URL the builder makes.
func (c *Client) baseline(ctx context.Context, sel profile.Selection) (string, error) {
	first, err := c.deltaURL(ctx, sel)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(first)
	if err != nil {
		return "", fmt.Errorf("building the baseline request: %w", err)
	}
	q := u.RawQuery
	if q != "" {
		q += "&"
	}
	u.RawQuery = q + "%24deltatoken=latest"
	var p page
	link := u.String()
	for range 100 { // Graph answers at once; a nextLink or two are tolerated
		if err := c.getPage(ctx, link, nil, &p); err != nil {
			return "", fmt.Errorf("asking Graph for a baseline delta link: %w", err)
		}
		if p.deltaLink != "" {
			return p.deltaLink, nil
		}
		if p.nextLink == "" {
			break
		}
		link = p.nextLink
	}
	return "", errors.New("graph: users/delta?$deltatoken=latest answered without @odata.deltaLink")
}

// isUnsupportedQuery reports Graph's answer to a $filter it does not take.
func isUnsupportedQuery(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status == 400 &&
		(strings.EqualFold(ge.Code, "Request_UnsupportedQuery") || strings.EqualFold(ge.Code, "BadRequest"))
}
