package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	msgraphgocore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/profile"
)

// expandManager is the $expand clause that brings the manager's properties along.
func expandManager(sel profile.Selection) []string {
	if len(sel.Manager) == 0 {
		return nil
	}
	return []string{"manager($select=" + strings.Join(sel.Manager, ",") + ")"}
}

// withManager fills Props["manager"] from an expanded manager (nil when the
// user has none) so that the mapping never mistakes "no manager" for "unknown".
func withManager(u models.Userable, sel profile.Selection) profile.User {
	pu, _, _ := convertUser(u)
	if len(sel.Manager) > 0 {
		if m, ok := pu.Props["manager"].(map[string]any); !ok || len(m) == 0 {
			pu.Props["manager"] = nil
		}
	}
	return pu
}

// Lookup reads the given users (object ids or UPNs) 20 at a time with $batch,
// calling fn for each one Graph knows, and returns the ones it does not.
func (c *Client) Lookup(ctx context.Context, sel profile.Selection, ids []string, fn func(profile.User) error) ([]string, error) {
	var missing []string
	seen := map[string]bool{}
	var todo []string
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id != "" && !seen[strings.ToLower(id)] {
			seen[strings.ToLower(id)] = true
			todo = append(todo, id)
		}
	}
	cfg := &users.UserItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UserItemRequestBuilderGetQueryParameters{Select: sel.Properties, Expand: expandManager(sel)},
	}
	for chunk := range slices.Chunk(todo, batchSize) {
		batch := msgraphgocore.NewBatchRequest(c.adapter)
		itemIDs := make(map[string]string, len(chunk))
		order := make([]string, 0, len(chunk))
		for _, id := range chunk {
			ri, err := c.svc.Users().ByUserId(id).ToGetRequestInformation(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("building user lookup: %w", err)
			}
			item, err := batch.AddBatchRequestStep(*ri)
			if err != nil {
				return nil, fmt.Errorf("building user batch: %w", err)
			}
			itemIDs[*item.GetId()] = id
			order = append(order, *item.GetId())
		}
		bctx, cancel := c.bounded(ctx)
		resp, err := batch.Send(bctx, c.adapter)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("looking up users: %w", classify(err))
		}
		statuses := resp.GetStatusCodes()
		for _, itemID := range order {
			id := itemIDs[itemID]
			var u models.Userable
			switch status := statuses[itemID]; {
			case status == 404:
				missing = append(missing, id)
				continue
			case status >= 200 && status < 300:
				u, err = msgraphgocore.GetBatchResponseById[models.Userable](resp, itemID, models.CreateUserFromDiscriminatorValue)
				if err != nil {
					return nil, fmt.Errorf("reading user %s: %w", id, err)
				}
			default: // throttled inside the batch: ask again on its own, with the SDK's retries
				gctx, cancel := c.bounded(ctx)
				u, err = c.svc.Users().ByUserId(id).Get(gctx, cfg)
				cancel()
				if err != nil {
					if e, ok := classify(err).(*Error); ok && e.Status == 404 {
						missing = append(missing, id)
						continue
					}
					return nil, fmt.Errorf("looking up user %s: %w", id, classify(err))
				}
			}
			if err := fn(withManager(u, sel)); err != nil {
				return nil, err
			}
		}
	}
	return missing, nil
}

// List reads the users a $filter selects, page by page.
//
// A mapping that draws on the manager needs $expand=manager, which Graph
// does not combine with advanced queries (ConsistencyLevel: eventual and
// $count=true: learn.microsoft.com/graph/aad-advanced-queries; "Query
// parameter COUNT is not supported along with EXPAND", Microsoft Q&A
// 1134278): such a run sends a default query, which takes eq, startsWith
// and in. Without the manager, the advanced headers are sent, so ne, not,
// endsWith work too.
func (c *Client) List(ctx context.Context, sel profile.Selection, filter string, fn func(profile.User) error) error {
	top := int32(999)
	q := &users.UsersRequestBuilderGetQueryParameters{Filter: &filter, Select: sel.Properties, Top: &top}
	advanced := len(sel.Manager) == 0
	var headers map[string]string
	if advanced {
		// Sent with every page: "not included by default in subsequent
		// page requests" (learn.microsoft.com/graph/query-parameters).
		headers = map[string]string{"ConsistencyLevel": "eventual"}
		count := true
		q.Count = &count
	} else {
		q.Expand = expandManager(sel)
	}
	ri, err := c.svc.Users().ToGetRequestInformation(ctx, &users.UsersRequestBuilderGetRequestConfiguration{QueryParameters: q})
	if err != nil {
		return fmt.Errorf("building the users request: %w", err)
	}
	u, err := ri.GetUri()
	if err != nil {
		return fmt.Errorf("building the users request: %w", err)
	}
	mgr, err := c.pickManagers(sel, true, false)
	if err != nil {
		return err
	}
	defer mgr.close()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	next, _ := c.chain(pctx, u.String(), headers, nil)
	for {
		p, err := next()
		if err != nil {
			var ge *Error
			if !advanced && errors.As(err, &ge) && ge.Status == 400 && strings.EqualFold(ge.Code, "Request_UnsupportedQuery") {
				return fmt.Errorf("listing users with filter %q: the mapping needs each user's manager ($expand=manager), "+
					"which Graph does not combine with the advanced queries this filter needs: use eq, startsWith or in, or name the users: %w", filter, err)
			}
			return fmt.Errorf("listing users with filter %q: %w", filter, err)
		}
		c.pagesRead.Add(1)
		if err := mgr.settle(ctx, p.users, fn); err != nil {
			return err
		}
		if p.nextLink == "" {
			return nil
		}
	}
}
