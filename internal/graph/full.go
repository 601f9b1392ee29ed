package graph

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/profile"
)

// maxRangeRestarts bounds how often one range is read again from its start
// after Graph expired its page token.
const maxRangeRestarts = 3

// fullRead reads every user for a full sync, at the pace of Graph rather
// than of one chain of nextLinks:
//
//  1. a baseline delta link at the present moment (see baseline), taken
//     before anyone is read: a change made while the read runs is either
//     in what is read or in the next delta round, never lost;
//  2. the UPN space cut into ranges (see planRanges), read with
//     GET /users?$filter=<range>&$select=…&$expand=manager(…)&$top=999,
//     Parallelism ranges at a time, each followed through its nextLinks
//     with the next page requested ahead;
//  3. pages handed to fn one at a time, in the order they arrive, each user
//     numbered (profile.User.Seq) at arrival: a user seen twice (renamed
//     from one range into another during the read) is sent once, with its
//     last sighting;
//  4. a catch-up delta round from the baseline link: whoever changed while
//     the ranges were read is looked up again (with the manager) and handed
//     over as the newest sighting. This also catches a user renamed from a
//     range not yet read into one already read, whom no range saw, and
//     gives them their manager, which a delta round mentions only when it
//     changed.
//
// The catch-up round's link is returned only once every range has been
// read, and the engine saves it only after the files are uploaded and
// queued: a run that fails anywhere before leaves the old state, and the
// next run is a full sync again.
func (c *Client) fullRead(ctx context.Context, sel profile.Selection, fn func(profile.User) error) (string, error) {
	start := time.Now()
	link, err := c.baseline(ctx, sel)
	if err != nil {
		return "", err
	}
	ranges, err := c.planRanges(ctx)
	if err != nil {
		return "", err
	}
	if len(ranges) > 1 {
		// Graph documents ge and le on userPrincipalName, yet its filter
		// tables disagree on whether they need advanced queries
		// (docs/research/graph-upn-ranges.md): one cheap request tells,
		// before anything is handed on.
		if err := c.probeRange(ctx, ranges[0].UPNRange); err != nil {
			if isUnsupportedQuery(err) {
				c.log.Warn("Graph does not take userPrincipalName ranges; reading every user in one users/delta round instead", "err", err)
				return c.deltaRound(ctx, sel, "", fn)
			}
			return "", err
		}
	}
	c.log.Info("reading users from Graph in ranges", "ranges", len(ranges), "parallel", min(c.parallelism, len(ranges)),
		"planned", time.Since(start).Round(time.Millisecond).String())
	var seq uint64
	if err := c.readRanges(ctx, sel, ranges, &seq, fn); err != nil {
		return "", err
	}
	return c.catchUp(ctx, sel, link, &seq, fn)
}

// maxCatchUp bounds the users a catch-up round looks up again (20 per
// request); beyond it they are left to the next delta round.
const maxCatchUp = 20000

// catchUp follows the baseline link once the ranges are read and hands
// over, as newer sightings, every user who changed meanwhile, read again
// with GET /users/{id}?$expand=manager in $batch requests of 20 (one who
// is gone by then is handed over as removed). It returns the round's new
// link. When too many changed, it returns the baseline link instead: the
// next delta round then brings them.
func (c *Client) catchUp(ctx context.Context, sel profile.Selection, baseline string, seq *uint64, fn func(profile.User) error) (string, error) {
	start := time.Now()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	next, _ := c.chain(pctx, baseline, nil, nil)
	seen := map[string]bool{}
	var ids []string
	var link string
	for {
		p, err := next()
		if err != nil {
			return "", fmt.Errorf("catching up with changes made during the read: %w", err)
		}
		for _, s := range p.users {
			if s.user.ID != "" && !seen[s.user.ID] {
				seen[s.user.ID] = true
				ids = append(ids, s.user.ID)
			}
		}
		if len(ids) > maxCatchUp {
			c.log.Warn("many users changed while the ranges were read; the next delta round brings them", "changed", len(ids))
			return baseline, nil
		}
		if p.nextLink == "" {
			if link = p.deltaLink; link == "" {
				return "", errors.New("graph delta round ended without @odata.deltaLink")
			}
			break
		}
	}
	if len(ids) == 0 {
		return link, nil
	}
	gone, err := c.Lookup(ctx, sel, ids, func(u profile.User) error {
		*seq++
		u.Seq = *seq
		return fn(u)
	})
	if err != nil {
		return "", fmt.Errorf("reading users changed during the read again: %w", err)
	}
	for _, id := range gone {
		*seq++
		if err := fn(profile.User{ID: id, Removed: true, Props: map[string]any{"id": id}, Seq: *seq}); err != nil {
			return "", err
		}
	}
	c.log.Info("caught up with changes made during the read", "changed", len(ids), "gone", len(gone),
		"elapsed", time.Since(start).Round(time.Millisecond).String())
	return link, nil
}

// rangeURL is the first URL of one range's read.
func (c *Client) rangeURL(ctx context.Context, sel profile.Selection, r UPNRange, selectOnly []string, top int32) (string, error) {
	q := &users.UsersRequestBuilderGetQueryParameters{Top: &top}
	if selectOnly != nil {
		q.Select = selectOnly
	} else {
		q.Select, q.Expand = sel.Properties, expandManager(sel)
	}
	if f := r.Filter(); f != "" {
		q.Filter = &f
	}
	ri, err := c.svc.Users().ToGetRequestInformation(ctx, &users.UsersRequestBuilderGetRequestConfiguration{QueryParameters: q})
	if err != nil {
		return "", fmt.Errorf("building the users request: %w", err)
	}
	u, err := ri.GetUri()
	if err != nil {
		return "", fmt.Errorf("building the users request: %w", err)
	}
	return u.String(), nil
}

// probeRange asks for one user of a range.
func (c *Client) probeRange(ctx context.Context, r UPNRange) error {
	u, err := c.rangeURL(ctx, profile.Selection{}, r, []string{"id"}, 1)
	if err != nil {
		return err
	}
	var p page
	return c.getPage(ctx, u, nil, &p)
}

// delivery is one page a range reader hands to the consumer; the reader
// waits for ack before it reuses the page.
type delivery struct {
	p   *page
	ack chan struct{}
}

// readRanges reads the ranges, Parallelism at a time, and hands every user
// to fn from this goroutine, one page at a time.
func (c *Client) readRanges(ctx context.Context, sel profile.Selection, ranges []plannedRange, seq *uint64, fn func(profile.User) error) error {
	mgr, err := c.pickManagers(sel, true, false)
	if err != nil {
		return err
	}
	defer mgr.close()
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int, len(ranges))
	for i := range ranges {
		work <- i
	}
	close(work)
	out := make(chan delivery)
	// Readers fetch pages in parallel, but only a few decoded pages exist
	// at a time (one with the consumer, the others decoded ahead on the
	// other cores): decoded users take about ten times their raw answer.
	slots := make(chan struct{}, runtime.GOMAXPROCS(0)+2)
	var wg sync.WaitGroup
	readers := min(c.parallelism, len(ranges))
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack := make(chan struct{})
			for i := range work {
				if err := c.readRange(rctx, sel, ranges[i], out, ack, slots); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	// However the loop below ends, the readers stop before this returns.
	defer func() {
		cancel(nil)
		for range out {
		}
	}()

	pages, count := 0, 0
	start := time.Now()
	lastLog := start
	for d := range out {
		pages++
		c.pagesRead.Add(1)
		for i := range d.p.users {
			*seq++
			d.p.users[i].user.Seq = *seq
		}
		if err := mgr.settle(ctx, d.p.users, fn); err != nil {
			cancel(err)
			d.ack <- struct{}{}
			return err
		}
		count += len(d.p.users)
		d.ack <- struct{}{}
		crashpoint.Hit(crashpoint.GraphPage)
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			c.log.Info("reading users from Graph", "pages", pages, "users", count,
				"elapsed", time.Since(start).Round(time.Millisecond).String())
		}
	}
	if err := context.Cause(rctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	c.log.Info("Graph range reads done", "ranges", len(ranges), "pages", pages, "users", count,
		"elapsed", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// readRange follows one range through its nextLinks, handing each page to
// out and waiting for ack. A range whose page token Graph expired
// (Directory_ExpiredPageToken, reported on large tenants:
// microsoftgraph/msgraph-sdk-dotnet#2254) is read again from its start: its
// users are then sighted twice, and the newer sighting wins.
func (c *Client) readRange(ctx context.Context, sel profile.Selection, r plannedRange, out chan<- delivery, ack chan struct{}, slots chan struct{}) error {
	first, err := c.rangeURL(ctx, sel, r.UPNRange, nil, 999)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := c.followRange(ctx, first, out, ack, slots)
		var ge *Error
		if err != nil && attempt < maxRangeRestarts && errors.As(err, &ge) && strings.EqualFold(ge.Code, "Directory_ExpiredPageToken") {
			c.log.Warn("Graph expired the page token of a range; reading it again from its start", "range", r.Filter(), "attempt", attempt+2)
			continue
		}
		if err != nil {
			return fmt.Errorf("reading users with filter %q: %w", r.Filter(), err)
		}
		return nil
	}
}

func (c *Client) followRange(ctx context.Context, first string, out chan<- delivery, ack chan struct{}, slots chan struct{}) error {
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	next, done := c.chain(cctx, first, nil, slots)
	defer done() // the last page's decode slot goes back
	for {
		p, err := next()
		if err != nil {
			return err
		}
		select {
		case out <- delivery{p, ack}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		<-ack // the consumer always acknowledges a page it took
		if p.nextLink == "" {
			return nil
		}
	}
}
